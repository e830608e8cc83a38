package proxy

// Statements of a request skipped after an error.
//
// Postgres skips every message after an error until Sync, Parse and Close
// included: a statement a skipped Parse names does not exist afterwards
// (a later Bind to it gets 26000), and one a skipped Close names still
// does. The proxy answers Parse and Close itself, queued in order behind
// the backend replies due before them; when the backend's error comes
// first, the queued ParseComplete or CloseComplete is not sent and the
// change to the client's statements is undone.

// stmtChange is a client's Parse (set) or Close (set nil) of statement
// name, which replaced prev.
type stmtChange struct {
	name      string
	set, prev *prepared
}

// changeStmt sets the client's statement name to ps (nil: removes it) and
// answers with msg, in order with the backend replies due before it.
func (s *session) changeStmt(name string, ps *prepared, msg encoder) {
	x := s.x
	prev := x.stmts[name]
	if ps != nil {
		x.stmts[name] = ps
	} else {
		delete(x.stmts, name)
	}
	if x.cur == nil || len(x.queue) == 0 {
		s.out = appendMsg(s.out, msg) // nothing due before it: it stands
		return
	}
	x.queue = append(x.queue, reply{kind: rSynth, msg: appendMsg(nil, msg), stmt: &stmtChange{name: name, set: ps, prev: prev}})
}

// undoStmt undoes a change whose message Postgres would have skipped,
// unless a later message changed the name again.
func (s *session) undoStmt(c *stmtChange) {
	x := s.x
	if x.stmts[c.name] != c.set {
		return
	}
	if c.prev != nil {
		x.stmts[c.name] = c.prev
	} else {
		delete(x.stmts, c.name)
	}
}
