package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/delivery"
	"github.com/shardproxy/shardproxy/parser"
)

// The backup tests run pg_dump, psql and pg_restore against proxies of
// their own, over databases of their own on the four shard clusters, so
// that the dumps hold exactly the data the test loaded.

// dumpTables are the tables compared after a dump and restore.
var dumpTables = []string{"users", "restaurants", "orders", "order_items", "events"}

// dumpPartitions are monthly partitions created beside the schema's
// DEFAULT partitions, so that dumps carry data of partitions of sharded
// tables.
const dumpPartitions = `
CREATE TABLE orders_2025_01 PARTITION OF orders FOR VALUES FROM ('2025-01-01') TO ('2025-02-01');
CREATE TABLE orders_2025_02 PARTITION OF orders FOR VALUES FROM ('2025-02-01') TO ('2025-03-01');
CREATE TABLE events_2025_01 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2025-02-01');
CREATE TABLE events_2025_08 PARTITION OF events FOR VALUES FROM ('2025-08-01') TO ('2025-09-01');
`

// dumpDB creates database db on the four shard clusters (with the
// hashcheck table for placement checks) and starts a proxy over them with
// the tables of the shared cluster; it returns the proxy's URL.
func dumpDB(t *testing.T, db string) string {
	t.Helper()
	ctx := context.Background()
	var sb strings.Builder
	fmt.Fprintf(&sb, "database: %s\nbackend_roles: shared\nusers: [{name: app, auth: trust}]\npool: {size: 4}\nshards:\n", db)
	for i := 0; i < nShards; i++ {
		if err := shardExec(ctx, i, "DROP DATABASE IF EXISTS "+db); err != nil {
			t.Fatal(err)
		}
		if err := shardExec(ctx, i, "CREATE DATABASE "+db); err != nil {
			t.Fatal(err)
		}
		c, err := pgx.Connect(ctx, env.shards.Clusters[i].DSN(db))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Exec(ctx, "CREATE TABLE hashcheck (k bigint) PARTITION BY HASH (k)")
		c.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "  - {name: s%d, dsn: %q}\n", i, env.shards.Clusters[i].DSN(db))
	}
	sb.WriteString(env.config[strings.Index(env.config, "tables:"):])
	addr := serveProxy(t, sb.String())
	return "postgres://app@" + addr + "/" + db + "?sslmode=disable"
}

// plainDB creates database db on cluster 0 and returns its URL.
func plainDB(t *testing.T, db string) string {
	t.Helper()
	ctx := context.Background()
	if err := shardExec(ctx, 0, "DROP DATABASE IF EXISTS "+db); err != nil {
		t.Fatal(err)
	}
	if err := shardExec(ctx, 0, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	return env.shards.Clusters[0].DSN(db)
}

// loadDumpData creates the delivery schema with partitions and loads
// sample rows (awkward text, NULLs, jsonb) with COPY.
func loadDumpData(t *testing.T, url string) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	stmts, err := parser.Parse(delivery.Schema + dumpPartitions)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range stmts {
		if _, err := c.Exec(ctx, st.SQL, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("%s: %v", st.SQL, err)
		}
	}
	base := time.Date(2024, 12, 20, 0, 0, 0, 0, time.UTC)
	var users, rests, orders, itemRows, events [][]any
	for i := 1; i <= 300; i++ {
		users = append(users, []any{int64(i), itemName(i), fmt.Sprintf("u%d@example.com", i), []string{"Paris", "Lyon", "Nice"}[i%3], base.Add(time.Duration(i) * time.Hour)})
	}
	for i := 1; i <= 20; i++ {
		var rating any
		if i%4 != 0 {
			rating = fmt.Sprintf("%d.%d", i%5, i%10)
		}
		rests = append(rests, []any{int64(i), itemName(i + 3), "Paris", "cuisine " + itemName(i), rating})
	}
	for i := 1; i <= 1200; i++ {
		at := base.Add(time.Duration(i*97) * time.Minute) // 2024-12-20 .. 2025-03-11: three partitions
		orders = append(orders, []any{int64(i), int64(i%300 + 1), int64(i%20 + 1), fmt.Sprintf("%d.%02d", i%90, i%100), []string{"new", "paid", "done"}[i%3], at})
		itemRows = append(itemRows, []any{int64(i), int64(i), int64(i%300 + 1), itemName(i), int32(i%5 + 1), fmt.Sprintf("%d.50", i%30)})
	}
	for i := 1; i <= 800; i++ {
		at := time.Date(2024, 11, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i*17) * time.Hour) // 2024-11 .. 2026-05: all four range shards
		var user, payload any
		if i%7 != 0 {
			user = int64(i%300 + 1)
			payload = fmt.Sprintf(`{"n": %d, "s": %q}`, i, itemName(i))
		}
		events = append(events, []any{int64(i), user, "kind" + fmt.Sprint(i%4), payload, at})
	}
	for _, l := range []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"users", []string{"id", "name", "email", "city", "created_at"}, users},
		{"restaurants", []string{"id", "name", "city", "cuisine", "rating"}, rests},
		{"orders", []string{"id", "user_id", "restaurant_id", "total", "status", "created_at"}, orders},
		{"order_items", []string{"id", "order_id", "user_id", "name", "quantity", "price"}, itemRows},
		{"events", []string{"id", "user_id", "kind", "payload", "created_at"}, events},
	} {
		if _, err := c.CopyFrom(ctx, pgx.Identifier{l.table}, l.cols, pgx.CopyFromRows(l.rows)); err != nil {
			t.Fatalf("load %s: %v", l.table, err)
		}
	}
}

// tableRows returns every row of every dumpTables table as text, sorted,
// read with the simple protocol (through the proxy: the shards' rows
// concatenated).
func tableRows(t *testing.T, url string, tables ...string) map[string][]string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	out := map[string][]string{}
	if tables == nil {
		tables = dumpTables
	}
	for _, tb := range tables {
		rows, err := c.Query(ctx, "SELECT t::text FROM "+tb+" t", pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatal(err)
		}
		list, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", tb, err)
		}
		slices.Sort(list)
		out[tb] = list
	}
	return out
}

// sameRows fails unless both sides hold the same rows in every table.
func sameRows(t *testing.T, what string, want, got map[string][]string) {
	t.Helper()
	for _, tb := range dumpTables {
		if len(want[tb]) == 0 {
			t.Fatalf("%s: no rows in %s: the test loads nothing", what, tb)
		}
		if !slices.Equal(want[tb], got[tb]) {
			t.Errorf("%s: table %s differs: %d rows expected, %d found", what, tb, len(want[tb]), len(got[tb]))
		}
	}
}

// checkDumpPlacement fails if a row of a hash-sharded table sits on a
// shard other than the one Postgres's hash partitioning gives its key, or
// an event outside its shard's range; reference rows must be on every shard.
func checkDumpPlacement(t *testing.T, db string) {
	t.Helper()
	ctx := context.Background()
	ranges := []string{"created_at < '2025-01-01'", "created_at >= '2025-01-01' AND created_at < '2025-07-01'",
		"created_at >= '2025-07-01' AND created_at < '2026-01-01'", "created_at >= '2026-01-01'"}
	for i := 0; i < nShards; i++ {
		c, err := pgx.Connect(ctx, env.shards.Clusters[i].DSN(db))
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			fmt.Sprintf("SELECT count(*) FROM users WHERE NOT satisfies_hash_partition('hashcheck'::regclass, %d, %d, id)", nShards, i),
			fmt.Sprintf("SELECT count(*) FROM orders WHERE NOT satisfies_hash_partition('hashcheck'::regclass, %d, %d, user_id)", nShards, i),
			fmt.Sprintf("SELECT count(*) FROM order_items WHERE NOT satisfies_hash_partition('hashcheck'::regclass, %d, %d, user_id)", nShards, i),
			"SELECT count(*) FROM events WHERE NOT (" + ranges[i] + ")",
			"SELECT 20 - count(*) FROM restaurants",
		} {
			var bad int64
			if err := c.QueryRow(ctx, q).Scan(&bad); err != nil {
				t.Fatalf("shard %d: %s: %v", i, q, err)
			}
			if bad != 0 {
				t.Errorf("shard %d: %d rows misplaced: %s", i, bad, q)
			}
		}
		var n int64
		if err := c.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&n); err != nil || n == 0 {
			t.Errorf("shard %d holds no orders (%v)", i, err)
		}
		c.Close(ctx)
	}
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// TestPgDumpThroughProxy loads a sharded cluster through the proxy, dumps
// it with pg_dump through the proxy (plain and custom format, schema only,
// one table, data only) and restores each dump into one plain Postgres:
// every table must hold exactly the cluster's rows.
func TestPgDumpThroughProxy(t *testing.T) {
	src := dumpDB(t, "dumpsrc")
	loadDumpData(t, src)
	want := tableRows(t, src)
	dir := t.TempDir()
	psqlFile := func(url, file string) string {
		return runTool(t, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", file)
	}

	t.Run("plain", func(t *testing.T) {
		file := filepath.Join(dir, "plain.sql")
		runTool(t, "pg_dump", "-d", src, "-f", file)
		dst := plainDB(t, "dumpplain1")
		psqlFile(dst, file)
		sameRows(t, "pg_dump -Fp | psql", want, tableRows(t, dst))
	})
	t.Run("custom", func(t *testing.T) {
		file := filepath.Join(dir, "dump.custom")
		runTool(t, "pg_dump", "-Fc", "-d", src, "-f", file)
		dst := plainDB(t, "dumpplain2")
		runTool(t, "pg_restore", "-e", "-d", dst, file)
		sameRows(t, "pg_dump -Fc | pg_restore", want, tableRows(t, dst))
	})
	t.Run("schema-only", func(t *testing.T) {
		out := runTool(t, "pg_dump", "--schema-only", "-d", src)
		for _, tb := range append(dumpTables, "orders_2025_01", "events_default") {
			if n := strings.Count(out, "CREATE TABLE public."+tb+" "); n != 1 {
				t.Errorf("CREATE TABLE public.%s appears %d times in the schema dump", tb, n)
			}
		}
		if strings.Contains(out, "COPY public.") {
			t.Error("the schema-only dump holds data")
		}
	})
	t.Run("one-table", func(t *testing.T) {
		file := filepath.Join(dir, "users.sql")
		runTool(t, "pg_dump", "-t", "users", "-d", src, "-f", file)
		dst := plainDB(t, "dumpplain3")
		psqlFile(dst, file)
		got := tableRows(t, dst, "users")
		if !slices.Equal(want["users"], got["users"]) {
			t.Errorf("pg_dump -t users: %d rows expected, %d restored", len(want["users"]), len(got["users"]))
		}
	})
	t.Run("data-only", func(t *testing.T) {
		file := filepath.Join(dir, "data.sql")
		runTool(t, "pg_dump", "--data-only", "-N", "shardproxy", "-d", src, "-f", file)
		dst := plainDB(t, "dumpplain4")
		schema := filepath.Join(dir, "schema.sql")
		if err := os.WriteFile(schema, []byte(delivery.Schema+dumpPartitions), 0o644); err != nil {
			t.Fatal(err)
		}
		psqlFile(dst, schema)
		psqlFile(dst, file)
		sameRows(t, "pg_dump --data-only | psql", want, tableRows(t, dst))
	})
}

// TestRestoreThroughProxy dumps one plain Postgres holding the sample data
// and restores the dump through the proxy into empty sharded databases
// (psql -f of a plain dump, pg_restore of a custom one): every row must
// land on the shard its key selects, and the cluster must hold exactly
// the plain database's rows.
func TestRestoreThroughProxy(t *testing.T) {
	src := plainDB(t, "dumpplainsrc")
	loadDumpData(t, src)
	want := tableRows(t, src)
	dir := t.TempDir()
	plain, custom := filepath.Join(dir, "plain.sql"), filepath.Join(dir, "dump.custom")
	runTool(t, "pg_dump", "-d", src, "-f", plain)
	runTool(t, "pg_dump", "-Fc", "-d", src, "-f", custom)

	t.Run("psql", func(t *testing.T) {
		dst := dumpDB(t, "dumprest1")
		runTool(t, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dst, "-f", plain)
		sameRows(t, "psql -f through the proxy", want, tableRows(t, dst))
		checkDumpPlacement(t, "dumprest1")
	})
	t.Run("pg_restore", func(t *testing.T) {
		dst := dumpDB(t, "dumprest2")
		runTool(t, "pg_restore", "-e", "-d", dst, custom)
		sameRows(t, "pg_restore through the proxy", want, tableRows(t, dst))
		checkDumpPlacement(t, "dumprest2")
	})
	t.Run("pg_restore -j", func(t *testing.T) {
		// Parallel restore: pg_restore opens several sessions, loads the
		// tables' data concurrently and builds indexes and constraints
		// from other sessions than the ones that created the tables.
		dst := dumpDB(t, "dumprest3")
		runTool(t, "pg_restore", "-e", "-j", "3", "-d", dst, custom)
		sameRows(t, "pg_restore -j 3 through the proxy", want, tableRows(t, dst))
		checkDumpPlacement(t, "dumprest3")
	})
}
