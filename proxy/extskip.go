package proxy

import "bytes"

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
	x.lastParse = parseAnswer{}
	if x.cur == nil || len(x.queue) == 0 {
		s.out = appendMsg(s.out, msg) // nothing due before it: it stands
		if ps != nil {
			x.lastParse = parseAnswer{ps: ps, name: name, prev: prev, end: len(s.out)}
		}
		return
	}
	x.queue = append(x.queue, reply{kind: rSynth, msg: appendMsg(nil, msg), stmt: &stmtChange{name: name, set: ps, prev: prev}})
	if ps != nil {
		x.lastParse = parseAnswer{ps: ps, name: name, prev: prev, q: len(x.queue), cur: x.cur}
	}
}

// undoStmt undoes a change whose message Postgres would have skipped,
// unless a later message changed the name again. failed: the Parse failed
// on the backend instead, which drops the unnamed statement it replaced.
func (s *session) undoStmt(c *stmtChange, failed bool) {
	x := s.x
	if x.stmts[c.name] != c.set {
		return
	}
	if c.prev != nil && !failed {
		x.stmts[c.name] = c.prev
	} else {
		delete(x.stmts, c.name)
	}
}

// The proxy answers a client's Parse itself and parses the statement on a
// backend when a Bind or Describe first needs it there, so a statement
// the backend rejects (a missing table or function) would get the proxy's
// ParseComplete and then the backend's error, where Postgres answers the
// Parse with the error. When the Parse's ParseComplete is still the last
// answer due when its statement is first parsed on a backend (Parse then
// Bind or Describe of it, the drivers' usual order), the ParseComplete is
// taken back and the backend's answer to the injected Parse relayed in
// its place: ParseComplete, or the error, after which Postgres skips the
// rest and the statement does not exist.

// parseAnswer is where the ParseComplete of the client's last Parse went:
// s.out up to end, or the current backend's queue (cur) as its q-th
// entry.
type parseAnswer struct {
	ps     *prepared
	name   string
	prev   *prepared
	end, q int
	cur    *backend
}

var parseCompleteMsg = []byte{'1', 0, 0, 0, 4}

// parseInPlace is called as ensurePrepared parses ps on b (r its reply,
// about to be queued): when the client's Parse of ps is still the last
// answer due, its ParseComplete is taken back and r relays the backend's.
func (s *session) parseInPlace(b *backend, ps *prepared, r *reply) {
	x := s.x
	l := x.lastParse
	x.lastParse = parseAnswer{}
	if l.ps != ps || ps == nil {
		return
	}
	switch {
	case l.end > 0:
		if len(x.queue) != 0 || len(s.out) != l.end || !bytes.HasSuffix(s.out, parseCompleteMsg) {
			return
		}
		s.out = s.out[:l.end-len(parseCompleteMsg)]
	default:
		if l.cur != b || len(x.queue) != l.q || x.queue[l.q-1].kind != rSynth {
			return
		}
		x.queue = x.queue[:l.q-1]
	}
	r.kind = rPass
	r.stmt = &stmtChange{name: l.name, set: ps, prev: l.prev}
}
