package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

// backendRole is the role a client user reaches the shards as, when it is
// not the shard DSN's user (users[].backend_user): least privilege on the
// shards. Its pools are separate from the default ones.
type backendRole struct {
	user, password string
	// scram: logins by SCRAM pass-through (auth_query users, authquery.go)
	// instead of password.
	scram scramKeys
}

// rolePools holds the pools of the backend roles in use: one per (role,
// default pool), made on first use. A default pool is a shard's (write)
// pool or, on a shard with replicas, a server's read pool; Server.pools
// stays the default role's (the DSN's user), which Warm, the health
// checker and two-phase recovery use.
type rolePools struct {
	mu     sync.Mutex
	byKey  map[roleKey]*pool
	all    []*pool // in creation order, for SHOW POOLS, SHOW SERVERS and metrics
	closed bool
}

type roleKey struct {
	role backendRole
	base *pool
}

// root is the default pool p stands in for: its base, or p itself.
func (p *pool) root() *pool {
	if p.base != nil {
		return p.base
	}
	return p
}

// rolePool returns role's pool for the default pool base, making it on
// first use from base's settings with role's user and password.
func (s *Server) rolePool(role backendRole, base *pool) *pool {
	r := &s.roles
	r.mu.Lock()
	defer r.mu.Unlock()
	k := roleKey{role, base}
	if p, ok := r.byKey[k]; ok {
		return p
	}
	if r.byKey == nil {
		r.byKey = map[roleKey]*pool{}
	}
	p := &pool{shard: base.shard, name: base.name, size: s.live.Load().cfg.Pool.Size, timeout: base.timeout,
		reads: base.reads, replicated: base.replicated, changed: make(chan struct{}), base: base, role: &k.role}
	p.retargetRole()
	if r.closed {
		p.close()
	}
	r.byKey[k] = p
	r.all = append(r.all, p)
	return p
}

// retargetRole points a role's pool at its base's server now, with the
// role's credentials; backends dialed before are not reused.
func (p *pool) retargetRole() {
	b := p.base
	p.mu.Lock()
	gen := b.gen.Load()
	cfg := b.config().Copy()
	cfg.User, cfg.Password = p.role.user, p.role.password
	if p.role.scram.clientKey != "" {
		cfg.AfterNetConnect = p.role.scram.afterNetConnect
	}
	p.cfgp.Store(cfg)
	p.srv.Store(b.srv.Load())
	p.baseGen.Store(gen)
	p.gen.Add(1)
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	p.mu.Unlock()
	for _, bk := range idle {
		bk.conn.Close()
	}
}

// follow keeps a role's pool in step with its base before a lease: while
// the health checker holds the base down the lease fails at once (or waits
// the failover buffer, as the base's would) and idle backends are dropped;
// after a failover retarget the role's pool dials the new server.
func (p *pool) follow(ctx context.Context) error {
	b := p.base
	if e := b.downErr.Load(); e != nil {
		p.dropIdle()
		if err := b.awaitUp(ctx, e); err != nil {
			return err
		}
	}
	if b.gen.Load() != p.baseGen.Load() {
		p.retargetRole()
	}
	return nil
}

// asRole is the pool the session leases from in place of the default pool
// p: its backend role's, or p itself.
func (s *session) asRole(p *pool) *pool {
	if s.role == nil || p.base != nil {
		return p
	}
	return s.srv.rolePool(*s.role, p)
}

// checkRole makes sure at login that the session's backend role can log
// into the shards: a role's first login dials one backend on the default
// shard (it stays in the pool). A shard that refuses the role (no such
// role, a wrong or missing password: SQLSTATE class 28) fails the login
// with its SQLSTATE, a hint and a log line, rather than every statement
// after it. A shard that cannot be reached does not fail the login: the
// statements say so, as for any user.
func (s *session) checkRole() error {
	if s.role == nil || s.q.admin {
		return nil
	}
	p := s.sessionPool(s.srv.router.Topology().Default)
	if p.loggedIn.Load() {
		return nil
	}
	b, err := p.acquire(context.Background())
	if err == nil {
		p.loggedIn.Store(true)
		p.release(b)
		return nil
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || !strings.HasPrefix(pe.Code, "28") {
		return nil
	}
	hint := fmt.Sprintf("Create role %s on every shard with the password the config gives it, set users[].backend_user "+
		"and backend_password, or set backend_roles: shared to reach the shards as the shard DSN's user.", quoteIdent(s.role.user))
	if s.role.password == "" && s.role.scram.clientKey == "" {
		hint = fmt.Sprintf("User %s has no password for the shards (auth %s): set users[].backend_password, "+
			"or backend_roles: shared to reach the shards as the shard DSN's user.", s.user, s.srv.live.Load().cfg.userAuth(s.user))
	}
	s.srv.log.Warn("shard refused backend role", "user", s.user, "backend_user", s.role.user, "shard", p.name,
		"sqlstate", pe.Code, "err", pe.Message)
	return &pgError{code: pe.Code, msg: fmt.Sprintf("shard %s refused backend role \"%s\": %s", p.name, s.role.user, pe.Message),
		hint: hint, fatal: true}
}

// userAuth is the auth method of the configured user name ("" for an
// auth_query user).
func (c Config) userAuth(name string) string {
	for _, u := range c.Users {
		if u.Name == name {
			return u.Auth
		}
	}
	return ""
}

// sessionPool is the pool a session leases shard backends from: its
// user's backend role's, or the default.
func (s *session) sessionPool(shard int) *pool {
	return s.asRole(s.srv.pools[shard])
}

// list is every role's pool, in creation order.
func (r *rolePools) list() []*pool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*pool(nil), r.all...)
}

// allPools is the default pools, then every backend role's, for SHOW POOLS,
// SHOW SERVERS and the pool metrics.
func (s *Server) allPools() []*pool {
	return append(append([]*pool(nil), s.pools...), s.roles.list()...)
}

// reservedByPool counts the backends reserved by sessions (reserve.go), by
// the pool they belong to.
func (s *Server) reservedByPool() map[*pool]int {
	n := map[*pool]int{}
	s.sessions.Range(func(_, v any) bool {
		c := v.(*session)
		c.rsv.mu.Lock()
		for _, r := range c.rsv.on {
			if r.b != nil {
				n[r.b.pool]++
			}
		}
		c.rsv.mu.Unlock()
		return true
	})
	return n
}

// maxRoleSeries bounds the backend roles the pool metrics name: the
// pools of roles past it (auth_query can bring many) are summed under
// user "_other".
const maxRoleSeries = 64

// poolFigure is one (shard, backend user) series of the pool metrics.
type poolFigure struct {
	shard, user               string
	size, open, idle, waiting int
	connects, connectErrors   uint64
}

// poolFigures sums the pools by name (a shard's, or a replica's for a read
// pool) and backend user: the default pools under the DSN's user, each
// role's pools under the role, the roles past maxRoleSeries together.
func (s *Server) poolFigures() []poolFigure {
	var out []poolFigure
	at := map[[2]string]int{}
	roles := map[string]bool{}
	for _, p := range s.allPools() {
		user := p.config().User
		if p.base != nil && !roles[user] {
			if len(roles) >= maxRoleSeries {
				user = "_other"
			} else {
				roles[user] = true
			}
		}
		k := [2]string{p.name, user}
		i, ok := at[k]
		if !ok {
			i = len(out)
			at[k] = i
			out = append(out, poolFigure{shard: p.name, user: user})
		}
		ps := p.snapshot()
		f := &out[i]
		f.size += ps.size
		f.open += ps.open
		f.idle += ps.idle
		f.waiting += ps.waiting
		f.connects += p.connects.Load()
		f.connectErrors += p.connectErrors.Load()
	}
	return out
}

// setSize applies a new pool.size to every role's pools.
func (r *rolePools) setSize(n int) {
	for _, p := range r.list() {
		p.setSize(n)
	}
}

func (r *rolePools) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, p := range r.all {
		p.close()
	}
}

// The backend_roles modes.
const (
	// BackendRolesShared: users reach the shards as the shard DSN's user,
	// except those with a backend_user.
	BackendRolesShared = "shared"
	// BackendRolesPerUser (the default): each user reaches the shards as
	// its own role, of the same name and password unless
	// backend_user/backend_password say otherwise (like PgBouncer). The
	// DSN's user stays the proxy's own, for health checks, recovery and
	// the coordinator.
	BackendRolesPerUser = "per_user"
)

func (c Config) validateRoles() []error {
	var errs []error
	if err := c.AuthQuery.validate(); err != nil {
		errs = append(errs, err)
	}
	switch c.BackendRoles {
	case BackendRolesShared, BackendRolesPerUser:
	default:
		errs = append(errs, fmt.Errorf("backend_roles: %q is not per_user or shared", c.BackendRoles))
	}
	return errs
}

// roleOf is the backend role u reaches the shards as under mode, nil for
// the DSN's user. Per user, the proxy logs into the shard with the
// configured password (the user's own unless backend_password is set):
// SCRAM pass-through of the client's keys is not done.
func roleOf(u User, mode string) *backendRole {
	switch {
	case u.BackendUser != "":
		return &backendRole{user: u.BackendUser, password: u.BackendPassword}
	case mode == BackendRolesPerUser:
		pw := u.BackendPassword
		if pw == "" {
			pw = u.Password
		}
		return &backendRole{user: u.Name, password: pw}
	}
	return nil
}
