package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

func TestShapeKey(t *testing.T) {
	same := [][2]string{
		{"SELECT * FROM orders WHERE user_id = 1", "SELECT * FROM orders WHERE user_id = 42"},
		{"SELECT * FROM t WHERE a = 'x'", "SELECT * FROM t WHERE a = 'it''s'"},
		{"SELECT * FROM t WHERE a = E'x\\'y'", "SELECT * FROM t WHERE a = E'z'"},
		{"SELECT $$a b$$", "SELECT $tag$ x $ y $tag$"},
		{"SELECT 1.5e-3, .5, 0x1F", "SELECT 2, 3, 4"},
		{"SELECT  a\n\tFROM t", "SELECT a FROM t"},
		{"SELECT a /* trace=1 */ FROM t -- c1", "SELECT a /* trace=2 /* nested */ */ FROM t -- c2"},
		{"INSERT INTO t VALUES (1, 'a', B'0101')", "INSERT INTO t VALUES (2, 'b', X'ff')"},
		{"SELECT * FROM t WHERE x = -1", "SELECT * FROM t WHERE x = -7"},
	}
	for _, c := range same {
		if shapeKey(c[0]) != shapeKey(c[1]) {
			t.Errorf("want same key:\n%s\n%s", c[0], c[1])
		}
	}
	differ := [][2]string{
		{"SELECT * FROM orders WHERE user_id = 1", "SELECT * FROM users WHERE user_id = 1"},
		{"SELECT a FROM t1", "SELECT a FROM t2"},
		{"SELECT a b FROM t", "SELECT ab FROM t"},
		{"SELECT $1", "SELECT $2"},
		{`SELECT "a'b" FROM t`, `SELECT "a'c" FROM t`},
		{"SELECT 'a' FROM t WHERE x = 1", "SELECT 'a' FROM u WHERE x = 1"},
		{"SELECT 'a\\' FROM t", "SELECT 'a\\' FROM u"}, // standard string: the backslash does not escape
		{"SELECT $$x$$ FROM t", "SELECT $$x$$ FROM u"},
		{"SELECT e FROM t", "SELECT f FROM t"},
	}
	for _, c := range differ {
		if shapeKey(c[0]) == shapeKey(c[1]) {
			t.Errorf("want different keys:\n%s\n%s", c[0], c[1])
		}
	}
	// Keys agree with pg_query: texts with one key have one fingerprint.
	for _, c := range same {
		a, errA := parser.Fingerprint(c[0])
		b, errB := parser.Fingerprint(c[1])
		if errA == nil && errB == nil && a != b {
			t.Errorf("pg_query fingerprints differ for one shape key: %s %s", c[0], c[1])
		}
	}
}

func TestRecordTagAndSQLSTATE(t *testing.T) {
	var q queryRecord
	for _, tag := range []string{"SELECT 5\x00", "INSERT 0 3\x00", "UPDATE 2", "BEGIN\x00", "CREATE TABLE\x00"} {
		q.tag([]byte(tag))
	}
	if q.rows != 10 {
		t.Errorf("rows = %d, want 10", q.rows)
	}
	body := []byte("SERROR\x00VERROR\x00C42P01\x00Mrelation \"x\" does not exist\x00\x00")
	q.shardFailed(body)
	q.shardFailed([]byte("SERROR\x00C22012\x00\x00")) // the first error wins
	if q.sqlstate != "42P01" {
		t.Errorf("sqlstate = %q", q.sqlstate)
	}
	var r queryRecord
	r.shardFailed([]byte("SERROR\x00\x00"))
	if r.sqlstate != "XX000" {
		t.Errorf("sqlstate without C field = %q", r.sqlstate)
	}
}

func TestTokenBucket(t *testing.T) {
	var b tokenBucket
	b.set(10, 3)
	now := time.Unix(1000, 0)
	got := 0
	for range 10 {
		if b.allow(now) {
			got++
		}
	}
	if got != 3 {
		t.Fatalf("burst allowed %d, want 3", got)
	}
	if b.allow(now.Add(50 * time.Millisecond)) {
		t.Fatal("half a token allowed a line")
	}
	if !b.allow(now.Add(150 * time.Millisecond)) {
		t.Fatal("refill after 150ms at 10/s refused")
	}
	if got := func() int {
		n := 0
		for range 100 {
			if b.allow(now.Add(time.Hour)) {
				n++
			}
		}
		return n
	}(); got != 3 {
		t.Fatalf("refill is capped at the burst: got %d", got)
	}
}

func TestQueryStatsTopKByTotalTime(t *testing.T) {
	qs := newQueryStats(20)
	// 30 shapes; shape i takes i ms. Only the slowest (by total) survive.
	for i := range 30 {
		sql := fmt.Sprintf("SELECT c%d FROM t WHERE id = %d", i, i)
		for range 3 {
			qs.record(mustParse(t, sql), time.Duration(i)*time.Millisecond, 1, false, false)
		}
	}
	top := qs.top()
	if len(top) > 20 {
		t.Fatalf("%d entries kept, max 20", len(top))
	}
	if top[0].calls != 3 || top[0].total != 87*time.Millisecond || top[0].max != 29*time.Millisecond {
		t.Fatalf("top entry %+v", top[0])
	}
	if !strings.Contains(top[0].query, "c29") || strings.Contains(top[0].query, "= 29") || !strings.Contains(top[0].query, "$1") {
		t.Fatalf("normalized query %q", top[0].query)
	}
	for i := 1; i < len(top); i++ {
		if top[i].total > top[i-1].total {
			t.Fatal("not ordered by total time")
		}
	}
	for _, st := range top {
		if st.query == "SELECT c0 FROM t WHERE id = $1" {
			t.Fatal("the cheapest shape was kept over slower ones")
		}
	}
	// Literal-only differences share one entry.
	qs2 := newQueryStats(10)
	qs2.record(mustParse(t, "SELECT * FROM orders WHERE user_id = 1"), time.Millisecond, 1, false, false)
	qs2.record(mustParse(t, "SELECT * FROM orders WHERE user_id = 2"), time.Millisecond, 0, true, true)
	top = qs2.top()
	if len(top) != 1 || top[0].calls != 2 || top[0].errors != 1 || top[0].slow != 1 || top[0].rows != 1 {
		t.Fatalf("%+v", top)
	}
}

func mustParse(t testing.TB, sql string) *parser.Statement {
	t.Helper()
	st, err := parser.Parse(sql)
	if err != nil {
		t.Fatal(err)
	}
	return st[0]
}

// testSession builds a server over 2 unreachable shards (nothing dials)
// and a session whose logs go to buf.
func testSession(t testing.TB, buf *bytes.Buffer) *session {
	t.Helper()
	topo, err := router.NewTopology(&router.Config{
		Shards: []router.ShardConfig{{Name: "s0", DSN: "postgres://x@127.0.0.1:1/db"}, {Name: "s1", DSN: "postgres://x@127.0.0.1:2/db"}},
		Tables: map[string]router.TableConfig{"orders": {Strategy: "hash", Key: "user_id"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var log *slog.Logger
	if buf != nil {
		log = slog.New(slog.NewJSONHandler(buf, nil))
	}
	srv, err := New(Config{Users: []User{{Name: "app", Auth: "trust"}}}, topo, log)
	if err != nil {
		t.Fatal(err)
	}
	s := &session{srv: srv, user: "app", database: "deliveryapp", pid: 7, txState: txState{status: 'I'}}
	s.q.addr = "127.0.0.1:5555"
	return s
}

func TestSlowAndFailedStatementsAreLogged(t *testing.T) {
	var buf bytes.Buffer
	s := testSession(t, &buf)
	s.srv.SetSlowLog(SlowLog{Threshold: 10 * time.Millisecond, PerSecond: 1, Burst: 2})
	stmt := func(sql string) *parser.Statement {
		st, err := parser.Parse(sql)
		if err != nil {
			t.Fatal(err)
		}
		return st[0]
	}
	run := func(sql string, d time.Duration, code string) {
		st := stmt(sql)
		plan, err := s.srv.router.Route(st, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.q.begin()
		s.q.start = s.q.start.Add(-d)
		s.q.st = st
		s.q.plan = plan
		s.q.shards = append(s.q.shards, shardTime{plan.Shards[0], d / 2})
		s.q.wait = d / 4
		s.q.tag([]byte("SELECT 1\x00"))
		if code != "" {
			s.q.failed(code)
		}
		s.srv.obs.finish(s)
	}
	run("SELECT * FROM orders WHERE user_id = 123456", time.Millisecond, "") // fast: no line
	run("SELECT * FROM orders WHERE user_id = 987654", 50*time.Millisecond, "")
	run("SELECT * FROM orders WHERE user_id = 3 AND status = 'secret'", time.Millisecond, "22P02")
	run("SELECT * FROM orders WHERE user_id = 555", 50*time.Millisecond, "") // over the burst: dropped
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines (burst 2), got %d:\n%s", len(lines), buf.String())
	}
	if strings.Contains(buf.String(), "987654") || strings.Contains(buf.String(), "secret") {
		t.Fatalf("a literal was logged:\n%s", buf.String())
	}
	var slow, failed map[string]any
	json.Unmarshal([]byte(lines[0]), &slow)
	json.Unmarshal([]byte(lines[1]), &failed)
	fp, _ := parser.Fingerprint("SELECT * FROM orders WHERE user_id = 1")
	for k, want := range map[string]any{"level": "WARN", "msg": "slow query", "conn_id": 7.0, "user": "app", "db": "deliveryapp",
		"client_addr": "127.0.0.1:5555", "kind": "single", "rows": 1.0, "fingerprint": fp,
		"query": "SELECT * FROM orders WHERE user_id = $1"} {
		if slow[k] != want {
			t.Errorf("slow line %s = %v, want %v", k, slow[k], want)
		}
	}
	if d := slow["duration_ms"].(float64); d < 50 || slow["shard_ms"].(float64) != 25 || slow["wait_ms"].(float64) != 12.5 ||
		slow["proxy_ms"].(float64) < 12.5 {
		t.Errorf("duration split: %v", slow)
	}
	if sh := slow["shard"].(string); sh != "s0" && sh != "s1" {
		t.Errorf("shard = %q", sh)
	}
	if failed["level"] != "ERROR" || failed["msg"] != "query failed" || failed["sqlstate"] != "22P02" {
		t.Errorf("failed line: %v", failed)
	}
	if got := counterValue(s.srv.obs.m.logDropped); got != 1 {
		t.Errorf("dropped counter = %v", got)
	}
	if got := counterValue(s.srv.obs.m.slow); got != 2 {
		t.Errorf("slow counter = %v", got)
	}
	if got := counterValue(s.srv.obs.m.queries[routeSingle][1]); got != 1 {
		t.Errorf("single/error counter = %v", got)
	}
	top := s.srv.obs.stats.top()
	if len(top) != 2 || top[0].calls != 3 || top[0].slow != 2 || top[1].errors != 1 {
		t.Errorf("stats %+v", top)
	}
}

// BenchmarkObserveFastQuery is the per-statement cost of observation for a
// point query that is neither slow nor failed, with literals that change on
// every call (a new statement each time; the shape cache hits, pg_query
// does not run): the finish
// hook (counters, histograms, shape hash, stats entry) plus the session
// hooks (two lease timestamps, one shard timestamp, tag, reset).
func BenchmarkObserveFastQuery(b *testing.B) {
	s := testSession(b, nil)
	// Every query is another *Statement (a parse-cache miss), as with
	// pgbench -M simple: 4096 distinct parsed texts in turn.
	sts := make([]*parser.Statement, 1<<12)
	for i := range sts {
		sts[i] = mustParse(b, fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d", i*7919))
	}
	plan := &router.Plan{Shards: []int{1}}
	pb := &backend{pool: s.srv.pools[1]}
	tag := []byte("SELECT 1\x00")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s.q.begin()
		s.q.st = sts[i&(1<<12-1)]
		s.q.plan = plan
		t := time.Now()
		s.waited(1, t)
		sent := time.Now()
		s.q.tag(tag)
		s.shardDone(pb, sent)
		s.srv.obs.finish(s)
	}
}

// BenchmarkObserveFastQueryCachedText is the same with a statement text the
// parse cache already holds (the statement pointer is known).
func BenchmarkObserveFastQueryCachedText(b *testing.B) {
	s := testSession(b, nil)
	st := mustParse(b, "SELECT abalance FROM pgbench_accounts WHERE aid = 1")
	plan := &router.Plan{Shards: []int{1}}
	pb := &backend{pool: s.srv.pools[1]}
	tag := []byte("SELECT 1\x00")
	b.ReportAllocs()
	for b.Loop() {
		s.q.begin()
		s.q.st = st
		s.q.plan = plan
		t := time.Now()
		s.waited(1, t)
		sent := time.Now()
		s.q.tag(tag)
		s.shardDone(pb, sent)
		s.srv.obs.finish(s)
	}
}

// BenchmarkObserveBaseline is the same loop's bookkeeping without the
// observer, to subtract.
func BenchmarkObserveBaseline(b *testing.B) {
	s := testSession(b, nil)
	st, _ := parser.Parse("SELECT abalance FROM pgbench_accounts WHERE aid = 1")
	plan := &router.Plan{Shards: []int{1}}
	for b.Loop() {
		s.q.st = st[0]
		s.q.plan = plan
		s.q.reset('I')
	}
}

// BenchmarkObserveSlowQueryLogged is a slow statement written to a JSON
// log (rate limit not reached).
func BenchmarkObserveSlowQueryLogged(b *testing.B) {
	var buf bytes.Buffer
	s := testSession(b, &buf)
	s.srv.SetSlowLog(SlowLog{Threshold: time.Nanosecond, PerSecond: 1e12, Burst: 1 << 30})
	st, _ := parser.Parse("SELECT abalance FROM pgbench_accounts WHERE aid = 1")
	plan := &router.Plan{Shards: []int{1}}
	b.ReportAllocs()
	for b.Loop() {
		s.q.begin()
		s.q.st = st[0]
		s.q.plan = plan
		s.srv.obs.finish(s)
		buf.Reset()
	}
}

func BenchmarkShapeKey(b *testing.B) {
	sql := "SELECT o.id, o.total, o.status FROM orders o WHERE o.user_id = 123456 AND o.created_at >= '2025-01-01' ORDER BY o.id LIMIT 10"
	b.SetBytes(int64(len(sql)))
	for b.Loop() {
		shapeKey(sql)
	}
}

// TestFailedUtilityStatementLogsNoLiterals: pg_query's normalization keeps
// the literals of utility statements; the log line must not, unless
// log_literals is on.
func TestFailedUtilityStatementLogsNoLiterals(t *testing.T) {
	for _, literals := range []bool{false, true} {
		var buf bytes.Buffer
		s := testSession(t, &buf)
		s.srv.SetSlowLog(SlowLog{Threshold: time.Hour, Literals: literals})
		sql := "CREATE TABLESPACE ts LOCATION 'relative-secret'"
		st, err := parser.Parse(sql)
		if err != nil {
			t.Fatal(err)
		}
		s.q.begin()
		s.q.st = st[0]
		if literals {
			s.q.text = sql // what nextRequest keeps with log_literals
		}
		s.q.failed("42P17")
		s.srv.obs.finish(s)
		var line map[string]any
		if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
			t.Fatalf("%v: %s", err, buf.String())
		}
		if line["query"] != "CREATE TABLESPACE ts LOCATION $1" {
			t.Errorf("query = %v", line["query"])
		}
		if got := strings.Contains(buf.String(), "relative-secret"); got != literals {
			t.Errorf("log_literals %v: literal in the line = %v:\n%s", literals, got, buf.String())
		}
	}
}
