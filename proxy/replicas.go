package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// A shard with replicas is a replicaSet: its servers (the configured
// primary first, then the replicas) and the shard's write pool,
// Server.pools[shard], which dials whichever server is the primary now.
// Every server also has a read pool of its own. The health checker probes
// every server (role with pg_is_in_recovery(), WAL position, replay lag);
// reads outside transactions go to a replica in rotation chosen by the
// balance strategy (balance.go), everything else to the write pool.
//
// Failover: when the primary is down (or reports it is in recovery) and
// another server of the shard reports it is not in recovery, the write
// pool is retargeted to it and the generation bumps: backends of the old
// generation are closed as they come back, and the old primary is fenced,
// never written to again (it still serves reads if it comes back as a
// replica). The proxy never promotes anything.

// role is what a server said it is at its last probe.
type role uint8

const (
	roleUnknown role = iota
	rolePrimary
	roleReplica
)

func (r role) String() string {
	switch r {
	case rolePrimary:
		return "primary"
	case roleReplica:
		return "replica"
	}
	return "unknown"
}

// readFrom is where a session's reads may go.
type readFrom uint8

const (
	readPrimary readFrom = iota + 1
	readReplicas
	readAny
)

func readFromOf(s string) readFrom {
	switch s {
	case "primary":
		return readPrimary
	case "replicas":
		return readReplicas
	case "any":
		return readAny
	}
	return 0
}

// server is one Postgres server of a replicated shard. Its probe results
// are written by its health loop and read by choosers (atomics).
type server struct {
	set    *replicaSet
	idx    int
	name   string
	cfg    *pgconn.Config
	weight int
	// read is the server's read pool.
	read *pool

	role     atomic.Uint32 // role
	up       atomic.Bool   // passed its health checks
	lagging  atomic.Bool   // replay behind past the limits
	fenced   atomic.Bool   // a former primary: never written to again
	lsn      atomic.Uint64 // current (primary) or replayed (replica) WAL position
	lagBytes atomic.Int64
	lagMicro atomic.Int64 // replay lag in microseconds

	// Health-check state, owned by the server's health loop.
	conn      *pgconn.PgConn
	kick      chan struct{} // an immediate probe, please
	fails     atomic.Int64
	oks       atomic.Int64
	checks    atomic.Uint64
	lastErr   atomic.Pointer[string]
	lastCheck atomic.Int64
}

// inRotation reports whether reads may go to the server's read pool.
func (sv *server) inRotation() bool {
	return sv.up.Load() && role(sv.role.Load()) == roleReplica && !sv.lagging.Load()
}

// replicaSet is one replicated shard.
type replicaSet struct {
	shard   int
	name    string
	write   *pool // == Server.pools[shard]
	servers []*server
	// primary is the index in servers of the write pool's target.
	primary atomic.Int32
	// rr drives round robin and breaks ties.
	rr atomic.Uint32

	mu        sync.Mutex // serialises evaluate (lag, rotation, failover)
	failovers prometheus.Counter
}

// readPolicy is the reloadable part of the replicas config.
type readPolicy struct {
	from        readFrom
	balance     balance
	users       map[string]readFrom
	ryw         rywMode
	rywWindow   time.Duration
	maxLag      time.Duration
	maxLagBytes int64
}

func newReadPolicy(cfg Config) *readPolicy {
	rp := &readPolicy{from: readFromOf(cfg.Replicas.ReadFrom), balance: balanceOf(cfg.Replicas.Balance),
		users: map[string]readFrom{}, ryw: rywModeOf(cfg.Replicas.ReadYourWrites), rywWindow: cfg.Replicas.ReadYourWritesWindow,
		maxLag: cfg.Replicas.MaxLag, maxLagBytes: cfg.Replicas.MaxLagBytes}
	for _, u := range cfg.Users {
		if f := readFromOf(u.ReadFrom); f != 0 {
			rp.users[u.Name] = f
		}
	}
	return rp
}

// newReplicaSets builds the replica sets of the shards that have replicas
// (nil when none has: the hot path then checks one nil slice).
func newReplicaSets(cfg Config, topo *router.Topology, pools []*pool) ([]*replicaSet, error) {
	var sets []*replicaSet
	for i, sh := range topo.Shards {
		pools[i].buffer.Store(int64(cfg.Replicas.FailoverBuffer))
		if len(sh.Replicas) == 0 {
			continue
		}
		if sets == nil {
			sets = make([]*replicaSet, len(topo.Shards))
		}
		rs := &replicaSet{shard: i, name: sh.Name, write: pools[i]}
		pools[i].replicated = true
		add := func(name, dsn string, weight int) error {
			if weight == 0 {
				weight = 1
			}
			p, err := newPool(i, name, dsn, cfg.Pool.Size, cfg.Pool.ConnectTimeout, cfg.Pool.AcquireTimeout)
			if err != nil {
				return err
			}
			p.reads = true
			sv := &server{set: rs, idx: len(rs.servers), name: name, cfg: p.config(), weight: weight, read: p,
				kick: make(chan struct{}, 1)}
			sv.up.Store(true) // until the checks say otherwise
			if sv.idx == 0 {
				sv.role.Store(uint32(rolePrimary))
			}
			p.srv.Store(sv)
			rs.servers = append(rs.servers, sv)
			return nil
		}
		if err := add(sh.Name, sh.DSN, sh.Weight); err != nil {
			return nil, err
		}
		for j, r := range sh.Replicas {
			name := r.Name
			if name == "" {
				name = sh.ReplicaName(j)
			}
			if err := add(name, r.DSN, r.Weight); err != nil {
				return nil, err
			}
		}
		pools[i].srv.Store(rs.servers[0])
		sets[i] = rs
	}
	return sets, nil
}

// replicaState is a session's part in replica routing.
type replicaState struct {
	// wroteAt is when the session last sent a write (read-your-writes).
	wroteAt time.Time
	// flushes counts writes to the client, so that a reply can be known
	// not to have reached it yet (and be taken back for a retry).
	flushes int
	// wrote: the request (or open transaction) sent a write; touched are
	// the replicated shards whose primary it used (read-your-writes by
	// LSN, ryw.go). need is, per shard, the primary's WAL position after
	// the session's last write there.
	wrote   bool
	touched []int
	need    []uint64
	// roTx: the open transaction is read-only and runs on replicas where
	// it may (readonly.go); txMode is what SET TRANSACTION said before the
	// transaction's first statement.
	roTx   bool
	txMode parser.TxMode
	// leased is the backend leased last, when relays (relayQueue calls)
	// stood at relaysAtLease: whether a backend's replies have been
	// relayed yet in a request (the extended 25006 retry, extretry.go).
	leased                *backend
	relays, relaysAtLease int
	wbuf                  []byte
	queue                 []reply
}

// noteWrite remembers that the session writes now (read-your-writes).
func (s *session) noteWrite(st *parser.Statement) {
	if s.srv.sets != nil && (st.Writes || st.SideEffects) {
		s.rs.wroteAt = time.Now()
		s.rs.wrote = true
	}
}

// readOnly reports whether st is provably a read: a SELECT without
// locking clauses, data-modifying CTEs or state-changing built-ins.
func readOnly(st *parser.Statement) bool {
	return st.Kind == parser.Select && !st.Writes && !st.SideEffects && st.Session == parser.NoSessionUse
}

// replicaPool is the replica pool the session's reads on shard may use
// now, or nil for the primary. When read-your-writes by LSN rules out
// every replica by what the health checks saw, check is a replica in
// rotation whose replay position is worth checking on lease (leaseRead).
func (s *session) replicaPool(shard int) (p, check *pool, need uint64) {
	rs := s.srv.sets[shard]
	rp := s.srv.readPolicy.Load()
	from := rp.from
	if f, ok := rp.users[s.user]; ok {
		from = f
	}
	if from == readPrimary {
		return nil, nil, 0
	}
	switch rp.ryw {
	case rywWindow:
		if !s.rs.wroteAt.IsZero() && time.Since(s.rs.wroteAt) < rp.rywWindow {
			return nil, nil, 0
		}
	case rywLSN:
		if shard < len(s.rs.need) {
			need = s.rs.need[shard]
		}
	}
	p = rs.pick(rp.balance, from == readAny, need)
	if p == s.srv.pools[shard] || p == rs.write {
		if need > 0 {
			if c := rs.pick(rp.balance, false, 0); c != rs.write {
				return nil, c, need
			}
		}
		return nil, nil, 0
	}
	return p, nil, need
}

// replicated runs a single-shard statement outside a transaction on a
// replicated shard: a read on a replica when allowed, else on the primary.
// A statement the server refused with 25006 (read-only transaction: a
// function that writes on a replica, or a primary that is now a replica)
// is run once more on the primary, re-probed first, when its reply has
// not reached the client yet.
func (s *session) replicated(ctx context.Context, st *parser.Statement, shard int, sql string) error {
	rs := s.srv.sets[shard]
	before, flushes := len(s.out), s.rs.flushes
	p := rs.write
	var b *backend
	if s.status == 'I' && readOnly(st) {
		// A replica when allowed and reachable, else the primary.
		if b = s.leaseRead(ctx, shard); b != nil {
			p = b.pool.root()
		}
	}
	if b == nil {
		var err error
		if b, err = s.leaseFrom(ctx, p); err != nil {
			s.fail(err)
			return nil
		}
	}
	err := s.exec(b, sql, false)
	s.release(b)
	if err != nil || s.rs.flushes != flushes || len(s.out) < before {
		return err
	}
	switch {
	case s.q.sqlstate == "25006" && !(p == rs.write && s.sessionReadOnly()):
		// (A session whose transactions are read-only by default gets
		// 25006 from a healthy primary: that is the answer.)
	case p != rs.write && (s.q.sqlstate == "08006" || strings.HasPrefix(s.q.sqlstate, "57P")):
		// The replica went away or is shutting down mid-read: a read is
		// safe to run again (its FATAL must not reach the client).
	default:
		return nil
	}
	if p == rs.write {
		// The "primary" is read-only: look for the promoted one and wait
		// for it up to failover_buffer.
		if !rs.reprobe(ctx, s.srv) {
			return nil
		}
	}
	s.out = s.out[:before]
	s.q.sqlstate = ""
	s.srv.repl.retries.Inc()
	return s.single(ctx, shard, sql)
}

// leaseFor leases a backend for st on shard: a replica's when st is a
// read that may go to one (the primary's when that replica cannot be
// reached), else the shard's write pool.
func (s *session) leaseFor(ctx context.Context, st *parser.Statement, shard int) (*backend, error) {
	if sets := s.srv.sets; sets != nil && sets[shard] != nil && s.status == 'I' && readOnly(st) {
		if b := s.leaseRead(ctx, shard); b != nil {
			return b, nil
		}
	}
	return s.leaseFrom(ctx, s.sessionPool(shard))
}

// leaseAllFor is leaseAll for st: on shards with replicas a read takes a
// replica's backend (leaseFor). Shards are leased in ascending order, as
// leaseAll does; on error it returns what it leased.
func (s *session) leaseAllFor(ctx context.Context, st *parser.Statement, shards []int) ([]*backend, error) {
	if s.srv.sets == nil || st == nil {
		return s.leaseAll(ctx, shards)
	}
	bs := make([]*backend, 0, len(shards))
	for _, sh := range shards {
		b, err := s.leaseFor(ctx, st, sh)
		if err != nil {
			return bs, err
		}
		bs = append(bs, b)
	}
	return bs, nil
}

// leaseFrom is lease from a given pool (a replica's read pool, or a
// shard's write pool).
func (s *session) leaseFrom(ctx context.Context, p *pool) (*backend, error) {
	// A session with a backend role leases from the role's own pool (roles.go).
	p = s.asRole(p)
	if b, ok, err := s.useReserved(p); ok { // reserve.go
		return b, err
	}
	t := time.Now()
	b, err := s.acquireCancelable(ctx, p) // leasecancel.go
	s.waited(p.shard, t)
	if err != nil {
		return nil, err
	}
	if err := s.applySettings(b); err != nil {
		s.release(b)
		return nil, err
	}
	s.mu.Lock()
	s.leased = append(s.leased, b)
	s.mu.Unlock()
	if s.srv.sets != nil && !p.reads {
		s.touchedPrimary(p.shard) // ryw.go
	}
	s.rs.leased, s.rs.relaysAtLease = b, s.rs.relays
	return b, nil
}

// reprobe probes the set's servers now and reports whether the write pool
// was retargeted to a new primary within failover_buffer.
func (rs *replicaSet) reprobe(ctx context.Context, srv *Server) bool {
	gen := rs.write.gen.Load()
	rs.probeNow()
	wait := time.Duration(rs.write.buffer.Load())
	if wait <= 0 {
		wait = srv.health.cfg.Load().Timeout
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for rs.write.gen.Load() == gen {
		rs.write.mu.Lock()
		ch := rs.write.changed
		rs.write.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return rs.write.gen.Load() != gen
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// serverProbeSQL reads a server's role, WAL position and replay lag in one round
// trip. The lag in time is zero while the replica has replayed all it
// received (an idle primary writes nothing to replay).
const serverProbeSQL = `SELECT pg_is_in_recovery()::text, (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text,
	(CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
	 ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END)::text`

// probe checks the server on the health loop's own connection: its role,
// WAL position and replay lag.
func (sv *server) probe(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if sv.conn == nil {
		c, err := pgconn.ConnectConfig(ctx, sv.cfg)
		if err != nil {
			return err
		}
		sv.conn = c
	}
	start := time.Now()
	res, err := sv.conn.Exec(ctx, serverProbeSQL).ReadAll()
	if err == nil && (len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 3) {
		err = errors.New("unexpected probe reply")
	}
	if err != nil {
		sv.conn.Close(context.Background())
		sv.conn = nil
		return err
	}
	sv.read.observe(time.Since(start))
	row := res[0].Rows[0]
	r := rolePrimary
	if string(row[0]) == "true" {
		r = roleReplica
	}
	sv.role.Store(uint32(r))
	lsn, err := parseLSN(string(row[1]))
	if err != nil {
		return err
	}
	sv.lsn.Store(lsn)
	secs, _ := strconv.ParseFloat(string(row[2]), 64)
	sv.lagMicro.Store(int64(secs * 1e6))
	return nil
}

// parseLSN reads a pg_lsn's text form (16/B374D848).
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("bad lsn %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad lsn %q", s)
	}
	return h<<32 | l, nil
}

// serverLoop is the health loop of one server of a replicated shard.
func (h *healthChecker) serverLoop(ctx context.Context, sv *server, sh *shardHealth) {
	defer h.wg.Done()
	defer func() {
		if sv.conn != nil {
			sv.conn.Close(context.Background())
		}
	}()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-sv.kick:
		}
		cfg := h.cfg.Load()
		err := sv.probe(ctx, cfg.Timeout)
		if ctx.Err() != nil {
			return
		}
		h.serverUpdate(sv, sh, cfg, err)
		t.Reset(cfg.Interval)
	}
}

// probeNow asks every server's health loop for a probe at once (a write
// met 25006, or the primary looks gone).
func (rs *replicaSet) probeNow() {
	for _, sv := range rs.servers {
		select {
		case sv.kick <- struct{}{}:
		default:
		}
	}
}

// serverUpdate records a probe's outcome and re-evaluates the set: which
// replicas are in rotation, and whether writes must move to a new primary.
func (h *healthChecker) serverUpdate(sv *server, sh *shardHealth, cfg *HealthConfig, err error) {
	now := time.Now()
	sv.checks.Add(1)
	sv.lastCheck.Store(now.UnixNano())
	if err != nil {
		fails := sv.fails.Add(1)
		sv.oks.Store(0)
		msg := err.Error()
		sv.lastErr.Store(&msg)
		if sv.up.Load() && fails >= int64(cfg.Failures) {
			sv.up.Store(false)
			sv.read.downErr.Store(&shardError{shard: sv.name,
				err: fmt.Errorf("marked down after %d failed health checks (last: %v)", fails, err)})
			sv.read.dropIdle()
			h.log.Warn("server down", "shard", sv.set.name, "server", sv.name, "failures", fails, "err", err)
		}
	} else {
		oks := sv.oks.Add(1)
		sv.fails.Store(0)
		sv.lastErr.Store(nil)
		if !sv.up.Load() && oks >= int64(cfg.Successes) {
			sv.up.Store(true)
			sv.read.downErr.Store(nil)
			sv.read.signal()
			h.log.Info("server up", "shard", sv.set.name, "server", sv.name, "successes", oks)
		}
	}
	sv.set.evaluate(h.log, h.policy.Load(), sh)
}

// evaluate recomputes lag and rotation for every server of the set and
// fails writes over to a server that reports it is the primary when the
// current one is down or read-only. Called after each probe.
func (rs *replicaSet) evaluate(log *slog.Logger, rp *readPolicy, sh *shardHealth) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	cur := rs.servers[rs.primary.Load()]
	curLSN := cur.lsn.Load()
	for _, sv := range rs.servers {
		if role(sv.role.Load()) != roleReplica {
			sv.lagBytes.Store(0)
			sv.lagging.Store(false)
			continue
		}
		var lag int64
		if l := sv.lsn.Load(); curLSN > l && cur.up.Load() {
			lag = int64(curLSN - l)
		}
		sv.lagBytes.Store(lag)
		lagging := rp != nil && ((rp.maxLagBytes > 0 && lag > rp.maxLagBytes) ||
			(rp.maxLag > 0 && time.Duration(sv.lagMicro.Load())*time.Microsecond > rp.maxLag))
		if sv.lagging.Swap(lagging) != lagging {
			log.Info("replica lag", "shard", rs.name, "server", sv.name, "lagging", lagging, "lag_bytes", lag)
		}
	}
	// Writes: the current primary while it is up and says so.
	if cur.up.Load() && role(cur.role.Load()) == rolePrimary && !cur.fenced.Load() {
		rs.write.downErr.Store(nil)
		rs.write.signal()
		sh.mirror(cur, true)
		return
	}
	for _, sv := range rs.servers {
		if sv == cur || sv.fenced.Load() || !sv.up.Load() || role(sv.role.Load()) != rolePrimary || sv.checks.Load() == 0 {
			continue
		}
		// sv says it is the primary and the current one is down or
		// read-only: writes move to sv. The old primary is fenced.
		cur.fenced.Store(true)
		rs.primary.Store(int32(sv.idx))
		rs.write.retarget(sv)
		if rs.failovers != nil {
			rs.failovers.Inc()
		}
		log.Warn("failover: writes go to a new primary", "shard", rs.name, "from", cur.name, "to", sv.name,
			"generation", rs.write.gen.Load())
		sh.mirror(sv, true)
		return
	}
	if !cur.up.Load() || role(cur.role.Load()) == roleReplica {
		if rs.write.downErr.Load() == nil {
			why := "is down"
			if cur.up.Load() {
				why = "is in recovery (read-only)"
			}
			rs.write.downErr.Store(&shardError{shard: rs.name, err: fmt.Errorf("no writable primary: %s %s", cur.name, why)})
			rs.write.dropIdle()
			log.Warn("shard has no writable primary", "shard", rs.name, "server", cur.name, "reason", why)
		}
		sh.mirror(cur, false)
	}
}

// retarget points the write pool at sv: a new generation, so backends to
// the old server are closed, never reused.
func (p *pool) retarget(sv *server) {
	cfg := *sv.cfg
	p.mu.Lock()
	p.cfgp.Store(&cfg)
	p.gen.Add(1)
	p.srv.Store(sv)
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	p.mu.Unlock()
	for _, b := range idle {
		b.conn.Close()
	}
	p.downErr.Store(nil)
	p.signal()
}

// signal wakes the statements waiting in acquire for the pool to come up.
func (p *pool) signal() {
	p.mu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// awaitUp waits up to the pool's failover buffer for a down pool to come
// back (or be retargeted); it returns down when it does not.
func (p *pool) awaitUp(ctx context.Context, down error) error {
	wait := time.Duration(p.buffer.Load())
	if wait <= 0 {
		return down
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		if e := p.downErr.Load(); e == nil {
			return nil
		} else {
			down = e
		}
		select {
		case <-ch:
		case <-t.C:
			if p.downErr.Load() == nil {
				return nil
			}
			return down
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// mirror shows the write target's health in the shard's row (SHOW SHARDS,
// /ready).
func (sh *shardHealth) mirror(sv *server, up bool) {
	now := time.Now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.checks = sv.checks.Load()
	sh.lastCheck = time.Unix(0, sv.lastCheck.Load())
	sh.fails, sh.oks = int(sv.fails.Load()), int(sv.oks.Load())
	sh.lastErr = ""
	if e := sv.lastErr.Load(); e != nil {
		sh.lastErr = *e
	}
	if up != sh.up {
		sh.up, sh.since = up, now
	}
}
