package resultcache

import (
	"bytes"
	"time"

	"github.com/shardproxy/shardproxy/parser"
)

// entryOverhead approximates an entry's bookkeeping, counted in its size.
const entryOverhead = 160

// memStore is the memory backend: entries by key hash, least recently used
// first out when the bytes pass max. The Cache's mutex guards it.
type memStore struct {
	max, bytes int64
	entries    map[uint64]*entry
	head       *entry // most recently used; circular list
}

type entry struct {
	h          uint64
	key, reply []byte
	tables     []parser.Table
	gens       []uint64
	epoch      uint64
	filled     time.Time
	ttl        time.Duration
	rule       *Rule
	prev, next *entry
}

func (e *entry) size() int64 { return int64(len(e.key) + len(e.reply) + 8*len(e.gens) + entryOverhead) }

func newMemStore(max int64) *memStore {
	return &memStore{max: max, entries: map[uint64]*entry{}}
}

func (m *memStore) get(h uint64, key []byte) *entry {
	e := m.entries[h]
	if e == nil || !bytes.Equal(e.key, key) {
		return nil
	}
	return e
}

func (m *memStore) touch(e *entry) {
	if m.head != e {
		m.unlink(e)
		m.pushFront(e)
	}
}

// put stores reply for key (copying key and gens; reply is kept as is),
// evicting the least recently used entries past max.
func (m *memStore) put(h uint64, key, reply []byte, tables []parser.Table, gens []uint64, epoch uint64, r *Rule) {
	if old := m.entries[h]; old != nil {
		m.remove(old)
	}
	e := &entry{h: h, key: bytes.Clone(key), reply: reply, tables: tables, gens: append([]uint64(nil), gens...),
		epoch: epoch, filled: time.Now(), ttl: r.TTL, rule: r}
	if e.size() > m.max {
		return
	}
	m.entries[h] = e
	m.pushFront(e)
	m.bytes += e.size()
	r.stats.entries.Add(1)
	for m.bytes > m.max {
		m.remove(m.head.prev)
	}
}

func (m *memStore) remove(e *entry) {
	if m.entries[e.h] != e {
		return
	}
	delete(m.entries, e.h)
	m.unlink(e)
	m.bytes -= e.size()
	e.rule.stats.entries.Add(-1)
}

func (m *memStore) clear() {
	for _, e := range m.entries {
		e.rule.stats.entries.Add(-1)
	}
	m.entries, m.head, m.bytes = map[uint64]*entry{}, nil, 0
}

func (m *memStore) pushFront(e *entry) {
	if m.head == nil {
		e.prev, e.next = e, e
	} else {
		e.next, e.prev = m.head, m.head.prev
		m.head.prev.next = e
		m.head.prev = e
	}
	m.head = e
}

func (m *memStore) unlink(e *entry) {
	if e.next == e {
		m.head = nil
	} else {
		e.prev.next, e.next.prev = e.next, e.prev
		if m.head == e {
			m.head = e.next
		}
	}
	e.prev, e.next = nil, nil
}
