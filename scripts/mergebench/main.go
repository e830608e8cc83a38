// Command mergebench measures issue #4's performance requirement:
// `SELECT ... ORDER BY x LIMIT 100` over 4 shards x 1M rows, with the
// proxy's memory staying flat and its latency within 1.3x of the slowest
// shard running its part alone.
//
// It starts 4 Postgres clusters (localpg), loads -rows rows into an orders
// table on each, builds shardproxy and runs it as a separate process (so its
// RSS can be read from /proc), then, interleaved in one run, times each
// query N times through the proxy and directly on each shard (the shard's
// part: the SQL the proxy sends it), plus the 4 shards queried in parallel
// directly. It reads the proxy's VmRSS/VmHWM before, after warm-up, after
// the timed runs and after streaming every row (4 x -rows) in order through
// the proxy, and prints markdown tables. Slow: not part of `make test`.
//
// Then (unless -coord=false) the coordinator measure of issue #17, in
// coord.go: a fifth cluster holds one plain Postgres database with every
// shard's rows and the coordinator database the proxy provisions; reads the
// proxy's merge refuses (a join not on the key, a percentile, a global
// window, a grouped subquery) are checked equal to the plain Postgres's
// answer and timed through the proxy against it, interleaved, with the
// proxy's RSS sampled meanwhile.
//
//	go run ./scripts/mergebench              # 4 x 1M rows, 30 runs per target
//	go run ./scripts/mergebench -quick       # 4 x 100k rows, smoke run
//	go run ./scripts/mergebench -keep -dir /tmp/mb   # keep (and later reuse) the loaded clusters
//	go run ./scripts/mergebench -match '^(join|percentile|global|grouped)' -stream=false   # coordinator only (make bench-coord)
//	go run ./scripts/mergebench -coord=false # ORDER BY merges only (make bench)
package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/localpg"
)

const (
	nShards  = 4
	database = "bench"
	columns  = "id, user_id, total, created_at, status"
)

func main() {
	rows := flag.Int("rows", 1000000, "rows loaded into each shard")
	n := flag.Int("n", 30, "timed runs per query, protocol and target")
	warmup := flag.Int("warmup", 3, "untimed runs per query, protocol and target before the timed ones")
	keep := flag.Bool("keep", false, "leave the clusters running and their directory in place at exit")
	dir := flag.String("dir", "", "the clusters' directory (default: a new temporary one); loaded data of the right size found there is reused")
	quick := flag.Bool("quick", false, "smoke run: 100000 rows per shard, -n 5 unless -n is given")
	match := flag.String("match", "", "time only the queries (merge and coordinator) whose name matches this regexp (default: all)")
	stream := flag.Bool("stream", true, "also stream every row in order through the proxy")
	workers := flag.Int("workers", -1, "the shards' max_parallel_workers_per_gather (default: Postgres's, 2)")
	coord := flag.Bool("coord", true, "also measure the coordinator's reads against one plain Postgres holding every row")
	cn := flag.Int("cn", 7, "timed runs per coordinator query and target")
	flag.Parse()
	if *quick {
		*rows = 100000
		set := false
		flag.Visit(func(f *flag.Flag) { set = set || f.Name == "n" })
		if !set {
			*n = 5
		}
	}
	if *n < 1 || *cn < 1 || *rows < 2000 {
		fmt.Fprintln(os.Stderr, "mergebench: need -n >= 1, -cn >= 1 and -rows >= 2000")
		os.Exit(2)
	}
	re, err := regexp.Compile(*match)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mergebench: -match:", err)
		os.Exit(2)
	}
	var qs []query
	for _, q := range queries() {
		if re.MatchString(q.name) {
			qs = append(qs, q)
		}
	}
	var cqs []coordQuery
	for _, q := range coordQueries() {
		if *coord && re.MatchString(q.name) {
			cqs = append(cqs, q)
		}
	}
	if err := run(context.Background(), options{rows: *rows, n: *n, warmup: *warmup, keep: *keep, dir: *dir,
		qs: qs, stream: *stream, workers: *workers, cqs: cqs, cn: *cn}); err != nil {
		fmt.Fprintln(os.Stderr, "mergebench:", err)
		os.Exit(1)
	}
}

// query is one measured statement.
type query struct {
	name     string
	sql      string // sent to the proxy
	shardSQL string // each shard's part: what the proxy sends every shard
	// cmp orders two result rows (id, user_id, total, created_at, status)
	// like the ORDER BY; it checks the proxy's answer.
	cmp    func(a, b []any) int
	limit  int
	offset int
}

func queries() []query {
	byCreated := func(a, b []any) int { return a[3].(time.Time).Compare(b[3].(time.Time)) }
	byTotalDescID := func(a, b []any) int {
		x, _ := a[2].(pgtype.Numeric).Float64Value()
		y, _ := b[2].(pgtype.Numeric).Float64Value()
		switch {
		case x.Float64 > y.Float64:
			return -1
		case x.Float64 < y.Float64:
			return 1
		}
		return cmp.Compare(a[0].(int64), b[0].(int64))
	}
	sel := "SELECT " + columns + " FROM orders "
	return []query{
		{name: "ORDER BY created_at LIMIT 100 (index)", cmp: byCreated, limit: 100,
			sql: sel + "ORDER BY created_at LIMIT 100"},
		{name: "ORDER BY created_at LIMIT 100 OFFSET 1000 (index)", cmp: byCreated, limit: 100, offset: 1000,
			sql: sel + "ORDER BY created_at LIMIT 100 OFFSET 1000", shardSQL: sel + "ORDER BY created_at LIMIT 1100"},
		{name: "ORDER BY total DESC, id LIMIT 100 (full sort)", cmp: byTotalDescID, limit: 100,
			sql: sel + "ORDER BY total DESC, id LIMIT 100"},
		{name: "ORDER BY total DESC, id LIMIT 100 OFFSET 1000 (full sort)", cmp: byTotalDescID, limit: 100, offset: 1000,
			sql: sel + "ORDER BY total DESC, id LIMIT 100 OFFSET 1000", shardSQL: sel + "ORDER BY total DESC, id LIMIT 1100"},
	}
}

// streamSQL returns every row, in order, through the k-way merge: the
// proxy's memory must not grow with it.
const streamSQL = "SELECT " + columns + " FROM orders ORDER BY created_at"

// protocol is a pgx query mode: the simple protocol, and pgx's default
// extended one (prepared statements cached per connection, binary results).
type protocol struct {
	name string
	mode pgx.QueryExecMode
}

var protocols = []protocol{
	{"simple", pgx.QueryExecModeSimpleProtocol},
	{"extended", pgx.QueryExecModeCacheStatement},
}

// options are the command line's.
type options struct {
	rows, n, warmup int
	keep            bool
	dir             string
	qs              []query
	stream          bool
	workers         int
	cqs             []coordQuery // the coordinator measure's queries (none: not run)
	cn              int          // its timed runs per query and target
}

func run(ctx context.Context, o options) error {
	rows := o.rows
	fmt.Printf("mergebench: %d shards x %d rows, %d timed runs (after %d warm-up runs) per query, protocol and target\n",
		nShards, rows, o.n, o.warmup)
	fmt.Printf("load average at start: %s\n", loadavg())
	ports, err := freePorts(nShards)
	if err != nil {
		return err
	}
	// The table and its index fit in shared_buffers: timings are CPU, not I/O.
	settings := map[string]string{"shared_buffers": "256MB", "max_wal_size": "4GB"}
	if o.workers >= 0 {
		settings["max_parallel_workers_per_gather"] = strconv.Itoa(o.workers)
	}
	t0 := time.Now()
	set, err := localpg.Start(ctx, localpg.Options{N: nShards, Dir: o.dir, Ports: ports, Database: database,
		Settings: settings})
	if err != nil {
		return err
	}
	if o.keep {
		defer func() {
			fmt.Printf("\nclusters kept running in %s (stop: pg_ctl -D %s/shardN stop):\n", set.Dir(), set.Dir())
			for _, d := range set.DSNs() {
				fmt.Println("  ", d)
			}
		}()
	} else {
		defer set.Stop()
		set.StopOnSignal()
	}
	fmt.Printf("clusters up in %.1fs\n", time.Since(t0).Seconds())

	t0 = time.Now()
	if err := load(ctx, set.DSNs(), rows); err != nil {
		return err
	}
	fmt.Printf("data ready in %.1fs\n", time.Since(t0).Seconds())

	// The coordinator measure's fifth cluster: one plain Postgres with all
	// the shards' rows, and the coordinator database the proxy provisions.
	var plain *localpg.Cluster
	coordDSN := ""
	if len(o.cqs) > 0 {
		pset, err := startPlain(ctx, o)
		if err != nil {
			return err
		}
		if o.keep {
			defer fmt.Printf("plain Postgres and coordinator kept running: %s\n", pset.Clusters[0].DataDir)
		} else {
			defer pset.Stop()
			pset.StopOnSignal()
		}
		plain = pset.Clusters[0]
		t0 = time.Now()
		if err := loadPlain(ctx, set.DSNs(), plain.DSN(plainDB), rows); err != nil {
			return err
		}
		fmt.Printf("plain Postgres ready in %.1fs\n", time.Since(t0).Seconds())
		coordDSN = plain.DSN(coordDB)
	}

	if ports, err = freePorts(2); err != nil {
		return err
	}
	px, err := startProxy(ctx, set.DSNs(), coordDSN, ports[0], ports[1])
	if err != nil {
		return err
	}
	defer px.stop()
	fmt.Printf("shardproxy pid %d on %s (admin %s)\n", px.pid, px.addr, px.admin)

	b := &bench{px: px, n: o.n, warmup: o.warmup, qs: o.qs, set: set}
	if err := b.connect(ctx); err != nil {
		return err
	}
	defer b.close()
	b.mem("proxy started, no query yet")
	b.explain(ctx)
	b.check(ctx)
	b.measure(ctx)
	for _, p := range protocols {
		if o.stream {
			b.stream(ctx, p)
		}
	}
	var cb *coordBench
	if plain != nil {
		cb = &coordBench{px: px, n: o.cn, qs: o.cqs}
		if err := cb.run(ctx, plain.DSN(plainDB)); err != nil {
			return err
		}
	}
	fmt.Printf("load average at end: %s\n", loadavg())
	b.report(rows)
	if cb != nil {
		cb.report(rows)
	}
	return nil
}

// load creates and fills orders on every shard in parallel, unless a
// previous -keep run left it with the right number of rows.
//
// The rows are generated on each shard with INSERT ... SELECT
// generate_series (loading 4 x 1M rows server-side takes seconds), each
// with a user_id that hashes to its shard: the ORDER BY queries would not
// care, but the coordinator's hash partitions (and the proxy's per-shard
// grouping by user_id) rely on every row being where its key says.
func load(ctx context.Context, dsns []string, rows int) error {
	errs := make([]error, len(dsns))
	var wg sync.WaitGroup
	for i, dsn := range dsns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = loadShard(ctx, i, dsn, rows)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func loadShard(ctx context.Context, i int, dsn string, rows int) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var exists bool
	if err := c.QueryRow(ctx, "SELECT to_regclass('orders') IS NOT NULL").Scan(&exists); err != nil {
		return fmt.Errorf("shard %d: %w", i, err)
	}
	var have int64
	if exists {
		if err := c.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&have); err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
	}
	if exists {
		// Data from before the rows obeyed the hash placement has no users.
		if err := c.QueryRow(ctx, "SELECT to_regclass('users') IS NOT NULL").Scan(&exists); err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
	}
	if exists && have == int64(rows) {
		fmt.Printf("  shard %d: reusing %d rows\n", i, have)
		return nil
	}
	t0 := time.Now()
	for _, sql := range []string{
		"DROP TABLE IF EXISTS orders",
		"DROP TABLE IF EXISTS users",
		"CREATE TABLE orders (id bigint NOT NULL, user_id bigint NOT NULL, total numeric(10,2) NOT NULL, " +
			"created_at timestamptz NOT NULL, status text NOT NULL)",
		// users: the ids 1..100000 whose hash puts them on this shard (the
		// proxy's hash is Postgres's PARTITION BY HASH, remainder i = shard
		// i); country and referrer_id are not the key (the coordinator
		// benchmark joins on referrer_id).
		"CREATE TEMP TABLE hashcheck (k bigint) PARTITION BY HASH (k)",
		"CREATE TABLE users (id bigint PRIMARY KEY, country text NOT NULL, referrer_id bigint NOT NULL)",
		fmt.Sprintf(`INSERT INTO users
SELECT u, (%s)[1 + u %% 20], 1 + (u * 7919) %% %d
FROM generate_series(1, %d) u WHERE satisfies_hash_partition('hashcheck'::regclass, %d, %d, u::bigint)`,
			countries, nUsers, nUsers, nShards, i),
		fmt.Sprintf("SELECT setseed(%g)", 0.1*float64(i+1)),
		// id: unique across shards (g*4+i); user_id: one of this shard's
		// users, at random (so every row is where the proxy's hash puts it,
		// and the coordinator's hash partitions hold exactly their rows);
		// created_at: random over 2025; total: random, many ties at 2
		// decimals (hence ORDER BY total DESC, id).
		fmt.Sprintf(`INSERT INTO orders
SELECT g*%d + %d, u.id, r.total, r.created_at, r.status
FROM (SELECT g, 1 + floor(random() * (SELECT count(*) FROM users))::bigint AS n,
             round((random()*500)::numeric, 2) AS total,
             timestamptz '2025-01-01 00:00:00+00' + random() * interval '365 days' AS created_at,
             (ARRAY['new','paid','preparing','delivered','cancelled'])[1 + floor(random()*5)::int] AS status
      FROM generate_series(0, %d) g) r
JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM users) u USING (n)`, nShards, i, rows-1),
		// The index serves ORDER BY created_at; ORDER BY total has none
		// (each shard scans and top-N sorts all its rows).
		"CREATE INDEX orders_created_at_idx ON orders (created_at)",
		"VACUUM ANALYZE orders",
		"VACUUM ANALYZE users",
	} {
		if _, err := c.Exec(ctx, sql); err != nil {
			return fmt.Errorf("shard %d: %s: %w", i, firstLine(sql), err)
		}
	}
	fmt.Printf("  shard %d: %d rows loaded, indexed and analysed in %.1fs\n", i, rows, time.Since(t0).Seconds())
	return nil
}

// proxyProc is shardproxy running as a child process.
type proxyProc struct {
	cmd   *exec.Cmd
	pid   int
	addr  string
	admin string
	dir   string
}

// startProxy builds ./cmd/shardproxy into a temporary directory and runs it
// with a generated config on 127.0.0.1:port (admin listener on adminPort),
// with a coordinator database when coordDSN is not empty.
func startProxy(ctx context.Context, dsns []string, coordDSN string, port, adminPort int) (_ *proxyProc, err error) {
	dir, err := os.MkdirTemp("", "mergebench-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return nil, fmt.Errorf("find module root: %w", err)
	}
	bin := filepath.Join(dir, "shardproxy")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/shardproxy")
	build.Dir = strings.TrimSpace(string(root))
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/shardproxy: %w\n%s", err, out)
	}
	p := &proxyProc{addr: fmt.Sprintf("127.0.0.1:%d", port), admin: fmt.Sprintf("127.0.0.1:%d", adminPort), dir: dir}
	var y strings.Builder
	fmt.Fprintf(&y, "listen: %s\nadmin_listen: %s\ndatabase: %s\n", p.addr, p.admin, database)
	y.WriteString("backend_roles: shared\nusers: [{name: bench, auth: trust}]\npool: {size: 4}\nlog: {level: warn}\nshards:\n")
	for i, dsn := range dsns {
		fmt.Fprintf(&y, "  - {name: s%d, dsn: %q}\n", i, dsn)
	}
	y.WriteString("tables:\n  orders: {strategy: hash, key: user_id}\n  users: {strategy: hash, key: id}\n")
	if coordDSN != "" {
		fmt.Fprintf(&y, "coordinator: {dsn: %q, mode: fallback}\n", coordDSN)
	}
	if _, err := config.Parse([]byte(y.String())); err != nil {
		return nil, fmt.Errorf("generated config: %w", err)
	}
	cfg := filepath.Join(dir, "shardproxy.yaml")
	if err := os.WriteFile(cfg, []byte(y.String()), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "shardproxy.log"))
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, "-config", cfg)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// The proxy dies with us, whatever ends us.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	logf.Close()
	p.pid = p.cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "shardproxy.log"))
			return nil, fmt.Errorf("shardproxy exited: %v\n%s", err, log)
		case <-time.After(100 * time.Millisecond):
		}
		if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
			c.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.cmd.Process.Kill()
			log, _ := os.ReadFile(filepath.Join(dir, "shardproxy.log"))
			return nil, fmt.Errorf("shardproxy did not listen on %s within 30s\n%s", p.addr, log)
		}
	}
}

func (p *proxyProc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	for i := 0; i < 50; i++ {
		if p.cmd.Process.Signal(syscall.Signal(0)) != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.cmd.Process.Kill()
	os.RemoveAll(p.dir)
}

// memory is the proxy's memory at one point of the run.
type memory struct {
	when            string
	rss, hwm, heapB int64 // bytes; heapB from the Go runtime (admin /metrics), -1 if unknown
}

// series holds the timings of one target for one query and protocol.
type series struct {
	d   []time.Duration
	cpu time.Duration // proxy CPU (all threads) over the runs, proxy target only
}

// combo is one query in one protocol.
type combo struct {
	q       int
	p       protocol
	refused string // the proxy's error, when it refuses the query form
	// targets: 0 proxy, 1..nShards shard i-1 alone, nShards+1 all shards in parallel, direct.
	t [nShards + 2]series
}

type streamResult struct {
	p                  protocol
	err                string
	rows               int64
	proxy, direct      time.Duration
	proxyCPU           time.Duration
	maxRSS, hwmAfter   int64
	rssBefore, heapEnd int64
}

type bench struct {
	px      *proxyProc
	set     *localpg.Set
	n       int
	warmup  int
	qs      []query
	proxyC  map[string]*pgx.Conn   // per protocol
	shardC  map[string][]*pgx.Conn // per protocol, one per shard
	combos  []*combo
	mems    []memory
	streams []streamResult
	plans   []string
}

func (b *bench) connect(ctx context.Context) error {
	b.proxyC = map[string]*pgx.Conn{}
	b.shardC = map[string][]*pgx.Conn{}
	for _, p := range protocols {
		c, err := dial(ctx, fmt.Sprintf("postgres://bench@%s/%s?sslmode=disable", b.px.addr, database), p.mode)
		if err != nil {
			return fmt.Errorf("connect through the proxy: %w", err)
		}
		b.proxyC[p.name] = c
		for _, dsn := range b.set.DSNs() {
			c, err := dial(ctx, dsn, p.mode)
			if err != nil {
				return err
			}
			b.shardC[p.name] = append(b.shardC[p.name], c)
		}
	}
	return nil
}

func dial(ctx context.Context, url string, mode pgx.QueryExecMode) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cc.DefaultQueryExecMode = mode
	return pgx.ConnectConfig(ctx, cc)
}

func (b *bench) close() {
	for _, c := range b.proxyC {
		c.Close(context.Background())
	}
	for _, cs := range b.shardC {
		for _, c := range cs {
			c.Close(context.Background())
		}
	}
}

func (q query) part() string {
	if q.shardSQL != "" {
		return q.shardSQL
	}
	return q.sql
}

// explain records shard 0's plan of each shard part.
func (b *bench) explain(ctx context.Context) {
	c := b.shardC["simple"][0]
	for _, q := range b.qs {
		var lines []string
		rows, err := c.Query(ctx, "EXPLAIN (COSTS OFF) "+q.part())
		if err == nil {
			for rows.Next() {
				var l string
				rows.Scan(&l)
				lines = append(lines, strings.TrimSpace(l))
			}
			rows.Close()
			err = rows.Err()
		}
		if err != nil {
			lines = []string{err.Error()}
		}
		b.plans = append(b.plans, fmt.Sprintf("%s: %s", q.name, strings.Join(lines, " / ")))
	}
}

// check runs every query once through the proxy in each protocol and
// compares the answer with the merge of the shards' parts done here (the
// sort keys must match position by position; ties may come in any order).
// A query form the proxy refuses is recorded and not timed.
func (b *bench) check(ctx context.Context) {
	for qi, q := range b.qs {
		var want [][]any
		for _, c := range b.shardC["simple"] {
			got, err := fetch(ctx, c, q.part())
			if err != nil {
				fmt.Printf("shard part of %q: %v\n", q.name, err)
				os.Exit(1)
			}
			want = append(want, got...)
		}
		slices.SortStableFunc(want, q.cmp)
		want = want[min(q.offset, len(want)):min(q.offset+q.limit, len(want))]
		for _, p := range protocols {
			cb := &combo{q: qi, p: p}
			b.combos = append(b.combos, cb)
			got, err := fetch(ctx, b.proxyC[p.name], q.sql)
			if err != nil {
				cb.refused = err.Error()
				fmt.Printf("check %-60s %-8s: refused: %v\n", q.name, p.name, err)
				continue
			}
			ok := len(got) == len(want)
			for i := 0; ok && i < len(got); i++ {
				ok = q.cmp(got[i], want[i]) == 0
			}
			if !ok {
				fmt.Printf("check %-60s %-8s: WRONG ANSWER (%d rows, want %d; keys differ)\n", q.name, p.name, len(got), len(want))
				os.Exit(1)
			}
			fmt.Printf("check %-60s %-8s: ok (%d rows, same order as the shards' parts merged here)\n", q.name, p.name, len(got))
		}
	}
}

func fetch(ctx context.Context, c *pgx.Conn, sql string) ([][]any, error) {
	rows, err := c.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	var out [][]any
	for rows.Next() {
		v, err := rows.Values()
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, v)
	}
	rows.Close()
	return out, rows.Err()
}

// timeQuery runs sql and reads every row (without keeping it), returning
// the wall time from sending to the last row.
func timeQuery(ctx context.Context, c *pgx.Conn, sql string) (time.Duration, int64, error) {
	t0 := time.Now()
	rows, err := c.Query(ctx, sql)
	if err != nil {
		return 0, 0, err
	}
	var n int64
	for rows.Next() {
		n++
	}
	rows.Close()
	return time.Since(t0), n, rows.Err()
}

// parallel runs sql on every shard at once (one goroutine per shard) and
// returns the wall time until all are done.
func parallel(ctx context.Context, cs []*pgx.Conn, sql string) (time.Duration, error) {
	t0 := time.Now()
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = timeQuery(ctx, c, sql)
		}()
	}
	wg.Wait()
	return time.Since(t0), errors.Join(errs...)
}

// runTarget runs combo cb on target t once, returning its time (and, for
// the proxy, the proxy's CPU time).
func (b *bench) runTarget(ctx context.Context, cb *combo, t int) (time.Duration, time.Duration, error) {
	q := b.qs[cb.q]
	switch {
	case t == 0:
		c0 := procCPU(b.px.pid)
		d, _, err := timeQuery(ctx, b.proxyC[cb.p.name], q.sql)
		return d, procCPU(b.px.pid) - c0, err
	case t <= nShards:
		d, _, err := timeQuery(ctx, b.shardC[cb.p.name][t-1], q.part())
		return d, 0, err
	default:
		d, err := parallel(ctx, b.shardC[cb.p.name], q.part())
		return d, 0, err
	}
}

// measure warms up (every query, protocol and target), then times one
// query after the other: N rounds of each, every round running the query
// in both protocols on every target, the targets' order rotating from
// round to round (and the protocols' alternating) so that all targets see
// the same machine. Queries are timed in blocks, each after one untimed
// round, because a light query run right after a full sort through the
// proxy is several times slower than in a run of its own (see
// docs/benchmarks.md): interleaving queries would measure that aftermath.
func (b *bench) measure(ctx context.Context) {
	nt := nShards + 2
	once := func(cb *combo, t int, what string) (time.Duration, time.Duration) {
		d, cpu, err := b.runTarget(ctx, cb, t)
		if err != nil {
			fmt.Printf("%s %s %s target %d: %v\n", what, b.qs[cb.q].name, cb.p.name, t, err)
			os.Exit(1)
		}
		return d, cpu
	}
	for r := 0; r < b.warmup; r++ {
		for _, cb := range b.combos {
			for t := 0; cb.refused == "" && t < nt; t++ {
				once(cb, t, "warm-up")
			}
		}
	}
	b.mem(fmt.Sprintf("after warm-up (%d runs of each query and protocol)", b.warmup))
	t0 := time.Now()
	for qi, q := range b.qs {
		var cbs []*combo
		for _, cb := range b.combos {
			if cb.q == qi && cb.refused == "" {
				cbs = append(cbs, cb)
			}
		}
		for r := -1; r < b.n; r++ {
			for j := range cbs {
				cb := cbs[(j+max(r, 0))%len(cbs)]
				for k := 0; k < nt; k++ {
					t := (max(r, 0) + k) % nt
					d, cpu := once(cb, t, "timed run")
					if r >= 0 {
						cb.t[t].d = append(cb.t[t].d, d)
						cb.t[t].cpu += cpu
					}
				}
			}
		}
		fmt.Printf("  %s: %d rounds done (%.0fs)\n", q.name, b.n, time.Since(t0).Seconds())
	}
	b.mem(fmt.Sprintf("after the timed runs (%d queries through the proxy)", b.n*(len(b.combos)-b.nRefused())))
}

func (b *bench) nRefused() int {
	n := 0
	for _, cb := range b.combos {
		if cb.refused != "" {
			n++
		}
	}
	return n
}

// stream reads every row in order through the proxy (rows.Next, nothing
// kept), sampling the proxy's RSS meanwhile; then the same on the 4 shards
// in parallel, directly, for comparison.
func (b *bench) stream(ctx context.Context, p protocol) {
	sr := streamResult{p: p}
	sr.rssBefore, _ = procMem(b.px.pid)
	done := make(chan struct{})
	var maxRSS int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, _ := procMem(b.px.pid); rss > maxRSS {
				maxRSS = rss
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	c0 := procCPU(b.px.pid)
	d, rows, err := timeQuery(ctx, b.proxyC[p.name], streamSQL)
	sr.proxyCPU = procCPU(b.px.pid) - c0
	close(done)
	wg.Wait()
	sr.proxy, sr.rows, sr.maxRSS = d, rows, maxRSS
	_, sr.hwmAfter = procMem(b.px.pid)
	if err != nil {
		sr.err = err.Error()
		fmt.Printf("stream %s: %v\n", p.name, err)
	}
	b.mem(fmt.Sprintf("after streaming all %d rows in order (%s)", rows, p.name))
	if sr.direct, err = parallel(ctx, b.shardC[p.name], streamSQL); err != nil && sr.err == "" {
		sr.err = "direct: " + err.Error()
	}
	fmt.Printf("stream %s: %d rows in %.2fs through the proxy, %.2fs direct (4 shards in parallel)\n",
		p.name, sr.rows, sr.proxy.Seconds(), sr.direct.Seconds())
	b.streams = append(b.streams, sr)
}

func (b *bench) mem(when string) {
	rss, hwm := procMem(b.px.pid)
	m := memory{when: when, rss: rss, hwm: hwm, heapB: metric(b.px.admin, "go_memstats_heap_inuse_bytes")}
	b.mems = append(b.mems, m)
	fmt.Printf("memory %s: VmRSS %s, VmHWM %s, Go heap in use %s\n", when, mib(m.rss), mib(m.hwm), mib(m.heapB))
}

func (b *bench) report(rows int) {
	if len(b.qs) == 0 {
		return
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/1e6) }
	fmt.Printf("\nshard 0's plans:\n")
	for _, p := range b.plans {
		fmt.Println("  ", p)
	}
	fmt.Printf("\n### Latency, ms (median / p95 of %d runs), %d shards x %d rows\n\n", b.n, nShards, rows)
	fmt.Printf("| query | protocol | proxy | shard s0 | s1 | s2 | s3 | slowest shard (median) | 4 shards in parallel, direct | proxy / slowest shard | proxy / parallel direct | proxy CPU per query |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, cb := range b.combos {
		q := b.qs[cb.q]
		if cb.refused != "" {
			fmt.Printf("| %s | %s | refused: %s | | | | | | | | | |\n", q.name, cb.p.name, strings.ReplaceAll(cb.refused, "|", "/"))
			continue
		}
		cell := func(t int) (string, time.Duration) {
			med, p95 := percentiles(cb.t[t].d)
			return ms(med) + " / " + ms(p95), med
		}
		pc, pmed := cell(0)
		var shardCells []string
		var slowest time.Duration
		for i := 1; i <= nShards; i++ {
			c, med := cell(i)
			shardCells = append(shardCells, c)
			slowest = max(slowest, med)
		}
		parC, parMed := cell(nShards + 1)
		cpu := float64(cb.t[0].cpu) / float64(len(cb.t[0].d)) / 1e6
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %.2fx | %.2fx | %.2f ms |\n", q.name, cb.p.name, pc,
			strings.Join(shardCells, " | "), ms(slowest), parC, ratio(pmed, slowest), ratio(pmed, parMed), cpu)
	}
	fmt.Printf("\n### Streaming every row in order (`%s`)\n\n", streamSQL)
	fmt.Printf("| protocol | rows | through the proxy | 4 shards in parallel, direct | ratio | proxy CPU | max VmRSS during | VmHWM after |\n|---|---|---|---|---|---|---|---|\n")
	for _, s := range b.streams {
		if s.err != "" {
			fmt.Printf("| %s | %d | error: %s | | | | | |\n", s.p.name, s.rows, strings.ReplaceAll(s.err, "|", "/"))
			continue
		}
		fmt.Printf("| %s | %d | %.2f s | %.2f s | %.2fx | %.2f s | %s | %s |\n", s.p.name, s.rows, s.proxy.Seconds(),
			s.direct.Seconds(), ratio(s.proxy, s.direct), s.proxyCPU.Seconds(), mib(s.maxRSS), mib(s.hwmAfter))
	}
	fmt.Printf("\n### Proxy memory (separate process, /proc/%d/status and admin /metrics)\n\n", b.px.pid)
	fmt.Printf("| when | VmRSS | VmHWM | Go heap in use |\n|---|---|---|---|\n")
	for _, m := range b.mems {
		fmt.Printf("| %s | %s | %s | %s |\n", m.when, mib(m.rss), mib(m.hwm), mib(m.heapB))
	}
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// percentiles returns the median and the 95th percentile (nearest rank).
func percentiles(d []time.Duration) (med, p95 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		med = s[len(s)/2]
	} else {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	r := (95*len(s) + 99) / 100 // ceil(0.95 n)
	return med, s[max(r-1, 0)]
}

// procMem reads VmRSS and VmHWM (bytes) from /proc/PID/status.
func procMem(pid int) (rss, hwm int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1, -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = kb * 1024
		case "VmHWM":
			hwm = kb * 1024
		}
	}
	return rss, hwm
}

// procCPU is the CPU time of every thread of process pid, from
// /proc/PID/task/*/schedstat (nanoseconds, unlike /proc/PID/stat's ticks).
func procCPU(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += ns
		}
	}
	return time.Duration(sum)
}

// metric scrapes one unlabelled gauge from the proxy's admin /metrics; -1
// when it cannot.
func metric(admin, name string) int64 {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int64(f)
			}
		}
	}
	return -1
}

func mib(b int64) string {
	if b < 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// freePorts returns k distinct loopback ports that were free a moment ago,
// above 10000 and below Linux's ephemeral range (32768-60999), where
// outgoing connections could take them before we listen.
func freePorts(k int) ([]int, error) {
	var ports []int
	for tries := 0; len(ports) < k && tries < 1000; tries++ {
		p := 10001 + rand.IntN(32768-10001)
		if slices.Contains(ports, p) {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		ports = append(ports, p)
	}
	if len(ports) < k {
		return nil, errors.New("no free loopback ports above 10000")
	}
	return ports, nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
