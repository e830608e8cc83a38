package proxy

import (
	"context"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// This file holds what the proxy learns from each statement: a per-query
// record filled by small hooks in the session, the slow-query and error log,
// and per-fingerprint statistics (SHOW QUERIES).
//
// Hot-path cost: the hooks are field writes and two time.Now calls per
// shard; at the end of a statement the observer bumps preresolved
// Prometheus children, hashes the statement's shape (a small lexer that
// skips literals and comments, no allocation) and updates one stats entry
// under a mutex. pg_query's Fingerprint and Normalize run once per new
// shape, not per query. See BenchmarkObserve*.

// routeKind says how a statement ran: answered by the proxy itself, on one
// shard, or on several.
type routeKind uint8

const (
	routeLocal routeKind = iota
	routeSingle
	routeMulti
	nRouteKinds
)

var routeKindNames = [nRouteKinds]string{"local", "single", "multi"}

var outcomeNames = [2]string{"ok", "error"}

// Client states for SHOW CLIENTS and shardproxy_client_connections.
const (
	clientIdle uint32 = iota
	clientActive
	clientIdleInTx
	clientAdmin
	nClientStates
)

var clientStateNames = [nClientStates]string{"idle", "active", "idle_in_transaction", "admin"}

// shardTime is the time one shard took on a statement, from sending it to
// its ReadyForQuery.
type shardTime struct {
	shard int
	d     time.Duration
}

// queryRecord is what the session learns about the running statement, plus
// a few per-connection facts for SHOW CLIENTS. The session goroutine owns
// the statement fields; only the atomics are read by other goroutines.
type queryRecord struct {
	start    time.Time
	st       *parser.Statement
	plan     *router.Plan
	wait     time.Duration
	shards   []shardTime
	rows     int64
	sqlstate string
	// text is the statement as the client sent it, kept only when
	// log_literals is on (nextRequest).
	text string

	// Connection facts, set once at login before the session is published.
	admin     bool
	addr      string
	connected time.Time

	state   atomic.Uint32
	queries atomic.Uint64
}

func (q *queryRecord) begin() {
	q.start = time.Now()
	q.state.Store(clientActive)
}

// failed records the SQLSTATE of the first error the statement met.
func (q *queryRecord) failed(code string) {
	if q.sqlstate == "" {
		q.sqlstate = code
	}
}

// shardFailed records the SQLSTATE of an ErrorResponse body from a shard.
func (q *queryRecord) shardFailed(body []byte) {
	if q.sqlstate != "" {
		return
	}
	for len(body) > 1 && body[0] != 0 {
		f := body[0]
		body = body[1:]
		end := 0
		for end < len(body) && body[end] != 0 {
			end++
		}
		if f == 'C' {
			q.sqlstate = string(body[:end])
			return
		}
		if end == len(body) {
			break
		}
		body = body[end+1:]
	}
	q.sqlstate = "XX000"
}

// tag adds the row count of a CommandComplete body ("SELECT 5", "INSERT 0 3").
func (q *queryRecord) tag(body []byte) {
	end := len(body)
	if end > 0 && body[end-1] == 0 {
		end--
	}
	var n, mul int64 = 0, 1
	i := end - 1
	for ; i >= 0 && body[i] >= '0' && body[i] <= '9'; i-- {
		n += int64(body[i]-'0') * mul
		mul *= 10
	}
	if i >= 0 && i < end-1 && body[i] == ' ' {
		q.rows += n
	}
}

// waited records time spent leasing a backend of shard.
func (s *session) waited(shard int, since time.Time) {
	d := time.Since(since)
	s.q.wait += d
	s.srv.obs.m.poolWait[shard].Observe(d.Seconds())
}

// shardDone records that b answered (ReadyForQuery) a statement sent at sent.
func (s *session) shardDone(b *backend, sent time.Time) {
	if b.pool.shard == coordShard {
		return
	}
	d := time.Since(sent)
	s.q.shards = append(s.q.shards, shardTime{shard: b.pool.shard, d: d})
	if b.pool.reads || s.srv.sets != nil {
		b.pool.observe(d) // balance.go: fastest_response
	}
}

// SlowLog configures the slow-query and error log.
type SlowLog struct {
	// Threshold: statements at least this slow are logged at Warn.
	// Zero means 1s.
	Threshold time.Duration
	// PerSecond and Burst bound logged lines (slow and failed statements
	// together) with a token bucket; lines past it are dropped and counted.
	// Zero means 50 lines/s and a burst of 100.
	PerSecond float64
	Burst     int
	// Literals adds the statement as sent, literals included, to each
	// line (query_literal). Off by default: for debugging only, since
	// passwords and customers' data then reach the logs.
	Literals bool
}

func (c SlowLog) withDefaults() SlowLog {
	if c.Threshold <= 0 {
		c.Threshold = time.Second
	}
	if c.PerSecond <= 0 {
		c.PerSecond = 50
	}
	if c.Burst <= 0 {
		c.Burst = 100
	}
	return c
}

// observer turns finished query records into metrics, log lines and
// per-fingerprint statistics. Safe for concurrent use.
type observer struct {
	log       *slog.Logger
	m         *metrics
	stats     *queryStats
	shardName []string

	threshold atomic.Int64 // time.Duration
	limiter   tokenBucket
	dropped   atomic.Uint64 // lines dropped since the last one written
	slowLog   atomic.Pointer[SlowLog]
}

func newObserver(log *slog.Logger, m *metrics, shardNames []string, statsSize int) *observer {
	o := &observer{log: log, m: m, stats: newQueryStats(statsSize), shardName: shardNames}
	o.setSlowLog(SlowLog{})
	return o
}

func (o *observer) setSlowLog(c SlowLog) {
	c = c.withDefaults()
	o.threshold.Store(int64(c.Threshold))
	o.limiter.set(c.PerSecond, c.Burst)
	o.slowLog.Store(&c)
}

// SetSlowLog changes the slow-query log's threshold and rate limit. It may
// be called at any time (reload).
func (s *Server) SetSlowLog(c SlowLog) { s.obs.setSlowLog(c) }

// finish accounts for the statement the session just answered and resets
// its record. The session calls it as it appends ReadyForQuery, so a client
// that has its answer also sees it counted; it does nothing when no
// statement began (startup, admin console).
func (o *observer) finish(s *session) {
	q := &s.q
	if q.start.IsZero() {
		return
	}
	defer q.reset(s.status)
	if q.st == nil && q.sqlstate == "" {
		return // empty query
	}
	total := time.Since(q.start)
	kind := routeLocal
	switch {
	case q.plan != nil && len(q.plan.Shards) > 1:
		kind = routeMulti
	case q.plan != nil || len(q.shards) > 0:
		kind = routeSingle
	}
	failed := q.sqlstate != ""
	outcome := 0
	if failed {
		outcome = 1
	}
	m := o.m
	m.queries[kind][outcome].Inc()
	m.duration[kind].Observe(total.Seconds())
	var shardD time.Duration
	for _, x := range q.shards {
		m.shardDuration[x.shard].Observe(x.d.Seconds())
		shardD = max(shardD, x.d)
	}
	if kind == routeMulti {
		m.fanout.Observe(float64(len(q.plan.Shards)))
		m.rowsMerged.Add(float64(q.rows))
	}
	slow := total >= time.Duration(o.threshold.Load())
	if slow {
		m.slow.Inc()
	}
	var info *shapeInfo
	if q.st != nil {
		info = o.stats.record(q.st, total, q.rows, failed, slow)
	}
	q.queries.Add(1)
	if slow || failed {
		o.logQuery(s, info, kind, total, shardD, slow)
	}
}

func (q *queryRecord) reset(status byte) {
	q.start, q.st, q.plan, q.wait, q.rows, q.sqlstate, q.text = time.Time{}, nil, nil, 0, 0, "", ""
	q.shards = q.shards[:0]
	if status == 'I' {
		q.state.Store(clientIdle)
	} else {
		q.state.Store(clientIdleInTx)
	}
}

// logQuery writes one line for a slow or failed statement, rate-limited.
// It never logs the statement text: only its redacted form (pg_query's
// normalized query, with the constants it leaves replaced too), unless
// log_literals is on.
func (o *observer) logQuery(s *session, info *shapeInfo, kind routeKind, total, shardD time.Duration, slow bool) {
	q := &s.q
	lvl, msg := slog.LevelWarn, "slow query"
	if q.sqlstate != "" {
		lvl, msg = slog.LevelError, "query failed"
	}
	ctx := context.Background()
	if !o.log.Enabled(ctx, lvl) {
		return
	}
	if !o.limiter.allow(time.Now()) {
		o.dropped.Add(1)
		o.m.logDropped.Inc()
		return
	}
	proxyD := max(total-q.wait-shardD, 0)
	attrs := make([]slog.Attr, 0, 18)
	attrs = append(attrs,
		slog.Uint64("conn_id", uint64(s.pid)),
		slog.String("user", s.user),
		slog.String("db", s.database),
		slog.String("client_addr", q.addr),
		slog.String("kind", routeKindNames[kind]),
		slog.String("shard", o.shardList(q)),
		slog.Float64("duration_ms", ms(total)),
		slog.Float64("proxy_ms", ms(proxyD)),
		slog.Float64("wait_ms", ms(q.wait)),
		slog.Float64("shard_ms", ms(shardD)),
		slog.Int64("rows", q.rows),
	)
	if q.sqlstate != "" {
		attrs = append(attrs, slog.String("sqlstate", q.sqlstate), slog.Bool("slow", slow))
	}
	if info != nil && info.fingerprint != "" {
		attrs = append(attrs, slog.String("fingerprint", info.fingerprint), slog.String("query", info.query))
	}
	if q.text != "" {
		attrs = append(attrs, slog.String("query_literal", q.text))
	}
	if n := o.dropped.Swap(0); n > 0 {
		attrs = append(attrs, slog.Uint64("dropped", n))
	}
	o.log.LogAttrs(ctx, lvl, msg, attrs...)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// shardList names the shards the statement was routed to (or touched,
// when it was not routed: COMMIT, SET...).
func (o *observer) shardList(q *queryRecord) string {
	var b strings.Builder
	if q.plan != nil {
		for i, x := range q.plan.Shards {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(o.shardName[x])
		}
		return b.String()
	}
	for i, x := range q.shards {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(o.shardName[x.shard])
	}
	return b.String()
}

// tokenBucket allows rate events per second with bursts up to burst.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func (b *tokenBucket) set(rate float64, burst int) {
	b.mu.Lock()
	b.rate, b.burst = rate, float64(burst)
	if b.last.IsZero() || b.tokens > b.burst {
		b.tokens = b.burst
	}
	b.mu.Unlock()
}

func (b *tokenBucket) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// shapeInfo is pg_query's view of a statement shape.
type shapeInfo struct {
	fingerprint string // empty when pg_query could not fingerprint it
	query       string // normalized: literals replaced by $n
}

// queryStat is one SHOW QUERIES row.
type queryStat struct {
	shapeInfo
	calls, errors, slow uint64
	rows                int64
	total, max          time.Duration
}

// maxShapes bounds the shape-hash cache and maxStmts the statement cache
// in front of it (smaller: its keys keep parsed statements alive); a full
// cache is emptied.
const (
	maxShapes = 10000
	maxStmts  = 4096
)

// queryStats keeps per-fingerprint statistics for at most max fingerprints;
// when full, the 5% with the least total time are dropped (as
// pg_stat_statements deallocates its least used entries).
//
// A statement's fingerprint is found by pointer first (the parse cache
// returns the same *Statement for the same text), then by shape hash
// (texts that differ only in literals), and only then computed by pg_query.
type queryStats struct {
	mu     sync.Mutex
	max    int
	stmts  map[*parser.Statement]*shapeInfo
	shapes map[uint64]*shapeInfo
	byFP   map[string]*queryStat
}

func newQueryStats(max int) *queryStats {
	return &queryStats{max: max, stmts: map[*parser.Statement]*shapeInfo{}, shapes: map[uint64]*shapeInfo{},
		byFP: map[string]*queryStat{}}
}

func (qs *queryStats) resize(max int) {
	qs.mu.Lock()
	qs.max = max
	qs.mu.Unlock()
}

// record adds one execution of st. The shape hash and pg_query run outside
// the lock, pg_query only for a shape not seen before.
func (qs *queryStats) record(st *parser.Statement, d time.Duration, rows int64, failed, slow bool) *shapeInfo {
	qs.mu.Lock()
	info := qs.stmts[st]
	if info == nil {
		qs.mu.Unlock()
		k := shapeKey(st.SQL)
		qs.mu.Lock()
		info = qs.shapes[k]
		if info == nil {
			qs.mu.Unlock()
			info = newShapeInfo(st.SQL)
			qs.mu.Lock()
			if len(qs.shapes) >= maxShapes {
				clear(qs.shapes)
			}
			qs.shapes[k] = info
		}
		if len(qs.stmts) >= maxStmts {
			clear(qs.stmts)
		}
		qs.stmts[st] = info
	}
	defer qs.mu.Unlock()
	if info.fingerprint == "" || qs.max <= 0 {
		return info
	}
	e := qs.byFP[info.fingerprint]
	if e == nil {
		if len(qs.byFP) >= qs.max {
			qs.evict()
		}
		e = &queryStat{shapeInfo: *info}
		qs.byFP[info.fingerprint] = e
	}
	e.calls++
	e.total += d
	e.max = max(e.max, d)
	e.rows += rows
	if failed {
		e.errors++
	}
	if slow {
		e.slow++
	}
	return info
}

// evict drops the entries with the least total time, down to 95% of max.
func (qs *queryStats) evict() {
	all := make([]*queryStat, 0, len(qs.byFP))
	for _, st := range qs.byFP {
		all = append(all, st)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].total < all[j].total })
	n := len(all) - qs.max + qs.max/20 + 1
	for _, st := range all[:min(n, len(all))] {
		delete(qs.byFP, st.fingerprint)
	}
}

// top returns copies of the entries, by total time descending.
func (qs *queryStats) top() []queryStat {
	qs.mu.Lock()
	out := make([]queryStat, 0, len(qs.byFP))
	for _, st := range qs.byFP {
		out = append(out, *st)
	}
	qs.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].total != out[j].total {
			return out[i].total > out[j].total
		}
		return out[i].fingerprint < out[j].fingerprint
	})
	return out
}

func newShapeInfo(sql string) *shapeInfo {
	fp, err := parser.Fingerprint(sql)
	if err != nil {
		return &shapeInfo{}
	}
	norm, err := parser.Redact(sql)
	if err != nil {
		return &shapeInfo{}
	}
	return &shapeInfo{fingerprint: fp, query: norm}
}

// shapeKey hashes sql with its literals (strings, numbers, dollar-quoted
// bodies) replaced by '?', comments dropped and whitespace runs collapsed,
// so that texts differing only in constants share a key and therefore a
// pg_query fingerprint. It does not allocate.
func shapeKey(sql string) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	space := false
	n := len(sql)
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			space = true
			i++
			continue
		case c == '-' && i+1 < n && sql[i+1] == '-':
			for i < n && sql[i] != '\n' {
				i++
			}
			space = true
			continue
		case c == '/' && i+1 < n && sql[i+1] == '*':
			depth := 0
			for i+1 < n {
				if sql[i] == '/' && sql[i+1] == '*' {
					depth++
					i += 2
				} else if sql[i] == '*' && sql[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
			if depth > 0 {
				i = n
			}
			space = true
			continue
		}
		if space {
			h = (h ^ ' ') * prime
			space = false
		}
		switch {
		case c == '\'':
			i = skipString(sql, i, false)
			h = (h ^ '?') * prime
		case isIdentStart(c):
			j := i + 1
			for j < n && isIdentByte(sql[j]) {
				j++
			}
			if j == i+1 && j < n && sql[j] == '\'' && strings.IndexByte("eEbBxXnN", c) >= 0 {
				i = skipString(sql, j, c == 'e' || c == 'E')
				h = (h ^ '?') * prime
				continue
			}
			for ; i < j; i++ {
				h = (h ^ uint64(sql[i])) * prime
			}
		case c >= '0' && c <= '9' || c == '.' && i+1 < n && sql[i+1] >= '0' && sql[i+1] <= '9':
			i++
			for i < n {
				d := sql[i]
				if d >= '0' && d <= '9' || d == '.' || d == '_' || isIdentStart(d) ||
					(d == '+' || d == '-') && (sql[i-1] == 'e' || sql[i-1] == 'E') {
					i++
					continue
				}
				break
			}
			h = (h ^ '?') * prime
		case c == '$':
			j := i + 1
			if j < n && sql[j] >= '0' && sql[j] <= '9' {
				for ; i < n && (i == j-1 || sql[i] >= '0' && sql[i] <= '9'); i++ {
					h = (h ^ uint64(sql[i])) * prime
				}
				continue
			}
			for j < n && isIdentByte(sql[j]) && sql[j] != '$' {
				j++
			}
			if j < n && sql[j] == '$' {
				tag := sql[i : j+1]
				end := strings.Index(sql[j+1:], tag)
				if end < 0 {
					i = n
				} else {
					i = j + 1 + end + len(tag)
				}
				h = (h ^ '?') * prime
				continue
			}
			h = (h ^ '$') * prime
			i++
		case c == '"':
			h = (h ^ '"') * prime
			i++
			for i < n {
				h = (h ^ uint64(sql[i])) * prime
				if sql[i] == '"' {
					if i+1 < n && sql[i+1] == '"' {
						i += 2
						h = (h ^ '"') * prime
						continue
					}
					i++
					break
				}
				i++
			}
		default:
			h = (h ^ uint64(c)) * prime
			i++
		}
	}
	return h
}

// skipString returns the index after the string literal opening at i.
func skipString(sql string, i int, backslash bool) int {
	for i++; i < len(sql); i++ {
		switch sql[i] {
		case '\\':
			if backslash {
				i++
			}
		case '\'':
			if i+1 < len(sql) && sql[i+1] == '\'' {
				i++
				continue
			}
			return i + 1
		}
	}
	return len(sql)
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentByte(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}
