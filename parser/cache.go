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

// Stats returns hit and miss counts.
func (c *Cache) Stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}
