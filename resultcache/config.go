package resultcache

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shardproxy/shardproxy/parser"
)

// Config is the proxy's cache section (key cache:).
type Config struct {
	// Consolidate shares the replies of identical reads in flight at the
	// same moment. Default true.
	Consolidate *bool `yaml:"consolidate"`
	// MaxReply is the largest reply, in bytes, that is shared or cached;
	// a larger one is not (the clients waiting for it run their own). At
	// most 64 KiB, the proxy's client write buffer. Default 64 KiB.
	MaxReply int `yaml:"max_reply"`
	// Backend is memory (default) or redis.
	Backend string `yaml:"backend"`
	// MemoryMB bounds the memory backend (LRU by bytes). Default 64.
	MemoryMB int `yaml:"memory_mb"`
	// Redis configures the redis backend.
	Redis RedisConfig `yaml:"redis"`
	// FillWait bounds how long a client waits for another proxy's fill of
	// an entry (the Redis fill lock) before it reads from Postgres itself.
	// Default 2s.
	FillWait time.Duration `yaml:"fill_wait"`
	// RefreshAhead is the last part of a TTL, as a fraction, in which one
	// client refreshes an entry while the others still get it. Default
	// 0.2; 0 leaves the default, a negative value turns refresh off.
	RefreshAhead float64 `yaml:"refresh_ahead"`
	// Rules select the statements whose results are cached. None by
	// default: without rules only consolidation runs.
	Rules []Rule `yaml:"rules"`
	// UntilWrite lets reads inside a READ COMMITTED transaction be
	// answered from the cache until the transaction's first write (as
	// Readyset does); a rule may say otherwise. Default false.
	UntilWrite bool `yaml:"until_write"`
}

// RedisConfig locates the Redis server shared by the proxies.
type RedisConfig struct {
	// Addr is host:port.
	Addr     string `yaml:"addr"`
	Password string `yaml:"password"`
	DB       int    `yaml:"db"`
	// Prefix starts every key and the pub/sub channel. Default "shardproxy:".
	Prefix string `yaml:"prefix"`
	// Timeout bounds one Redis operation; past it the proxy reads from
	// Postgres. Default 200ms.
	Timeout time.Duration `yaml:"timeout"`
	// InvalidateTimeout bounds how long a write's commit waits for Redis
	// to take its invalidation (the client's ReadyForQuery waits for it).
	// Past it the invalidation is retried in the background, and other
	// proxies may serve entries older than the write until it lands.
	// Default 2s.
	InvalidateTimeout time.Duration `yaml:"invalidate_timeout"`
}

// Rule caches statements selected by fingerprint or by the tables they read.
type Rule struct {
	// Name labels the rule in SHOW CACHE and metrics. Required, unique.
	Name string `yaml:"name"`
	// Fingerprint selects statements by pg_query fingerprint (as SHOW
	// QUERIES and the slow log print it).
	Fingerprint string `yaml:"fingerprint"`
	// Tables selects statements that read only these tables (schema.table
	// or table, for the public schema).
	Tables []string `yaml:"tables"`
	// TTL is how long an entry lives; writes through the proxy invalidate
	// it sooner. Required.
	TTL time.Duration `yaml:"ttl"`
	// UntilWrite overrides the cache's until_write for this rule.
	UntilWrite *bool `yaml:"until_write"`

	tables     []parser.Table
	stats      *ruleStats
	untilWrite bool
}

// ServesUntilWrite reports whether the rule's entries may answer reads
// inside a transaction before its first write (until_write).
func (r *Rule) ServesUntilWrite() bool { return r.untilWrite }

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Consolidate == nil {
		on := true
		c.Consolidate = &on
	}
	if c.MaxReply == 0 {
		c.MaxReply = 64 << 10
	}
	if c.Backend == "" {
		c.Backend = "memory"
	}
	if c.MemoryMB == 0 {
		c.MemoryMB = 64
	}
	if c.FillWait == 0 {
		c.FillWait = 2 * time.Second
	}
	if c.RefreshAhead == 0 {
		c.RefreshAhead = 0.2
	}
	if c.Redis.Prefix == "" {
		c.Redis.Prefix = "shardproxy:"
	}
	if c.Redis.Timeout == 0 {
		c.Redis.Timeout = 200 * time.Millisecond
	}
	if c.Redis.InvalidateTimeout == 0 {
		c.Redis.InvalidateTimeout = 2 * time.Second
	}
	return c
}

// Validate checks a config with defaults applied.
func (c Config) Validate() error {
	var errs []error
	if c.MaxReply < 0 || c.MaxReply > 64<<10 {
		errs = append(errs, fmt.Errorf("cache.max_reply %d is not between 0 and 65536", c.MaxReply))
	}
	switch c.Backend {
	case "memory":
	case "redis":
		if c.Redis.Addr == "" {
			errs = append(errs, errors.New("cache.redis.addr is required with backend redis"))
		}
	default:
		errs = append(errs, fmt.Errorf("cache.backend %q is not memory or redis", c.Backend))
	}
	if c.MemoryMB < 0 || c.FillWait < 0 || c.Redis.Timeout < 0 || c.Redis.InvalidateTimeout < 0 {
		errs = append(errs, errors.New("cache.memory_mb, cache.fill_wait, cache.redis.timeout and cache.redis.invalidate_timeout must be positive"))
	}
	if c.RefreshAhead >= 1 {
		errs = append(errs, fmt.Errorf("cache.refresh_ahead %v must be below 1", c.RefreshAhead))
	}
	seen := map[string]bool{}
	for i, r := range c.Rules {
		switch {
		case r.Name == "":
			errs = append(errs, fmt.Errorf("cache.rules[%d]: name is required", i))
		case seen[r.Name]:
			errs = append(errs, fmt.Errorf("cache.rules[%d]: name %q is used twice", i, r.Name))
		}
		seen[r.Name] = true
		if (r.Fingerprint == "") == (len(r.Tables) == 0) {
			errs = append(errs, fmt.Errorf("cache.rules[%d] (%s): give either fingerprint or tables", i, r.Name))
		}
		for _, t := range r.Tables {
			if t == "" || strings.Count(t, ".") > 1 {
				errs = append(errs, fmt.Errorf("cache.rules[%d] (%s): table %q is not table or schema.table", i, r.Name, t))
			}
		}
		if r.TTL <= 0 {
			errs = append(errs, fmt.Errorf("cache.rules[%d] (%s): ttl must be positive", i, r.Name))
		}
	}
	return errors.Join(errs...)
}
