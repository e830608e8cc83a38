package proxy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shardproxy/shardproxy/coordinator"
	"github.com/shardproxy/shardproxy/resultcache"
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
	// TwoPhase configures two-phase commit of writes on several shards.
	TwoPhase TwoPhaseConfig `yaml:"two_phase"`
	// Replicas says how reads use the shards' replicas and how writes
	// follow a promoted replica (replicas.go).
	Replicas ReplicasConfig `yaml:"replicas"`
	// Cache configures consolidation of identical reads (on by default)
	// and the opt-in result cache (docs/caching.md).
	Cache resultcache.Config `yaml:"cache"`
	// Coordinator is the Postgres database that answers the reads the
	// merge cannot (docs/routing.md). Not reloadable, except that its
	// tables are rebuilt on every reload.
	Coordinator coordinator.Config `yaml:"coordinator"`
	// TLS is client-facing TLS (tls.go). Reloadable.
	TLS TLSConfig `yaml:"tls"`
	// Limits bound client connections, message sizes and idle and query
	// time (limits.go). Reloadable.
	Limits `yaml:",inline"`
	// BackendRoles is which role each user reaches the shards as
	// (roles.go): per_user (its own, least privilege; the default) or
	// shared (the shard DSN's user).
	BackendRoles string `yaml:"backend_roles"`
	// AdminPermissions says what each admin may run on the admin console
	// (admin_perms.go). Reloadable.
	AdminPermissions map[string][]string `yaml:"admin_permissions"`
	// AuthQuery looks up users not in Users on the first shard, and logs
	// them into the shards by SCRAM pass-through (authquery.go).
	AuthQuery AuthQueryConfig `yaml:"auth_query"`
}

// TwoPhaseConfig configures two-phase commit.
type TwoPhaseConfig struct {
	// Mode is on (default: a write on several shards commits with
	// two-phase commit) or off (such writes are refused with 0A000).
	Mode string `yaml:"mode"`
	// GIDPrefix starts the name of every prepared transaction of this
	// deployment; recovery touches only those. Every proxy of one
	// deployment must use the same prefix. Default "shardproxy".
	GIDPrefix string `yaml:"gid_prefix"`
	// RecoveryInterval is how often prepared transactions left by a crash
	// are resolved. Default 10s.
	RecoveryInterval time.Duration `yaml:"recovery_interval"`
}

// ReplicasConfig configures reads from replicas and failover. It applies to
// shards with replicas in the topology; the others only use FailoverBuffer.
type ReplicasConfig struct {
	// ReadFrom is where reads outside transactions go: primary (default),
	// replicas (a healthy replica, the primary when none is), or any
	// (replicas and the primary alike). A user's read_from overrides it.
	ReadFrom string `yaml:"read_from"`
	// Balance picks among the eligible servers: round_robin (default),
	// least_connections, weighted, fastest_response.
	Balance string `yaml:"balance"`
	// MaxLag takes a replica out of rotation while its replay is this far
	// behind in time. Default 30s; negative: no limit on time.
	MaxLag time.Duration `yaml:"max_lag"`
	// MaxLagBytes takes a replica out of rotation while its replay is this
	// many bytes of WAL behind the primary. Default 16 MiB; negative: no
	// limit on bytes.
	MaxLagBytes int64 `yaml:"max_lag_bytes"`
	// ReadYourWrites is where a session's reads go after it writes (see
	// ryw.go): off; window (default): to the primary for
	// ReadYourWritesWindow; lsn: to a replica only once it has replayed the
	// session's writes, else to the primary. A duration (the older form)
	// is the window mode with that window; a negative one is off.
	ReadYourWrites string `yaml:"read_your_writes"`
	// ReadYourWritesWindow is the window of the window mode. Default 2s.
	ReadYourWritesWindow time.Duration `yaml:"read_your_writes_window"`
	// FailoverBuffer is how long a statement for a shard with no usable
	// primary waits for one (a promotion) before failing with 08006.
	// Zero (default) fails at once.
	FailoverBuffer time.Duration `yaml:"failover_buffer"`
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
	// ReadFrom overrides replicas.read_from for this user's sessions.
	ReadFrom string `yaml:"read_from"`
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
	// Reserve is allow (default: a client with temporary tables, session
	// advisory locks, cursors WITH HOLD or SQL prepared statements keeps
	// its backend while they last, docs/pooling.md) or refuse (such
	// statements are refused with 0A000).
	Reserve string `yaml:"reserve"`
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
	if c.TwoPhase.Mode == "" {
		c.TwoPhase.Mode = "on"
	}
	if c.TwoPhase.GIDPrefix == "" {
		c.TwoPhase.GIDPrefix = "shardproxy"
	}
	if c.TwoPhase.RecoveryInterval == 0 {
		c.TwoPhase.RecoveryInterval = 10 * time.Second
	}
	c.Coordinator = c.Coordinator.WithDefaults()
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
	if c.Replicas.ReadFrom == "" {
		c.Replicas.ReadFrom = "primary"
	}
	if c.Replicas.Balance == "" {
		c.Replicas.Balance = "round_robin"
	}
	if c.Replicas.MaxLag == 0 {
		c.Replicas.MaxLag = 30 * time.Second
	}
	if c.Replicas.MaxLagBytes == 0 {
		c.Replicas.MaxLagBytes = 16 << 20
	}
	c.Replicas = c.Replicas.withRYWDefaults() // ryw.go
	c.Cache = c.Cache.WithDefaults()
	if c.BackendRoles == "" {
		c.BackendRoles = BackendRolesPerUser
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
		if u.ReadFrom != "" && readFromOf(u.ReadFrom) == 0 {
			errs = append(errs, fmt.Errorf("user %s: read_from %q is not primary, replicas or any", u.Name, u.ReadFrom))
		}
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
		if u.BackendPassword != "" && u.BackendUser == "" && c.BackendRoles != BackendRolesPerUser {
			errs = append(errs, fmt.Errorf("user %s: backend_password without backend_user (or backend_roles: per_user)", u.Name))
		}
		if u.MaxClientConnections < 0 || u.QueryTimeout < 0 {
			errs = append(errs, fmt.Errorf("user %s: max_client_connections and query_timeout must be positive", u.Name))
		}
	}
	if r := c.Pool.Reserve; r != "" && r != "allow" && r != "refuse" {
		errs = append(errs, fmt.Errorf("pool.reserve %q is not allow or refuse", r))
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
	errs = append(errs, c.validateRoles()...)
	errs = append(errs, c.validateAdminPermissions()...)
	if c.Health.Interval < 0 || c.Health.Timeout < 0 || c.Health.Failures < 0 || c.Health.Successes < 0 {
		errs = append(errs, errors.New("health: interval, timeout, failures and successes must be positive"))
	}
	switch c.TwoPhase.Mode {
	case "on", "off":
	default:
		errs = append(errs, fmt.Errorf("two_phase.mode: %q is not on or off", c.TwoPhase.Mode))
	}
	if strings.ContainsAny(c.TwoPhase.GIDPrefix, ":'") || len(c.TwoPhase.GIDPrefix) > 100 {
		errs = append(errs, errors.New("two_phase.gid_prefix: at most 100 characters, without ':' or quotes"))
	}
	if c.TwoPhase.RecoveryInterval < 0 {
		errs = append(errs, errors.New("two_phase.recovery_interval must be positive"))
	}
	if readFromOf(c.Replicas.ReadFrom) == 0 {
		errs = append(errs, fmt.Errorf("replicas.read_from %q is not primary, replicas or any", c.Replicas.ReadFrom))
	}
	if balanceOf(c.Replicas.Balance) == 0 {
		errs = append(errs, fmt.Errorf("replicas.balance %q is not round_robin, least_connections, weighted or fastest_response", c.Replicas.Balance))
	}
	if rywModeOf(c.Replicas.ReadYourWrites) == 0 || c.Replicas.ReadYourWritesWindow < 0 {
		errs = append(errs, fmt.Errorf("replicas.read_your_writes %q is not off, window, lsn or a duration (read_your_writes_window must be positive)", c.Replicas.ReadYourWrites))
	}
	if c.Replicas.FailoverBuffer < 0 {
		errs = append(errs, errors.New("replicas.failover_buffer must be positive"))
	}
	if err := c.Cache.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Coordinator.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
