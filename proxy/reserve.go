package proxy

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// Reserved backends.
//
// Some session state cannot be replayed on another backend: temporary
// tables, session advisory locks, cursors WITH HOLD, SQL prepared
// statements. While any such reason holds, the client keeps that shard's
// backend across transactions instead of returning it to the pool (as
// Multigres reserves a connection, and as PgBouncer's session mode would
// behave). When the last reason ends (DISCARD ALL / DISCARD TEMP, the
// advisory lock count back to zero, CLOSE / CLOSE ALL, DEALLOCATE [ALL])
// the backend returns to the pool after the usual reset. A client that
// disconnects with a reserved backend gets it reset with DISCARD ALL (or
// closed); it never goes back to the pool dirty.
//
// Reasons are read from the parsed statement, never from its text. The
// backend a reason lands on is the one the statement ran on: the reason is
// noted before the statement runs (want, or txWant inside a transaction)
// and attached when that backend is released (keepReserved).

// reason is one cause for keeping a backend, as a bit.
type reason uint8

const (
	reasonTemp reason = 1 << iota
	reasonLock
	reasonCursor
	reasonPrepared
	nReasons = 4
)

var reasonNames = [nReasons]string{"temp", "advisory_lock", "cursor", "prepared"}

func (r reason) String() string {
	var parts []string
	for i, n := range reasonNames {
		if r&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	return strings.Join(parts, "+")
}

// reservation is a backend a session keeps, and why.
type reservation struct {
	b   *backend
	why reason
}

// cursorInfo is where an open cursor lives.
type cursorInfo struct {
	shard int
	hold  bool
	sp    int // savepoints open at DECLARE (cursorsp.go)
}

// reserveState is the session's reserved backends and the session SQL
// objects that live on them.
type reserveState struct {
	// mu guards on for readers on other goroutines (admin, metrics); the
	// session's goroutine is the only writer.
	mu sync.Mutex
	on map[int]*reservation // by shard
	// want: reasons the running request adds to the backends it
	// releases (outside a transaction); txWant: the open transaction's,
	// added when its backends are released at its end.
	want, txWant reason
	// unlock: the request calls an advisory unlock function; the lock
	// count of reserved backends is read back at release.
	unlock bool
	// temps are the names of temporary relations the client created
	// (on the default shard).
	temps map[string]bool
	// cursors are the client's open cursors.
	cursors map[string]cursorInfo
	// prepared are the client's SQL prepared statements, by shard.
	prepared map[string]int
}

// reserveRefused reports the pool.reserve: refuse configuration.
func (s *session) reserveRefused() bool { return s.srv.cfg.Pool.Reserve == "refuse" }

// reservedOn returns the backend the session keeps on shard, or nil.
func (s *session) reservedOn(shard int) *backend {
	if r := s.rsv.on[shard]; r != nil {
		return r.b
	}
	return nil
}

// useReserved hands out the session's reserved backend on p's shard, if
// any (leaseFrom: every lease of that shard, replicas included, gets it).
func (s *session) useReserved(p *pool) (*backend, bool, error) {
	b := s.reservedOn(p.shard)
	if b == nil {
		return nil, false, nil
	}
	if err := s.applySettings(b); err != nil {
		return nil, true, err
	}
	s.mu.Lock()
	s.leased = append(s.leased, b)
	s.mu.Unlock()
	return b, true, nil
}

// noteReason records that the running statement adds why to the backends
// it runs on.
func (s *session) noteReason(why reason) {
	if s.status == 'I' {
		s.rsv.want |= why
	} else {
		s.rsv.txWant |= why
	}
}

// reserveCheck handles a statement's session state for reservations. It
// returns an error for what stays refused.
func (s *session) reserveCheck(st *parser.Statement) error {
	if st.UnlocksAdvisory() {
		s.rsv.unlock = true
	}
	switch st.Session {
	case parser.AdvisoryLock:
		if s.reserveRefused() {
			return refused("session-level advisory locks hold a backend for the client, which pool.reserve: refuse forbids",
				"Use pg_advisory_xact_lock inside a transaction.")
		}
		s.noteReason(reasonLock)
	case parser.TempTable:
		if s.reserveRefused() || st.TempDropsAtCommit() && s.status != 'I' {
			if s.status == 'I' {
				return refused("a temporary table outside a transaction holds a backend for the client, which pool.reserve: refuse forbids",
					"Create it inside a transaction with ON COMMIT DROP.")
			}
			s.tempInTx = true // discarded clean after the transaction
			return nil
		}
		if t, ok := st.TempRelation(); ok {
			if s.rsv.temps == nil {
				s.rsv.temps = map[string]bool{}
			}
			s.rsv.temps[t.Name] = true
		}
		s.noteReason(reasonTemp)
	}
	return nil
}

// keepReserved is release's first step: it attaches the reasons the
// request noted to b and reports whether the session keeps b. A broken
// backend ends its reservation (its state is lost with it).
func (s *session) keepReserved(b *backend) bool {
	if b.pool.reads {
		return false
	}
	shard := b.pool.shard
	r := s.rsv.on[shard]
	if r != nil && r.b != b {
		return false
	}
	if b.broken {
		if r != nil {
			s.unreserve(shard)
		}
		return false
	}
	add := s.rsv.want
	if s.q.sqlstate != "" {
		add &^= reasonTemp | reasonCursor // rolled back with the statement
	}
	if s.status == 'I' {
		add |= s.rsv.txWant
	}
	if add&reasonTemp != 0 {
		b.discard = false // the temporary tables stay the client's
	}
	had := r != nil && r.why&reasonLock != 0
	if (add&reasonLock != 0 && !had || s.rsv.unlock && had) && b.txStatus == 'I' && !s.inTx(b) {
		// pg_try_advisory_lock may have got nothing, an unlock may have
		// ended the last lock: the backend's lock count decides.
		if held, err := s.advisoryLocksHeld(b); err == nil && !held {
			add &^= reasonLock
			if had {
				s.dropReason(shard, reasonLock)
			}
		}
	}
	if r == nil {
		if add == 0 {
			return false
		}
		r = &reservation{b: b}
		s.rsv.mu.Lock()
		if s.rsv.on == nil {
			s.rsv.on = map[int]*reservation{}
		}
		s.rsv.on[shard] = r
		s.rsv.mu.Unlock()
	}
	s.rsv.mu.Lock()
	r.why |= add
	s.rsv.mu.Unlock()
	if r.why == 0 && !s.inTx(b) {
		s.unreserve(shard)
		return false
	}
	return true
}

// advisoryLocksHeld reports whether b's backend holds any advisory lock.
func (s *session) advisoryLocksHeld(b *backend) (bool, error) {
	rows, err := s.settingRows(b, "SELECT 'n', count(*)::text FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()")
	if err != nil || len(rows) != 1 {
		return true, err
	}
	return rows[0][1] != "0", nil
}

// dropReason ends one reason on shard's reservation (the backend returns
// to the pool at its next release when no reason is left).
func (s *session) dropReason(shard int, why reason) {
	s.rsv.mu.Lock()
	defer s.rsv.mu.Unlock()
	if r := s.rsv.on[shard]; r != nil {
		r.why &^= why
	}
}

// unreserve forgets shard's reservation (the caller releases or has
// released the backend).
func (s *session) unreserve(shard int) {
	s.rsv.mu.Lock()
	delete(s.rsv.on, shard)
	s.rsv.mu.Unlock()
}

// settleReserve clears the request's notes at ReadyForQuery and, once no
// transaction is open, forgets cursors without HOLD (they ended with it).
func (s *session) settleReserve() {
	s.rsv.want, s.rsv.unlock = 0, false
	if s.status != 'I' {
		return
	}
	s.rsv.txWant = 0
	for name, c := range s.rsv.cursors {
		if !c.hold {
			delete(s.rsv.cursors, name)
		}
	}
}

// releaseReserved is the end of a session: every reserved backend is reset
// with DISCARD ALL (which also ends advisory locks, cursors, prepared
// statements and temporary tables) and pooled, or closed when the reset
// fails. Backends of an open transaction were closed already.
func (s *session) releaseReserved() {
	for shard, r := range s.rsv.on {
		s.unreserve(shard)
		if s.inTx(r.b) {
			continue
		}
		r.b.discard = true
		s.release(r.b)
	}
}

// discardAll returns every reserved backend to the pool after
// DISCARD ALL (the client's own DISCARD ALL).
func (s *session) discardAll() {
	s.releaseReserved()
	s.rsv.temps, s.rsv.cursors, s.rsv.prepared = nil, nil, nil
	s.sqlStmts = nil // sqlprepare.go
}

// routeTemp routes a statement naming one of the client's temporary
// relations (unqualified or in pg_temp) to the default shard, where they
// live: a temporary table shadows a sharded table of the same name. One
// that also reads a sharded table is refused (the default shard holds only
// its part of the rows).
func (s *session) routeTemp(st *parser.Statement) (*router.Plan, bool, error) {
	if len(s.rsv.temps) == 0 {
		return nil, false, nil
	}
	for _, t := range st.Tables {
		if (t.Schema == "" || t.Schema == "pg_temp") && s.rsv.temps[t.Name] {
			if err := s.tempReadsSharded(st); err != nil {
				return nil, true, err
			}
			return &router.Plan{Shards: []int{s.srv.router.Topology().Default}, Write: st.Writes, Reason: "temporary table: default shard"}, true, nil
		}
	}
	return nil, false, nil
}

// sessionSQL answers the statements that act on session objects: DISCARD,
// cursors (DECLARE/FETCH/MOVE/CLOSE) and SQL PREPARE/EXECUTE. took says
// whether st was one of them.
func (s *session) sessionSQL(ctx context.Context, st *parser.Statement) (took bool, err error) {
	if what, ok := st.Discard(); ok {
		return true, s.discard(ctx, st, what)
	}
	if c, ok := st.Cursor(); ok {
		return true, s.cursor(ctx, st, c)
	}
	if name, q, ok := st.Prepare(); ok {
		return true, s.prepareSQL(ctx, st, name, q)
	}
	if name, ok := st.Execute(); ok {
		return true, s.executeSQL(ctx, st, name)
	}
	return false, nil
}

// onShard runs sql on shard and relays the reply: on the transaction's
// backend there inside a transaction, else on a leased (or the session's
// reserved) backend.
func (s *session) onShard(ctx context.Context, shard int, sql string) error {
	if s.status != 'I' {
		b, err := s.txOn(ctx, shard)
		if err != nil {
			s.fail(err)
			return nil
		}
		return s.exec(b, sql, true)
	}
	return s.single(ctx, shard, sql)
}

// discard runs DISCARD. DISCARD ALL (outside a transaction, as Postgres
// demands) resets everything the session has: its settings, its prepared
// statements, and every reserved backend, which goes back to the pool.
// DISCARD TEMP drops the temporary tables on the backend holding them.
func (s *session) discard(ctx context.Context, st *parser.Statement, what parser.DiscardWhat) error {
	def := s.srv.router.Topology().Default
	if s.status != 'I' {
		return s.onShard(ctx, def, st.SQL) // DISCARD ALL errors there, as in Postgres
	}
	switch what {
	case parser.DiscardAll:
		b, err := s.lease(ctx, def)
		if err != nil {
			s.fail(err)
			return nil
		}
		before := len(s.out)
		err = s.exec(b, st.SQL, false)
		// Everything is gone from b, the proxy's prepared statements and
		// replayed settings too.
		b.stmts, b.applied, b.dirty = nil, "", true
		s.release(b)
		if err != nil || s.lastWasError(before) {
			return err
		}
		s.discardAll()
		s.unlistenAll() // listen.go: DISCARD ALL includes UNLISTEN *
		s.sets = nil
		s.setsChanged()
		if s.x != nil {
			for k := range s.x.stmts {
				delete(s.x.stmts, k)
			}
		}
		return nil
	case parser.DiscardTemp:
		before := len(s.out)
		if err := s.single(ctx, def, st.SQL); err != nil || s.lastWasError(before) {
			return err
		}
		s.rsv.temps = nil
		s.dropReason(def, reasonTemp)
		s.releaseIfFree(def)
		return nil
	}
	return s.single(ctx, def, st.SQL)
}

// releaseIfFree returns shard's reserved backend to the pool once no
// reason holds it (outside a transaction).
func (s *session) releaseIfFree(shard int) {
	r := s.rsv.on[shard]
	if r == nil || r.why != 0 || s.inTx(r.b) {
		return
	}
	s.unreserve(shard)
	s.release(r.b)
}

// cursor runs DECLARE, FETCH, MOVE and CLOSE. A cursor lives on the shard
// its query routes to; a cross-shard cursor is refused. A cursor WITH HOLD
// keeps its backend for the client until it is closed.
func (s *session) cursor(ctx context.Context, st *parser.Statement, c parser.Cursor) error {
	switch c.Op {
	case parser.DeclareCursor:
		plan, err := s.route(c.Query, nil)
		if err != nil {
			if took, cerr := s.declareOnCoordinator(ctx, c, err); took { // mcursor.go
				return cerr
			}
			s.fail(err)
			return nil
		}
		if !plan.Single() || plan.SQL != nil || len(plan.KeyGuard) > 0 {
			if !s.anywhere(c.Query) {
				return s.declareMerged(ctx, c, plan, nil) // mcursor.go: through the merge
			}
			plan = &router.Plan{Shards: []int{s.srv.router.Topology().Default}}
		}
		if s.mc.sql[c.Name] != nil {
			s.fail(&pgError{code: pgerrcode.DuplicateCursor, msg: fmt.Sprintf("cursor \"%s\" already exists", c.Name)})
			return nil
		}
		shard := plan.Shards[0]
		if s.status != 'I' {
			if err := s.txWrites(c.Query, plan); err != nil {
				s.fail(err)
				return nil
			}
		}
		if c.Hold {
			if s.reserveRefused() {
				s.fail(refused("a cursor WITH HOLD holds a backend for the client, which pool.reserve: refuse forbids",
					"Declare the cursor without HOLD inside a transaction."))
				return nil
			}
			s.noteReason(reasonCursor)
		}
		before := len(s.out)
		if err := s.onShard(ctx, shard, st.SQL); err != nil || s.lastWasError(before) {
			return err
		}
		if s.rsv.cursors == nil {
			s.rsv.cursors = map[string]cursorInfo{}
		}
		s.rsv.cursors[c.Name] = cursorInfo{shard: shard, hold: c.Hold, sp: len(s.savepoints)}
		return nil
	case parser.FetchCursor:
		if mc := s.mc.sql[c.Name]; mc != nil {
			return s.fetchMerged(mc, c) // mcursor.go
		}
		ci, ok := s.rsv.cursors[c.Name]
		if !ok {
			return s.unknownCursor(ctx, c.Name, st.SQL) // cursorsp.go
		}
		return s.onShard(ctx, ci.shard, st.SQL)
	}
	// CLOSE name | ALL
	if mc := s.mc.sql[c.Name]; mc != nil && !c.All {
		s.closeMerged(mc) // mcursor.go
		return nil
	}
	if c.All {
		s.closeAllMerged() // mcursor.go
		shards := map[int]bool{}
		for _, ci := range s.rsv.cursors {
			shards[ci.shard] = true
		}
		for shard := range shards {
			if err := s.closeOn(ctx, shard, st.SQL, true); err != nil {
				return err
			}
		}
		s.rsv.cursors = nil
		s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("CLOSE CURSOR ALL")})
		return nil
	}
	ci, ok := s.rsv.cursors[c.Name]
	if !ok {
		return s.unknownCursor(ctx, c.Name, st.SQL) // cursorsp.go
	}
	delete(s.rsv.cursors, c.Name)
	return s.closeOn(ctx, ci.shard, st.SQL, false)
}

// closeOn runs a CLOSE on shard (quiet: its reply is not relayed) and ends
// the cursor reason there when no held cursor is left.
func (s *session) closeOn(ctx context.Context, shard int, sql string, quiet bool) error {
	if !quiet {
		before := len(s.out)
		if err := s.onShard(ctx, shard, sql); err != nil || s.lastWasError(before) {
			return err
		}
	} else if err := s.quietOn(ctx, shard, sql); err != nil {
		s.fail(err)
		return nil
	}
	for _, ci := range s.rsv.cursors {
		if ci.shard == shard && ci.hold {
			return nil
		}
	}
	s.dropReason(shard, reasonCursor)
	if s.status == 'I' {
		s.releaseIfFree(shard)
	}
	return nil
}

func noCursor(name string) error {
	return &pgError{code: pgerrcode.InvalidCursorName, msg: fmt.Sprintf("cursor \"%s\" does not exist", name)}
}

// prepareSQL runs SQL PREPARE. A statement that names no sharded table is
// prepared on the default shard, whose backend the client then keeps; one
// on sharded tables is refused (its shard depends on EXECUTE's values).
func (s *session) prepareSQL(ctx context.Context, st *parser.Statement, name string, q *parser.Statement) error {
	topo := s.srv.router.Topology()
	for _, t := range q.Tables {
		if tb := topo.Lookup(t); tb != nil && tb.Strategy != "reference" {
			if _, temp, _ := s.routeTemp(q); !temp {
				s.fail(refused("SQL PREPARE of a statement on a sharded table is not supported",
					"Use the extended protocol (a driver's prepared statements), which routes by the bound values."))
				return nil
			}
		}
	}
	if s.reserveRefused() {
		s.fail(refused("a SQL prepared statement holds a backend for the client, which pool.reserve: refuse forbids",
			"Use the extended protocol (a driver's prepared statements)."))
		return nil
	}
	if _, exists := s.rsv.prepared[name]; exists {
		s.fail(&pgError{code: pgerrcode.DuplicatePreparedStatement, msg: fmt.Sprintf("prepared statement \"%s\" already exists", name)})
		return nil
	}
	shard := topo.Default
	s.noteReason(reasonPrepared)
	before := len(s.out)
	if err := s.onShard(ctx, shard, st.SQL); err != nil || s.lastWasError(before) {
		return err
	}
	if s.rsv.prepared == nil {
		s.rsv.prepared = map[string]int{}
	}
	s.rsv.prepared[name] = shard
	return nil
}

// executeSQL runs EXECUTE on the shard its statement was prepared on.
func (s *session) executeSQL(ctx context.Context, st *parser.Statement, name string) error {
	shard, ok := s.rsv.prepared[name]
	if !ok {
		s.fail(&pgError{code: pgerrcode.InvalidSQLStatementName, msg: fmt.Sprintf("prepared statement \"%s\" does not exist", name)})
		return nil
	}
	return s.onShard(ctx, shard, st.SQL)
}

// deallocateSQL handles DEALLOCATE of SQL prepared statements, run where
// they live. It reports whether the client has its answer (a named SQL
// statement); DEALLOCATE ALL goes on to the extended protocol's statements.
func (s *session) deallocateSQL(ctx context.Context, name string, all bool) bool {
	shards := map[int]bool{}
	for n, sh := range s.rsv.prepared {
		if all || n == name {
			shards[sh] = true
			delete(s.rsv.prepared, n)
		}
	}
	if len(shards) == 0 {
		return false
	}
	sql := "DEALLOCATE ALL"
	if !all {
		sql = "DEALLOCATE " + quoteIdent(name)
	}
	for shard := range shards {
		if err := s.quietOn(ctx, shard, sql); err != nil {
			s.fail(err)
			return true
		}
		left := false
		for _, sh := range s.rsv.prepared {
			left = left || sh == shard
		}
		if !left {
			s.dropReason(shard, reasonPrepared)
			if s.status == 'I' {
				s.releaseIfFree(shard)
			}
		}
	}
	if all {
		return false
	}
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("DEALLOCATE")})
	return true
}

// quietOn runs sql on shard (the transaction's backend there, or the
// session's), discarding its reply; an error reply is returned.
func (s *session) quietOn(ctx context.Context, shard int, sql string) error {
	var b *backend
	var err error
	if s.status != 'I' {
		b, err = s.txOn(ctx, shard)
	} else {
		b, err = s.lease(ctx, shard)
	}
	if err != nil {
		return err
	}
	err = s.quiet(b, sql)
	if !s.inTx(b) {
		s.release(b)
	}
	return err
}

// reservedSummary describes the session's reserved backends for SHOW
// CLIENTS ("s0:temp+cursor"), safe from any goroutine.
func (s *session) reservedSummary() string {
	s.rsv.mu.Lock()
	defer s.rsv.mu.Unlock()
	var parts []string
	for shard, r := range s.rsv.on {
		parts = append(parts, fmt.Sprintf("%s:%s", r.b.pool.name, r.why))
		_ = shard
	}
	return strings.Join(parts, ",")
}

// reservedCounts counts the server's reserved backends by shard and by
// reason (a backend counts once per reason it has).
func (srv *Server) reservedCounts() (byShard map[int]int, byReason [nReasons]int) {
	byShard = map[int]int{}
	srv.sessions.Range(func(_, v any) bool {
		c := v.(*session)
		c.rsv.mu.Lock()
		for shard, r := range c.rsv.on {
			byShard[shard]++
			for i := range nReasons {
				if r.why&(1<<i) != 0 {
					byReason[i]++
				}
			}
		}
		c.rsv.mu.Unlock()
		return true
	})
	return byShard, byReason
}

var descReserved = prometheus.NewDesc("shardproxy_reserved_backends",
	"Backends reserved for one client while session state must stay on them, by reason (a backend counts once per reason it has).",
	[]string{"reason"}, nil)

// reserveCollector reports reserved backends at scrape time.
type reserveCollector struct{ s *Server }

func (c reserveCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descReserved }

func (c reserveCollector) Collect(ch chan<- prometheus.Metric) {
	_, by := c.s.reservedCounts()
	for i, n := range by {
		ch <- prometheus.MustNewConstMetric(descReserved, prometheus.GaugeValue, float64(n), reasonNames[i])
	}
}

// tempReadsSharded refuses a temporary table or view made from a sharded
// table's rows: it would hold only the default shard's part of them.
func (s *session) tempReadsSharded(st *parser.Statement) error {
	created, _ := st.TempRelation()
	topo := s.srv.router.Topology()
	for _, t := range st.Tables {
		if t == created || (t.Schema == "" || t.Schema == "pg_temp") && s.rsv.temps[t.Name] {
			continue
		}
		if tb := topo.Lookup(t); tb != nil && tb.Strategy != "reference" {
			return refused(fmt.Sprintf("a temporary table or view from the sharded table %s is not supported", t.Name),
				"Read the rows through the client and insert them into the temporary table.")
		}
	}
	return nil
}

// resumePortal makes a portal bound in an earlier request of the open
// transaction current again (JDBC's setFetchSize: Execute with a row
// limit, Sync, then Execute of the same portal), finishing the current
// backend's part first. It reports whether the portal's backend is
// current.
func (s *session) resumePortal(p *portal) bool {
	if p.where == nil || !s.inTx(p.where) {
		return false
	}
	if s.x.cur != nil && s.extRelease() != nil {
		return false
	}
	s.useBackend(p.where)
	return true
}

// routeSessionSQL plans a cursor or SQL PREPARE/EXECUTE statement sent
// through the extended protocol (the simple protocol's go through
// sessionSQL): the shard of the cursor's query or of the cursor, the
// default shard for PREPARE. ok says whether st was one of them.
func (s *session) routeSessionSQL(st *parser.Statement, params router.Params) (plan *router.Plan, ok bool, err error) {
	def := s.srv.router.Topology().Default
	one := func(shard int) *router.Plan { return &router.Plan{Shards: []int{shard}, Reason: "session object"} }
	if c, isCursor := st.Cursor(); isCursor {
		switch {
		case c.Op == parser.DeclareCursor:
			p, err := s.route(c.Query, params)
			if err != nil {
				return nil, true, err
			}
			if !p.Single() || p.SQL != nil || len(p.KeyGuard) > 0 {
				if params == nil {
					return p, true, nil // Describe before Bind: any shard of the query answers
				}
				if !s.anywhere(c.Query) {
					return nil, true, refused("a cursor over a query on several shards is not supported",
						"Add a shard key predicate to the cursor's query, or read the rows without a cursor.")
				}
				p = one(def)
			}
			if c.Hold && s.reserveRefused() {
				return nil, true, refused("a cursor WITH HOLD holds a backend for the client, which pool.reserve: refuse forbids",
					"Declare the cursor without HOLD inside a transaction.")
			}
			return one(p.Shards[0]), true, nil
		case c.All:
			return nil, true, refused("CLOSE ALL is not supported in the extended protocol", "Send it as a simple query.")
		}
		ci, known := s.rsv.cursors[c.Name]
		if !known {
			return nil, true, noCursor(c.Name)
		}
		return one(ci.shard), true, nil
	}
	if name, q, isPrepare := st.Prepare(); isPrepare {
		if _, dup := s.sqlStmts[name]; dup { // sqlprepare.go
			return nil, true, &pgError{code: pgerrcode.DuplicatePreparedStatement, msg: fmt.Sprintf("prepared statement \"%s\" already exists", name)}
		}
		topo := s.srv.router.Topology()
		for _, t := range q.Tables {
			if tb := topo.Lookup(t); tb != nil && tb.Strategy != "reference" {
				return nil, true, refused("SQL PREPARE of a statement on a sharded table is not supported in the extended protocol",
					"Send PREPARE and EXECUTE as simple queries (EXECUTE routes by its arguments), or use the driver's own prepared statements.")
			}
		}
		if s.reserveRefused() {
			return nil, true, refused("a SQL prepared statement holds a backend for the client, which pool.reserve: refuse forbids",
				"Use the extended protocol's own prepared statements.")
		}
		return one(def), true, nil
	}
	if name, isExecute := st.Execute(); isExecute {
		shard, known := s.rsv.prepared[name]
		if _, sql := s.sqlStmts[name]; sql && !known {
			return nil, true, refused("EXECUTE of a statement prepared with SQL PREPARE is not supported in the extended protocol",
				"Send EXECUTE as a simple query (it routes by its arguments), or use the driver's own prepared statements.")
		}
		if !known {
			return nil, true, &pgError{code: pgerrcode.InvalidSQLStatementName, msg: fmt.Sprintf("prepared statement \"%s\" does not exist", name)}
		}
		return one(shard), true, nil
	}
	return nil, false, nil
}

// boundSessionSQL records what a cursor or SQL PREPARE statement bound in
// the extended protocol does, once it is routed to plan: the cursor's or
// statement's shard, and the reason its backend is kept. (A statement
// that then fails leaves the record; the shard answers any later use with
// Postgres's own error.)
func (s *session) boundSessionSQL(st *parser.Statement, plan *router.Plan) {
	if c, ok := st.Cursor(); ok {
		switch c.Op {
		case parser.DeclareCursor:
			if s.rsv.cursors == nil {
				s.rsv.cursors = map[string]cursorInfo{}
			}
			s.rsv.cursors[c.Name] = cursorInfo{shard: plan.Shards[0], hold: c.Hold, sp: len(s.savepoints)}
			if c.Hold {
				s.noteReason(reasonCursor)
			}
		case parser.CloseCursor:
			delete(s.rsv.cursors, c.Name)
			for _, ci := range s.rsv.cursors {
				if ci.shard == plan.Shards[0] && ci.hold {
					return
				}
			}
			s.dropReason(plan.Shards[0], reasonCursor)
		}
		return
	}
	if name, _, ok := st.Prepare(); ok {
		if s.rsv.prepared == nil {
			s.rsv.prepared = map[string]int{}
		}
		if _, dup := s.rsv.prepared[name]; !dup {
			s.rsv.prepared[name] = plan.Shards[0]
		}
		s.noteReason(reasonPrepared)
	}
}
