package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// The extended query protocol under transaction pooling.
//
// Client statements are kept per session (name -> prepared) and exist on
// backends under global names derived from (query, parameter types), so two
// clients preparing the same text share one backend statement and names never
// collide. A statement is prepared lazily on whichever backend a Bind or
// Describe lands on: the proxy injects a Parse and drops its ParseComplete.
// A client's Close of a statement only removes the client's view.
//
// Messages are handled in arrival order. Those a backend must see are
// appended to the current backend's write buffer together with what the
// proxy expects back (a reply queue); at Sync or Flush, or when the buffer is
// large, the buffer is written and the replies read and relayed in order,
// with the proxy's own replies (a ParseComplete for a statement already on
// the backend, a CloseComplete) slotted in where Postgres would send them.
// A request is held until it can be routed: the shard is chosen at Bind,
// when the parameters are known.

// prepared is a client's prepared statement.
type prepared struct {
	query  string
	oids   []uint32 // parameter types from the client's Parse (0 = unspecified)
	st     *parser.Statement
	global string
	// described holds parameter types learnt from a backend's
	// ParameterDescription, used to read binary parameters for routing.
	described []uint32
}

// portal is a bound statement.
type portal struct {
	ps      *prepared
	bind    *pgproto3.Bind
	plan    *router.Plan
	scatter bool
	// where is the backend holding it (single-shard portals).
	where *backend
	// sh: the result cache may answer it (extcache.go).
	sh *sharedPortal
	// mc: a cross-shard portal read in parts; decl: a DECLARE over a
	// cross-shard query (mcursor.go).
	mc   *mcursor
	decl *declared
	cmd  *cursorCmd
}

// replyKind says what the proxy does with the backend's reply to one message.
type replyKind uint8

const (
	rPass     replyKind = iota + 1 // relay one reply message (ParseComplete, BindComplete, CloseComplete)
	rDrop                          // read one reply and drop it (an injected Parse's ParseComplete)
	rSynth                         // no backend reply: emit msg ourselves
	rDescribe                      // ParameterDescription? then RowDescription or NoData
	rExecute                       // DataRows... then CommandComplete/EmptyQuery/PortalSuspended
	rSync                          // ReadyForQuery
)

type reply struct {
	kind replyKind
	msg  []byte    // for rSynth
	ps   *prepared // for rDescribe of a statement: learn parameter types
	// parsed names the statement an injected Parse (rDrop) prepares: a
	// backend that skips or fails it does not have it (forgetSkipped).
	parsed string
	// stmt: the client's Parse or Close of statement stmt made this
	// rSynth reply; skipped after an error, it is undone (extskip.go).
	stmt *stmtChange
}

// extState is the session's extended-protocol state.
type extState struct {
	stmts   map[string]*prepared
	portals map[string]*portal
	// cur is the backend the current request runs on, until Sync.
	cur     *backend
	queue   []reply
	wbuf    []byte
	errored bool // an error occurred: skip to Sync
	writes  bool // the current request wrote on cur
	ddl     bool // the current request ran DDL
	wrote   []int
	// pend is a shared portal whose Describe waits for its Execute (extcache.go).
	pend *portal
	// implicitTx: the proxy's transaction stands for the request's
	// implicit one and ends at Sync (pipetx.go).
	implicitTx bool
	// open: a request has begun and its Sync not come yet.
	open bool
	// lastParse: where the client's last Parse was answered (extskip.go).
	lastParse parseAnswer
}

func (s *session) ext() *extState {
	if s.x == nil {
		s.x = &extState{stmts: map[string]*prepared{}, portals: map[string]*portal{}}
	}
	return s.x
}

// extended handles one extended-protocol message.
func (s *session) extended(ctx context.Context, typ byte, body []byte) error {
	x := s.ext()
	if s.q.start.IsZero() {
		s.q.begin() // one record per request, finished at Sync's ReadyForQuery
	}
	if !x.open {
		// A new request. An error of a simple Query's cross-shard
		// statement or cursor also sets errored (answer, cursorFail): it
		// must not make this request skip everything until its Sync.
		x.errored = false
	}
	x.open = typ != 'S'
	if x.pend != nil && typ != 'E' && typ != 'D' {
		if err := s.extUnshare(ctx); err != nil { // extcache.go: a held Bind goes to its shard
			return s.extFail(err)
		}
	}
	if x.errored && typ != 'S' {
		if typ == 'H' {
			return s.flush() // Flush still sends what is due (the error)
		}
		return nil // Postgres discards messages until Sync after an error
	}
	var err error
	switch typ {
	case 'P':
		err = s.extParse(ctx, body)
	case 'B':
		err = s.extBind(ctx, body)
	case 'D':
		err = s.extDescribe(ctx, body)
	case 'E':
		err = s.extExecute(ctx, body)
	case 'C':
		err = s.extClose(body)
	case 'H':
		return s.extFlush(true)
	case 'S':
		return s.extSync(ctx)
	}
	if err != nil {
		return s.extFail(err)
	}
	if len(x.wbuf) > flushAt {
		return s.extFlush(false)
	}
	return nil
}

// extFail reports a proxy-side error in order: replies already due from
// the backend go first. Unless the backend failed first, the client sees
// err and the rest of the request is skipped until Sync.
func (s *session) extFail(err error) error {
	x := s.x
	x.open = true // also for a message failed before extended saw it (tooLarge)
	if ferr := s.extFlush(false); ferr != nil {
		return ferr
	}
	if !x.errored {
		s.pipelineUndo() // pipetx.go
		s.fail(err)
		x.errored = true
	}
	return nil
}

// emit queues a proxy-made reply message in order with backend replies.
func (s *session) emit(msg encoder) {
	x := s.x
	if x.cur == nil || len(x.queue) == 0 {
		s.out = appendMsg(s.out, msg)
		return
	}
	x.queue = append(x.queue, reply{kind: rSynth, msg: appendMsg(nil, msg)})
}

func (s *session) extParse(ctx context.Context, body []byte) error {
	var m pgproto3.Parse
	if err := m.Decode(body); err != nil {
		return protocolErr("malformed Parse message")
	}
	x := s.x
	if m.Name != "" {
		if _, dup := x.stmts[m.Name]; dup {
			return &pgError{code: pgerrcode.DuplicatePreparedStatement, msg: fmt.Sprintf("prepared statement \"%s\" already exists", m.Name)}
		}
	}
	ps := &prepared{query: m.Query, oids: m.ParameterOIDs}
	stmts, err := s.srv.cache.Parse(m.Query)
	switch {
	case err == parser.ErrEmpty:
	case err != nil:
		return s.shardParseError(ctx, m.Query, err) // syntax.go
	case len(stmts) > 1:
		return &pgError{code: pgerrcode.SyntaxError, msg: "cannot insert multiple commands into a prepared statement"}
	default:
		ps.st = stmts[0]
	}
	if s.status == 'E' && ps.st != nil && !allowedWhenFailed(ps.st) {
		return inFailedTx() // Postgres refuses it at Parse
	}
	ps.global = s.srv.globalName(m.Query, m.ParameterOIDs)
	s.changeStmt(m.Name, ps, &pgproto3.ParseComplete{}) // extskip.go
	return nil
}

func (s *session) lookupStmt(name string) (*prepared, error) {
	ps, ok := s.x.stmts[name]
	if !ok {
		return nil, &pgError{code: pgerrcode.InvalidSQLStatementName, msg: fmt.Sprintf("prepared statement \"%s\" does not exist", name)}
	}
	return ps, nil
}

// local reports whether a statement is answered by the proxy itself
// (transaction control, SET, empty queries) rather than by a shard.
func local(ps *prepared) bool {
	if ps.st == nil || ps.st.Kind == parser.Transaction || ps.st.Kind == parser.Set {
		return true
	}
	_, _, dealloc := ps.st.Deallocate()
	_, _, listen := ps.st.Listen() // listen.go
	return dealloc || listen
}

func (s *session) extBind(ctx context.Context, body []byte) error {
	var m pgproto3.Bind
	if err := m.Decode(body); err != nil {
		return protocolErr("malformed Bind message")
	}
	x := s.x
	ps, err := s.lookupStmt(m.PreparedStatement)
	if err != nil {
		return err
	}
	// The decoded message aliases the read buffer: keep a copy.
	bind := &pgproto3.Bind{DestinationPortal: m.DestinationPortal, PreparedStatement: ps.global,
		ParameterFormatCodes: append([]int16(nil), m.ParameterFormatCodes...),
		ResultFormatCodes:    append([]int16(nil), m.ResultFormatCodes...)}
	bind.Parameters = make([][]byte, len(m.Parameters))
	for i, p := range m.Parameters {
		if p != nil {
			bind.Parameters[i] = bytes.Clone(p)
		}
	}
	p := &portal{ps: ps, bind: bind}
	s.closePortalCursor(x.portals[m.DestinationPortal]) // mcursor.go
	x.portals[m.DestinationPortal] = p
	s.q.st = ps.st
	if local(ps) {
		if len(m.Parameters) > 0 && ps.st != nil && ps.st.Kind == parser.Set {
			return refused("SET with parameters is not supported", "Send SET with literal values.")
		}
		s.emit(&pgproto3.BindComplete{})
		return nil
	}
	if s.status == 'E' {
		// Even where the shards' transactions are open (the proxy raised
		// the error), nothing runs until the transaction ends.
		return inFailedTx()
	}
	if err := s.sessionState(ps.st); err != nil {
		return err
	}
	if took, err := s.bindDeclare(p); took { // mcursor.go
		return err
	}
	plan, err := s.route(ps.st, bindParams{ps: ps, b: bind})
	if err != nil {
		if took, cerr := s.bindOnCoordinator(ctx, p, err); took {
			return cerr
		}
		return err
	}
	p.plan = plan
	s.q.plan = plan
	s.boundSessionSQL(ps.st, plan) // reserve.go
	if ps.st.Kind == parser.DDL {
		// Column collations and order are reread once the DDL is done.
		x.ddl = true
	}
	s.rc.touch(ps.st)
	scatter := (!plan.Single() || len(plan.KeyGuard) > 0) && !s.anywhere(ps.st)
	if plan.SQL != nil && !scatter {
		return refused("a statement rewritten per shard (a multi-row INSERT split over shards, a cross-shard merge) is not supported here in the extended protocol yet",
			"Send it with the simple protocol, or add a shard key predicate.")
	}
	if s.extShare(p, scatter) { // extcache.go: the result cache may answer it
		return nil
	}
	if s.pipelineWantsTx(ps.st, ps.st.Writes || plan.Write, scatter) { // pipetx.go
		if err := s.pipelineTx(ctx); err != nil {
			return err
		}
	}
	if scatter {
		if s.status != 'I' {
			if err := s.txWrites(ps.st, plan); err != nil {
				return err
			}
		} else if ps.st.Writes || plan.Write {
			// Outside a transaction the shards' parts commit together:
			// refuse now if they cannot.
			if err := s.srv.twoPhaseUnavailable(); err != nil {
				return err
			}
		}
		p.scatter = true
		s.emit(&pgproto3.BindComplete{})
		return nil
	}
	b, err := s.extBackend(ctx, ps.st, plan)
	if err != nil {
		return err
	}
	s.ensurePrepared(b, ps)
	x.wbuf = appendMsg(x.wbuf, bind)
	x.queue = append(x.queue, reply{kind: rPass})
	if ps.st.Writes {
		x.writes = true
	}
	p.where = b
	return nil
}

func inFailedTx() error {
	return &pgError{code: pgerrcode.InFailedSQLTransaction,
		msg: "current transaction is aborted, commands ignored until end of transaction block"}
}

// extBackend returns the backend a statement with this plan runs on within
// the current request, switching backends between statements when they
// route to different shards outside a transaction.
func (s *session) extBackend(ctx context.Context, st *parser.Statement, plan *router.Plan) (*backend, error) {
	x := s.x
	s.noteWrite(st) // replicas.go: read-your-writes
	if s.status != 'I' {
		if s.tx != nil && s.anywhere(st) {
			if err := s.switchBackend(s.tx); err != nil {
				return nil, err
			}
			return s.tx, nil
		}
		if !plan.Single() {
			return nil, refused("a statement on several shards inside a transaction is not supported in the extended protocol yet",
				"Add a shard key predicate, or send it with the simple protocol.")
		}
		if err := s.txWrites(st, plan); err != nil {
			return nil, err
		}
		if x.cur != nil && x.cur.pool.shard != plan.Shards[0] {
			// Another of the transaction's shards: finish this part with
			// a Sync (inside BEGIN it commits nothing).
			if err := s.extRelease(); err != nil {
				return nil, err
			}
			if x.errored {
				return nil, errSkipped // pipetx.go
			}
		}
		b, err := s.txOn(ctx, plan.Shards[0])
		if err != nil {
			return nil, err
		}
		if err := s.switchBackend(b); err != nil {
			return nil, err
		}
		return b, nil
	}
	target := plan.Shards[0]
	if x.cur != nil {
		if (s.anywhere(st) || (plan.Single() && plan.Shards[0] == x.cur.pool.shard)) && (!x.cur.pool.reads || readOnly(st)) {
			return x.cur, nil
		}
		// Another shard (or a replica's reads before a write): finish this
		// part of the request on its backend. Its implicit transaction
		// commits separately, which is only safe when neither part writes;
		// otherwise the request becomes one transaction (pipetx.go).
		if s.pipelineWantsTx(st, st.Writes, false) {
			if err := s.pipelineTx(ctx); err != nil {
				return nil, err
			}
			return s.extBackend(ctx, st, plan)
		}
		if err := s.extRelease(); err != nil {
			return nil, err
		}
		if x.errored {
			return nil, errSkipped // pipetx.go
		}
	}
	b, err := s.leaseFor(ctx, st, target) // replicas.go: a read may go to a replica
	if err != nil {
		return nil, err
	}
	s.useBackend(b)
	return b, nil
}

// switchBackend makes b the current backend of a request in a
// transaction. The part of the request queued for the backend in use
// (another of the transaction's shards, or one outside it that described a
// statement) is finished first, with a Sync (inside BEGIN it commits
// nothing) and its replies relayed; useBackend alone would drop it, its
// messages never sent and their replies missing for the client, whose
// Flush then waits forever. errSkipped: that part failed, and the rest of
// the request is skipped until Sync.
func (s *session) switchBackend(b *backend) error {
	x := s.x
	if x.cur != nil && x.cur != b {
		if err := s.extRelease(); err != nil {
			return err
		}
		if x.errored {
			return errSkipped
		}
	}
	s.useBackend(b)
	return nil
}

func (s *session) useBackend(b *backend) {
	x := s.x
	if x.cur != b {
		x.cur = b
		x.queue = x.queue[:0]
		x.wbuf = x.wbuf[:0]
	}
}

// ensurePrepared injects a Parse for ps when the backend lacks it.
func (s *session) ensurePrepared(b *backend, ps *prepared) {
	if b.stmts[ps.global] {
		return
	}
	if b.stmts == nil {
		b.stmts = map[string]bool{}
	}
	b.stmts[ps.global] = true
	s.x.wbuf = appendMsg(s.x.wbuf, &pgproto3.Parse{Name: ps.global, Query: ps.query, ParameterOIDs: ps.oids})
	r := reply{kind: rDrop, parsed: ps.global}
	s.parseInPlace(b, ps, &r) // extskip.go: the backend may answer the client's Parse
	s.x.queue = append(s.x.queue, r)
}

func (s *session) extDescribe(ctx context.Context, body []byte) error {
	var m pgproto3.Describe
	if err := m.Decode(body); err != nil {
		return protocolErr("malformed Describe message")
	}
	x := s.x
	if x.pend != nil && (m.ObjectType != 'P' || x.portals[m.Name] != x.pend) {
		if err := s.extUnshare(ctx); err != nil { // extcache.go: a held Bind goes first
			return err
		}
	}
	if m.ObjectType == 'S' {
		ps, err := s.lookupStmt(m.Name)
		if err != nil {
			return err
		}
		if local(ps) {
			s.emit(&pgproto3.ParameterDescription{ParameterOIDs: ps.oids})
			s.emit(&pgproto3.NoData{})
			return nil
		}
		b := x.cur
		if b == nil || !s.anywhereFor(ps, b) {
			// Any shard that holds the tables can describe the statement:
			// sharded and reference tables are on all of them, others on
			// the default shard.
			one := &router.Plan{Shards: []int{s.srv.router.Topology().Default}}
			if plan, err := s.srv.router.Route(ps.st, nil); err == nil {
				one.Shards = plan.Shards[:1]
			}
			if s.tx != nil {
				one.Shards = []int{s.tx.pool.shard}
			}
			if b, err = s.extBackendForDescribe(ctx, ps.st, one); err != nil {
				return err
			}
		}
		s.ensurePrepared(b, ps)
		x.wbuf = appendMsg(x.wbuf, &pgproto3.Describe{ObjectType: 'S', Name: ps.global})
		x.queue = append(x.queue, reply{kind: rDescribe, ps: ps})
		return nil
	}
	p, ok := x.portals[m.Name]
	if !ok {
		if s.describeCursor(m.Name) { // mcursor.go
			return nil
		}
		return &pgError{code: pgerrcode.InvalidCursorName, msg: fmt.Sprintf("portal \"%s\" does not exist", m.Name)}
	}
	if s.describeDeclare(p) { // mcursor.go
		return nil
	}
	if local(p.ps) {
		s.emit(&pgproto3.NoData{})
		return nil
	}
	if took, err := s.extDescribeShared(ctx, p); took || err != nil { // extcache.go
		return err
	}
	if p.scatter {
		return s.describeScatter(ctx, p)
	}
	if p.where != x.cur {
		return &pgError{code: pgerrcode.InvalidCursorName, msg: fmt.Sprintf("portal \"%s\" does not exist", m.Name)}
	}
	x.wbuf = appendMsg(x.wbuf, &pgproto3.Describe{ObjectType: 'P', Name: m.Name})
	x.queue = append(x.queue, reply{kind: rDescribe})
	return nil
}

// anywhereFor reports whether backend b can describe ps.
func (s *session) anywhereFor(ps *prepared, b *backend) bool {
	if s.tx != nil {
		return b == s.tx
	}
	if s.anywhere(ps.st) {
		return true
	}
	plan, err := s.srv.router.Route(ps.st, nil)
	return err == nil && len(plan.Shards) > 0 && containsInt(plan.Shards, b.pool.shard)
}

func containsInt(xs []int, v int) bool {
	for _, x := range xs {
		if x == v {
			return true
		}
	}
	return false
}

func (s *session) extBackendForDescribe(ctx context.Context, st *parser.Statement, plan *router.Plan) (*backend, error) {
	// Inside a transaction not yet bound to a shard, describing must not
	// bind it: use a backend outside the transaction.
	if s.status != 'I' && s.tx == nil {
		if s.x.cur != nil {
			return s.x.cur, nil
		}
		b, err := s.lease(ctx, plan.Shards[0])
		if err != nil {
			return nil, err
		}
		s.useBackend(b)
		return b, nil
	}
	// Describing reads nothing: it may share the request's backend even
	// across shards' implicit transactions.
	saved := s.x.writes
	s.x.writes = false
	b, err := s.extBackend(ctx, &parser.Statement{Kind: parser.Select}, plan)
	s.x.writes = saved
	return b, err
}

func (s *session) extExecute(ctx context.Context, body []byte) error {
	var m pgproto3.Execute
	if err := m.Decode(body); err != nil {
		return protocolErr("malformed Execute message")
	}
	x := s.x
	p, ok := x.portals[m.Portal]
	if x.pend != nil && x.pend != p {
		if err := s.extUnshare(ctx); err != nil { // extcache.go: a held Bind goes first
			return err
		}
	}
	if !ok {
		return &pgError{code: pgerrcode.InvalidCursorName, msg: fmt.Sprintf("portal \"%s\" does not exist", m.Portal)}
	}
	if local(p.ps) {
		if p.ps.st == nil {
			s.emit(&pgproto3.EmptyQueryResponse{})
			return nil
		}
		// Transaction control and SET run as in the simple protocol, after
		// the replies already due.
		if err := s.extFlush(false); err != nil {
			return err
		}
		if x.errored {
			return nil
		}
		if s.status == 'E' && !allowedWhenFailed(p.ps.st) {
			return inFailedTx()
		}
		cur := x.cur
		if cur != nil && cur != s.tx && p.ps.st.Kind == parser.Transaction && p.ps.st.Tx == parser.Begin {
			// BEGIN after statements of this request: Postgres turns the
			// implicit transaction into the explicit one on that backend.
			s.beginTx(p.ps.st.SQL)
			s.tx = cur
			if x.writes {
				s.markWrote(cur.pool.shard)
			}
			s.txPrelude = s.txPrelude[:0]
			x.wbuf = appendMsg(x.wbuf[:0], &pgproto3.Query{String: p.ps.st.SQL})
			x.queue = append(x.queue[:0], reply{kind: rSync})
			if err := s.extFlush(false); err != nil {
				return err
			}
			s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("BEGIN")})
			return nil
		}
		if name, all, ok := p.ps.st.Deallocate(); ok {
			s.deallocate(name, all)
			return nil
		}
		if _, _, ok := p.ps.st.Listen(); ok {
			return s.listenStmt(ctx, p.ps.st) // listen.go
		}
		if p.ps.st.Kind == parser.Transaction && p.ps.st.Tx == parser.Begin && !p.ps.st.HasTxOptions() && s.beginInPipeline(p.ps.st.BeginTag()) {
			return nil // pipetx.go
		}
		if p.ps.st.Kind == parser.Transaction {
			if err := chainOutside(p.ps.st, s.status); err != nil { // txn.go
				return err
			}
			x.implicitTx = false // pipetx.go: COMMIT/ROLLBACK end it themselves
			wasTx := x.cur != nil && s.inTx(x.cur)
			err := s.transaction(ctx, p.ps.st)
			if wasTx && s.tx == nil {
				x.cur = nil // released by COMMIT/ROLLBACK
			}
			return err
		}
		return s.set(ctx, p.ps.st)
	}
	if took, err := s.extExecuteShared(ctx, p, m.MaxRows); took || err != nil { // extcache.go
		return err
	}
	if p.decl != nil || p.cmd != nil {
		return s.executeDeclare(ctx, p) // mcursor.go
	}
	if p.scatter {
		return s.executeScatter(ctx, p, m.MaxRows)
	}
	if p.where != x.cur && !s.resumePortal(p) { // reserve.go
		return &pgError{code: pgerrcode.InvalidCursorName, msg: fmt.Sprintf("portal \"%s\" does not exist", m.Portal)}
	}
	x.wbuf = appendMsg(x.wbuf, &pgproto3.Execute{Portal: m.Portal, MaxRows: m.MaxRows})
	x.queue = append(x.queue, reply{kind: rExecute})
	return nil
}

func (s *session) extClose(body []byte) error {
	var m pgproto3.Close
	if err := m.Decode(body); err != nil {
		return protocolErr("malformed Close message")
	}
	x := s.x
	if m.ObjectType == 'S' {
		// Only the client's view goes: the backend statement may serve
		// other clients.
		s.changeStmt(m.Name, nil, &pgproto3.CloseComplete{}) // extskip.go
		return nil
	}
	p, ok := x.portals[m.Name]
	delete(x.portals, m.Name)
	s.closePortalCursor(p) // mcursor.go
	if ok && p.where != nil && p.where == x.cur {
		x.wbuf = appendMsg(x.wbuf, &pgproto3.Close{ObjectType: 'P', Name: m.Name})
		x.queue = append(x.queue, reply{kind: rPass})
		return nil
	}
	s.emit(&pgproto3.CloseComplete{})
	return nil
}

// extFlush writes what is buffered for the current backend and relays the
// replies due so far. With client set, the client asked for Flush.
func (s *session) extFlush(client bool) error {
	x := s.x
	if x.cur != nil && len(x.queue) > 0 {
		if !x.errored && x.queue[len(x.queue)-1].kind != rSync {
			x.wbuf = appendMsg(x.wbuf, &pgproto3.Flush{})
		}
		if err := s.relayQueue(); err != nil {
			return err
		}
	}
	if client {
		return s.flush()
	}
	return nil
}

// extSync ends a request: the current backend gets Sync, replies are
// relayed, and the backend goes back to the pool unless a transaction holds it.
func (s *session) extSync(ctx context.Context) error {
	x := s.ext()
	if x.cur != nil {
		x.wbuf = appendMsg(x.wbuf, &pgproto3.Sync{})
		x.queue = append(x.queue, reply{kind: rSync})
		if err := s.relaySync(ctx); err != nil { // extretry.go: 25006 after a failover
			return err
		}
		if err := s.extRelease(); err != nil {
			return err
		}
	}
	if s.status == 'T' && x.errored {
		// Any error of the request aborts the transaction, the proxy's
		// own and a shard's that the backend in use did not see (a
		// cross-shard Describe's).
		s.status = 'E'
	}
	if err := s.pipelineEnd(ctx, x.errored); err != nil { // pipetx.go
		return err
	}
	x.errored = false
	x.writes = false
	x.lastParse = parseAnswer{}
	if x.ddl {
		x.ddl = false
		if s.status == 'I' {
			s.srv.refreshCollations(context.Background())
		} else {
			s.ddlInTx = true
		}
	}
	// Unnamed portals and, outside a transaction, all portals end here.
	if s.status == 'I' {
		for k := range x.portals {
			delete(x.portals, k)
		}
	}
	return s.readyForQuery()
}

// extRelease finishes the current backend's part of the request (with a
// Sync if it has unsynced work) and returns it to the pool unless it holds
// the session's transaction.
func (s *session) extRelease() error {
	x := s.x
	b := x.cur
	if b == nil {
		return nil
	}
	if len(x.queue) > 0 && x.queue[len(x.queue)-1].kind != rSync {
		x.wbuf = appendMsg(x.wbuf, &pgproto3.Sync{})
		x.queue = append(x.queue, reply{kind: rSync})
	}
	if len(x.queue) > 0 {
		if err := s.relayQueue(); err != nil {
			return err
		}
	}
	x.cur = nil
	if b == s.tx && b.txStatus == 'I' && len(s.txMore) == 0 {
		// The request ended the transaction on its own backend (a
		// pipeline that began and committed).
		s.tx, s.status = nil, 'I'
		s.wrote = s.wrote[:0]
		s.savepoints, s.txSets = s.savepoints[:0], s.txSets[:0]
		if s.tempInTx {
			b.discard, s.tempInTx = true, false
		}
		s.release(b)
		return nil
	}
	if s.inTx(b) {
		if b.txStatus == 'E' {
			s.status = 'E'
		} else if b == s.tx {
			s.status = txMerge(s.status, b.txStatus)
		}
		return nil
	}
	for k, p := range x.portals {
		if p.where == b {
			delete(x.portals, k)
		}
	}
	s.coordinatorReleased(b)
	s.release(b)
	return nil
}

// relayQueue writes the buffer to the current backend and relays replies
// for every queued entry.
func (s *session) relayQueue() error {
	x := s.x
	b := x.cur
	s.rs.relays++ // replicas.go
	sent := time.Now()
	defer s.shardDone(b, sent)
	if len(x.wbuf) > 0 {
		if _, err := b.conn.Write(x.wbuf); err != nil {
			b.broken = true
			x.wbuf, x.queue = x.wbuf[:0], x.queue[:0]
			x.errored = true
			s.fail(&shardError{shard: b.pool.name, err: err})
			return nil
		}
		x.wbuf = x.wbuf[:0]
	}
	q := x.queue
	x.queue = x.queue[:0]
	for _, r := range q {
		if x.errored && r.kind != rSync {
			// Postgres skips everything after an error until Sync: a
			// Parse queued there never ran.
			if r.parsed != "" {
				delete(b.stmts, r.parsed)
			}
			if r.stmt != nil {
				s.undoStmt(r.stmt, false) // extskip.go
			}
			continue
		}
		if r.kind == rSynth {
			s.out = append(s.out, r.msg...)
			continue
		}
		if err := s.relayOne(b, r); err != nil {
			return err
		}
		if b.broken {
			return nil
		}
	}
	return nil
}

// errOutOfSync: a backend's ReadyForQuery came before replies the
// proxy still expected in its group (08006: the connection is closed).
var errOutOfSync = errors.New("protocol out of sync: ReadyForQuery before the replies due")

// fatalError reports whether an ErrorResponse body is FATAL or PANIC:
// the server closes the connection after it.
func fatalError(body []byte) bool {
	for len(body) > 1 && body[0] != 0 {
		f := body[0]
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			return false
		}
		if v := body[1 : 1+end]; (f == 'V' || f == 'S') && (string(v) == "FATAL" || string(v) == "PANIC") {
			return true
		}
		body = body[2+end:]
	}
	return false
}

// relayOne reads and relays the replies for one queued entry.
func (s *session) relayOne(b *backend, r reply) error {
	x := s.x
	for {
		typ, body, raw, err := b.rd.next()
		if err != nil {
			b.broken = true
			x.errored = true
			s.fail(&shardError{shard: b.pool.name, err: err})
			if b == s.tx {
				s.status = 'E'
			}
			return nil
		}
		switch typ {
		case 'N', 'A':
			s.out = append(s.out, raw...)
			continue
		case 'S':
			noteStatus(b, body)
			s.out = append(s.out, raw...)
			continue
		case 'E':
			s.out = append(s.out, raw...)
			s.q.shardFailed(body)
			x.errored = true
			if r.parsed != "" {
				// The injected Parse failed: the backend lacks the statement.
				delete(b.stmts, r.parsed)
			}
			if r.stmt != nil {
				s.undoStmt(r.stmt, true) // extskip.go: the client's Parse failed
			}
			if fatalError(body) {
				// The server ends the connection (terminated, shutting
				// down): nothing more comes, not even ReadyForQuery.
				b.broken = true
				if b == s.tx {
					s.status = 'E'
				}
				return nil
			}
			if r.kind != rSync {
				return nil
			}
			continue
		case 'Z':
			b.txStatus = body[0]
			if b == s.tx {
				s.status = txMerge(s.status, body[0])
			}
			if r.kind != rSync {
				// The backend ended the group before answering r: the
				// replies due for the rest of it will never come, and
				// reading on would wait forever. The connection's replies
				// no longer line up with the proxy's queue: close it.
				b.broken = true
				x.errored = true
				s.fail(&shardError{shard: b.pool.name, err: errOutOfSync})
				if b == s.tx {
					s.status = 'E'
				}
			}
			return nil
		}
		switch r.kind {
		case rDrop:
			return nil
		case rPass:
			s.out = append(s.out, raw...)
			return nil
		case rDescribe:
			s.out = append(s.out, raw...)
			if typ == 't' {
				if r.ps != nil {
					var pd pgproto3.ParameterDescription
					if pd.Decode(body) == nil {
						r.ps.described = append([]uint32(nil), pd.ParameterOIDs...)
					}
				}
				continue
			}
			return nil
		case rExecute:
			s.out = append(s.out, raw...)
			if typ == 'D' {
				if len(s.out) >= flushAt {
					if err := s.flush(); err != nil {
						b.broken = true
						return err
					}
				}
				continue
			}
			if typ == 'C' {
				s.q.tag(body)
			}
			return nil // C, I or s
		case rSync:
			// Stray replies before ReadyForQuery are relayed.
			s.out = append(s.out, raw...)
		}
	}
}

// globalName names a statement on backends by its text and parameter types.
func (srv *Server) globalName(query string, oids []uint32) string {
	key := query
	if len(oids) > 0 {
		var sb strings.Builder
		sb.WriteString(query)
		for _, o := range oids {
			sb.WriteByte(0)
			sb.WriteString(strconv.FormatUint(uint64(o), 10))
		}
		key = sb.String()
	}
	srv.stmtMu.Lock()
	defer srv.stmtMu.Unlock()
	if n, ok := srv.stmtNames[key]; ok {
		return n
	}
	n := "sp_" + strconv.Itoa(len(srv.stmtNames)+1)
	srv.stmtNames[key] = n
	return n
}

// bindParams exposes a Bind's parameters to the router as text.
type bindParams struct {
	ps *prepared
	b  *pgproto3.Bind
}

func (p bindParams) Text(n int) (string, bool, bool) {
	i := n - 1
	if i < 0 || i >= len(p.b.Parameters) {
		return "", false, false
	}
	v := p.b.Parameters[i]
	if v == nil {
		return "", true, true
	}
	format := int16(0)
	switch len(p.b.ParameterFormatCodes) {
	case 0:
	case 1:
		format = p.b.ParameterFormatCodes[0]
	default:
		if i < len(p.b.ParameterFormatCodes) {
			format = p.b.ParameterFormatCodes[i]
		}
	}
	if format == 0 {
		return string(v), false, true
	}
	var oid uint32
	if i < len(p.ps.oids) {
		oid = p.ps.oids[i]
	}
	if oid == 0 && i < len(p.ps.described) {
		oid = p.ps.described[i]
	}
	s, ok := binaryText(oid, v)
	return s, false, ok
}

var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// binaryText renders a binary parameter of the types that can be shard
// keys as the text Postgres would read.
func binaryText(oid uint32, v []byte) (string, bool) {
	switch oid {
	case 20:
		if len(v) == 8 {
			return strconv.FormatInt(int64(binary.BigEndian.Uint64(v)), 10), true
		}
	case 23:
		if len(v) == 4 {
			return strconv.FormatInt(int64(int32(binary.BigEndian.Uint32(v))), 10), true
		}
	case 21:
		if len(v) == 2 {
			return strconv.FormatInt(int64(int16(binary.BigEndian.Uint16(v))), 10), true
		}
	case 25, 1043, 1042, 19, 705:
		return string(v), true
	case 1184, 1114:
		if len(v) == 8 {
			us := int64(binary.BigEndian.Uint64(v))
			if us == 1<<63-1 || us == -1<<63 {
				return "", false // infinity
			}
			t := pgEpoch.Add(time.Duration(us) * time.Microsecond)
			if oid == 1114 {
				return t.Format("2006-01-02 15:04:05.999999"), true
			}
			return t.Format("2006-01-02 15:04:05.999999Z07:00"), true
		}
	case 1082:
		if len(v) == 4 {
			d := int32(binary.BigEndian.Uint32(v))
			return pgEpoch.AddDate(0, 0, int(d)).Format("2006-01-02"), true
		}
	}
	return "", false
}
