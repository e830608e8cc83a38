package parser

import (
	"container/list"
	"sync"
)

// Cache memoises Parse by query text, bounded by entry count with LRU
// eviction. Statements are immutable, so cached ones are shared between
// sessions. Syntax errors are not cached. Safe for concurrent use.
type Cache struct {
	mu           sync.Mutex
	max          int
	ll           *list.List
	items        map[string]*list.Element
	hits, misses uint64
	// templates maps stripped query texts to their analysis.
	templates map[string]*templateEntry
}

type cacheEntry struct {
	sql   string
	stmts []*Statement
}

// NewCache returns a cache holding at most max query texts.
func NewCache(max int) *Cache {
	return &Cache{max: max, ll: list.New(), items: make(map[string]*list.Element, max)}
}

// Parse returns the cached analysis of sql, parsing it on a miss.
func (c *Cache) Parse(sql string) ([]*Statement, error) {
	c.mu.Lock()
	if e, ok := c.items[sql]; ok {
		c.ll.MoveToFront(e)
		c.hits++
		st := e.Value.(*cacheEntry).stmts
		c.mu.Unlock()
		return st, nil
	}
	c.misses++
	c.mu.Unlock()
	st, err := Parse(sql)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if _, ok := c.items[sql]; !ok {
		c.items[sql] = c.ll.PushFront(&cacheEntry{sql, st})
		if c.ll.Len() > c.max {
			old := c.ll.Back()
			c.ll.Remove(old)
			delete(c.items, old.Value.(*cacheEntry).sql)
		}
	}
	c.mu.Unlock()
	return st, nil
}

// Stats returns hit and miss counts of Parse and Template lookups.
func (c *Cache) Stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}

// templateEntry caches the analysis of a stripped query; stmt is nil when
// the template is not usable (it does not parse, holds several statements,
// or is not SELECT/INSERT/UPDATE/DELETE).
type templateEntry struct {
	stmt *Statement
}

// Template returns the analysis of a query's stripped form and its
// constants, parsing the template once per shape. ok is false when the
// query must take the full path.
func (c *Cache) Template(sql string) (*Statement, Literals, bool) {
	key, consts, ok := Strip(sql)
	if !ok || len(consts) == 0 {
		return nil, nil, false
	}
	c.mu.Lock()
	if c.templates == nil {
		c.templates = map[string]*templateEntry{}
	}
	e, hit := c.templates[key]
	if hit {
		c.hits++
	} else {
		c.misses++
	}
	c.mu.Unlock()
	if !hit {
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
