package proxy

import (
	"context"
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// readCache is a session's part in the result cache and consolidation
// (package resultcache).
type readCache struct {
	// flushes counts writes to the client: a reply captured across one is
	// incomplete in s.out and is not shared.
	flushes int
	// key is the buffer the cache key is built in.
	key []byte
	// touched are the tables written since the last ReadyForQuery with
	// status idle; ddl: a DDL statement ran. They are invalidated when the
	// session is idle again (the write committed, or rolled back: an
	// invalidation too many is harmless).
	touched []parser.Table
	ddl     bool
	// dirty: since the session was last idle a statement ran that is not
	// a shareable read (it may have written), or a SET: a transaction's
	// reads no longer use the cache (until_write).
	dirty bool
}

// touch records that st runs: a write's tables are invalidated when it
// commits (settle).
func (rc *readCache) touch(st *parser.Statement) {
	if st == nil {
		return
	}
	if st.Kind != parser.Transaction && (st.Kind != parser.Select || st.Writes || !st.Shareable()) {
		rc.dirty = true
	}
	if !st.Writes {
		return
	}
	if st.Kind == parser.DDL {
		rc.ddl = true
	}
	rc.touched = append(rc.touched, st.Tables...)
}

// touchCopy records a COPY's writes: COPY FROM writes its table, COPY
// (query) TO what a data-modifying query names. They are invalidated at
// commit, as an INSERT's are.
func (rc *readCache) touchCopy(c *parser.Copy) {
	rc.dirty = true
	if c.From {
		rc.touched = append(rc.touched, c.Table)
		return
	}
	rc.touch(c.Query)
}

// settle invalidates what the session wrote once no transaction is open;
// readyForQuery calls it before the client learns of the commit.
func (s *session) settle() {
	rc := &s.rc
	if s.status == 'I' {
		rc.dirty = false
	}
	if (len(rc.touched) == 0 && !rc.ddl) || s.status != 'I' {
		return
	}
	c := s.srv.results
	if rc.ddl {
		c.Clear(context.Background())
	} else {
		c.Invalidate(context.Background(), rc.touched)
	}
	rc.touched, rc.ddl = rc.touched[:0], false
}

// sharedRead runs a read outside a transaction through the result cache
// and consolidation when it may be shared; otherwise as routed does.
func (s *session) sharedRead(ctx context.Context, st *parser.Statement, sql string, plan *router.Plan) error {
	c := s.srv.results
	if !st.Shareable() || parser.TimeLiteral(sql) {
		return s.direct(ctx, st, sql, plan)
	}
	rule := c.Match(st)
	if rule == nil && !c.Consolidating() {
		return s.direct(ctx, st, sql, plan)
	}
	k := append(s.keyPrefix(), sql...)
	s.rc.key = k
	reply, err := c.Read(ctx, k, st.Tables, rule, func() ([]byte, error) {
		start, flushes := len(s.out), s.rc.flushes
		err := s.direct(ctx, st, sql, plan)
		if err != nil || s.rc.flushes != flushes || s.status != 'I' || len(s.out) < start {
			return nil, err
		}
		if reply := s.out[start:]; plainReply(reply) {
			return reply, nil
		}
		return nil, nil
	})
	if reply != nil {
		s.out = append(s.out, reply...)
		s.q.tag(lastTag(reply))
		if len(s.out) >= flushAt {
			return s.flush()
		}
	}
	return err
}

// keyPrefix starts a cache key in s.rc.key: what besides the statement
// changes its answer (user, database, settings, shard hint).
func (s *session) keyPrefix() []byte {
	k := append(s.rc.key[:0], s.user...)
	k = append(k, 0)
	k = append(k, s.database...)
	k = append(k, 0)
	for _, x := range s.sets {
		k = append(k, x.sql...)
		k = append(k, 0)
	}
	k = append(k, 0)
	k = append(k, s.shardHint...)
	k = append(k, 0)
	return k
}

// txRead answers a read inside a transaction from the result cache when
// its rule has until_write, the transaction is READ COMMITTED and has run
// nothing but shareable reads: no write yet. It reports whether it did;
// otherwise (a miss included) the read runs in the transaction.
func (s *session) txRead(ctx context.Context, st *parser.Statement, sql string, plan *router.Plan) bool {
	reply := s.txLookup(ctx, st, plan, sql, func() []byte { return append(s.keyPrefix(), sql...) })
	if reply == nil {
		return false
	}
	s.out = append(s.out, reply...)
	s.q.tag(lastTag(reply))
	return true
}

// txLookup is txRead's lookup: the cached reply or nil. key builds the key.
func (s *session) txLookup(ctx context.Context, st *parser.Statement, plan *router.Plan, text string, key func() []byte) []byte {
	c := s.srv.results
	if s.status != 'T' || s.rc.dirty || len(s.txSets) > 0 || st.Kind != parser.Select || st.Writes || plan.Write || !c.Active() {
		return nil
	}
	r := c.Match(st)
	if r == nil || !r.ServesUntilWrite() || !st.Shareable() || parser.TimeLiteral(text) || !s.readCommitted() {
		return nil
	}
	k := key()
	s.rc.key = k
	return c.Lookup(ctx, k, st.Tables, r)
}

// readCommitted reports whether the open transaction is known to be READ
// COMMITTED: its BEGIN and the session's settings name no other isolation
// level (the servers' default_transaction_isolation must be Postgres's,
// read committed: docs/caching.md).
func (s *session) readCommitted() bool {
	rc := func(sql string) bool {
		l := strings.ToLower(sql)
		return !strings.Contains(l, "isolation") || strings.Contains(strings.Join(strings.Fields(l), " "), "read committed")
	}
	for _, p := range s.txPrelude {
		if !rc(p) {
			return false
		}
	}
	for _, x := range s.sets {
		if !rc(x.sql) {
			return false
		}
	}
	return true
}

// direct runs a read outside a transaction on its shards.
func (s *session) direct(ctx context.Context, st *parser.Statement, sql string, plan *router.Plan) error {
	if plan.Single() {
		if s.srv.sets != nil && s.srv.sets[plan.Shards[0]] != nil {
			return s.replicated(ctx, st, plan.Shards[0], sql)
		}
		return s.single(ctx, plan.Shards[0], sql)
	}
	return s.scatter(ctx, st, sql, plan)
}

// plainReply reports whether b holds only complete RowDescription,
// DataRow and CommandComplete messages: a reply another client may be
// given (no error, notice or parameter change).
func plainReply(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for len(b) >= 5 {
		switch b[0] {
		case 'T', 'D', 'C':
		default:
			return false
		}
		n := 1 + int(binary.BigEndian.Uint32(b[1:5]))
		if n < 5 || n > len(b) {
			return false
		}
		b = b[n:]
	}
	return len(b) == 0
}

// lastTag returns the body of the last CommandComplete in a plain reply.
func lastTag(b []byte) []byte {
	var tag []byte
	for len(b) >= 5 {
		n := 1 + int(binary.BigEndian.Uint32(b[1:5]))
		if b[0] == 'C' {
			tag = b[5:n]
		}
		b = b[n:]
	}
	return tag
}

// cacheText says how SHOW ROUTE's statement meets the result cache: its
// rule, consolidation only, or why it is never shared.
func (srv *Server) cacheText(st *parser.Statement, sql string) string {
	c := srv.results
	switch {
	case st.Kind != parser.Select || st.Writes:
		return ""
	case !st.Shareable() || parser.TimeLiteral(sql):
		return "never (volatile, locking, catalog or temporary)"
	}
	if r := c.Match(st); r != nil {
		return "rule " + r.Name + " (ttl " + r.TTL.String() + ")"
	}
	if c.Consolidating() {
		return "consolidate"
	}
	return ""
}

// showCache answers SHOW CACHE: one row per rule, then consolidation.
func (s *session) showCache() {
	c := s.srv.results
	st := c.Stats()
	var data [][]string
	for _, r := range c.Rules() {
		entries := "-"
		if r.Entries >= 0 {
			entries = itoa(int(r.Entries))
		}
		ratio := ""
		if n := r.Hits + r.Misses; n > 0 {
			ratio = strconv.FormatFloat(float64(r.Hits)/float64(n), 'f', 3, 64)
		}
		data = append(data, []string{r.Name, r.Selector, r.TTL.String(), st.Backend, entries,
			strconv.FormatInt(r.Hits, 10), strconv.FormatInt(r.Misses, 10), strconv.FormatInt(r.Fills, 10), ratio})
	}
	consolidate := "off"
	if st.Consolidate {
		consolidate = "on"
	}
	backend := st.Backend
	if !st.BackendUp {
		backend += " (down)"
	}
	data = append(data, []string{"(consolidation)", consolidate, "", backend, itoa(int(st.Entries)),
		strconv.FormatUint(st.Consolidated, 10), "", "", ""})
	cols := textCols("rule", "selects", "ttl", "backend", "entries", "hits", "misses", "fills", "hit_ratio")
	s.rows(cols, data)
}
