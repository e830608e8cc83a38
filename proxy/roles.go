package proxy

import "sync"

// backendRole is the role a client user reaches the shards as, when it is
// not the shard DSN's user (users[].backend_user): least privilege on the
// shards. Its pools are separate from the default ones.
type backendRole struct{ user, password string }

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
