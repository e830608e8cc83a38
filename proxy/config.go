package proxy

import (
	"errors"
	"fmt"
	"time"
)

// Config is the proxy's section of the config file (top-level keys).
type Config struct {
	// Listen is the client-facing address. Default 127.0.0.1:6432.
	Listen string `yaml:"listen"`
	// AdminListen serves /metrics, /health and /ready. Empty disables it.
	AdminListen string `yaml:"admin_listen"`
	// Database is the database name clients connect to. Default deliveryapp.
	Database string `yaml:"database"`
	// Users that may connect.
	Users []User `yaml:"users"`
	// Pool sizes and timeouts for backend connections, per shard.
	Pool PoolConfig `yaml:"pool"`
}

// User is a client login.
type User struct {
	Name string `yaml:"name"`
	// Password is the clear-text password; SCRAM-SHA-256 verifiers are
	// derived from it at start.
	Password string `yaml:"password"`
	// Auth is scram-sha-256 (default) or trust.
	Auth string `yaml:"auth"`
}

// PoolConfig bounds backend connections.
type PoolConfig struct {
	// Size is the most backend connections per shard. Default 16.
	Size int `yaml:"size"`
	// ConnectTimeout bounds opening one backend connection. Default 5s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// AcquireTimeout bounds waiting for a free backend when the pool is at
	// Size; past it the client gets 53300. Default 10s.
	AcquireTimeout time.Duration `yaml:"acquire_timeout"`
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:6432"
	}
	if c.Database == "" {
		c.Database = "deliveryapp"
	}
	if c.Pool.Size == 0 {
		c.Pool.Size = 16
	}
	if c.Pool.ConnectTimeout == 0 {
		c.Pool.ConnectTimeout = 5 * time.Second
	}
	if c.Pool.AcquireTimeout == 0 {
		c.Pool.AcquireTimeout = 10 * time.Second
	}
	for i := range c.Users {
		if c.Users[i].Auth == "" {
			c.Users[i].Auth = "scram-sha-256"
		}
	}
	return c
}

// Validate reports every problem in c (after defaults).
func (c Config) Validate() error {
	var errs []error
	if len(c.Users) == 0 {
		errs = append(errs, errors.New("users: at least one user is required"))
	}
	seen := map[string]bool{}
	for i, u := range c.Users {
		if u.Name == "" {
			errs = append(errs, fmt.Errorf("users[%d]: name is required", i))
		}
		if seen[u.Name] {
			errs = append(errs, fmt.Errorf("user %s: listed twice", u.Name))
		}
		seen[u.Name] = true
		switch u.Auth {
		case "scram-sha-256", "":
			if u.Password == "" {
				errs = append(errs, fmt.Errorf("user %s: scram-sha-256 needs a password (or auth: trust)", u.Name))
			}
		case "trust":
		default:
			errs = append(errs, fmt.Errorf("user %s: auth %q is not scram-sha-256 or trust", u.Name, u.Auth))
		}
	}
	if c.Pool.Size < 0 {
		errs = append(errs, errors.New("pool.size must be positive"))
	}
	return errors.Join(errs...)
}
