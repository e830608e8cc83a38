package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// healthChecker runs one goroutine per shard. Each keeps one connection of
// its own to the shard (not from the pool, so an exhausted pool does not
// look like a dead shard) and runs SELECT 1 on it every interval. After
// Failures failed checks in a row the shard is marked down: its pool
// refuses leases at once with 08006 and drops its idle connections. After
// Successes good checks in a row it is up again.
type healthChecker struct {
	log    *slog.Logger
	cfg    atomic.Pointer[HealthConfig]
	shards []*shardHealth
	// sets are the replicated shards (replicas.go): each of their
	// servers has a loop of its own (serverLoop) instead of the shard's;
	// policy holds the replica lag limits.
	sets   []*replicaSet
	policy *atomic.Pointer[readPolicy]

	mu      sync.Mutex
	cancel  context.CancelFunc
	servers []*http.Server
	wg      sync.WaitGroup
}

// shardHealth is the checker's view of one shard. conn is owned by the
// shard's checker goroutine; the rest is guarded by mu.
type shardHealth struct {
	p    *pool
	conn *pgconn.PgConn

	mu        sync.Mutex
	up        bool
	fails     int
	oks       int
	checks    uint64
	lastCheck time.Time
	lastErr   string
	since     time.Time
}

func newHealthChecker(log *slog.Logger, cfg HealthConfig, pools []*pool) *healthChecker {
	h := &healthChecker{log: log}
	h.cfg.Store(&cfg)
	now := time.Now()
	for _, p := range pools {
		h.shards = append(h.shards, &shardHealth{p: p, up: true, since: now})
	}
	return h
}

// start launches the checkers; later calls do nothing. They run until ctx
// ends or stop is called.
func (h *healthChecker) start(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cancel != nil {
		return
	}
	ctx, h.cancel = context.WithCancel(ctx)
	for i, sh := range h.shards {
		if h.sets != nil && h.sets[i] != nil {
			for _, sv := range h.sets[i].servers {
				h.wg.Add(1)
				go h.serverLoop(ctx, sv, sh)
			}
			continue
		}
		h.wg.Add(1)
		go h.loop(ctx, sh)
	}
}

// stop ends the checkers and the admin HTTP servers and waits for them.
func (h *healthChecker) stop() {
	h.mu.Lock()
	if h.cancel != nil {
		h.cancel()
	} else {
		h.cancel = func() {} // never start after stop
	}
	servers := h.servers
	h.servers = nil
	h.mu.Unlock()
	for _, hs := range servers {
		hs.Close()
	}
	h.wg.Wait()
}

func (h *healthChecker) loop(ctx context.Context, sh *shardHealth) {
	defer h.wg.Done()
	defer func() {
		if sh.conn != nil {
			sh.conn.Close(context.Background())
		}
	}()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cfg := h.cfg.Load()
		err := sh.ping(ctx, cfg.Timeout)
		if ctx.Err() != nil {
			return
		}
		h.update(sh, cfg, err)
		t.Reset(cfg.Interval)
	}
}

// ping checks the shard with SELECT 1 on the checker's connection, dialing
// it first when needed; a failed connection is closed and redialed next time.
func (sh *shardHealth) ping(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if sh.conn == nil {
		c, err := pgconn.ConnectConfig(ctx, sh.p.config())
		if err != nil {
			return err
		}
		sh.conn = c
	}
	if _, err := sh.conn.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		sh.conn.Close(context.Background())
		sh.conn = nil
		return err
	}
	return nil
}

func (h *healthChecker) update(sh *shardHealth, cfg *HealthConfig, err error) {
	now := time.Now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.checks++
	sh.lastCheck = now
	if err != nil {
		sh.fails++
		sh.oks = 0
		sh.lastErr = err.Error()
		if sh.up && sh.fails >= cfg.Failures {
			sh.up, sh.since = false, now
			sh.p.downErr.Store(&shardError{shard: sh.p.name,
				// %v, not %w: the client gets 08006, not the last check's SQLSTATE.
				err: fmt.Errorf("marked down after %d failed health checks (last: %v)", sh.fails, err)})
			sh.p.dropIdle()
			h.log.Warn("shard down", "shard", sh.p.name, "failures", sh.fails, "err", err)
		}
		return
	}
	sh.oks++
	sh.fails = 0
	sh.lastErr = ""
	if !sh.up && sh.oks >= cfg.Successes {
		sh.up, sh.since = true, now
		sh.p.downErr.Store(nil)
		sh.p.signal()
		h.log.Info("shard up", "shard", sh.p.name, "successes", sh.oks)
	}
}

// dropIdle closes the pool's idle connections (they died with the shard).
func (p *pool) dropIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	p.mu.Unlock()
	for _, b := range idle {
		b.conn.Close()
	}
}

// poolSnapshot is a point-in-time view of a pool.
type poolSnapshot struct{ size, open, idle, waiting int }

func (p *pool) snapshot() poolSnapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return poolSnapshot{size: p.size, open: p.open, idle: len(p.idle), waiting: len(p.waiters)}
}

// shardStatus is one shard in /ready and SHOW SHARDS.
type shardStatus struct {
	Name                 string    `json:"name"`
	Up                   bool      `json:"up"`
	Since                time.Time `json:"since"`
	Checks               uint64    `json:"checks"`
	LastCheck            time.Time `json:"last_check,omitzero"`
	LastError            string    `json:"last_error,omitempty"`
	ConsecutiveFailures  int       `json:"consecutive_failures"`
	ConsecutiveSuccesses int       `json:"consecutive_successes"`
}

func (h *healthChecker) status() []shardStatus {
	out := make([]shardStatus, len(h.shards))
	for i, sh := range h.shards {
		sh.mu.Lock()
		out[i] = shardStatus{Name: sh.p.name, Up: sh.up, Since: sh.since, Checks: sh.checks, LastCheck: sh.lastCheck,
			LastError: sh.lastErr, ConsecutiveFailures: sh.fails, ConsecutiveSuccesses: sh.oks}
		sh.mu.Unlock()
	}
	return out
}

// AdminHandler serves /metrics from g (when not nil), /health (liveness:
// 200 while the server is not shutting down) and /ready (200 when every
// shard passed its last health checks, else 503; JSON detail per shard).
func (s *Server) AdminHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	if g != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if s.closing.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		shards := s.health.status()
		ready := !s.closing.Load()
		for _, sh := range shards {
			ready = ready && sh.Up && sh.Checks > 0
		}
		body := struct {
			Ready  bool          `json:"ready"`
			Shards []shardStatus `json:"shards"`
		}{ready, shards}
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(body)
	})
	return mux
}

// ServeAdmin serves AdminHandler(g) on ln until ctx ends or Close.
func (s *Server) ServeAdmin(ctx context.Context, ln net.Listener, g prometheus.Gatherer) error {
	hs := &http.Server{Handler: s.AdminHandler(g), ReadHeaderTimeout: 5 * time.Second}
	h := s.health
	h.mu.Lock()
	h.servers = append(h.servers, hs)
	h.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { hs.Close() })
	defer stop()
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
