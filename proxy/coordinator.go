package proxy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/coordinator"
	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// The coordinator route. A read the router refuses because the merge cannot
// answer it exactly (a join not on the shard keys, percentile_cont, a
// window over all shards...) runs instead on the coordinator database,
// where every table of the cluster is a postgres_fdw (partitioned) table
// (package coordinator), and the coordinator backend's reply is relayed as
// a single shard's is. Writes never go there: the statement must be a
// read, and the coordinator sessions are read only.

// coordShard is the pool index of the coordinator: it is no shard, so
// per-shard observability skips it and no plan names it.
const coordShard = -1

// coordRoute is the server's coordinator: its backend pool, and whether
// its tables are in place.
type coordRoute struct {
	cfg  coordinator.Config
	pool *pool
	// ready is set once a Provision succeeded: before that, refused reads
	// stay refused.
	ready atomic.Bool
	// mu serialises this proxy's provisioning (other proxies wait on the
	// coordinator's advisory lock).
	mu sync.Mutex

	// Refreshes after DDL run in the background (the DDL's reply does not
	// wait), but a coordinator read waits for the refreshes asked before
	// it: want counts requests, have the requests the last provisioning
	// covered; cond (on genMu) signals progress; kick wakes the worker.
	genMu      sync.Mutex
	cond       *sync.Cond
	want, have uint64
	kick       chan struct{}
	stop       chan struct{}
}

// initCoordinator makes the coordinator's pool when the config enables it.
// It does not connect.
func (s *Server) initCoordinator(cfg Config) error {
	cc := cfg.Coordinator.WithDefaults()
	if !cc.Enabled() {
		return nil
	}
	p, err := newPool(coordShard, "coordinator", cc.DSN, cc.PoolSize, cfg.Pool.ConnectTimeout, cfg.Pool.AcquireTimeout)
	if err != nil {
		return err
	}
	pc := p.config()
	if pc.RuntimeParams == nil {
		pc.RuntimeParams = map[string]string{}
	}
	for k, v := range coordinator.SessionParams() {
		pc.RuntimeParams[k] = v
	}
	c := &coordRoute{cfg: cc, pool: p, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	c.cond = sync.NewCond(&c.genMu)
	s.coord = c
	go s.refreshLoop(c)
	return nil
}

// refreshLoop provisions the coordinator each time refreshCoordinator
// asks, coalescing requests that arrive while it runs.
func (s *Server) refreshLoop(c *coordRoute) {
	for {
		select {
		case <-c.stop:
			c.genMu.Lock()
			c.have = c.want
			c.cond.Broadcast()
			c.genMu.Unlock()
			return
		case <-c.kick:
		}
		c.genMu.Lock()
		g := c.want
		c.genMu.Unlock()
		s.provisionCoordinator(context.Background())
		c.genMu.Lock()
		c.have = max(c.have, g)
		c.cond.Broadcast()
		c.genMu.Unlock()
	}
}

// provisionTimeout bounds one provisioning.
const provisionTimeout = time.Minute

// refreshCoordinator asks for the coordinator's tables to be rebuilt
// (after DDL through the proxy, on reload) without waiting.
func (s *Server) refreshCoordinator() {
	c := s.coord
	if c == nil {
		return
	}
	c.genMu.Lock()
	c.want++
	c.genMu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// awaitRefresh waits until the refreshes asked so far are done, so that a
// read after DDL sees the new definitions.
func (c *coordRoute) awaitRefresh() {
	c.genMu.Lock()
	for g := c.want; c.have < g; {
		c.cond.Wait()
	}
	c.genMu.Unlock()
}

// provisionCoordinator (re)builds the coordinator's tables from the
// topology and the shards' catalogs: at start, after DDL through the proxy
// and on reload. A failure is logged; the coordinator route stays as it
// was (refused reads stay refused until a provisioning succeeds).
func (s *Server) provisionCoordinator(ctx context.Context) {
	c := s.coord
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, provisionTimeout)
	defer cancel()
	if err := coordinator.Provision(ctx, c.cfg, s.router.Topology(), s.log); err != nil {
		s.log.Error("coordinator provisioning", "err", err)
		return
	}
	c.ready.Store(true)
}

// ProvisionCoordinator rebuilds the coordinator's tables now (Warm does it
// at start). It is for callers that changed the shards' schema without the
// proxy, and for tests; it does nothing without a coordinator.
func (s *Server) ProvisionCoordinator(ctx context.Context) { s.provisionCoordinator(ctx) }

// closeCoordinator closes the coordinator's pool.
func (s *Server) closeCoordinator() {
	if s.coord != nil {
		close(s.coord.stop)
		s.coord.pool.close()
	}
}

// coordinatorRead reports whether st may run on the coordinator: a plain
// read (or the EXPLAIN of one) that leaves no session state behind.
func coordinatorRead(st *parser.Statement) bool {
	if st == nil {
		return false
	}
	if st.Kind == parser.Explain {
		return coordinatorRead(st.Inner)
	}
	return st.Kind == parser.Select && !st.Writes && st.Session == parser.NoSessionUse && len(st.Hints) == 0
}

// coordinatorTakes reports whether a statement the router refused with
// routeErr goes to the coordinator instead: the coordinator is enabled and
// provisioned, the refusal is a routing refusal (not a syntax error or a
// down shard), the statement is a read, and the session has no routing
// hint (a hint asks for one shard).
func (s *session) coordinatorTakes(st *parser.Statement, routeErr error) bool {
	c := s.srv.coord
	var un *router.Unsupported
	if c == nil || !errors.As(routeErr, &un) || s.shardHint != "" || !coordinatorRead(st) {
		return false
	}
	if !s.srv.router.HashModN() {
		// The coordinator's hash partitions are hash mod the shard count:
		// after a reshard moved buckets (or while its sources still hold
		// moved rows) they would read the wrong rows.
		return false
	}
	if s.role != nil {
		// The coordinator runs reads as its own DSN's user, which would
		// give a least-privilege session (backend_roles, auth_query) that
		// user's rights: functions such as pg_read_file, tables without a
		// grant. The routing refusal stands (roles.go).
		return false
	}
	if st.Kind == parser.Explain {
		// EXPLAIN shows the coordinator's plan only when the statement
		// itself would run there; otherwise the refusal stands, not a plan
		// of another path.
		if _, err := s.route(st.Inner, nil); !errors.As(err, &un) {
			return false
		}
	}
	c.awaitRefresh() // a refresh asked before this statement (DDL) comes first
	return c.ready.Load()
}

// coordinatorInTx refuses a coordinator read inside a transaction that
// has written or that reads from one snapshot (REPEATABLE READ,
// SERIALIZABLE): the coordinator reads through its own connections to the
// shards and sees neither the transaction's uncommitted writes nor its
// snapshot. A read committed transaction that wrote nothing may use it:
// the statement sees what is committed when it starts, as a read
// committed statement does (each shard read at one instant of its own).
func (s *session) coordinatorInTx() error {
	if s.status == 'I' {
		return nil
	}
	hint := "Run this read before the transaction's writes or outside the transaction, or add shard key predicates so the proxy can answer it from the shards."
	if len(s.wrote) > 0 {
		return refused("a read that only the coordinator can answer cannot run in a transaction that has written: the coordinator cannot see the transaction's uncommitted writes", hint)
	}
	iso := ""
	for _, q := range s.txPrelude {
		iso += strings.ToUpper(q) + " "
	}
	for _, x := range s.sets {
		iso += strings.ToUpper(x.sql) + " "
	}
	if s.tx != nil {
		if s.x != nil && s.x.cur == s.tx && len(s.x.queue) > 0 {
			// Mid-pipeline on the transaction's backend: no room to ask.
			return refused("a read that only the coordinator can answer cannot run after other statements of the transaction in one pipeline", "Send a Sync before it.")
		}
		v, err := simpleValue(s.tx, "SHOW transaction_isolation")
		if err != nil {
			return err
		}
		iso += strings.ToUpper(v)
	}
	if strings.Contains(iso, "REPEATABLE") || strings.Contains(iso, "SERIALIZABLE") {
		return refused("a read that only the coordinator can answer cannot run in a REPEATABLE READ or SERIALIZABLE transaction: the coordinator does not read the transaction's snapshot", hint)
	}
	return nil
}

// leaseCoordinator takes a coordinator backend with the session's settings
// replayed (TimeZone, DateStyle, search_path... as on shards).
func (s *session) leaseCoordinator(ctx context.Context) (*backend, error) {
	b, err := s.srv.coord.pool.acquire(ctx)
	if err != nil {
		return nil, err
	}
	for _, x := range s.sets {
		if err := s.quiet(b, x.sql); err != nil {
			s.release(b)
			return nil, err
		}
		b.dirty = true
	}
	s.mu.Lock()
	s.leased = append(s.leased, b)
	s.mu.Unlock()
	return b, nil
}

// onCoordinator runs a simple-protocol statement the router refused with
// routeErr on the coordinator, if it goes there. It reports whether it
// took the statement; err means the client connection is unusable.
func (s *session) onCoordinator(ctx context.Context, st *parser.Statement, sql string, routeErr error) (bool, error) {
	if !s.coordinatorTakes(st, routeErr) {
		return false, nil
	}
	s.rc.touch(st) // results.go: its writes invalidate at commit
	if err := s.coordinatorInTx(); err != nil {
		s.fail(err)
		return true, nil
	}
	b, err := s.leaseCoordinator(ctx)
	if err != nil {
		s.fail(err)
		return true, nil
	}
	if st.Kind == parser.Explain {
		s.out = appendMsg(s.out, coordinatorNotice())
	}
	before := len(s.out)
	err = s.exec(b, sql, false)
	s.release(b)
	if s.lastWasError(before) && s.status == 'T' {
		s.status = 'E' // a failed statement aborts the transaction
	}
	return true, err
}

func coordinatorNotice() *pgproto3.NoticeResponse {
	return &pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: pgerrcode.SuccessfulCompletion,
		Message: "shardproxy: this statement runs on the coordinator database (the plan below is the coordinator's)"}
}

// bindOnCoordinator binds an extended-protocol statement the router
// refused with routeErr on a coordinator backend, if it goes there: the
// rest of the request (Describe, Execute with row limits, Close) then
// runs on that backend like a single shard's. It reports whether it took
// the statement.
func (s *session) bindOnCoordinator(ctx context.Context, p *portal, routeErr error) (bool, error) {
	ps := p.ps
	if !s.coordinatorTakes(ps.st, routeErr) {
		return false, nil
	}
	s.rc.touch(ps.st) // results.go: its writes invalidate at commit
	if err := s.coordinatorInTx(); err != nil {
		return true, err
	}
	x := s.x
	b := x.cur
	if b == nil || b.pool.shard != coordShard {
		if b != nil {
			if x.writes && s.status == 'I' {
				return true, refused("statements for different shards in one pipeline (before Sync) cannot be atomic when they write",
					"Send a Sync between them, or group writes by shard key.")
			}
			if err := s.extRelease(); err != nil {
				return true, err
			}
		}
		var err error
		if b, err = s.leaseCoordinator(ctx); err != nil {
			return true, err
		}
		s.useBackend(b)
	}
	if ps.st.Kind == parser.Explain {
		s.emit(coordinatorNotice())
	}
	s.ensurePrepared(b, ps)
	x.wbuf = appendMsg(x.wbuf, p.bind)
	x.queue = append(x.queue, reply{kind: rPass})
	p.where = b
	return true, nil
}

// coordinatorReleased is called as the extended protocol lets go of a
// backend: a coordinator statement that failed inside a transaction
// aborts it, as a failed statement does in Postgres.
func (s *session) coordinatorReleased(b *backend) {
	if b.pool.shard == coordShard && s.x.errored && s.status == 'T' {
		s.status = 'E'
	}
}

// coordinatorRouteRow is SHOW ROUTE's row for a statement the coordinator
// answers, or nil.
func (s *session) coordinatorRouteRow(st *parser.Statement, routeErr error) []string {
	if !s.coordinatorTakes(st, routeErr) {
		return nil
	}
	return []string{"coordinator", "coordinator", "false", "false", "false",
		"coordinator: the merge cannot answer it (" + routeErr.Error() + ")", ""}
}
