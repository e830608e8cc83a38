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

	// Admins are the users (from Users) allowed on the admin console, the
	// virtual database "shardproxy". Reloadable.
	Admins []string `yaml:"admins"`
	// QueryStats is how many query fingerprints SHOW QUERIES keeps (top-K
	// by total time). Default 1000. Reloadable.
	QueryStats int `yaml:"query_stats"`
	// Health configures the background health check of each shard.
	Health HealthConfig `yaml:"health"`
	// MergeMemoryMB bounds the memory one cross-shard query may hold for
	// merging (groups, DISTINCT rows, a sort after grouping); past it the
	// query fails with SQLSTATE 54000. Default 256. Reloadable.
	MergeMemoryMB int `yaml:"merge_memory_mb"`
	// TLS is client-facing TLS (tls.go). Reloadable.
	TLS TLSConfig `yaml:"tls"`
	// Limits bound client connections, message sizes and idle and query
	// time (limits.go). Reloadable.
	Limits `yaml:",inline"`
}

// HealthConfig configures the per-shard health checker. Every field is
// reloadable.
type HealthConfig struct {
	// Interval between checks of one shard. Default 5s.
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one check (connect and SELECT 1). Default 2s.
	Timeout time.Duration `yaml:"timeout"`
	// Failures is how many checks in a row must fail to mark a shard down.
	// Default 3.
	Failures int `yaml:"failures"`
	// Successes is how many checks in a row must pass to mark a down shard
	// up again. Default 2.
	Successes int `yaml:"successes"`
}

// User is a client login.
type User struct {
	Name string `yaml:"name"`
	// Password is the clear-text password; SCRAM-SHA-256 verifiers are
	// derived from it at start.
	Password string `yaml:"password"`
	// Auth is scram-sha-256 (default), trust, or cert: a client certificate
	// verified against tls.ca whose CN is the user name logs in without a
	// password (as Postgres's cert method).
	Auth string `yaml:"auth"`
	// MaxClientConnections bounds this user's client connections (53300
	// "too many connections for role"). 0: only the total bound applies.
	MaxClientConnections int `yaml:"max_client_connections"`
	// QueryTimeout overrides the top-level query_timeout for this user.
	QueryTimeout time.Duration `yaml:"query_timeout"`
	// BackendUser and BackendPassword are the role this user reaches the
	// shards as (roles.go), with pools of its own. Empty: the shard DSN's
	// user, shared by every user without one.
	BackendUser     string `yaml:"backend_user"`
	BackendPassword string `yaml:"backend_password"`
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
	if c.QueryStats == 0 {
		c.QueryStats = 1000
	}
	if c.MergeMemoryMB == 0 {
		c.MergeMemoryMB = 256
	}
	if c.Health.Interval == 0 {
		c.Health.Interval = 5 * time.Second
	}
	if c.Health.Timeout == 0 {
		c.Health.Timeout = 2 * time.Second
	}
	if c.Health.Failures == 0 {
		c.Health.Failures = 3
	}
	if c.Health.Successes == 0 {
		c.Health.Successes = 2
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
		case "cert":
			if c.TLS.CA == "" {
				errs = append(errs, fmt.Errorf("user %s: auth cert needs tls.ca (and a tls.mode other than disable)", u.Name))
			}
		default:
			errs = append(errs, fmt.Errorf("user %s: auth %q is not scram-sha-256, trust or cert", u.Name, u.Auth))
		}
		if u.BackendPassword != "" && u.BackendUser == "" {
			errs = append(errs, fmt.Errorf("user %s: backend_password without backend_user", u.Name))
		}
		if u.MaxClientConnections < 0 || u.QueryTimeout < 0 {
			errs = append(errs, fmt.Errorf("user %s: max_client_connections and query_timeout must be positive", u.Name))
		}
	}
	if c.Pool.Size < 0 {
		errs = append(errs, errors.New("pool.size must be positive"))
	}
	if c.Database == adminDatabase {
		errs = append(errs, fmt.Errorf("database: %q is the admin console's name", adminDatabase))
	}
	for _, a := range c.Admins {
		if !seen[a] {
			errs = append(errs, fmt.Errorf("admins: %s is not in users", a))
		}
	}
	if c.MergeMemoryMB < 0 {
		errs = append(errs, errors.New("merge_memory_mb must be positive"))
	}
	if c.QueryStats < 0 {
		errs = append(errs, errors.New("query_stats must be positive"))
	}
	if err := c.TLS.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Limits.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Health.Interval < 0 || c.Health.Timeout < 0 || c.Health.Failures < 0 || c.Health.Successes < 0 {
		errs = append(errs, errors.New("health: interval, timeout, failures and successes must be positive"))
	}
	return errors.Join(errs...)
}
