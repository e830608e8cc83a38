package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/fanout"
	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// flushAt is how much reply data is buffered before writing to the client
// mid-result; small replies go out in one write at ReadyForQuery.
const flushAt = 64 << 10

// session is one client connection. One goroutine runs it: it reads a
// request, leases backends, writes the request, reads the replies itself and
// answers the client, so a point query costs about four syscalls.
type session struct {
	// txState is the client's transaction (txn.go).
	txState
	// sqlStmts are the session's SQL prepared statements, by name
	// (sqlprepare.go).
	sqlStmts map[string]*sqlStmt
	// around is run before and after the statements exec sends while
	// it is set (sqlprepuse.go).
	around *around
	// execPos: an EXECUTE's bound statement runs (sqlprepuse.go).
	execPos *execPos
	// copyTo formats merged rows while a COPY (query) TO runs (copymerge.go).
	copyTo *copyTo
	// fenceWrote: shards first written under a cutover fence (fencemove.go).
	fenceWrote fenceWrites

	srv  *Server
	conn net.Conn
	rd   *frameReader
	out  []byte

	user, database string
	pid            uint32
	secret         [4]byte

	// sets are the session's SET commands, replayed on every leased backend.
	sets []setting
	// state is the rest of the session-state bookkeeping (sessionstate.go).
	state sessionState

	mu     sync.Mutex
	leased []*backend // backends running this session's request, for cancel

	// x is the extended-protocol state, made on first use.
	x *extState
	// shardHint is the session's SET shardproxy.shard (routing hint);
	// hintLocal says it came from SET LOCAL and ends with the transaction.
	shardHint string
	hintLocal bool
	q         queryRecord // observe.go: the running statement, for logs, metrics and SHOW CLIENTS

	rs  replicaState  // replicas.go: read-your-writes
	rc  readCache     // results.go: result cache and consolidation
	tls *tlsState     // tls.go: set once the client is on TLS
	lim sessionLimits // limits.go
	// role is the backend role of the user, nil for the DSN's (roles.go).
	role *backendRole
	rsv  reserveState // reserve.go: backends kept for the client
	mc   cursorState  // mcursor.go: cross-shard cursors
	ntf  *listenState // listen.go: LISTEN, nil until the first
	// notified: the open transaction ran NOTIFY or pg_notify (listen.go).
	notified bool
	cw       clientWatch // clientwatch.go: a client gone mid-statement
}

type setting struct{ name, sql string }

func (s *session) flush() error {
	if len(s.out) == 0 {
		return nil
	}
	_, err := s.conn.Write(s.out)
	s.out = s.out[:0]
	s.rs.flushes++
	s.rc.flushes++
	return err
}

func (s *session) readyForQuery() error {
	s.awaitCancels()  // cancelwait.go
	s.settleCursors() // mcursor.go
	s.settle()
	s.settleWrites() // ryw.go
	s.srv.obs.finish(s)
	s.state.capture, s.state.touched = false, false
	s.settleReserve()
	if s.status == 'I' {
		s.state.txSet = false
	}
	s.out = append(s.out, 'Z', 0, 0, 0, 5, s.status)
	if s.ntf != nil {
		return s.flushListening() // listen.go: notifications go before ReadyForQuery
	}
	return s.flush()
}

func (s *session) sendError(err error) {
	r := errorResponse(err)
	s.q.failed(r.Code)
	s.out = appendMsg(s.out, r)
}

// run performs the startup handshake, then serves requests until the client
// leaves.
func (s *session) run(ctx context.Context) error {
	if err := s.startup(); err != nil {
		var pe *pgError
		var af errAuthFailed
		if errors.As(err, &pe) || errors.As(err, &af) {
			r := errorResponse(err)
			r.Severity, r.SeverityUnlocalized = "FATAL", "FATAL"
			s.out = appendMsg(s.out, r)
			s.flush()
		}
		return err
	}
	for {
		typ, body, raw, err := s.nextRequest()
		if err != nil {
			return err
		}
		s.listenBusy() // listen.go
		switch typ {
		case 'Q':
			if err := s.simpleQuery(ctx, string(bytes.TrimRight(body, "\x00"))); err != nil {
				return err
			}
		case 'X':
			return nil
		case 'P', 'B', 'D', 'E', 'C', 'H', 'S':
			if err := s.extended(ctx, typ, body); err != nil {
				return err
			}
		case 'F':
			if err := s.functionCall(ctx, raw); err != nil {
				return err
			}
		case 'd', 'c', 'f':
			// Stray COPY data after a refused COPY: ignore, as Postgres does.
		default:
			s.sendError(protocolErr("unexpected message type %q", typ))
			s.flush()
			return fmt.Errorf("unexpected message %q", typ)
		}
	}
}

// startup reads the startup packet (answering SSL/GSS requests with 'N'),
// checks database and user, authenticates, and sends the session's
// parameters, key data and first ReadyForQuery.
func (s *session) startup() error {
	if s.directTLS() {
		if err := s.acceptDirect(); err != nil {
			return err
		}
	}
	for {
		body, err := s.rd.startup()
		if err != nil {
			return err
		}
		code := binary.BigEndian.Uint32(body[:4])
		switch code {
		case 80877103: // SSLRequest
			if err := s.sslRequest(); err != nil {
				return err
			}
			continue
		case 80877104: // GSSENCRequest
			if _, err := s.conn.Write([]byte{'N'}); err != nil {
				return err
			}
			continue
		case 80877102: // CancelRequest
			if len(body) >= 12 {
				s.srv.cancel(binary.BigEndian.Uint32(body[4:8]), body[8:])
			}
			return errors.New("cancel request handled")
		}
		if code>>16 != 3 {
			return protocolErr("unsupported frontend protocol %d.%d: server supports 3.0", code>>16, code&0xffff)
		}
		var sm pgproto3.StartupMessage
		if err := sm.Decode(body); err != nil {
			return protocolErr("invalid startup packet")
		}
		var unknown []string
		for k := range sm.Parameters {
			if strings.HasPrefix(k, "_pq_.") {
				unknown = append(unknown, k)
			}
		}
		if code&0xffff > 0 || len(unknown) > 0 {
			s.out = appendMsg(s.out, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknown})
		}
		return s.login(sm.Parameters)
	}
}

func (s *session) login(params map[string]string) error {
	s.user = params["user"]
	s.database = params["database"]
	if s.user == "" {
		return &pgError{code: pgerrcode.InvalidAuthorizationSpecification, msg: "no PostgreSQL user name specified in startup packet"}
	}
	if s.database == "" {
		s.database = s.user
	}
	cred, ok := s.srv.credential(s.user)
	if !ok {
		// Postgres answers an unknown role like a wrong password once it
		// has asked for one; we answer at once, as PgBouncer does.
		return &pgError{code: pgerrcode.InvalidAuthorizationSpecification, msg: fmt.Sprintf("role \"%s\" does not exist", s.user)}
	}
	if s.database != s.srv.cfg.Database && s.database != adminDatabase {
		return &pgError{code: pgerrcode.InvalidCatalogName, msg: fmt.Sprintf("database \"%s\" does not exist", s.database),
			hint: fmt.Sprintf("This shardproxy serves database \"%s\".", s.srv.cfg.Database)}
	}
	if err := s.checkTransport(cred); err != nil {
		return err
	}
	if err := s.admit(cred); err != nil {
		return err
	}
	if err := s.authenticate(cred); err != nil {
		return err
	}
	if err := s.loggedIn(); err != nil {
		return err
	}
	if err := s.checkRole(); err != nil { // roles.go
		return err
	}
	s.out = appendMsg(s.out, &pgproto3.AuthenticationOk{})
	reported, err := s.startupSettings(params)
	if err != nil {
		return err
	}
	for k, v := range s.srv.defaultParams() {
		if rv, ok := reported[strings.ToLower(k)]; ok {
			v = rv
		}
		s.out = appendMsg(s.out, &pgproto3.ParameterStatus{Name: k, Value: v})
	}
	s.out = appendMsg(s.out, &pgproto3.ParameterStatus{Name: "session_authorization", Value: s.user})
	app := params["application_name"]
	if v, ok := reported["application_name"]; ok {
		app = v
	}
	s.out = appendMsg(s.out, &pgproto3.ParameterStatus{Name: "application_name", Value: app})
	s.pid = s.srv.nextPID.Add(1)
	rand.Read(s.secret[:])
	s.srv.sessions.Store(s.pid, s)
	s.out = appendMsg(s.out, &pgproto3.BackendKeyData{ProcessID: s.pid, SecretKey: s.secret[:]})
	return s.readyForQuery()
}

// cleanup returns or closes every backend the session still holds. A
// backend left mid-transaction is closed, never pooled.
func (s *session) cleanup() {
	s.leave()
	s.dropCursors()    // mcursor.go
	s.closeListening() // listen.go
	if s.pid != 0 {
		s.srv.sessions.Delete(s.pid)
	}
	if s.x != nil && s.x.cur != nil && s.x.cur != s.tx {
		s.x.cur.broken = true
		s.release(s.x.cur)
		s.x.cur = nil
	}
	for _, b := range s.txMore {
		b.broken = true
		s.release(b)
	}
	s.txMore = nil
	if s.tx != nil {
		s.tx.broken = true
		s.release(s.tx)
		s.tx = nil
	}
	s.releaseReserved()
}

func (s *session) cancelRunning() {
	s.cancelLeased() // cancelwait.go
}

// simpleQuery answers one Query message.
func (s *session) simpleQuery(ctx context.Context, sql string) error {
	if s.q.admin {
		return s.adminQuery(sql)
	}
	s.q.begin()
	// Fast path: queries that differ only in their constants share one
	// parsed template, routed with the constants as parameters. Anything
	// the template cannot do exactly like the full parse (a refusal, a
	// rewrite) takes the full path.
	if s.status != 'E' {
		if st, lits, ok := s.srv.cache.Template(sql); ok && st.Session == parser.NoSessionUse {
			if plan, err := s.route(st, lits); err == nil && plan.SQL == nil {
				s.q.st, s.q.plan = st, plan
				if err := s.routed(ctx, st, sql, plan); err != nil {
					return err
				}
				return s.readyForQuery()
			}
		}
	}
	stmts, err := s.srv.cache.Parse(sql)
	switch {
	case errors.Is(err, parser.ErrEmpty):
		s.out = append(s.out, 'I', 0, 0, 0, 4)
		return s.readyForQuery()
	case err != nil:
		s.fail(s.shardParseError(ctx, sql, err)) // syntax.go
		return s.readyForQuery()
	case len(stmts) > 1:
		if err := s.multi(ctx, stmts, sql); err != nil {
			return err
		}
		return s.readyForQuery()
	}
	if err := s.statement(ctx, stmts[0]); err != nil {
		return err
	}
	return s.readyForQuery()
}

// fail reports err to the client; inside a transaction it aborts it, as a
// failed statement does in Postgres.
func (s *session) fail(err error) {
	s.sendError(err)
	if s.status == 'T' {
		s.status = 'E'
	}
}

// statement runs one statement. A returned error means the client
// connection is unusable; statement errors go to the client.
func (s *session) statement(ctx context.Context, st *parser.Statement) error {
	if s.status == 'E' && !allowedWhenFailed(st) {
		s.sendError(&pgError{code: pgerrcode.InFailedSQLTransaction,
			msg: "current transaction is aborted, commands ignored until end of transaction block"})
		return nil
	}
	s.q.st = st
	if c, ok := st.Copy(); ok {
		return s.copyStatement(ctx, st, c) // copy.go
	}
	if tables, ok := st.Lock(); ok {
		return s.lockTables(ctx, st, tables) // lock.go
	}
	// SQL PREPARE/EXECUTE: the session's statements (sqlprepare.go).
	if took, err := s.sqlPrepareStmt(ctx, st); took {
		return err
	}
	if took, err := s.sqlPreparedUse(ctx, st); took { // sqlprepuse.go
		return err
	}
	switch st.Kind {
	case parser.Transaction:
		return s.transaction(ctx, st)
	case parser.Set:
		return s.set(ctx, st)
	}
	if name, all, ok := st.Deallocate(); ok {
		if !s.deallocateSQL(ctx, name, all) {
			s.deallocate(name, all)
		}
		return nil
	}
	if _, _, ok := st.Listen(); ok {
		return s.listenStmt(ctx, st) // listen.go
	}
	if took, err := s.sessionSQL(ctx, st); took {
		return err
	}
	if err := s.sessionState(st); err != nil {
		s.fail(err)
		return nil
	}
	if st.Kind == parser.Explain {
		if took, err := s.explainScatter(ctx, st); took {
			return err
		}
	}
	plan, err := s.route(st, nil)
	if err != nil {
		if took, cerr := s.onCoordinator(ctx, st, st.SQL, err); took {
			return cerr
		}
		s.fail(err)
		return nil
	}
	s.q.plan = plan
	return s.routed(ctx, st, st.SQL, plan)
}

// routed runs a planned statement; sql is its text as the client sent it
// (st may be the shared template of its shape).
func (s *session) routed(ctx context.Context, st *parser.Statement, sql string, plan *router.Plan) error {
	s.rc.touch(st)
	if st.Kind == parser.DDL {
		// A new column may carry a collation the merge must know.
		if s.status != 'I' {
			s.ddlInTx = true
		} else {
			defer s.srv.refreshCollations(ctx)
		}
	}
	s.noteWrite(st)
	if s.status != 'I' {
		if s.txRead(ctx, st, sql, plan) { // results.go: until_write
			return nil
		}
		return s.inTransaction(ctx, st, sql, plan)
	}
	if st.Kind == parser.Select && !st.Writes && !plan.Write && s.srv.results.Active() && len(s.rsv.on) == 0 {
		return s.sharedRead(ctx, st, sql, plan)
	}
	if plan.Single() && len(plan.KeyGuard) == 0 {
		if s.srv.sets != nil && s.srv.sets[plan.Shards[0]] != nil {
			return s.replicated(ctx, st, plan.Shards[0], sql)
		}
		return s.single(ctx, plan.Shards[0], sql)
	}
	if st.Writes || plan.Write {
		return s.implicitWrite(ctx, st, sql, plan)
	}
	return s.scatter(ctx, st, sql, plan)
}

// anywhere reports whether st may run on whichever shard the session
// already holds: it reads no sharded or unconfigured table and calls no
// function that may read data (those run on the default shard).
func (s *session) anywhere(st *parser.Statement) bool {
	if st.Writes || !st.Portable() {
		return false
	}
	topo := s.srv.router.Topology()
	for _, t := range st.Tables {
		tb := topo.Lookup(t)
		if tb == nil || tb.Strategy != "reference" {
			return false
		}
	}
	return true
}

// set runs SET/RESET. Outside a transaction it is checked on a shard, then
// remembered and replayed on every backend the session leases (transaction
// pooling hands out different backends); inside one it goes to the
// transaction's backend and lasts for the transaction.
func (s *session) set(ctx context.Context, st *parser.Statement) error {
	s.noteSet(st)
	s.rc.dirty = true // results.go: a transaction's SET ends until_write
	if name, local := st.SetName(); strings.HasPrefix(name, "shardproxy.") || name == "all" {
		if handled := s.setHint(name, local, st); handled {
			return nil
		}
	}
	if s.status != 'I' {
		if name, _ := st.SetName(); name == "transaction" {
			// readonly.go: a read-only transaction may run on replicas
			s.noteTxMode(st)
			return s.onShardInTx(ctx, st.SQL) // SET TRANSACTION: modes a shard judges
		}
		if _, local := st.SetName(); !local {
			s.txSets = append(s.txSets, st)
		}
		if s.tx == nil {
			s.txPrelude = append(s.txPrelude, st.SQL)
			tag := "SET"
			if st.IsReset() && !strings.HasPrefix(strings.ToUpper(strings.TrimSpace(st.SQL)), "SET") {
				tag = "RESET"
			}
			s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(tag)})
			return nil
		}
		before := len(s.out)
		err := s.txEverywhere(st.SQL)
		if s.lastWasError(before) {
			if _, local := st.SetName(); !local {
				s.txSets = s.txSets[:len(s.txSets)-1]
			}
		}
		return err
	}
	name, local := st.SetName()
	if local || name == "transaction" {
		// SET LOCAL and SET TRANSACTION outside a transaction only warn
		// in Postgres: nothing to keep for the session.
		return s.single(ctx, 0, st.SQL)
	}
	b, err := s.lease(ctx, 0)
	if err != nil {
		s.fail(err)
		return nil
	}
	before := len(s.out)
	b.dirty = true
	sql := st.SQL
	if st.IsReset() {
		sql += s.resetFallback(name)
	}
	probe := mergedSetting(name) && !st.IsReset()
	if probe {
		sql += ";\n" + probeSQL(name)
	}
	value, err := s.execSet(b, sql, probe)
	s.release(b)
	if err != nil || s.lastWasError(before) {
		return err
	}
	s.setStatement(st, name)
	if probe && value != "" {
		s.keepValue(name, value)
	}
	return nil
}

// lastWasError reports whether an ErrorResponse was written since offset.
func (s *session) lastWasError(offset int) bool {
	return lastMessage(s.out[offset:], 'E') >= 0
}

// lastMessage returns the offset of the last complete message of type typ
// in b (framed backend messages), or -1.
func lastMessage(b []byte, typ byte) int {
	last := -1
	for i := 0; i+5 <= len(b); {
		n := int(binary.BigEndian.Uint32(b[i+1 : i+5]))
		if i+1+n > len(b) {
			break
		}
		if b[i] == typ {
			last = i
		}
		i += 1 + n
	}
	return last
}

// lease takes a backend from shard's pool and prepares it for this session.
func (s *session) lease(ctx context.Context, shard int) (*backend, error) {
	return s.leaseFrom(ctx, s.sessionPool(shard))
}

// release hands a backend back, resetting session state it picked up.
func (s *session) release(b *backend) {
	s.mu.Lock()
	for i, x := range s.leased {
		if x == b {
			s.leased = append(s.leased[:i], s.leased[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	b.cancels.Wait() // cancelwait.go: a late cancel must not meet b's next statement
	if s.cw.gone.Load() {
		b.broken = true // clientwatch.go: canceled for a client that left
	}
	if (s.state.capture || s.state.txSet) && !b.broken && b.txStatus == 'I' && s.status == 'I' && !s.inTx(b) {
		s.captureSettings(b)
	}
	if s.keepReserved(b) { // reserve.go
		return
	}
	b.dirty = b.dirty || s.state.touched
	if b.discard && !b.broken && b.txStatus == 'I' {
		// Temporary tables (and everything else) go; so do prepared
		// statements, which the backend no longer has.
		if err := s.quiet(b, "DISCARD ALL"); err != nil {
			b.broken = true
		}
		b.stmts = nil
		b.discard, b.dirty, b.applied = false, false, ""
	}
	if b.dirty && !b.broken && b.txStatus == 'I' {
		if err := s.quiet(b, s.resetSQL(b)); err != nil || b.txStatus != 'I' {
			b.broken = true
		}
		b.dirty, b.resetRole, b.applied = false, false, ""
	}
	b.pool.release(b)
}

// quiet runs sql on b, discarding the reply; an error reply is returned.
func (s *session) quiet(b *backend, sql string) error {
	if err := b.sendQuery(sql); err != nil {
		return err
	}
	return readQuiet(b)
}

// single runs sql on one shard and relays the reply as raw frames.
func (s *session) single(ctx context.Context, shard int, sql string) error {
	b, err := s.lease(ctx, shard)
	if err != nil {
		s.fail(err)
		return nil
	}
	err = s.exec(b, sql, false)
	s.release(b)
	return err
}

// exec sends sql on b and relays its reply up to ReadyForQuery. A backend
// failure is reported to the client (08006); only a client write failure
// is returned.
func (s *session) exec(b *backend, sql string, inTx bool) error {
	if a := s.around; a != nil {
		return s.execAround(b, sql, inTx, a) // sqlprepuse.go
	}
	sent := time.Now()
	if err := b.sendQuery(sql); err != nil {
		s.fail(err)
		return nil
	}
	for {
		typ, body, raw, err := b.rd.next()
		if err != nil {
			b.broken = true
			s.fail(&shardError{shard: b.pool.name, err: err})
			if inTx {
				s.status = 'E'
			}
			return nil
		}
		switch typ {
		case 'Z':
			b.txStatus = body[0]
			if inTx || s.tx == b {
				s.status = body[0]
			}
			s.shardDone(b, sent)
			return nil
		case 'S':
			noteStatus(b, body)
		case 'C':
			s.q.tag(body)
		case 'E':
			s.q.shardFailed(body)
			if s.execPos != nil {
				raw = s.execPos.error(raw, body) // sqlprepuse.go
			}
		}
		s.out = append(s.out, raw...)
		if len(s.out) >= flushAt {
			if err := s.flush(); err != nil {
				b.broken = true
				s.cancelRunning()
				return err
			}
		}
	}
}

// execTx runs sql on the pinned transaction backend.
func (s *session) execTx(sql string) error {
	return s.exec(s.tx, sql, true)
}

// inTransaction runs a routed statement inside an explicit transaction,
// pinning the transaction to the first shard it touches.
func (s *session) inTransaction(ctx context.Context, st *parser.Statement, sql string, plan *router.Plan) error {
	if s.tx != nil && s.anywhere(st) {
		return s.execTx(sql)
	}
	if err := s.txWrites(st, plan); err != nil {
		s.fail(err)
		return nil
	}
	if plan.Single() && len(plan.KeyGuard) == 0 {
		if s.tx == nil && s.srv.sets != nil {
			return s.firstInTx(ctx, plan.Shards[0], sql) // txretry.go: 25006 after a failover
		}
		b, err := s.txOn(ctx, plan.Shards[0])
		if err != nil {
			s.fail(err)
			return nil
		}
		return s.exec(b, sql, true)
	}
	// A read on several shards: the transaction opens on each of them.
	bs := make([]*backend, 0, len(plan.Shards))
	for _, sh := range plan.Shards {
		b, err := s.txOn(ctx, sh)
		if err != nil {
			s.fail(err)
			return nil
		}
		bs = append(bs, b)
	}
	if err := s.scatterOn(bs, st, sql, plan); err != nil {
		return err
	}
	for _, b := range bs {
		if b.txStatus == 'E' {
			s.status = 'E'
		}
	}
	return nil
}

// txOn returns the transaction's backend on shard, opening the transaction
// there (BEGIN with the same options, savepoints, SET LOCALs) when needed.
func (s *session) txOn(ctx context.Context, shard int) (*backend, error) {
	if s.tx == nil {
		return s.pin(ctx, shard)
	}
	if s.tx.pool.shard == shard {
		return s.tx, nil
	}
	for _, b := range s.txMore {
		if b.pool.shard == shard {
			return b, nil
		}
	}
	saved := s.tx
	b, err := s.pin(ctx, shard)
	s.tx = saved
	if err != nil {
		return nil, err
	}
	s.txMore = append(s.txMore, b)
	return b, nil
}

// pin binds the open transaction to a backend of shard: it leases one and
// replays what the transaction said before its first routed statement
// (BEGIN with its options, SAVEPOINTs, SET LOCALs).
func (s *session) pin(ctx context.Context, shard int) (*backend, error) {
	b, err := s.leaseTx(ctx, shard) // readonly.go: a read-only transaction may use a replica
	if err != nil {
		return nil, err
	}
	for _, q := range s.txPrelude {
		if err := s.quiet(b, q); err != nil {
			b.broken = true
			s.release(b)
			return nil, err
		}
	}
	b.dirty = true
	s.tx = b
	return b, nil
}

func (s *session) shardNames(idx []int) string {
	names := make([]string, len(idx))
	for i, x := range idx {
		names[i] = s.srv.router.Topology().Shards[x].Name
	}
	return strings.Join(names, ",")
}

// scatter runs a statement on several shards at once and merges the replies:
// rows are concatenated (RowDescriptions must agree), command tags summed,
// and plain aggregates combined. Shards run in parallel; replies are read
// shard after shard, so memory stays bounded by one message.
func (s *session) scatter(ctx context.Context, st *parser.Statement, text string, plan *router.Plan) error {
	bs, err := s.leaseAllFor(ctx, st, plan.Shards) // replicas.go: reads may use replicas
	defer s.releaseAll(bs)
	if err != nil {
		s.fail(err)
		return nil
	}
	return s.scatterOn(bs, st, text, plan)
}

// leaseAll leases one backend per shard, in ascending shard order (plans
// list shards ascending), so two sessions never wait on each other's
// pools. On error it returns what it leased; the caller releases it.
func (s *session) leaseAll(ctx context.Context, shards []int) ([]*backend, error) {
	bs := make([]*backend, 0, len(shards))
	for _, sh := range shards {
		b, err := s.lease(ctx, sh)
		if err != nil {
			return bs, err
		}
		bs = append(bs, b)
	}
	return bs, nil
}

func (s *session) releaseAll(bs []*backend) {
	for _, b := range bs {
		s.release(b)
	}
}

// scatterOn sends the statement to backends bs (one per plan shard, in
// order) and merges their replies. Statement errors go to the client; an
// error return means the client is gone.
func (s *session) scatterOn(bs []*backend, st *parser.Statement, text string, plan *router.Plan) error {
	for _, b := range bs {
		b.wbuf = b.wbuf[:0]
	}
	return s.scatterOnBegun(bs, st, text, plan)
}

// scatterOnBegun is scatterOn where each backend's write buffer may already
// hold a BEGIN (an implicit transaction's): it is sent in the same write
// and its reply read first.
func (s *session) scatterOnBegun(bs []*backend, st *parser.Statement, text string, plan *router.Plan) error {
	sent := time.Now()
	begun := make([]bool, len(bs))
	for i, b := range bs {
		sql := text
		if plan.SQL != nil {
			sql = plan.SQL[i]
		}
		begun[i] = len(b.wbuf) > 0
		b.wbuf = appendQuery(b.wbuf, sql)
		if _, err := b.conn.Write(b.wbuf); err != nil {
			b.broken = true
			for _, o := range bs[:i] {
				o.broken = true
				go o.cancel()
			}
			s.fail(&shardError{shard: b.pool.name, err: err})
			return nil
		}
	}
	for i, b := range bs {
		if !begun[i] {
			continue
		}
		if err := readQuiet(b); err != nil {
			// BEGIN itself failed: the statement after it was skipped or
			// ran outside the transaction; neither may stand.
			for _, o := range bs {
				o.broken = true
				go o.cancel()
			}
			s.fail(err)
			return nil
		}
	}
	m, shardErr, err := s.gather(bs, plan, sent, true, nil)
	if err != nil {
		return err
	}
	if shardErr != nil {
		s.fail(shardErr)
		return nil
	}
	if err := s.moveKeyed(context.Background(), plan, bs, m); err != nil {
		s.fail(err)
		return nil
	}
	if err := s.answer(m, plan, bs, true); err != nil {
		s.fail(err)
	}
	return nil
}

// answer ends a gathered reply: the first error, or the combined
// aggregates (with their RowDescription when withRowDesc), or one copy's tag
// for a replicated write, or the summed tags. An error is for the client.
func (s *session) answer(m gathered, plan *router.Plan, bs []*backend, withRowDesc bool) error {
	switch {
	case m.firstErr != nil:
		s.out = append(s.out, m.firstErr...)
		if s.x != nil {
			s.x.errored = true
		}
	case m.empty:
		s.out = append(s.out, 'I', 0, 0, 0, 4)
	case plan.Limited || plan.Sort != nil || plan.Offset > 0 || plan.Merge != nil || plan.Dedupe:
		s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("SELECT " + strconv.FormatInt(m.rows, 10))})
	case plan.Replicated:
		s.out = appendMsg(s.out, s.replicatedTag(m.tags, bs))
	default:
		s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(fanout.SumTags(m.tags))})
	}
	return nil
}

// replicatedTag answers a write to a reference table with one copy's
// command tag (every shard applied the same change), warning when the
// copies reported different counts: they have drifted apart.
func (s *session) replicatedTag(tags []string, bs []*backend) *pgproto3.CommandComplete {
	for i, t := range tags {
		if t != tags[0] && i < len(bs) {
			s.out = appendMsg(s.out, &pgproto3.NoticeResponse{Severity: "WARNING", SeverityUnlocalized: "WARNING",
				Code: pgerrcode.DataException, Message: fmt.Sprintf("reference table copies differ: shard %s reported %q, shard %s %q",
					bs[0].pool.name, tags[0], bs[i].pool.name, t)})
			break
		}
	}
	tag := ""
	if len(tags) > 0 {
		tag = tags[0]
	}
	return &pgproto3.CommandComplete{CommandTag: []byte(tag)}
}

// multi runs a query string of several statements. Postgres runs such a
// string as one implicit transaction (unless it holds its own BEGIN/COMMIT),
// so it goes whole to one shard: every statement must route there.
func (s *session) multi(ctx context.Context, stmts []*parser.Statement, sql string) error {
	if s.status == 'E' {
		// Statement by statement: what may run in a failed transaction
		// runs, the first other statement gets 25P02.
		return s.multiAcross(ctx, stmts)
	}
	if s.status == 'T' {
		for _, st := range stmts {
			if st.Kind == parser.Transaction {
				// A COMMIT or savepoint inside the string acts on the
				// whole transaction, on every shard it joined: statement
				// by statement through the transaction's state machine.
				return s.multiAcross(ctx, stmts)
			}
		}
	}
	target := -1
	if s.tx != nil {
		target = s.tx.pool.shard
	}
	for _, st := range stmts {
		if _, _, ok := st.Listen(); ok {
			return s.multiAcross(ctx, stmts) // listen.go: LISTEN is the proxy's
		}
		if hasSQLPrepared(st) {
			return s.multiAcross(ctx, stmts) // sqlprepare.go
		}
		if _, ok := st.Cursor(); ok {
			return s.multiAcross(ctx, stmts) // cursors are the proxy's (reserve.go, mcursor.go)
		}
	}
	hint := "Send statements for different shards in separate queries."
	across := false
	var sets []*parser.Statement // SETs that outlive the string (multiSets)
	for _, st := range stmts {
		s.noteWrite(st) // replicas.go: read-your-writes
		s.rc.touch(st)
		switch st.Session {
		case parser.AdvisoryLock, parser.TempTable, parser.AdvisoryUnlock:
			if err := s.reserveCheck(st); err != nil {
				s.fail(err)
				return nil
			}
		case parser.SetConfig:
			s.setConfigUsed()
		}
		switch st.Kind {
		case parser.Set:
			if name, local := st.SetName(); !local {
				if strings.HasPrefix(name, "shardproxy.") {
					s.fail(refused("SET shardproxy.* inside a multi-statement query string is not supported", "Send it as its own query."))
					return nil
				}
				sets = append(sets, st)
				s.noteSet(st)
			}
			continue
		case parser.Transaction:
			if st.Tx == parser.TwoPhase {
				s.fail(refused("two-phase commit commands are not supported through shardproxy", hint))
				return nil
			}
			continue
		}
		if s.anywhere(st) && st.Kind != parser.Unsupported {
			continue
		}
		plan, err := s.srv.router.Route(st, nil)
		if err != nil {
			s.fail(err)
			return nil
		}
		if !plan.Single() || plan.SQL != nil || (target >= 0 && plan.Shards[0] != target) {
			across = true
			continue
		}
		target = plan.Shards[0]
	}
	if across {
		return s.multiAcross(ctx, stmts)
	}
	if s.status == 'E' && s.tx == nil {
		s.sendError(inFailedTx())
		return nil
	}
	if s.status != 'I' && target >= 0 {
		for _, st := range stmts {
			if st.Writes {
				if err := s.txWrites(st, &router.Plan{Shards: []int{target}, Write: true}); err != nil {
					s.fail(err)
					return nil
				}
				break
			}
		}
	}
	if s.tx != nil {
		return s.execTx(sql)
	}
	if target < 0 {
		target = s.srv.router.Topology().Default
	}
	if s.status == 'T' {
		if _, err := s.pin(ctx, target); err != nil {
			s.fail(err)
			return nil
		}
		return s.execTx(sql)
	}
	b, err := s.lease(ctx, target)
	if err != nil {
		s.fail(err)
		return nil
	}
	b.dirty = b.dirty || len(sets) > 0
	if err := s.exec(b, sql, false); err != nil {
		s.release(b)
		return err
	}
	s.multiSets(b, sets)
	if b.txStatus != 'I' {
		// The string opened a transaction (BEGIN without COMMIT): it
		// stays on this backend.
		b.dirty = true
		s.tx = b
		s.status = b.txStatus
		return nil
	}
	if s.tempInTx {
		b.discard, s.tempInTx = true, false
	}
	s.release(b)
	return nil
}

// sessionState refuses what would outlive the transaction on a pooled
// backend, and marks a transaction that creates temporary tables so its
// backend is discarded clean.
func (s *session) sessionState(st *parser.Statement) error {
	switch st.Session {
	case parser.AdvisoryLock, parser.TempTable, parser.AdvisoryUnlock:
		return s.reserveCheck(st) // reserve.go
	case parser.SetConfig:
		s.setConfigUsed()
	}
	return nil
}

// route plans st. A temporary table belongs to the session's backend, not
// to every shard: it is created on the default shard, where statements on
// tables not in the config (the temporary table among them) go.
func (s *session) route(st *parser.Statement, params router.Params) (*router.Plan, error) {
	s.noteNotify(st) // listen.go
	if plan, ok, err := s.routeTemp(st); ok {
		return plan, err
	}
	if plan, ok, err := s.routeSessionSQL(st, params); ok { // reserve.go
		return plan, err
	}
	if st.Session == parser.TempTable {
		if err := s.tempReadsSharded(st); err != nil {
			return nil, err
		}
		return &router.Plan{Shards: []int{s.srv.router.Topology().Default}, Write: true, Reason: "temporary table: default shard"}, nil
	}
	plan, err := s.srv.router.RouteWith(st, params, router.RouteOptions{Shard: s.shardHint})
	if err != nil || !plan.Write {
		return plan, err
	}
	return s.holdWrite(st, params, plan) // topology.go: resharding cutover
}

// setHint handles SET/RESET shardproxy.shard, the session's routing hint:
// the proxy's own setting, never sent to a shard. RESET ALL clears it too
// (and then goes on to the shards). It reports whether st is done.
func (s *session) setHint(name string, local bool, st *parser.Statement) bool {
	tag := "SET"
	if st.IsReset() {
		tag = "RESET"
	}
	switch {
	case name == "all":
		s.shardHint, s.hintLocal = "", false
		return false
	case name != "shardproxy.shard":
		s.fail(&pgError{code: pgerrcode.UndefinedObject, msg: fmt.Sprintf("unrecognized configuration parameter \"%s\"", name),
			hint: "shardproxy knows shardproxy.shard."})
		return true
	case st.IsReset():
		s.shardHint, s.hintLocal = "", false
	default:
		v, ok := st.SetValue()
		if !ok {
			s.fail(&pgError{code: pgerrcode.InvalidParameterValue, msg: "shardproxy.shard takes a shard name"})
			return true
		}
		if _, known := s.srv.router.Topology().ShardIndex(v); !known {
			s.fail(&pgError{code: pgerrcode.InvalidParameterValue, msg: fmt.Sprintf("unknown shard \"%s\" for shardproxy.shard", v),
				hint: "SHOW SHARDS on the admin console lists them."})
			return true
		}
		if local && s.status == 'I' {
			s.out = appendMsg(s.out, &pgproto3.NoticeResponse{Severity: "WARNING", SeverityUnlocalized: "WARNING",
				Code: pgerrcode.NoActiveSQLTransaction, Message: "SET LOCAL can only be used in transaction blocks"})
		} else {
			s.shardHint, s.hintLocal = v, local
		}
	}
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(tag)})
	return true
}

// endTransaction clears what lasts only for a transaction.
func (s *session) endTransaction() {
	if s.hintLocal {
		s.shardHint, s.hintLocal = "", false
	}
}

// deallocate answers DEALLOCATE for statements of the extended protocol:
// like Close, it removes the client's view only (backend statements are
// shared). It also drops the session's SQL prepared statements
// (sqlprepare.go).
func (s *session) deallocate(name string, all bool) {
	x := s.ext()
	tag := "DEALLOCATE"
	switch {
	case all:
		for k := range x.stmts {
			delete(x.stmts, k)
		}
		s.sqlStmts = nil // sqlprepare.go
		tag = "DEALLOCATE ALL"
	case s.sqlStmts[name] != nil:
		delete(s.sqlStmts, name)
	default:
		if _, ok := x.stmts[name]; !ok {
			s.fail(&pgError{code: pgerrcode.InvalidSQLStatementName, msg: fmt.Sprintf("prepared statement \"%s\" does not exist", name)})
			return
		}
		delete(x.stmts, name)
	}
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(tag)})
}

// startupSettings turns the startup packet's run-time parameters
// (TimeZone, DateStyle, extra_float_digits, client_encoding, options=-c
// k=v...) into the session's settings, replayed on every backend it leases,
// as Postgres would apply them to its one connection. They are checked on a
// shard now: a bad value refuses the connection, as Postgres does. It
// returns the values to report in ParameterStatus.
func (s *session) startupSettings(params map[string]string) (map[string]string, error) {
	kv := map[string]string{}
	for k, v := range params {
		switch k := strings.ToLower(k); {
		case k == "user", k == "database", k == "replication", strings.HasPrefix(k, "_pq_."):
		case k == "application_name" && v == "":
		case k == "options":
			for ok, ov := range parseOptions(v) {
				kv[strings.ToLower(ok)] = ov
			}
		case k == "client_encoding" && (strings.EqualFold(v, "UTF8") || strings.EqualFold(v, "UTF-8") || strings.EqualFold(v, "UNICODE")):
			// the backends' encoding already
		default:
			kv[k] = v
		}
	}
	if len(kv) == 0 {
		return nil, nil
	}
	if s.q.admin {
		// The admin console has no backends (and under backend_roles:
		// per_user its users need no role on the shards).
		return kv, nil
	}
	names := make([]string, 0, len(kv))
	for k := range kv {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		s.state.startup = append(s.state.startup, setting{name: k, sql: "SET " + quoteIdent(k) + " TO " + quoteLiteral(kv[k])})
	}
	s.setsChanged()
	b, err := s.lease(context.Background(), s.srv.router.Topology().Default)
	if err != nil {
		// Whatever went wrong, the client hears why, with a SQLSTATE.
		r := errorResponse(err)
		return nil, &pgError{code: r.Code, msg: r.Message, detail: r.Detail, hint: r.Hint, fatal: true}
	}
	s.release(b)
	return kv, nil
}

// parseOptions reads libpq's options parameter: -c name=value, -cname=value
// and --name=value, with backslash-escaped spaces.
func parseOptions(opt string) map[string]string {
	var words []string
	var cur strings.Builder
	for i := 0; i < len(opt); i++ {
		switch c := opt[i]; {
		case c == '\\' && i+1 < len(opt):
			i++
			cur.WriteByte(opt[i])
		case c == ' ' || c == '\t':
			if cur.Len() > 0 {
				words = append(words, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteByte(c)
		}
	}
	if cur.Len() > 0 {
		words = append(words, cur.String())
	}
	out := map[string]string{}
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch {
		case w == "-c" && i+1 < len(words):
			i++
			w = words[i]
		case strings.HasPrefix(w, "-c"):
			w = w[2:]
		case strings.HasPrefix(w, "--"):
			w = w[2:]
		default:
			continue
		}
		if k, v, ok := strings.Cut(w, "="); ok {
			out[strings.ReplaceAll(k, "-", "_")] = v
		}
	}
	return out
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quoteLiteral quotes a string for SQL (standard_conforming_strings is on
// on every supported Postgres).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// txEverywhere runs a savepoint or SET statement on every backend of the
// transaction (the primary's reply goes to the client) and keeps it for
// shards the transaction opens later.
func (s *session) txEverywhere(sql string) error {
	s.txPrelude = append(s.txPrelude, sql)
	for _, b := range s.txMore {
		if err := s.quiet(b, sql); err != nil {
			// One shard refused it (a transaction mode after a query
			// there...): the whole transaction fails, as it would in
			// Postgres.
			if b.txStatus != 'E' {
				b.broken = true
			}
			s.fail(err)
			return nil
		}
	}
	return s.execTx(sql)
}

// inTx reports whether b is one of the open transaction's backends.
func (s *session) inTx(b *backend) bool {
	if b == nil {
		return false
	}
	if b == s.tx {
		return true
	}
	for _, o := range s.txMore {
		if o == b {
			return true
		}
	}
	return false
}
