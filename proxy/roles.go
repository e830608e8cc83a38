package proxy

import (
	"fmt"
	"sync"
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

// rolePools holds one pool per shard for each backend role in use, made on
// first use. Server.pools stays the default role's (the DSN's user): the
// health checker, Warm, SHOW POOLS and the pool metrics read those.
type rolePools struct {
	mu     sync.Mutex
	byRole map[backendRole][]*pool
	closed bool
}

// pool returns the pool of role on shard, making the role's pools on first
// use from the default pools' settings with role's user and password.
func (s *Server) rolePool(role backendRole, shard int) *pool {
	r := &s.roles
	r.mu.Lock()
	defer r.mu.Unlock()
	ps, ok := r.byRole[role]
	if !ok {
		if r.byRole == nil {
			r.byRole = map[backendRole][]*pool{}
		}
		size := s.live.Load().cfg.Pool.Size
		for _, def := range s.pools {
			cfg := def.config().Copy()
			cfg.User, cfg.Password = role.user, role.password
			if role.scram.clientKey != "" {
				cfg.AfterNetConnect = role.scram.afterNetConnect
			}
			rp := &pool{shard: def.shard, name: def.name, size: size, timeout: def.timeout, changed: make(chan struct{})}
			rp.cfgp.Store(cfg)
			ps = append(ps, rp)
		}
		if r.closed {
			for _, p := range ps {
				p.close()
			}
		}
		r.byRole[role] = ps
	}
	return ps[shard]
}

// sessionPool is the pool a session leases shard backends from: its
// user's backend role's, or the default.
func (s *session) sessionPool(shard int) *pool {
	if s.role == nil {
		return s.srv.pools[shard]
	}
	return s.srv.rolePool(*s.role, shard)
}

// setSize applies a new pool.size to every role's pools.
func (r *rolePools) setSize(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ps := range r.byRole {
		for _, p := range ps {
			p.setSize(n)
		}
	}
}

func (r *rolePools) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, ps := range r.byRole {
		for _, p := range ps {
			p.close()
		}
	}
}

// The backend_roles modes.
const (
	// BackendRolesShared: users reach the shards as the shard DSN's user,
	// except those with a backend_user (the default, as before the mode).
	BackendRolesShared = "shared"
	// BackendRolesPerUser: each user reaches the shards as its own role,
	// of the same name and password unless backend_user/backend_password
	// say otherwise (like PgBouncer). The DSN's user stays the proxy's
	// own, for health checks, recovery and the coordinator.
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
