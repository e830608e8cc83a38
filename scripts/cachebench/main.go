// Command cachebench measures the result cache (issue #20): a read-heavy
// load through shardproxy on 4 local shards (90 % point reads of users and
// restaurants by id, 10 % writes: INSERTs into orders, or with -writes
// users UPDATEs of users), with the cache off (consolidation off, then
// on), on in memory, and on in a real redis-server; and a read-only run on
// a warm cache for the latency of a hit. It prints a markdown table: TPS,
// hit ratio (SHOW CACHE over the timed run), p50/p99 of the reads, and the
// Redis operations that failed.
//
// The proxy runs in this process; the clients are pgx (-client pgx) or
// pgbench with a custom script (-client pgbench: -M simple, and -M
// prepared for the extended protocol). Slow: not part of `make test`.
//
//	go run ./scripts/cachebench -client pgbench   # as make bench runs it
//	go run ./scripts/cachebench -T 3s -clients 4 -modes extended -runs redis
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/delivery"
	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/localredis"
	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/router"
)

const (
	nShards     = 4
	users       = 2000
	restaurants = 500
)

func main() {
	dur := flag.Duration("T", 10*time.Second, "timed length of each run")
	warm := flag.Duration("warmup", 2*time.Second, "untimed load before each run")
	clients := flag.Int("clients", 8, "concurrent clients")
	modes := flag.String("modes", "simple,extended", "protocols: simple (pgx simple protocol), extended (pgx's default: prepared statements, binary results)")
	pw := flag.Bool("prewarm", true, "read every key once before the warm-up of runs with rules")
	wr := flag.String("writes", "orders", "what the writes are: orders (INSERTs into a table no rule caches) or users (UPDATEs of a cached table: each invalidates every users entry)")
	drv := flag.String("client", "pgx", "load clients: pgx (in-process) or pgbench (a custom script, -M simple for the simple mode, -M prepared for extended)")
	rt := flag.Duration("redis-timeout", 0, "cache.redis.timeout (0: the proxy's default); a short one provokes the timeouts of a loaded machine")
	only := flag.String("runs", "", "run only the configurations whose name contains this (e.g. redis)")
	flag.Parse()
	runFilter, prewarmKeys, redisTimeout, usePgbench, writeUsers = *only, *pw, *rt, *drv == "pgbench", *wr == "users"
	if err := run(*dur, *warm, *clients, strings.Split(*modes, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "cachebench:", err)
		os.Exit(1)
	}
}

type result struct {
	name          string
	tps           float64
	hitRatio      string
	p50, p99      time.Duration
	reads, writes int
	// redisErrors are the Redis operations that failed during the timed
	// run (each one a read from Postgres, and Redis left alone for 1s).
	redisErrors float64
}

// writeUsers: the writes UPDATE users (-writes users) instead of
// inserting orders.
var writeUsers bool

// usePgbench: the load runs as pgbench with a custom script (-client).
var usePgbench bool

// redisTimeout is cache.redis.timeout when not 0 (-redis-timeout).
var redisTimeout time.Duration

// prewarmKeys: read every key once before a run with rules (-prewarm).
var prewarmKeys bool

// runFilter selects configurations by a part of their name (-runs).
var runFilter string

// extended: the load's clients use pgx's default mode (cached prepared
// statements: Bind/Describe/Execute/Sync with $1 parameters).
var extended bool

func run(dur, warm time.Duration, clients int, modes []string) error {
	ctx := context.Background()
	set, err := localpg.Start(ctx, localpg.Options{N: nShards, Database: "deliveryapp"})
	if err != nil {
		return err
	}
	defer set.Stop()
	set.StopOnSignal()
	rds, err := localredis.Start(ctx)
	if err != nil {
		return err
	}
	defer rds.Close()

	rt := ""
	if redisTimeout > 0 {
		rt = ", timeout: " + redisTimeout.String()
	}
	rules := "  rules:\n    - {name: users, tables: [users], ttl: 1m}\n    - {name: restaurants, tables: [restaurants], ttl: 5m}\n"
	configs := []struct{ name, cache string }{
		{"cache off, consolidation off", "  consolidate: false\n"},
		{"cache off, consolidation on (default)", "  consolidate: true\n"},
		{"cache on, memory", "  backend: memory\n" + rules},
		{"cache on, redis", fmt.Sprintf("  backend: redis\n  redis: {addr: %q%s}\n", rds.Addr(), rt) + rules},
	}
	var out []result
	srv, _, addr, err := startProxy(ctx, set, "  consolidate: false\n")
	if err != nil {
		return err
	}
	err = load(ctx, addr)
	srv.Close()
	if err != nil {
		return err
	}
	for _, mode := range modes {
		extended = mode == "extended"
		for _, c := range configs {
			if !strings.Contains(mode+": "+c.name, runFilter) {
				continue
			}
			srv, reg, addr, err := startProxy(ctx, set, c.cache)
			if err != nil {
				return err
			}
			c.name = mode + ": " + c.name
			if prewarmKeys && strings.Contains(c.cache, "rules") {
				if err := prewarm(ctx, addr, clients); err != nil {
					srv.Close()
					return err
				}
			}
			load := mix(addr, clients, 0.9)
			load(ctx, warm, nil)
			before, errsBefore := cacheStats(ctx, addr), counter(reg, "shardproxy_cache_backend_errors_total")
			r := result{name: c.name}
			load(ctx, dur, &r)
			after := cacheStats(ctx, addr)
			r.hitRatio = ratio(before, after)
			r.redisErrors = counter(reg, "shardproxy_cache_backend_errors_total") - errsBefore
			out = append(out, r)
			if strings.HasSuffix(c.name, "cache on, memory") {
				h := result{name: mode + ": cache on, memory: reads only, warm (every read a hit)"}
				only := mix(addr, clients, 1)
				only(ctx, warm, nil)
				before := cacheStats(ctx, addr)
				only(ctx, dur, &h)
				h.hitRatio = ratio(before, cacheStats(ctx, addr))
				out = append(out, h)
			}
			srv.Close()
		}
	}
	by := "pgx"
	if usePgbench {
		by = "pgbench (-M simple / -M prepared)"
	}
	writes := "INSERT into orders"
	if writeUsers {
		writes = "UPDATE users"
	}
	fmt.Printf("%d %s clients, %s per run after %s warm-up, %d shards; reads: users (%d) and restaurants (%d) by id, writes: %s\n\n",
		clients, by, dur, warm, nShards, users, restaurants, writes)
	fmt.Println("| run | TPS | reads | writes | hit ratio | read p50 | read p99 | redis errors |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range out {
		fmt.Printf("| %s | %.0f | %d | %d | %s | %s | %s | %.0f |\n", r.name, r.tps, r.reads, r.writes, r.hitRatio, ms(r.p50), ms(r.p99), r.redisErrors)
	}
	return nil
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 3, 64) + " ms"
}

// counter reads a counter (without labels) from reg; 0 when absent.
func counter(reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

func startProxy(ctx context.Context, set *localpg.Set, cache string) (*proxy.Server, *prometheus.Registry, string, error) {
	var sb strings.Builder
	sb.WriteString("backend_roles: shared\nusers: [{name: app, password: app}, {name: admin, password: admin}]\nadmins: [admin]\npool: {size: 8}\nshards:\n")
	for i, dsn := range set.DSNs() {
		fmt.Fprintf(&sb, "  - {name: s%d, dsn: %q}\n", i, dsn)
	}
	sb.WriteString("tables:\n  users: {strategy: hash, key: id}\n  orders: {strategy: hash, key: user_id}\n  order_items: {strategy: hash, key: user_id}\n  restaurants: {strategy: reference}\n")
	sb.WriteString("  events: {strategy: hash, key: user_id}\n")
	sb.WriteString("cache:\n" + cache)
	f, err := config.Parse([]byte(sb.String()))
	if err != nil {
		return nil, nil, "", err
	}
	topo, err := router.NewTopology(&f.Topology)
	if err != nil {
		return nil, nil, "", err
	}
	srv, err := proxy.New(f.Proxy, topo, nil)
	if err != nil {
		return nil, nil, "", err
	}
	reg := prometheus.NewRegistry()
	if err := srv.RegisterMetrics(reg); err != nil {
		return nil, nil, "", err
	}
	srv.Warm(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, "", err
	}
	go srv.Serve(ctx, ln)
	return srv, reg, ln.Addr().String(), nil
}

func connect(ctx context.Context, addr, user, db string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", user, user, addr, db))
	if err != nil {
		return nil, err
	}
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return pgx.ConnectConfig(ctx, cc)
}

// connectLoad connects a load client in the protocol under test.
func connectLoad(ctx context.Context, addr string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", addr))
	if err != nil {
		return nil, err
	}
	if !extended {
		cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	}
	return pgx.ConnectConfig(ctx, cc)
}

func load(ctx context.Context, addr string) error {
	c, err := connect(ctx, addr, "app", "deliveryapp")
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	stmts, err := parser.Parse(delivery.Schema)
	if err != nil {
		return err
	}
	for _, st := range stmts {
		if _, err := c.Exec(ctx, st.SQL); err != nil {
			return fmt.Errorf("schema: %w", err)
		}
	}
	for lo := 1; lo <= users; lo += 500 {
		var vals []string
		for id := lo; id < lo+500 && id <= users; id++ {
			vals = append(vals, fmt.Sprintf("(%d, 'user %d', 'u%d@example.com', 'city %d')", id, id, id, id%20))
		}
		if _, err := c.Exec(ctx, "INSERT INTO users (id, name, email, city) VALUES "+strings.Join(vals, ",")); err != nil {
			return err
		}
	}
	var vals []string
	for id := 1; id <= restaurants; id++ {
		vals = append(vals, fmt.Sprintf("(%d, 'restaurant %d', 'city %d', 'cuisine %d', %d.%d)", id, id, id%20, id%7, id%5, id%10))
	}
	_, err = c.Exec(ctx, "INSERT INTO restaurants (id, name, city, cuisine, rating) VALUES "+strings.Join(vals, ","))
	return err
}

// prewarm reads every user and restaurant once, so that the hit ratio
// measured is the steady state's whatever the machine's speed (a slow run
// would otherwise still meet first reads of keys in its timed part).
func prewarm(ctx context.Context, addr string, clients int) error {
	var next atomic.Int64
	errs := make(chan error, clients)
	for range clients {
		go func() {
			c, err := connectLoad(ctx, addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(ctx)
			var name string
			for {
				i := int(next.Add(1))
				switch {
				case i > users+restaurants:
					errs <- nil
					return
				case extended && i <= users:
					err = c.QueryRow(ctx, "SELECT name FROM users WHERE id = $1", i).Scan(&name)
				case extended:
					err = c.QueryRow(ctx, "SELECT name FROM restaurants WHERE id = $1", i-users).Scan(&name)
				case i <= users:
					err = c.QueryRow(ctx, fmt.Sprintf("SELECT name FROM users WHERE id = %d", i)).Scan(&name)
				default:
					err = c.QueryRow(ctx, fmt.Sprintf("SELECT name FROM restaurants WHERE id = %d", i-users)).Scan(&name)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var first error
	for range clients {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

var orderID atomic.Int64

// mix returns a load of clients for d with readShare of point reads (the
// rest INSERTs into orders); with r, it records throughput and latencies.
func mix(addr string, clients int, readShare float64) func(context.Context, time.Duration, *result) {
	if usePgbench {
		return pgbenchMix(addr, clients, readShare)
	}
	return func(ctx context.Context, d time.Duration, r *result) {
		var mu sync.Mutex
		var lat []time.Duration
		var writes int
		var wg sync.WaitGroup
		start := time.Now()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := connectLoad(ctx, addr)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					return
				}
				defer c.Close(ctx)
				var my []time.Duration
				w := 0
				rnd := rand.New(rand.NewPCG(rand.Uint64(), 1))
				var name string
				for time.Since(start) < d {
					x := rnd.Float64()
					t := time.Now()
					switch {
					case x >= readShare:
						id := orderID.Add(1)
						uid := rnd.IntN(users) + 1
						switch {
						case writeUsers && extended:
							_, err = c.Exec(ctx, "UPDATE users SET city = $2 WHERE id = $1", uid, "moved")
						case writeUsers:
							_, err = c.Exec(ctx, fmt.Sprintf("UPDATE users SET city = 'moved' WHERE id = %d", uid))
						case extended:
							_, err = c.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status, created_at) VALUES ($1, $2, $3, 12.50, 'new', '2026-12-01')",
								id, uid, rnd.IntN(restaurants)+1)
						default:
							_, err = c.Exec(ctx, fmt.Sprintf("INSERT INTO orders (id, user_id, restaurant_id, total, status, created_at) VALUES (%d, %d, %d, 12.50, 'new', '2026-12-01')",
								id, uid, rnd.IntN(restaurants)+1))
						}
						w++
						continue
					case extended && x < readShare*5/9:
						err = c.QueryRow(ctx, "SELECT name FROM users WHERE id = $1", rnd.IntN(users)+1).Scan(&name)
					case extended:
						err = c.QueryRow(ctx, "SELECT name FROM restaurants WHERE id = $1", rnd.IntN(restaurants)+1).Scan(&name)
					case x < readShare*5/9:
						err = c.QueryRow(ctx, fmt.Sprintf("SELECT name FROM users WHERE id = %d", rnd.IntN(users)+1)).Scan(&name)
					default:
						err = c.QueryRow(ctx, fmt.Sprintf("SELECT name FROM restaurants WHERE id = %d", rnd.IntN(restaurants)+1)).Scan(&name)
					}
					if err != nil {
						fmt.Fprintln(os.Stderr, err)
						return
					}
					my = append(my, time.Since(t))
				}
				mu.Lock()
				lat = append(lat, my...)
				writes += w
				mu.Unlock()
			}()
		}
		wg.Wait()
		if r == nil {
			return
		}
		el := time.Since(start)
		slices.Sort(lat)
		r.reads, r.writes = len(lat), writes
		r.tps = float64(len(lat)+writes) / el.Seconds()
		if len(lat) > 0 {
			r.p50, r.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
		}
	}
}

// cacheStats sums hits and misses over the rules of SHOW CACHE.
func cacheStats(ctx context.Context, addr string) [2]int64 {
	c, err := connect(ctx, addr, "admin", "shardproxy")
	if err != nil {
		return [2]int64{}
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, "SHOW CACHE")
	if err != nil {
		return [2]int64{}
	}
	defer rows.Close()
	var s [2]int64
	for rows.Next() {
		v, _ := rows.Values()
		if len(v) < 7 || strings.HasPrefix(fmt.Sprint(v[0]), "(") {
			continue
		}
		h, _ := strconv.ParseInt(fmt.Sprint(v[5]), 10, 64)
		m, _ := strconv.ParseInt(fmt.Sprint(v[6]), 10, 64)
		s[0] += h
		s[1] += m
	}
	return s
}

func ratio(before, after [2]int64) string {
	h, m := after[0]-before[0], after[1]-before[1]
	if h+m == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*float64(h)/float64(h+m), 'f', 1, 64) + " %"
}

// pgbench scripts of the load: 5/9 of the reads users, 4/9 restaurants;
// order ids random in a space large enough not to collide.
const (
	pgbUsers       = "\\set id random(1, 2000)\nSELECT name FROM users WHERE id = :id;\n"
	pgbRestaurants = "\\set id random(1, 500)\nSELECT name FROM restaurants WHERE id = :id;\n"
	pgbWrite       = "\\set oid random(1, 1000000000000)\n\\set uid random(1, 2000)\n\\set rid random(1, 500)\n" +
		"INSERT INTO orders (id, user_id, restaurant_id, total, status, created_at) VALUES (:oid, :uid, :rid, 12.50, 'new', '2026-12-01');\n"
	pgbWriteUsers = "\\set uid random(1, 2000)\nUPDATE users SET city = 'moved' WHERE id = :uid;\n"
)

// tpsLine is pgbench's throughput line.
var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// pgbenchMix is mix with pgbench as the clients: -f scripts weighted 50
// (users) / 40 (restaurants) / 10 (writes) of 100 for readShare 0.9, a
// per-transaction log (-l) for the reads' latencies.
func pgbenchMix(addr string, clients int, readShare float64) func(context.Context, time.Duration, *result) {
	return func(ctx context.Context, d time.Duration, r *result) {
		dir, err := os.MkdirTemp("", "cachebench")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return
		}
		defer os.RemoveAll(dir)
		write := func(name, body string) string {
			f := filepath.Join(dir, name)
			os.WriteFile(f, []byte(body), 0o644)
			return f
		}
		reads := int(math.Round(readShare * 100))
		args := []string{"-n", "-M", "simple", "-c", strconv.Itoa(clients), "-j", "2",
			"-T", strconv.Itoa(max(1, int(math.Ceil(d.Seconds())))), "-l", "--log-prefix", filepath.Join(dir, "tx"),
			"-f", write("users.sql", pgbUsers) + "@" + strconv.Itoa(reads*5/9),
			"-f", write("restaurants.sql", pgbRestaurants) + "@" + strconv.Itoa(reads-reads*5/9)}
		if extended {
			args[2] = "prepared"
		}
		if reads < 100 {
			w := pgbWrite
			if writeUsers {
				w = pgbWriteUsers
			}
			args = append(args, "-f", write("write.sql", w)+"@"+strconv.Itoa(100-reads))
		}
		args = append(args, fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", addr))
		out, err := exec.CommandContext(ctx, "pgbench", args...).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "pgbench: %v\n%s", err, out)
			return
		}
		if r == nil {
			return
		}
		// Log lines: client_id transaction_no time_us script_no epoch us.
		logs, _ := filepath.Glob(filepath.Join(dir, "tx.*"))
		var lat []time.Duration
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			for _, line := range strings.Split(string(b), "\n") {
				f := strings.Fields(line)
				if len(f) < 4 {
					continue
				}
				us, _ := strconv.ParseInt(f[2], 10, 64)
				if f[3] == "2" {
					r.writes++
				} else {
					lat = append(lat, time.Duration(us)*time.Microsecond)
				}
			}
		}
		slices.Sort(lat)
		r.reads = len(lat)
		if m := tpsLine.FindSubmatch(out); m != nil {
			r.tps, _ = strconv.ParseFloat(string(m[1]), 64)
		}
		if len(lat) > 0 {
			r.p50, r.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
		}
	}
}
