package proxy

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"

	"github.com/shardproxy/shardproxy/router"
)

// liveConfig is the part of the config that a reload swaps atomically.
type liveConfig struct {
	cfg    Config
	creds  map[string]*credential
	admins map[string]bool
	tls    *tlsMaterial // nil: TLS off (tls.go)
}

func newLiveConfig(cfg Config) (*liveConfig, error) {
	lc := &liveConfig{cfg: cfg, creds: map[string]*credential{}, admins: map[string]bool{}}
	for _, u := range cfg.Users {
		c, err := newCredential(u, cfg.BackendRoles)
		if err != nil {
			return nil, err
		}
		lc.creds[u.Name] = c
	}
	for _, a := range cfg.Admins {
		lc.admins[a] = true
	}
	m, err := loadTLS(cfg.TLS)
	if err != nil {
		return nil, err
	}
	lc.tls = m
	return lc, nil
}

// initObserve builds the server's users, observer, metrics and health
// checker. New calls it once the pools exist.
func (s *Server) initObserve(cfg Config, topo *router.Topology) error {
	lc, err := newLiveConfig(cfg)
	if err != nil {
		return err
	}
	s.live.Store(lc)
	s.limits = newLimiter()
	names := make([]string, len(topo.Shards))
	for i, sh := range topo.Shards {
		names[i] = sh.Name
	}
	s.obs = newObserver(s.log, newMetrics(names), names, cfg.QueryStats)
	s.health = newHealthChecker(s.log, cfg.Health, s.pools)
	return nil
}

// credential returns the login of user under the current config, or
// from the auth query for a user not listed (a failed lookup is logged
// and answered as an unknown user).
func (s *Server) credential(user string) (*credential, bool) {
	lc := s.live.Load()
	c, ok := lc.creds[user]
	if ok || lc.cfg.AuthQuery.Query == "" {
		return c, ok
	}
	c, err := s.lookupCredential(context.Background(), lc.cfg.AuthQuery, user)
	if err != nil {
		s.log.Warn("auth query failed", "user", user, "err", err)
	}
	return c, c != nil
}

// Apply changes the running server to cfg where that is safe live: users
// and passwords, admins, pool sizes, health-check settings, the size of the
// query statistics. Changes to listen, admin_listen, database and pool
// timeouts need a restart: they are logged and ignored. A config that does
// not validate changes nothing. Sessions keep their backends; a smaller
// pool shrinks as connections come back.
func (s *Server) Apply(cfg Config) error {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	lc, err := newLiveConfig(cfg)
	if err != nil {
		return err
	}
	old := s.live.Load().cfg
	for _, d := range []struct {
		key      string
		old, new any
	}{
		{"listen", old.Listen, cfg.Listen},
		{"admin_listen", old.AdminListen, cfg.AdminListen},
		{"database", old.Database, cfg.Database},
		{"pool.connect_timeout", old.Pool.ConnectTimeout, cfg.Pool.ConnectTimeout},
		{"pool.acquire_timeout", old.Pool.AcquireTimeout, cfg.Pool.AcquireTimeout},
		{"coordinator", old.Coordinator.String(), cfg.Coordinator.String()},
	} {
		if d.old != d.new {
			s.log.Warn("config change needs a restart, keeping the running value",
				"key", d.key, "running", fmt.Sprint(d.old), "file", fmt.Sprint(d.new))
		}
	}
	if !reflect.DeepEqual(old.Cache, cfg.Cache) {
		s.log.Warn("config change needs a restart, keeping the running value", "key", "cache")
		cfg.Cache = old.Cache
	}
	cfg.Listen, cfg.AdminListen, cfg.Database = old.Listen, old.AdminListen, old.Database
	cfg.Pool.ConnectTimeout, cfg.Pool.AcquireTimeout = old.Pool.ConnectTimeout, old.Pool.AcquireTimeout
	cfg.Coordinator = old.Coordinator
	lc.cfg = cfg
	s.live.Store(lc)
	for _, p := range s.pools {
		p.setSize(cfg.Pool.Size)
	}
	s.roles.setSize(cfg.Pool.Size)
	h := cfg.Health
	s.health.cfg.Store(&h)
	s.applyReplicas(cfg)
	s.obs.stats.resize(cfg.QueryStats)
	s.refreshCoordinator() // the shards' tables may have changed
	return nil
}

// setSize changes the pool's bound: idle connections over it are closed at
// once, busy ones when they come back; waiters get the new slots.
func (p *pool) setSize(n int) {
	p.mu.Lock()
	p.size = n
	var extra []*backend
	for p.open > p.size && len(p.idle) > 0 {
		extra = append(extra, p.idle[len(p.idle)-1])
		p.idle = p.idle[:len(p.idle)-1]
		p.open--
	}
	var ws []chan leaseResult
	for len(p.waiters) > 0 && p.open < p.size && !p.closed {
		ws = append(ws, p.waiters[0])
		p.waiters = p.waiters[1:]
		p.open++
	}
	p.mu.Unlock()
	for _, b := range extra {
		b.conn.Close()
	}
	for _, w := range ws {
		go func() {
			b, err := p.dial(context.Background())
			if err != nil {
				p.mu.Lock()
				p.open--
				p.mu.Unlock()
			}
			w <- leaseResult{b, err}
		}()
	}
}

// SetReloader sets the function that re-reads the config file and applies
// it (cmd/shardproxy: config.Load, topology check, log level, Apply,
// SetSlowLog). Reload and the admin console's RELOAD call it.
func (s *Server) SetReloader(fn func() error) { s.reloader.Store(&fn) }

// errNoReloader means nothing was set with SetReloader.
var errNoReloader = errors.New("no config file to reload from")

// Reload runs the reloader (SIGHUP, RELOAD), logs and counts the outcome.
func (s *Server) Reload() error {
	fn := s.reloader.Load()
	err := errNoReloader
	if fn != nil {
		err = (*fn)()
	}
	if err != nil {
		s.obs.m.reloads[1].Inc()
		s.log.Error("config reload failed, keeping the running config", "err", err)
		return err
	}
	s.obs.m.reloads[0].Inc()
	s.log.Info("config reloaded")
	return nil
}

// reloaderFunc is the stored reloader.
type reloaderFunc = atomic.Pointer[func() error]
