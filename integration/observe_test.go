package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/router"
)

// The observability tests run their own proxy over the package's shards,
// with an admin user, fast health checks, a captured JSON log, a private
// metrics registry and a reloader that re-reads obsConfig.

const (
	healthInterval  = 200 * time.Millisecond
	healthTimeout   = time.Second
	healthFailures  = 2
	healthSuccesses = 2
)

type obsProxy struct {
	srv       *proxy.Server
	addr      string // client listener
	adminURL  string // http://host:port
	log       *syncBuffer
	mu        sync.Mutex
	slowQuery string // log.slow_query in the config the reloader reads
	poolSize  int
}

// syncBuffer collects log lines from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the JSON log lines with the given msg.
func (b *syncBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	data := b.buf.String()
	b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", sc.Text())
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func (o *obsProxy) yaml() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var sb strings.Builder
	fmt.Fprintf(&sb, `backend_roles: shared
users: [{name: app, password: app}, {name: admin, password: adminpw}, {name: trusty, auth: trust}]
admins: [admin]
pool: {size: %d, acquire_timeout: 5s}
health: {interval: %s, timeout: %s, failures: %d, successes: %d}
log: {slow_query: %s, max_per_second: 1000, burst: 1000}
shards:
`, o.poolSize, healthInterval, healthTimeout, healthFailures, healthSuccesses, o.slowQuery)
	for i, dsn := range env.shards.DSNs() {
		fmt.Fprintf(&sb, "  - {name: s%d, dsn: %q}\n", i, dsn)
	}
	sb.WriteString("tables:\n  users: {strategy: hash, key: id}\n  orders: {strategy: hash, key: user_id}\n")
	return sb.String()
}

// startObsProxy starts a proxy over the shared shards (stopped when t ends)
// with the slow-query threshold slow.
func startObsProxy(t *testing.T, slow string) *obsProxy {
	t.Helper()
	o := &obsProxy{log: &syncBuffer{}, slowQuery: slow, poolSize: 4}
	f, err := config.Parse([]byte(o.yaml()))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(o.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := proxy.New(f.Proxy, env.topo, log)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetSlowLog(f.Log.SlowLog())
	reg := prometheus.NewRegistry()
	if err := srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	srv.SetReloader(func() error {
		f, err := config.Parse([]byte(o.yaml()))
		if err != nil {
			return err
		}
		if err := srv.Apply(f.Proxy); err != nil {
			return err
		}
		srv.SetSlowLog(f.Log.SlowLog())
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, ln)
	go srv.ServeAdmin(ctx, aln, reg)
	t.Cleanup(func() { cancel(); srv.Close() })
	o.srv, o.addr, o.adminURL = srv, ln.Addr().String(), "http://"+aln.Addr().String()
	return o
}

func (o *obsProxy) connect(t *testing.T) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", o.addr))
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	c, err := pgx.ConnectConfig(context.Background(), cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// admin runs psql on the admin console as user with password.
func (o *obsProxy) admin(t *testing.T, user, password string, cmds ...string) string {
	t.Helper()
	args := []string{"-X", "-v", "ON_ERROR_STOP=0", fmt.Sprintf("postgres://%s@%s/shardproxy?sslmode=disable", user, o.addr)}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	cmd := exec.Command("psql", args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=10")
	out, _ := cmd.CombinedOutput()
	return string(out)
}

func (o *obsProxy) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(o.adminURL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// scrape parses /metrics with the Prometheus text parser.
func (o *obsProxy) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := o.get(t, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// value finds the sample of family name whose labels include want
// (counter, gauge, or a histogram's count).
func value(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func shardOfUser(id int64) string {
	return fmt.Sprintf("s%d", router.PartitionOf(router.HashInt(id), nShards))
}

func TestSlowQueryLogAndAdminConsole(t *testing.T) {
	// A wide gap between the threshold and the slow query, and a warmed
	// backend for the fast one, so a loaded machine cannot blur them.
	o := startObsProxy(t, "1s")
	c := o.connect(t)
	ctx := context.Background()
	if _, err := c.Exec(ctx, "INSERT INTO users (id, name, email, city) VALUES (4242, 'Ana', 'ana@example.com', 'Lisbon') ON CONFLICT (id) DO NOTHING"); err != nil {
		t.Fatal(err)
	}
	const slowSQL = "SELECT id, pg_sleep(1.0987) FROM users WHERE id = 4242"
	if _, err := c.Exec(ctx, slowSQL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // fast: not logged (the first run also warms its shard's pool)
		if _, err := c.Exec(ctx, "SELECT id FROM users WHERE id = 4243"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Exec(ctx, "SELECT nosuchcolumn FROM users WHERE id = 4242 AND name = 'Secret Name'"); pgCode(err) != "42703" {
		t.Fatalf("want 42703, got %v", err)
	}
	fp, err := parser.Fingerprint(slowSQL)
	if err != nil {
		t.Fatal(err)
	}
	fastFP, _ := parser.Fingerprint("SELECT id FROM users WHERE id = 1")
	var slow []map[string]any
	for _, l := range o.log.lines(t, "slow query") {
		switch l["fingerprint"] {
		case fp:
			slow = append(slow, l)
		case fastFP:
			t.Errorf("a fast query was logged as slow: %v", l)
		}
	}
	if len(slow) != 1 {
		t.Fatalf("want 1 slow-query line for %s, got %d:\n%s", fp, len(slow), o.log.buf.String())
	}
	l := slow[0]
	for k, want := range map[string]any{"level": "WARN", "fingerprint": fp, "shard": shardOfUser(4242), "kind": "single",
		"user": "app", "db": "deliveryapp", "rows": 1.0, "query": "SELECT id, pg_sleep($1) FROM users WHERE id = $2"} {
		if l[k] != want {
			t.Errorf("slow line %s = %v, want %v", k, l[k], want)
		}
	}
	if d, _ := l["duration_ms"].(float64); d < 250 {
		t.Errorf("duration_ms = %v", l["duration_ms"])
	}
	if d, _ := l["shard_ms"].(float64); d < 250 {
		t.Errorf("shard_ms = %v", l["shard_ms"])
	}
	if _, ok := l["wait_ms"].(float64); !ok {
		t.Errorf("no wait_ms: %v", l)
	}
	if a, _ := l["client_addr"].(string); !strings.HasPrefix(a, "127.0.0.1:") {
		t.Errorf("client_addr = %v", l["client_addr"])
	}
	failed := o.log.lines(t, "query failed")
	if len(failed) != 1 || failed[0]["level"] != "ERROR" || failed[0]["sqlstate"] != "42703" {
		t.Errorf("failed-statement lines: %v", failed)
	}
	all := o.log.buf.String()
	for _, lit := range []string{"4242", "1.0987", "Secret Name", "ana@example"} {
		if strings.Contains(all, lit) {
			t.Errorf("literal %q in the log:\n%s", lit, all)
		}
	}

	out := o.admin(t, "admin", "adminpw", "SHOW QUERIES")
	var row string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, fp) {
			row = line
		}
	}
	if row == "" || !strings.Contains(row, "SELECT id, pg_sleep($1) FROM users WHERE id = $2") {
		t.Fatalf("SHOW QUERIES lacks the slow query:\n%s", out)
	}
	cells := strings.Split(row, "|")
	if len(cells) != 9 || strings.TrimSpace(cells[2]) != "1" || strings.TrimSpace(cells[8]) != "1" {
		t.Errorf("calls and slow should be 1: %q", row)
	}
	// Ordered by total time (descending).
	prev, rows := math.Inf(1), 0
	for _, line := range strings.Split(out, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) != 9 {
			continue
		}
		total, err := strconv.ParseFloat(strings.TrimSpace(cells[3]), 64)
		if err != nil {
			continue // header
		}
		if total > prev {
			t.Errorf("SHOW QUERIES is not ordered by total_ms:\n%s", out)
		}
		prev = total
		rows++
	}
	if rows < 3 {
		t.Errorf("SHOW QUERIES has %d rows, want the 3 statements run (and the INSERT):\n%s", rows, out)
	}

	out = o.admin(t, "admin", "adminpw", "SHOW SHARDS", "SHOW POOLS", "SHOW CLIENTS", "SHOW SERVERS", "SHOW STATS",
		"SHOW TOTALS", "SHOW CONFIG", "SHOW ROUTE SELECT * FROM orders WHERE user_id = 4242", "SHOW ROUTE SELECT count(*) FROM orders",
		"SHOW HELP", "SHOW NONSENSE", "DROP TABLE users")
	for _, want := range []string{
		" shard |   host    | port  |  database   | state |", " s3    | 127.0.0.1 ", "| up    |", // SHOW SHARDS
		" shard | size | open | idle | in_use | waiting | connects | connect_errors", // SHOW POOLS
		"| user  |  database   |", "| admin | shardproxy  |", "| app   | deliveryapp |", // SHOW CLIENTS
		" shard | backend_pid | state | conn_id | user",                                              // SHOW SERVERS
		" scope |  name  | queries | errors | total_ms | avg_ms", " route | single ", " shard | s0 ", // SHOW STATS
		" slow_queries         |     ", // SHOW TOTALS (the pg_sleep query; a dial under load may add one)
		" " + shardOfUser(4242) + "     | single | false | false     | false     | orders by user_id: " + shardOfUser(4242), // SHOW ROUTE
		" s0,s1,s2,s3 | multi | false | false     | true      | orders: no usable user_id predicate",
		" SHOW QUERIES ", // SHOW HELP
		`ERROR:  unknown SHOW "NONSENSE" on the admin console`,
		`ERROR:  unknown admin command "DROP"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("admin console output lacks %q", want)
		}
	}
	for _, kv := range [][2]string{{"log.slow_query", "1s"}, {"admins", "admin "}} { // SHOW CONFIG
		if !configShows(out, kv[0], kv[1]) {
			t.Errorf("SHOW CONFIG lacks %s = %s", kv[0], kv[1])
		}
	}
	if strings.Contains(out, "adminpw") || strings.Contains(out, "password=") {
		t.Errorf("SHOW CONFIG shows a password:\n%s", out)
	}
	if t.Failed() {
		t.Logf("admin console output:\n%s", out)
	}

	// Non-admins are refused at connect, after their password is checked.
	out = o.admin(t, "app", "app", "SHOW POOLS")
	if !strings.Contains(out, `FATAL:  permission denied for database "shardproxy"`) {
		t.Errorf("non-admin on the console: %s", out)
	}
	out = o.admin(t, "admin", "wrong", "SHOW POOLS")
	if !strings.Contains(out, `password authentication failed for user "admin"`) {
		t.Errorf("admin with a wrong password: %s", out)
	}
}

func TestMetricsCountersMove(t *testing.T) {
	o := startObsProxy(t, "10s")
	c := o.connect(t)
	ctx := context.Background()
	before := o.scrape(t)
	for i := range 5 {
		if _, err := c.Exec(ctx, fmt.Sprintf("SELECT * FROM orders WHERE user_id = %d", 700+i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Exec(ctx, "SELECT count(*) FROM orders"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "SELECT * FROM orders WHERE user_id = 1 AND nosuch = 1"); pgCode(err) != "42703" {
		t.Fatalf("want 42703: %v", err)
	}
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	after := o.scrape(t)
	delta := func(name string, labels ...string) float64 {
		return value(after, name, labels...) - max(value(before, name, labels...), 0)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"shardproxy_queries_total", []string{"route", "single", "outcome", "ok"}, 5},
		{"shardproxy_queries_total", []string{"route", "single", "outcome", "error"}, 1},
		{"shardproxy_queries_total", []string{"route", "multi", "outcome", "ok"}, 1},
		{"shardproxy_queries_total", []string{"route", "local", "outcome", "ok"}, 2},
		{"shardproxy_query_duration_seconds", []string{"route", "single"}, 6},
		{"shardproxy_fanout_shards", nil, 1},
		{"shardproxy_slow_queries_total", nil, 0},
	} {
		if got := delta(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v moved by %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	var shardQueries float64
	for i := range nShards {
		shardQueries += delta("shardproxy_shard_query_duration_seconds", "shard", fmt.Sprintf("s%d", i))
	}
	if shardQueries != 5+1+4 { // 5 points, 1 failed point, a count on 4 shards
		t.Errorf("per-shard durations moved by %v, want 10", shardQueries)
	}
	if got := delta("shardproxy_fanout_rows_merged_total"); got != 4 {
		t.Errorf("rows merged moved by %v, want 4 (one count row per shard)", got)
	}
	if got := delta("shardproxy_parse_cache_misses_total") + delta("shardproxy_parse_cache_hits_total"); got < 9 {
		t.Errorf("parse cache lookups moved by %v", got)
	}
	if got := value(after, "shardproxy_client_connections", "state", "idle"); got != 1 {
		t.Errorf("idle clients = %v", got)
	}
	for i := range nShards {
		sh := fmt.Sprintf("s%d", i)
		if v := value(after, "shardproxy_pool_size", "shard", sh); v != 4 {
			t.Errorf("pool size %s = %v", sh, v)
		}
		if v := value(after, "shardproxy_backend_connects_total", "shard", sh); v < 1 {
			t.Errorf("backend connects %s = %v", sh, v)
		}
		if v := value(after, "shardproxy_pool_connections", "shard", sh, "state", "idle"); v < 1 {
			t.Errorf("idle pool connections %s = %v", sh, v)
		}
		if v := value(after, "shardproxy_pool_wait_seconds", "shard", sh); v < 1 {
			t.Errorf("pool wait observations %s = %v", sh, v)
		}
	}
	for name, f := range after {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				switch l.GetName() {
				case "shard", "route", "outcome", "state", "limit", "reason", "user":
				default:
					t.Errorf("%s has an unexpected label %s", name, l.GetName())
				}
			}
		}
		if !strings.HasPrefix(name, "shardproxy_") {
			t.Errorf("metric %s lacks the shardproxy_ prefix", name)
		}
	}
}

func TestReadyFollowsShardHealth(t *testing.T) {
	o := startObsProxy(t, "10s")
	c := o.connect(t)
	ctx := context.Background()
	type ready struct {
		Ready  bool `json:"ready"`
		Shards []struct {
			Name      string `json:"name"`
			Up        bool   `json:"up"`
			LastError string `json:"last_error"`
		} `json:"shards"`
	}
	readyNow := func() (int, ready) {
		code, body := o.get(t, "/ready")
		var r ready
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("/ready body: %v: %s", err, body)
		}
		return code, r
	}
	waitReady := func(want int, within time.Duration) ready {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			code, r := readyNow()
			if code == want {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("/ready stayed %d for %v, want %d: %+v", code, within, want, r)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if code, body := o.get(t, "/health"); code != 200 || string(body) != "ok\n" {
		t.Fatalf("/health: %d %q", code, body)
	}
	waitReady(200, 2*time.Second)

	const down = 3
	user := int64(0)
	for shardOfUser(user) != fmt.Sprintf("s%d", down) {
		user++
	}
	point := fmt.Sprintf("SELECT * FROM orders WHERE user_id = %d", user)
	if _, err := c.Exec(ctx, point); err != nil {
		t.Fatal(err)
	}
	if err := env.shards.Clusters[down].Stop(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			env.shards.Clusters[down].Restart(context.Background())
		}
		drainStaleBackends(t, down)
	})
	// Down after `failures` failed checks: at most failures+1 intervals
	// plus the time a failing check takes.
	r := waitReady(503, time.Duration(healthFailures+1)*healthInterval+healthTimeout+2*time.Second)
	if r.Ready || r.Shards[down].Up || r.Shards[down].LastError == "" || !r.Shards[0].Up {
		t.Errorf("/ready detail: %+v", r)
	}
	start := time.Now()
	_, err := c.Exec(ctx, point)
	if pgCode(err) != "08006" || !strings.Contains(err.Error(), fmt.Sprintf("shard s%d: marked down", down)) {
		t.Errorf("query to a down shard: %v", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("query to a down shard took %v, want fail-fast", d)
	}
	if _, err := c.Exec(ctx, "SELECT * FROM orders WHERE user_id = 1"); shardOfUser(1) != fmt.Sprintf("s%d", down) && err != nil {
		t.Errorf("query to an up shard: %v", err)
	}
	if code, _ := o.get(t, "/health"); code != 200 {
		t.Errorf("/health with a shard down: %d", code)
	}
	fams := o.scrape(t)
	if v := value(fams, "shardproxy_shard_up", "shard", fmt.Sprintf("s%d", down)); v != 0 {
		t.Errorf("shardproxy_shard_up = %v", v)
	}
	if !strings.Contains(o.log.buf.String(), `"msg":"shard down"`) {
		t.Error("no 'shard down' log line")
	}

	if err := env.shards.Clusters[down].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	waitReady(200, time.Duration(healthSuccesses+1)*healthInterval+healthTimeout+2*time.Second)
	if _, err := c.Exec(ctx, point); err != nil {
		t.Errorf("query after the shard came back: %v", err)
	}
}

// drainStaleBackends makes the package's shared proxy drop connections to
// shard i that died with a restart: its pool has no health checker (the
// default interval is longer than this test), so each stale idle backend
// fails one query with 08006 and is closed.
func drainStaleBackends(t *testing.T, i int) {
	ctx := context.Background()
	user := int64(0)
	for shardOfUser(user) != fmt.Sprintf("s%d", i) {
		user++
	}
	c, err := connect(ctx, "app", "app")
	if err != nil {
		t.Errorf("drain: %v", err)
		return
	}
	defer c.Close(ctx)
	for range 20 {
		if _, err := c.Exec(ctx, fmt.Sprintf("SELECT 1 FROM orders WHERE user_id = %d", user)); err == nil {
			return
		}
	}
}

func TestReloadChangesThresholdAndPoolSize(t *testing.T) {
	o := startObsProxy(t, "10s")
	c := o.connect(t)
	ctx := context.Background()
	const q = "SELECT pg_sleep(0.2)"
	fp, _ := parser.Fingerprint(q)
	slowLines := func() int {
		n := 0
		for _, l := range o.log.lines(t, "slow query") {
			if l["fingerprint"] == fp {
				n++
			}
		}
		return n
	}
	if _, err := c.Exec(ctx, q); err != nil {
		t.Fatal(err)
	}
	if n := slowLines(); n != 0 {
		t.Fatalf("%d slow lines under a 10s threshold", n)
	}
	o.mu.Lock()
	o.slowQuery, o.poolSize = "100ms", 6
	o.mu.Unlock()
	out := o.admin(t, "admin", "adminpw", "RELOAD", "SHOW CONFIG", "SHOW POOLS")
	for _, want := range []string{"RELOAD", " s0    |    6 |"} {
		if !strings.Contains(out, want) {
			t.Errorf("after RELOAD, output lacks %q:\n%s", want, out)
		}
	}
	for _, kv := range [][2]string{{"log.slow_query", "100ms"}, {"pool.size", "6"}} {
		if !configShows(out, kv[0], kv[1]) {
			t.Errorf("after RELOAD, SHOW CONFIG lacks %s = %s:\n%s", kv[0], kv[1], out)
		}
	}
	if _, err := c.Exec(ctx, q); err != nil {
		t.Fatal(err)
	}
	if n := slowLines(); n != 1 {
		t.Errorf("%d slow lines after lowering the threshold, want 1", n)
	}
	// A config that does not validate changes nothing and says so.
	o.mu.Lock()
	o.slowQuery = "-1s"
	o.mu.Unlock()
	out = o.admin(t, "admin", "adminpw", "RELOAD", "SHOW CONFIG")
	if !strings.Contains(out, "ERROR:  reload:") || !configShows(out, "log.slow_query", "100ms") {
		t.Errorf("bad reload:\n%s", out)
	}
	if v := value(o.scrape(t), "shardproxy_config_reloads_total", "outcome", "error"); v != 1 {
		t.Errorf("reload errors = %v", v)
	}
}

// configShows reports whether psql's aligned output of SHOW CONFIG has
// the row key | value... (the value's start; columns padded to any width).
func configShows(out, key, value string) bool {
	re := regexp.MustCompile(`(?m)^ ` + regexp.QuoteMeta(key) + ` +\| ` + regexp.QuoteMeta(value))
	return re.MatchString(out)
}
