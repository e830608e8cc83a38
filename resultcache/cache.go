package resultcache

import (
	"bytes"
	"context"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardproxy/shardproxy/parser"
)

// Cache consolidates identical reads in flight and keeps the results the
// rules select. Safe for concurrent use by every session of a proxy.
type Cache struct {
	cfg         Config
	log         *slog.Logger
	consolidate bool
	rules       []*Rule
	byFP        map[string]*Rule
	seed        maphash.Seed

	// mu guards flights, gens, epoch, spare and the memory store.
	mu      sync.Mutex
	flights map[uint64]*flight
	// gens counts the writes through this proxy (and, with Redis, the
	// others) per table: a flight or memory entry is current while the
	// counts of its tables have not moved. epoch moves on CACHE CLEAR and
	// DDL, which may touch tables the statement does not name.
	gens  map[parser.Table]uint64
	epoch uint64
	spare []*flight
	mem   *memStore

	rds *redisStore

	consolidated, invalidations, backendErrors atomic.Uint64
}

// ruleStats count one rule's lookups.
type ruleStats struct {
	hits, misses, fills, entries atomic.Int64
}

// flight is a read running now; the clients that join it wait for done.
type flight struct {
	h       uint64
	key     []byte
	tables  []parser.Table
	gens    []uint64
	epoch   uint64
	done    bool
	waiters int
	ch      chan struct{}
	reply   []byte // set before ch closes; nil when the reply cannot be shared
}

// New builds a cache for cfg (defaults applied and validated by the
// caller's config). With backend redis it connects lazily: a Redis that is
// down at start only means misses. log may be nil.
func New(cfg Config, log *slog.Logger) *Cache {
	cfg = cfg.WithDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cache{cfg: cfg, log: log, consolidate: *cfg.Consolidate, byFP: map[string]*Rule{},
		seed: maphash.MakeSeed(), flights: map[uint64]*flight{}, gens: map[parser.Table]uint64{}}
	for i := range cfg.Rules {
		r := cfg.Rules[i]
		r.stats = &ruleStats{}
		r.untilWrite = cfg.UntilWrite
		if r.UntilWrite != nil {
			r.untilWrite = *r.UntilWrite
		}
		for _, t := range r.Tables {
			r.tables = append(r.tables, tableOf(t))
		}
		c.rules = append(c.rules, &r)
		if r.Fingerprint != "" {
			c.byFP[r.Fingerprint] = &r
		}
	}
	switch {
	case len(c.rules) == 0:
	case cfg.Backend == "redis":
		c.rds = newRedisStore(c, cfg.Redis)
	default:
		c.mem = newMemStore(int64(cfg.MemoryMB) << 20)
	}
	return c
}

// Close stops the Redis connections and goroutines.
func (c *Cache) Close() {
	if c.rds != nil {
		c.rds.close()
	}
}

// Consolidating reports whether identical reads in flight are shared.
func (c *Cache) Consolidating() bool { return c.consolidate }

// Active reports whether reads go through the cache at all (consolidation
// on, or rules). When false, callers skip it entirely.
func (c *Cache) Active() bool { return c != nil && (c.consolidate || len(c.rules) > 0) }

type ruleMemo struct{ c *Cache }

// Match returns the rule that caches st, nil for none: the rule of its
// fingerprint, else the first table rule naming every table st reads.
// The answer is kept with the statement.
func (c *Cache) Match(st *parser.Statement) *Rule {
	if len(c.rules) == 0 {
		return nil
	}
	return st.Memo(ruleMemo{c}, func() any { return c.match(st) }).(*Rule)
}

func (c *Cache) match(st *parser.Statement) *Rule {
	if len(c.byFP) > 0 {
		if fp, err := parser.Fingerprint(st.SQL); err == nil {
			if r := c.byFP[fp]; r != nil {
				return r
			}
		}
	}
	if len(st.Tables) == 0 {
		return nil
	}
next:
	for _, r := range c.rules {
		if len(r.tables) == 0 {
			continue
		}
		for _, t := range st.Tables {
			if !r.covers(norm(t)) {
				continue next
			}
		}
		return r
	}
	return nil
}

func (r *Rule) covers(t parser.Table) bool {
	for _, x := range r.tables {
		if x == t {
			return true
		}
	}
	return false
}

// Read answers a shareable read outside a transaction. key identifies it
// (statement text, user, database, settings); tables are the tables it
// reads; r is its rule, nil for consolidation only. run executes the read
// for real, appending the reply to the client's buffer, and returns the
// reply bytes when they may be shared (nil after an error, a flush or a
// reply over MaxReply) with the caller's error.
//
// When Read returns a reply, run was not called: the reply (read-only) is
// the answer, from the cache or from an identical read that just ran.
// Otherwise run was called and its error is returned. Read blocks while it
// waits for another client's identical read.
func (c *Cache) Read(ctx context.Context, key []byte, tables []parser.Table, r *Rule, run func() ([]byte, error)) ([]byte, error) {
	h := maphash.Bytes(c.seed, key)
	var (
		fallback []byte   // a valid entry due for refresh
		rg       []uint64 // the Redis generations read before the query
		redisOK  bool
	)
	if r != nil {
		switch {
		case c.mem != nil:
			c.mu.Lock()
			if e := c.mem.get(h, key); e != nil {
				if c.currentEntry(e) {
					if !c.due(e.filled, e.ttl) || c.flights[h] != nil {
						reply := e.reply
						c.mem.touch(e)
						c.mu.Unlock()
						r.stats.hits.Add(1)
						return reply, nil
					}
					fallback = e.reply
				} else {
					c.mem.remove(e)
				}
			}
			c.mu.Unlock()
		case c.rds != nil:
			var reply []byte
			var filled time.Time
			reply, filled, rg, redisOK = c.rds.get(ctx, key, tables)
			if reply != nil {
				if !c.due(filled, r.TTL) {
					r.stats.hits.Add(1)
					return reply, nil
				}
				fallback = reply
			}
		}
	}

	c.mu.Lock()
	if f := c.flights[h]; f != nil && !f.done && bytes.Equal(f.key, key) && c.currentFlight(f) {
		if fallback != nil { // someone refreshes it already
			c.mu.Unlock()
			r.stats.hits.Add(1)
			return fallback, nil
		}
		if f.ch == nil {
			f.ch = make(chan struct{})
		}
		f.waiters++
		ch := f.ch
		c.mu.Unlock()
		<-ch // the leader always finishes: its run returns
		if f.reply != nil {
			c.consolidated.Add(1)
			if r != nil {
				r.stats.hits.Add(1)
			}
			return f.reply, nil
		}
		if r != nil {
			r.stats.misses.Add(1)
		}
		_, err := run()
		return nil, err
	}
	f := c.lead(h, key, tables)
	c.mu.Unlock()
	defer func() {
		if p := recover(); p != nil { // run panicked: the followers read for themselves
			c.finish(f, nil, false)
			panic(p)
		}
	}()

	if r != nil && c.rds != nil && redisOK {
		if !c.rds.lock(ctx, key) {
			if fallback != nil {
				c.finish(f, fallback, false)
				r.stats.hits.Add(1)
				return fallback, nil
			}
			// Another proxy fills the entry: wait for it, bounded.
			if reply := c.rds.await(ctx, key, tables, c.cfg.FillWait); reply != nil {
				c.finish(f, reply, false)
				r.stats.hits.Add(1)
				return reply, nil
			}
		} else {
			defer c.rds.unlock(key)
		}
	}

	if r != nil {
		r.stats.misses.Add(1)
	}
	reply, err := run()
	if reply != nil && len(reply) > c.cfg.MaxReply {
		reply = nil
	}
	if r == nil || reply == nil {
		c.finish(f, reply, true)
		return nil, err
	}
	reply = bytes.Clone(reply)
	switch {
	case c.mem != nil:
		c.mu.Lock()
		c.mem.put(h, key, reply, tables, f.gens, f.epoch, r)
		c.mu.Unlock()
		r.stats.fills.Add(1)
	case c.rds != nil && redisOK:
		if c.rds.set(ctx, key, reply, rg, r.TTL) {
			r.stats.fills.Add(1)
		}
	}
	c.finish(f, reply, false)
	return nil, err
}

// Lookup returns the current entry of key (rule r) or nil, and counts a
// hit or a miss. It neither fills nor waits: a read inside a transaction
// (until_write) uses it, and reads from its shards on a miss.
func (c *Cache) Lookup(ctx context.Context, key []byte, tables []parser.Table, r *Rule) []byte {
	var reply []byte
	switch {
	case r == nil:
		return nil
	case c.mem != nil:
		h := maphash.Bytes(c.seed, key)
		c.mu.Lock()
		if e := c.mem.get(h, key); e != nil && c.currentEntry(e) {
			reply = e.reply
			c.mem.touch(e)
		}
		c.mu.Unlock()
	case c.rds != nil:
		var filled time.Time
		reply, filled, _, _ = c.rds.get(ctx, key, tables)
		if reply != nil && time.Since(filled) >= r.TTL {
			reply = nil
		}
	}
	if reply == nil {
		r.stats.misses.Add(1)
		return nil
	}
	r.stats.hits.Add(1)
	return reply
}

// due reports whether an entry filled at filled is in the refresh-ahead
// part of its ttl.
func (c *Cache) due(filled time.Time, ttl time.Duration) bool {
	if c.cfg.RefreshAhead <= 0 {
		return false
	}
	return time.Since(filled) >= ttl-time.Duration(float64(ttl)*c.cfg.RefreshAhead)
}

// lead registers a flight for key; c.mu is held.
func (c *Cache) lead(h uint64, key []byte, tables []parser.Table) *flight {
	var f *flight
	if n := len(c.spare); n > 0 {
		f, c.spare = c.spare[n-1], c.spare[:n-1]
	} else {
		f = &flight{}
	}
	f.h, f.key, f.tables, f.epoch, f.done, f.waiters, f.ch, f.reply = h, append(f.key[:0], key...), tables, c.epoch, false, 0, nil, nil
	f.gens = f.gens[:0]
	for _, t := range tables {
		f.gens = append(f.gens, c.gens[norm(t)])
	}
	c.flights[h] = f
	return f
}

// finish ends a flight, handing reply to the clients waiting on it (a copy
// of it when own is true: the reply then belongs to the leader's buffer).
func (c *Cache) finish(f *flight, reply []byte, own bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flights[f.h] == f {
		delete(c.flights, f.h)
	}
	f.done = true
	if f.ch == nil {
		if len(c.spare) < 64 {
			f.tables, f.reply = nil, nil
			c.spare = append(c.spare, f)
		}
		return
	}
	if own && reply != nil {
		reply = bytes.Clone(reply)
	}
	f.reply = reply
	close(f.ch)
}

// currentFlight reports whether no write touched f's tables since it
// started; c.mu is held.
func (c *Cache) currentFlight(f *flight) bool {
	if f.epoch != c.epoch {
		return false
	}
	for i, t := range f.tables {
		if c.gens[norm(t)] != f.gens[i] {
			return false
		}
	}
	return true
}

func (c *Cache) currentEntry(e *entry) bool {
	if e.epoch != c.epoch || time.Since(e.filled) >= e.ttl {
		return false
	}
	for i, t := range e.tables {
		if c.gens[norm(t)] != e.gens[i] {
			return false
		}
	}
	return true
}

// Invalidate records a committed write on tables: flights and entries that
// read them are no longer served, here and (with Redis) on every proxy.
// It never fails; a Redis error is counted, logged and retried.
func (c *Cache) Invalidate(ctx context.Context, tables []parser.Table) {
	if len(tables) == 0 {
		return
	}
	c.bump(tables)
	c.invalidations.Add(uint64(len(tables)))
	if c.rds != nil && c.cached(tables) {
		c.rds.invalidate(ctx, tables, false)
	}
}

// cached reports whether entries may read one of tables: any table when a
// fingerprint rule exists, else the tables of the table rules. Writes to
// other tables need no Redis round trip (other proxies still learn of them
// for consolidation only through their own writes: harmless, a flight is
// in-proxy).
func (c *Cache) cached(tables []parser.Table) bool {
	if len(c.byFP) > 0 {
		return true
	}
	for _, t := range tables {
		for _, r := range c.rules {
			if r.covers(norm(t)) {
				return true
			}
		}
	}
	return false
}

// Clear drops every entry (CACHE CLEAR, and DDL, which may change what
// any statement returns), here and on every proxy.
func (c *Cache) Clear(ctx context.Context) {
	c.mu.Lock()
	c.epoch++
	if c.mem != nil {
		c.mem.clear()
	}
	c.mu.Unlock()
	c.invalidations.Add(1)
	if c.rds != nil {
		c.rds.invalidate(ctx, nil, true)
	}
}

// bump moves the local generations of tables (a write here or, through
// pub/sub, on another proxy).
func (c *Cache) bump(tables []parser.Table) {
	c.mu.Lock()
	for _, t := range tables {
		c.gens[norm(t)]++
	}
	c.mu.Unlock()
}

func (c *Cache) bumpEpoch() {
	c.mu.Lock()
	c.epoch++
	if c.mem != nil {
		c.mem.clear()
	}
	c.mu.Unlock()
}

// norm names the public schema's tables without a schema, as rules do.
func norm(t parser.Table) parser.Table {
	if t.Schema == "public" {
		t.Schema = ""
	}
	return t
}

func tableOf(s string) parser.Table {
	s = strings.ToLower(s)
	if schema, name, ok := strings.Cut(s, "."); ok {
		return norm(parser.Table{Schema: schema, Name: name})
	}
	return parser.Table{Name: s}
}

// waiting returns how many clients wait on key's flight (for tests).
func (c *Cache) waiting(key []byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.flights[maphash.Bytes(c.seed, key)]; f != nil {
		return f.waiters
	}
	return 0
}
