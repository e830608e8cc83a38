package proxy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/resultcache"
	"github.com/shardproxy/shardproxy/router"
)

// Server accepts client connections and serves them over the shards.
type Server struct {
	cfg    Config
	router *router.Router
	pools  []*pool
	log    *slog.Logger
	cache  *parser.Cache
	// results is the result cache and consolidation (results.go).
	results *resultcache.Cache

	nextPID  atomic.Uint32
	sessions sync.Map // pid -> *session, for CancelRequest

	// textByteOrder is true when every shard's database collation is C or
	// POSIX, so text compares by bytes.
	textByteOrder bool

	mu       sync.Mutex
	ln       net.Listener
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
	closing  atomic.Bool
	stopped  chan struct{} // closed by Close
	defaults map[string]string

	stmtMu    sync.Mutex
	stmtNames map[string]string // (query, param types) -> backend statement name
	// Observability and operations (observe.go, metrics.go, health.go,
	// admin.go, reload.go).
	live     atomic.Pointer[liveConfig] // users, admins and reloadable settings
	obs      *observer
	health   *healthChecker
	reloader reloaderFunc
	// tpc is two-phase commit's state (twophase.go).
	tpc *twoPhase

	// Replicas (replicas.go): the replica set of each shard that has
	// replicas (nil when none has), the read policy, their metrics.
	sets       []*replicaSet
	readPolicy atomic.Pointer[readPolicy]
	repl       *replicaMetrics
	coord      *coordRoute // coordinator.go; nil without a coordinator
	limits     *limiter    // limits.go
	roles      rolePools   // roles.go: pools of users with their own backend role

	// placement is the bucket-map version and cutover fence (topology.go).
	placement placementState
	notify    notifyHub // listen.go: the listener connection
}

// New builds a server for cfg over topo. It does not connect to the shards
// until Warm or the first query.
func New(cfg Config, topo *router.Topology, log *slog.Logger) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, router: router.New(topo), log: log,
		conns: map[net.Conn]struct{}{}, cache: parser.NewCache(10000), stmtNames: map[string]string{},
		tpc: newTwoPhase(cfg.TwoPhase), stopped: make(chan struct{})}
	for i, sh := range topo.Shards {
		p, err := newPool(i, sh.Name, sh.DSN, cfg.Pool.Size, cfg.Pool.ConnectTimeout, cfg.Pool.AcquireTimeout)
		if err != nil {
			return nil, err
		}
		s.pools = append(s.pools, p)
	}
	s.initServers()
	sets, err := newReplicaSets(cfg, topo, s.pools)
	if err != nil {
		return nil, err
	}
	s.sets = sets
	s.readPolicy.Store(newReadPolicy(cfg))
	s.repl = newReplicaMetrics()
	for _, rs := range sets {
		if rs != nil {
			rs.failovers = s.repl.failovers
		}
	}
	s.results = resultcache.New(cfg.Cache, log)
	if err := s.initObserve(cfg, topo); err != nil {
		return nil, err
	}
	s.health.sets, s.health.policy = sets, &s.readPolicy
	if err := s.initCoordinator(cfg); err != nil {
		return nil, err
	}
	var seed [4]byte
	rand.Read(seed[:])
	s.nextPID.Store(binary.BigEndian.Uint32(seed[:]) >> 8)
	return s, nil
}

// Warm connects once to every shard: it learns the server parameters to
// report to clients and the shards' collation, and leaves one idle
// connection per shard. A shard that is down is logged, not fatal.
func (s *Server) Warm(ctx context.Context) {
	allC := true
	for _, p := range s.pools {
		b, err := p.acquire(ctx)
		if err != nil {
			s.log.Warn("shard unreachable at start", "shard", p.name, "err", err)
			allC = false
			continue
		}
		// An ICU default collation (datlocprovider 'i', Postgres 15+)
		// orders text by ICU rules whatever datcollate says.
		coll, err := simpleValue(b, "SELECT datcollate || CASE WHEN to_jsonb(d) ->> 'datlocprovider' = 'i' THEN ' (icu)' ELSE '' END FROM pg_database d WHERE datname = current_database()")
		if err != nil {
			s.log.Warn("read shard collation", "shard", p.name, "err", err)
		}
		if coll != "C" && coll != "POSIX" {
			allC = false
		}
		s.readCollations(p, b)
		p.release(b)
	}
	s.textByteOrder = allC
	s.readColumnOrder(ctx)
	s.provisionCoordinator(ctx)
}

// collations are the columns of a shard's tables whose collation is not
// byte order (a COLLATE "en-x-icu" column in a C database): the merge must
// not order them, or what is computed from them, byte by byte.
type collations struct {
	cols map[[2]uint32]bool // (table OID, attnum) -> the collation is nondeterministic
	// names are those columns' names -> nondeterministic.
	names map[string]bool
	// any and nondet say some column has such a collation (a
	// nondeterministic one): computed columns, whose source the
	// RowDescription does not give, may then carry it.
	any, nondet bool
}

// readCollations learns the columns with collations other than C of the
// shard (at start, and after DDL through the proxy).
func (s *Server) readCollations(p *pool, b *backend) {
	list, err := simpleValue(b, `SELECT coalesce(string_agg(a.attrelid::text || ':' || a.attnum || ':' ||
		CASE WHEN c.collisdeterministic THEN 'd' ELSE 'n' END || ':' || encode(convert_to(a.attname, 'UTF8'), 'hex'), ','), '')
		FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
		WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attcollation NOT IN (0, 100, 950, 951) AND a.attrelid >= 16384`)
	if err != nil {
		s.log.Warn("read column collations", "shard", p.name, "err", err)
		p.colls.Store(nil) // unknown: text is not ordered across shards
		return
	}
	c := &collations{cols: map[[2]uint32]bool{}, names: map[string]bool{}}
	for _, e := range strings.Split(list, ",") {
		var rel, att uint32
		var kind, name string
		if _, err := fmt.Sscanf(strings.ReplaceAll(e, ":", " "), "%d %d %s %s", &rel, &att, &kind, &name); err != nil {
			continue
		}
		c.cols[[2]uint32{rel, att}] = kind == "n"
		if n, err := hex.DecodeString(name); err == nil {
			c.names[string(n)] = c.names[string(n)] || kind == "n"
		}
		c.any = true
		c.nondet = c.nondet || kind == "n"
	}
	p.colls.Store(c)
}

// mentioned reports whether names (a statement's column names) include a
// column with its own collation (a nondeterministic one, with nondet).
func (c *collations) mentioned(names []string, nondet bool) bool {
	for _, n := range names {
		if d, ok := c.names[n]; ok && (d || !nondet) {
			return true
		}
	}
	return false
}

// refreshCollations rereads every shard's column collations and the
// sharded tables' column order (after DDL).
func (s *Server) refreshCollations(ctx context.Context) {
	s.refreshCoordinator()
	for _, p := range s.pools {
		b, err := p.acquire(ctx)
		if err != nil {
			p.colls.Store(nil) // unknown: text is not ordered across shards
			continue
		}
		resetApplied(b)
		s.readCollations(p, b)
		p.release(b)
	}
	s.readColumnOrder(ctx)
}

// readColumnOrder reads each sharded table's columns, in order, from every
// shard and gives them to the router (an INSERT without a column list
// finds its shard key by position). A table whose shards disagree, or
// that a shard lacks, gets no order: such INSERTs are refused.
func (s *Server) readColumnOrder(ctx context.Context) {
	topo := s.router.Topology()
	var names []string
	for name, t := range topo.Tables {
		if t.Key != "" {
			names = append(names, quoteLiteral(name))
		}
	}
	if len(names) == 0 {
		return
	}
	q := "SELECT t, coalesce((SELECT json_agg(attname ORDER BY attnum)::text FROM pg_attribute WHERE attrelid = to_regclass(t) AND attnum > 0 AND NOT attisdropped), '') FROM unnest(ARRAY[" +
		strings.Join(names, ",") + "]::text[]) t"
	cols := map[string][]string{}
	seen := map[string]string{}
	for i, p := range s.pools {
		b, err := p.acquire(ctx)
		if err != nil {
			return // keep what is known; retried after the next DDL
		}
		rows, err := simpleRows(b, q)
		p.release(b)
		if err != nil {
			s.log.Warn("read column order", "shard", p.name, "err", err)
			return
		}
		for _, r := range rows {
			name, list := r[0], r[1]
			if i == 0 {
				seen[name] = list
				var c []string
				if list != "" && json.Unmarshal([]byte(list), &c) == nil {
					cols[name] = c
				} else {
					cols[name] = nil
				}
			} else if seen[name] != list {
				cols[name] = nil
			}
		}
	}
	s.router.SetColumnOrder(cols)
}

// simpleValue runs a one-value query on a backend with the simple
// protocol: the first column of its last row ("" for none or NULL).
func simpleValue(b *backend, sql string) (string, error) {
	rows, err := simpleRows(b, sql)
	if err != nil || len(rows) == 0 || len(rows[len(rows)-1]) == 0 {
		return "", err
	}
	return rows[len(rows)-1][0], nil
}

// defaultParams returns the ParameterStatus values reported to clients.
func (s *Server) defaultParams() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.defaults != nil {
		return s.defaults
	}
	out := map[string]string{
		"server_version": "15.0", "server_encoding": "UTF8", "client_encoding": "UTF8",
		"DateStyle": "ISO, MDY", "IntervalStyle": "postgres", "TimeZone": "UTC",
		"integer_datetimes": "on", "standard_conforming_strings": "on", "is_superuser": "off",
	}
	for _, p := range s.pools {
		p.mu.Lock()
		params := p.params
		p.mu.Unlock()
		if params == nil {
			continue
		}
		for k, v := range params {
			switch k {
			case "session_authorization", "application_name", "is_superuser":
				continue
			}
			out[k] = v
		}
		s.defaults = out
		break
	}
	return out
}

// ListenAndServe listens on cfg.Listen and serves until ctx ends or Close.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve accepts connections on ln until ctx ends or Close is called.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.health.start(ctx)
	rctx, stopRecovery := context.WithCancel(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.recoveryLoop(rctx, s.cfg.TwoPhase.RecoveryInterval)
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.watchClients(rctx) // clientwatch.go
	}()
	go func() {
		<-s.stopped
		stopRecovery()
	}()
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return err
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.handle(ctx, c)
	}
}

// Addr is the listening address, once serving.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops accepting, closes client connections and the pools, and
// waits for sessions to end.
func (s *Server) Close() {
	if s.closing.Swap(true) {
		return
	}
	close(s.stopped)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.health.stop()
	for _, p := range s.pools {
		p.close()
	}
	s.closeReplicas()
	s.results.Close()
	s.closeCoordinator()
	s.roles.close()
}

func (s *Server) handle(ctx context.Context, c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	conn := newRawConn(c)
	// A client's messages are small (large ones, COPY data, bypass the
	// read buffer), and an idle client should cost little: a 4 KiB read
	// buffer, and output and message buffers that grow on first use.
	sess := &session{srv: s, conn: conn, rd: newFrameReader(conn, clientReadBuffer), txState: txState{status: 'I'}}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("session panic", "err", fmt.Sprint(r), "user", sess.user)
		}
		sess.cleanup()
	}()
	if err := sess.run(ctx); err != nil && !errors.Is(err, io.EOF) && !s.closing.Load() {
		s.log.Debug("session ended", "err", err, "user", sess.user)
	}
}

// cancel handles a CancelRequest from a new connection.
func (s *Server) cancel(pid uint32, secret []byte) {
	v, ok := s.sessions.Load(pid)
	if !ok {
		return
	}
	sess := v.(*session)
	if string(sess.secret[:]) != string(secret) {
		return
	}
	sess.cw.lw.interrupt()     // leasecancel.go: a statement still waiting for a backend
	sess.cancelLeased().Wait() // cancelwait.go: delivered before the client hears back
}
