package parser

import (
	"sync"
	"sync/atomic"
)

// MaxCachedLen is the longest query text the Cache keeps; longer queries
// are parsed every time (they are rare, and would crowd out the rest).
const MaxCachedLen = 32 << 10

// Cache is a bounded LRU of parsed statements keyed by the exact query
// text. Statements are immutable and shared between callers, so routing
// work memoised on them (Statement.Memo) is shared too. Safe for
// concurrent use. Syntax errors are not cached.
type Cache struct {
	mu      sync.Mutex
	max     int
	entries map[string]*cacheEntry
	// head is the most recently used entry; the list is circular.
	head *cacheEntry

	hits, misses atomic.Uint64
	// templates maps stripped query texts to their analysis (fastpath.go).
	templates map[string]*templateEntry
}

type cacheEntry struct {
	sql        string
	sts        []*Statement
	prev, next *cacheEntry
}

// NewCache returns a cache holding at most size query texts (at least 1).
func NewCache(size int) *Cache {
	if size < 1 {
		size = 1
	}
	return &Cache{max: size, entries: make(map[string]*cacheEntry, size)}
}

// Parse returns the statements of sql, from the cache when it holds them.
// The returned slice and statements are shared: do not modify them.
func (c *Cache) Parse(sql string) ([]*Statement, error) {
	c.mu.Lock()
	if e, ok := c.entries[sql]; ok {
		c.moveToFront(e)
		c.mu.Unlock()
		c.hits.Add(1)
		return e.sts, nil
	}
	c.mu.Unlock()
	c.misses.Add(1)
	sts, err := Parse(sql)
	if err != nil || len(sql) > MaxCachedLen {
		return sts, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[sql]; ok { // parsed concurrently: keep one copy
		c.moveToFront(e)
		return e.sts, nil
	}
	e := &cacheEntry{sql: sql, sts: sts}
	c.entries[sql] = e
	c.pushFront(e)
	if len(c.entries) > c.max {
		last := c.head.prev
		c.unlink(last)
		delete(c.entries, last.sql)
	}
	return sts, nil
}

// Stats returns the hit and miss counts since the cache was made.
func (c *Cache) Stats() (hits, misses uint64) {
	return c.hits.Load(), c.misses.Load()
}

// Len returns the number of query texts held.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func (c *Cache) pushFront(e *cacheEntry) {
	if c.head == nil {
		e.prev, e.next = e, e
	} else {
		e.next, e.prev = c.head, c.head.prev
		c.head.prev.next = e
		c.head.prev = e
	}
	c.head = e
}

func (c *Cache) unlink(e *cacheEntry) {
	if e.next == e {
		c.head = nil
	} else {
		e.prev.next, e.next.prev = e.next, e.prev
		if c.head == e {
			c.head = e.next
		}
	}
	e.prev, e.next = nil, nil
}

func (c *Cache) moveToFront(e *cacheEntry) {
	if c.head == e {
		return
	}
	c.unlink(e)
	c.pushFront(e)
}

// templateEntry caches the analysis of a stripped query; stmt is nil when
// the template is not usable (it does not parse, holds several statements,
// or is not SELECT/INSERT/UPDATE/DELETE).
type templateEntry struct {
	stmt *Statement
}

// Template returns the analysis of a query's stripped form (Strip) and its
// constants, parsing the template once per shape; routing memoised on the
// template is shared by every query of the shape. ok is false when the
// query must take the full path. Lookups count as cache hits and misses.
func (c *Cache) Template(sql string) (*Statement, Literals, bool) {
	key, consts, ok := Strip(sql)
	if !ok || len(consts) == 0 || len(key) > MaxCachedLen {
		return nil, nil, false
	}
	c.mu.Lock()
	if c.templates == nil {
		c.templates = map[string]*templateEntry{}
	}
	e, hit := c.templates[key]
	c.mu.Unlock()
	if hit {
		c.hits.Add(1)
	} else {
		c.misses.Add(1)
		e = &templateEntry{}
		if sts, err := Parse(key); err == nil && len(sts) == 1 {
			switch sts[0].Kind {
			case Select, Insert, Update, Delete:
				e.stmt = sts[0]
			}
		}
		c.mu.Lock()
		if len(c.templates) >= c.max {
			for k := range c.templates { // evict one at random: bounded
				delete(c.templates, k)
				break
			}
		}
		c.templates[key] = e
		c.mu.Unlock()
	}
	if e.stmt == nil {
		return nil, nil, false
	}
	return e.stmt, Literals(consts), true
}
