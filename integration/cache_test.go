package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/localredis"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/proxy/proxytest"
)

// cacheRedis is the redis-server shared by the cache tests (TestMain).
var cacheRedis *localredis.Server

// startRedis starts the tests' redis-server; without one the cache tests
// skip, except in CI, where TestMain fails.
func startRedis(ctx context.Context) (stop func(), err error) {
	s, err := localredis.Start(ctx)
	if err != nil {
		if localpg.InCI() {
			return nil, err
		}
		fmt.Fprintln(os.Stderr, "cache tests will skip:", err)
		return func() {}, nil
	}
	cacheRedis = s
	return s.Close, nil
}

type cacheProxy struct {
	srv  *proxy.Server
	addr string
}

// startCacheProxy starts a proxy over the shared shards with the cache
// section cache (YAML, indented by two spaces), stopped when t ends.
func startCacheProxy(t *testing.T, cache string) *cacheProxy {
	t.Helper()
	var sb strings.Builder
	sb.WriteString("backend_roles: shared\nusers: [{name: app, password: app}, {name: admin, password: adminpw}]\nadmins: [admin]\npool: {size: 6, acquire_timeout: 5s}\nshards:\n")
	for i, dsn := range env.shards.DSNs() {
		fmt.Fprintf(&sb, "  - {name: s%d, dsn: %q}\n", i, dsn)
	}
	sb.WriteString("tables:\n  users: {strategy: hash, key: id}\n  orders: {strategy: hash, key: user_id}\n  restaurants: {strategy: reference}\n")
	sb.WriteString("cache:\n" + cache)
	f, err := config.Parse([]byte(sb.String()))
	if err != nil {
		t.Fatal(err)
	}
	srv := proxytest.NewConfig(t, f.Proxy, env.topo)
	if err := srv.RegisterMetrics(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	return &cacheProxy{srv: srv, addr: proxytest.Listen(t, srv)}
}

func (p *cacheProxy) connect(t *testing.T) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", p.addr))
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

// admin runs commands on p's admin console with psql.
func (p *cacheProxy) admin(t *testing.T, cmds ...string) string {
	t.Helper()
	args := []string{"-X", "-v", "ON_ERROR_STOP=0", fmt.Sprintf("postgres://admin@%s/shardproxy?sslmode=disable", p.addr)}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	cmd := exec.Command("psql", args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD=adminpw", "PGCONNECT_TIMEOUT=10")
	out, _ := cmd.CombinedOutput()
	return string(out)
}

func redisCache(t *testing.T) string {
	t.Helper()
	if cacheRedis == nil {
		t.Skip("no redis-server")
	}
	// timeout 1s: these tests check what is served, which needs Redis to
	// answer; with the default 200ms a loaded machine's stall makes a read
	// fall back to Postgres (correct, but then "b answers from the entry a
	// filled" cannot be shown). resultcache's slowredis_test.go covers
	// slow answers and timeouts.
	return fmt.Sprintf(`  backend: redis
  redis: {addr: %q, prefix: "%s:", timeout: 1s}
  rules:
    - {name: users, tables: [users], ttl: 1m}
    - {name: restaurants, tables: [restaurants], ttl: 1m}
`, cacheRedis.Addr(), t.Name())
}

func nameOf(t *testing.T, c *pgx.Conn, id int64) string {
	t.Helper()
	var name string
	if err := c.QueryRow(context.Background(), fmt.Sprintf("SELECT name FROM users WHERE id = %d", id)).Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

// shardOf returns the index of the shard holding user id.
func shardIndex(id int64) int {
	var i int
	fmt.Sscanf(shardOfUser(id), "s%d", &i)
	return i
}

// deleteUsers removes the test's users through the shared proxy.
func deleteUsers(t *testing.T, ids ...int64) {
	c, err := connect(context.Background(), "app", "app")
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close(context.Background())
	for _, id := range ids {
		if _, err := c.Exec(context.Background(), fmt.Sprintf("DELETE FROM users WHERE id = %d", id)); err != nil {
			t.Error(err)
		}
	}
}

func TestCacheTwoProxiesInvalidate(t *testing.T) {
	cache := redisCache(t)
	a, b := startCacheProxy(t, cache), startCacheProxy(t, cache)
	ca, cb := a.connect(t), b.connect(t)
	ctx := context.Background()
	const id, other = 920001, 920002
	t.Cleanup(func() { deleteUsers(t, id, other) })
	for _, q := range []string{
		fmt.Sprintf("DELETE FROM users WHERE id IN (%d, %d)", id, other),
		fmt.Sprintf("INSERT INTO users (id, name, email, city) VALUES (%d, 'first', 'e', 'c'), (%d, 'other', 'e', 'c')", id, other),
	} {
		if _, err := ca.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if got := nameOf(t, ca, id); got != "first" {
		t.Fatalf("read through a: %q", got)
	}
	// A change behind the proxies' back is not seen while the entry lives:
	// proof that b answers from the entry a filled.
	if err := shardExec(ctx, shardIndex(id), fmt.Sprintf("UPDATE users SET name = 'behind' WHERE id = %d", id)); err != nil {
		t.Fatal(err)
	}
	if got := nameOf(t, cb, id); got != "first" {
		t.Fatalf("read through b = %q, want the entry a filled", got)
	}
	// Transactions never see the cache.
	tx, err := cb.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var inTx string
	if err := tx.QueryRow(ctx, fmt.Sprintf("SELECT name FROM users WHERE id = %d", id)).Scan(&inTx); err != nil {
		t.Fatal(err)
	}
	tx.Commit(ctx)
	if inTx != "behind" {
		t.Errorf("read in a transaction = %q, want the shard's %q", inTx, "behind")
	}
	// A write to the table through b invalidates a's entries too.
	if _, err := cb.Exec(ctx, fmt.Sprintf("UPDATE users SET city = 'x' WHERE id = %d", other)); err != nil {
		t.Fatal(err)
	}
	if got := nameOf(t, ca, id); got != "behind" {
		t.Errorf("read through a after b's write = %q, want %q", got, "behind")
	}
	// Volatile functions, locking reads and catalogs are never cached.
	for _, q := range []string{
		fmt.Sprintf("SELECT name || random()::text FROM users WHERE id = %d", id),
		fmt.Sprintf("SELECT name || clock_timestamp()::text FROM users WHERE id = %d", id),
		fmt.Sprintf("SELECT name || txid_current()::text FROM users WHERE id = %d FOR UPDATE", id),
	} {
		var first, second string
		if err := ca.QueryRow(ctx, q).Scan(&first); err != nil {
			t.Fatal(err)
		}
		if err := cb.QueryRow(ctx, q).Scan(&second); err != nil {
			t.Fatal(err)
		}
		if first == second {
			t.Errorf("%s: the same answer twice (%q): served from the cache", q, first)
		}
	}
	out := a.admin(t, "SHOW CACHE", "SHOW ROUTE SELECT name FROM users WHERE id = 1", "SHOW ROUTE SELECT now()", "CACHE CLEAR")
	for _, want := range []string{" users ", "tables users", " redis ", "(consolidation) | on", "rule users (ttl 1m0s)", "never (volatile", "CACHE CLEAR"} {
		if !strings.Contains(out, want) {
			t.Errorf("admin console output lacks %q:\n%s", want, out)
		}
	}
}

// TestCacheNoStaleReadAfterCommit writes through one proxy, in and out of
// transactions, and reads through the other right after each commit.
func TestCacheNoStaleReadAfterCommit(t *testing.T) {
	cache := redisCache(t)
	a, b := startCacheProxy(t, cache), startCacheProxy(t, cache)
	conns := []*pgx.Conn{a.connect(t), b.connect(t)}
	ctx := context.Background()
	const id = 920011
	t.Cleanup(func() { deleteUsers(t, id) })
	conns[0].Exec(ctx, fmt.Sprintf("DELETE FROM users WHERE id = %d", id))
	if _, err := conns[0].Exec(ctx, fmt.Sprintf("INSERT INTO users (id, name, email, city) VALUES (%d, 'v0', 'e', 'c')", id)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 30; i++ {
		w, r := conns[i%2], conns[(i+1)%2]
		nameOf(t, r, id) // fill the reader's view
		want := fmt.Sprintf("v%d", i)
		update := fmt.Sprintf("UPDATE users SET name = '%s' WHERE id = %d", want, id)
		if i%3 == 0 {
			tx, err := w.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, update); err != nil {
				t.Fatal(err)
			}
			// Not committed: the other proxy still sees the old value.
			if got := nameOf(t, r, id); got != fmt.Sprintf("v%d", i-1) {
				t.Fatalf("round %d: uncommitted value visible: %q", i, got)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		} else if _, err := w.Exec(ctx, update); err != nil {
			t.Fatal(err)
		}
		if got := nameOf(t, r, id); got != want {
			t.Fatalf("round %d: read after commit = %q, want %q", i, got, want)
		}
	}
}

// TestConsolidationBurst sends one slow read, then a burst of the same
// read while it runs, and counts the executions on the shards in
// pg_stat_activity: one.
func TestConsolidationBurst(t *testing.T) {
	ctx := context.Background()
	const q = "SELECT count(*) FROM generate_series(1, 12000000) g WHERE g % 7 = 3"
	var seen sync.Map // "shard/pid/query_start" of each execution
	var maxActive atomic.Int64
	stop := make(chan struct{})
	var watchers sync.WaitGroup
	for i := range env.shards.Clusters {
		c, err := shardConn(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				rows, err := c.Query(ctx, "SELECT pid, query_start::text FROM pg_stat_activity WHERE state = 'active' AND query = $1", q)
				if err != nil {
					return
				}
				n := int64(0)
				for rows.Next() {
					var pid int
					var start string
					rows.Scan(&pid, &start)
					seen.Store(fmt.Sprintf("%d/%d/%s", i, pid, start), true)
					n++
				}
				rows.Close()
				if n > maxActive.Load() {
					maxActive.Store(n)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	count := func() int {
		n := 0
		seen.Range(func(any, any) bool { n++; return true })
		return n
	}
	const clients = 8
	results := make([]int64, clients)
	errs := make([]error, clients)
	conns := make([]*pgx.Conn, clients) // connected first: the burst is only the queries
	for i := range conns {
		conns[i] = mustConnect(t)
	}
	var wg sync.WaitGroup
	query := func(i int) {
		defer wg.Done()
		errs[i] = conns[i].QueryRow(ctx, q).Scan(&results[i])
	}
	wg.Add(1)
	go query(0)
	deadline := time.Now().Add(20 * time.Second)
	for count() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if count() == 0 {
		t.Fatal("the leader's query never showed in pg_stat_activity")
	}
	for i := 1; i < clients; i++ {
		wg.Add(1)
		go query(i)
	}
	wg.Wait()
	close(stop)
	watchers.Wait()
	for i := range clients {
		if errs[i] != nil {
			t.Fatalf("client %d: %v", i, errs[i])
		}
		if results[i] != (12000000-3)/7+1 {
			t.Errorf("client %d got %d", i, results[i])
		}
	}
	if n := count(); n != 1 || maxActive.Load() != 1 {
		t.Errorf("the shards ran the query %d times (at most %d at once), want once for %d clients", n, maxActive.Load(), clients)
	}
}

// TestCacheRedisRestartUnderLoad restarts Redis while clients read and
// write through two proxies: no query fails, and every read after a
// committed write sees it.
func TestCacheRedisRestartUnderLoad(t *testing.T) {
	cache := redisCache(t)
	a, b := startCacheProxy(t, cache), startCacheProxy(t, cache)
	ctx := context.Background()
	const workers = 4
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var ops atomic.Int64
	errc := make(chan error, workers)
	t.Cleanup(func() { deleteUsers(t, 920100, 920101, 920102, 920103) })
	for w := range workers {
		ca, cb := a.connect(t), b.connect(t)
		id := int64(920100 + w)
		ca.Exec(ctx, fmt.Sprintf("DELETE FROM users WHERE id = %d", id))
		if _, err := ca.Exec(ctx, fmt.Sprintf("INSERT INTO users (id, name, email, city) VALUES (%d, 'n0', 'e', 'c')", id)); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				wr, rd := ca, cb
				if i%2 == 0 {
					wr, rd = cb, ca
				}
				want := fmt.Sprintf("n%d", i)
				for range 3 { // reads fill and hit
					var got string
					if err := rd.QueryRow(ctx, fmt.Sprintf("SELECT name FROM users WHERE id = %d", id)).Scan(&got); err != nil {
						errc <- fmt.Errorf("read: %w", err)
						return
					}
				}
				if _, err := wr.Exec(ctx, fmt.Sprintf("UPDATE users SET name = '%s' WHERE id = %d", want, id)); err != nil {
					errc <- fmt.Errorf("write: %w", err)
					return
				}
				var got string
				if err := rd.QueryRow(ctx, fmt.Sprintf("SELECT name FROM users WHERE id = %d", id)).Scan(&got); err != nil {
					errc <- fmt.Errorf("read: %w", err)
					return
				}
				if got != want {
					errc <- fmt.Errorf("user %d: read after commit = %q, want %q", id, got, want)
					return
				}
				ops.Add(1)
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	if err := cacheRedis.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if ops.Load() < workers {
		t.Errorf("only %d rounds ran", ops.Load())
	}
	out := a.admin(t, "SHOW CACHE")
	if !strings.Contains(out, " users ") {
		t.Errorf("SHOW CACHE:\n%s", out)
	}
}

// TestCacheWriteKindsInvalidate: each kind of write through one proxy
// (INSERT, UPDATE, DELETE, TRUNCATE, DDL; COPY in TestCacheCopyInvalidates),
// outside and inside a transaction, drops the entries another proxy
// sharing the Redis serves: the read right after it equals the shard's
// data, although the data also changed behind the proxies' back (which the
// entry hides until then).
func TestCacheWriteKindsInvalidate(t *testing.T) {
	cache := redisCache(t) + "    - {name: inv, tables: [cache_inv], ttl: 1m}\n"
	a, b := startCacheProxy(t, cache), startCacheProxy(t, cache)
	ca, cb := a.connect(t), b.connect(t)
	ctx := context.Background()
	for _, q := range []string{"DROP TABLE IF EXISTS cache_inv", "CREATE TABLE cache_inv (id int PRIMARY KEY, v text)"} {
		if _, err := cb.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { cb.Exec(context.Background(), "DROP TABLE IF EXISTS cache_inv") })
	read := func() string {
		t.Helper()
		rows, err := ca.Query(ctx, "SELECT coalesce(string_agg(v, ',' ORDER BY id), '') FROM cache_inv WHERE id < 100")
		if err != nil {
			t.Fatal(err)
		}
		vs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(vs) != 1 {
			t.Fatal(vs, err)
		}
		return vs[0]
	}
	for i, w := range []string{
		"INSERT INTO cache_inv VALUES (100, 'x') ON CONFLICT (id) DO NOTHING",
		"UPDATE cache_inv SET v = 'y' WHERE id = 100",
		"DELETE FROM cache_inv WHERE id = 100",
		"CREATE INDEX ON cache_inv (v)",
		"ALTER TABLE cache_inv ADD COLUMN IF NOT EXISTS extra int",
		"TRUNCATE cache_inv",
	} {
		for _, inTx := range []bool{false, true} {
			old, now := fmt.Sprintf("old%d", i), fmt.Sprintf("now%d", i)
			if err := shardExec(ctx, 0, fmt.Sprintf("INSERT INTO cache_inv (id, v) VALUES (1, '%s') ON CONFLICT (id) DO UPDATE SET v = excluded.v", old)); err != nil {
				t.Fatal(err)
			}
			b.admin(t, "CACHE CLEAR")      // the last round's entry
			if got := read(); got != old { // fills the entry
				t.Fatalf("%s: first read = %q, want %q", w, got, old)
			}
			if err := shardExec(ctx, 0, fmt.Sprintf("UPDATE cache_inv SET v = '%s' WHERE id = 1", now)); err != nil {
				t.Fatal(err)
			}
			if got := read(); got != old {
				t.Fatalf("%s: read before the write = %q, want the entry's %q", w, got, old)
			}
			if inTx {
				tx, err := cb.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tx.Exec(ctx, w); err != nil {
					t.Fatalf("%s: %v", w, err)
				}
				if got := read(); got != old {
					t.Errorf("%s in a transaction, not committed: read = %q, want %q", w, got, old)
				}
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			} else if _, err := cb.Exec(ctx, w); err != nil {
				t.Fatalf("%s: %v", w, err)
			}
			want := now
			if strings.HasPrefix(w, "TRUNCATE") {
				want = ""
			}
			if got := read(); got != want {
				t.Errorf("%s (transaction %v) through proxy b: read through a = %q, want %q", w, inTx, got, want)
			}
		}
	}
}
