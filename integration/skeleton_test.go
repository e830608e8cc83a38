package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/router"
)

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// insertOrders loads n orders for users 1..n through the proxy in one
// multi-row INSERT (split by the proxy) and returns their count.
func insertOrders(t *testing.T, c *pgx.Conn, table string, firstID, n int) {
	t.Helper()
	var sb strings.Builder
	fmt.Fprintf(&sb, "INSERT INTO %s (id, user_id, restaurant_id, total, status, created_at) VALUES ", table)
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "(%d, %d, %d, %d.50, 'new', '2025-03-%02d 12:00:00+00')", firstID+i, firstID+i, i%7, i, 1+i%28)
	}
	tag, err := c.Exec(context.Background(), sb.String())
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() != int64(n) {
		t.Fatalf("INSERT tag %q, want %d rows", tag, n)
	}
}

func TestPsqlPointQueryCountDDLAndErrors(t *testing.T) {
	c := mustConnect(t)
	insertOrders(t, c, "orders", 100000, 40)
	out, err := psql(t, "app",
		"-c", "SELECT count(*) AS n FROM orders WHERE user_id = 100007",
		"-c", "SELECT count(*) AS total FROM orders WHERE id BETWEEN 100000 AND 100039",
		"-c", "SELEC broken",
		"-c", "SELECT 'still usable' AS after_error",
		"-c", "CREATE TABLE IF NOT EXISTS ddl_probe (id bigint)",
		"-c", "SELECT status, count(*) FROM orders WHERE id BETWEEN 100000 AND 100039 GROUP BY status",
		"-c", "SELECT 1 / (id - id) FROM orders WHERE id BETWEEN 100000 AND 100039",
		"-c", "SELECT max(status) || 'x' FROM orders")
	// psql exits 1 because the last command fails (on purpose).
	_ = err
	for _, want := range []string{
		" n \n---\n 1\n(1 row)",                   // point query
		"    40\n(1 row)",                         // keyless count summed over shards
		`ERROR:  syntax error at or near "SELEC"`, // proxy's own parse
		"LINE 1: SELEC broken",                    // with position
		"still usable",                            // same session goes on
		"CREATE TABLE",                            // DDL
		" status | count \n--------+-------\n new    |    40\n(1 row)",           // groups merged across shards
		"ERROR:  division by zero\nCONTEXT:  shard s",                            // a shard's error, naming the shard
		"ERROR:  this expression over aggregates across shards is not supported", // refused, never wrong
		"HINT:  Select the aggregates themselves",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("psql output lacks %q:\n%s", want, out)
		}
	}
	for i := 0; i < nShards; i++ {
		if n := shardInt(t, i, "SELECT count(*) FROM pg_tables WHERE tablename = 'ddl_probe'"); n != 1 {
			t.Errorf("shard %d: ddl_probe missing", i)
		}
	}
}

func TestPsqlAuthAndDatabaseErrors(t *testing.T) {
	out, err := psql(t, "wrong", "-c", "SELECT 1")
	if err == nil || !strings.Contains(out, `password authentication failed for user "app"`) {
		t.Fatalf("wrong password: err=%v\n%s", err, out)
	}
	ctx := context.Background()
	_, err = pgx.Connect(ctx, fmt.Sprintf("postgres://app:app@%s/nosuchdb?sslmode=disable", env.addr))
	if pgCode(err) != "3D000" {
		t.Fatalf("unknown database: %v", err)
	}
	_, err = pgx.Connect(ctx, fmt.Sprintf("postgres://ghost:x@%s/deliveryapp?sslmode=disable", env.addr))
	if pgCode(err) != "28000" {
		t.Fatalf("unknown user: %v", err)
	}
	_, err = pgx.Connect(ctx, fmt.Sprintf("postgres://app:bad@%s/deliveryapp?sslmode=disable", env.addr))
	if pgCode(err) != "28P01" {
		t.Fatalf("wrong password via pgx: %v", err)
	}
	// trust auth needs no password.
	cc, _ := pgx.ParseConfig(fmt.Sprintf("postgres://trusty@%s/deliveryapp?sslmode=disable", env.addr))
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	tc, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatalf("trust user: %v", err)
	}
	tc.Close(ctx)
}

func TestPgxPointKeylessAndRefusals(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	insertOrders(t, c, "orders", 200000, 25)
	var n int64
	if err := c.QueryRow(ctx, "SELECT count(*) FROM orders WHERE user_id = $1", 200003).Scan(&n); err != nil || n != 1 {
		t.Fatalf("point query: %d %v", n, err)
	}
	rows, err := c.Query(ctx, "SELECT count(*), sum(total), max(id), min(created_at) FROM orders WHERE id >= 200000 AND id < 200025")
	if err != nil {
		t.Fatal(err)
	}
	if !rows.Next() {
		t.Fatal("no row", rows.Err())
	}
	var got []string
	for _, v := range rows.RawValues() {
		got = append(got, string(v))
	}
	rows.Close()
	// totals are i + 0.50 for i in 0..24: 300 + 12.50; text exactly as Postgres prints it.
	if want := []string{"25", "312.50", "200024", "2025-03-01 12:00:00+00"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("keyless aggregates %q, want %q", got, want)
	}
	for _, q := range []string{
		"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders",
		"SELECT string_agg(status, ',' ORDER BY status) FROM orders",
		"SELECT DISTINCT ON (status) status, id FROM orders",
		"SELECT * FROM orders LIMIT 1 OFFSET length(now()::text)",
		"UPDATE orders SET user_id = user_id + 1 WHERE user_id = 200001",
		"INSERT INTO orders (id, restaurant_id, total, status) VALUES (1, 1, 1, 'x')",
		"ALTER SYSTEM SET work_mem = '1MB'", // LISTEN is the proxy's now (listen_test.go)
		"COPY orders TO '/tmp/orders.copy'",
	} {
		_, err := c.Exec(ctx, q)
		if pgCode(err) != "0A000" {
			t.Errorf("%s: got %v, want SQLSTATE 0A000", q, err)
		}
	}
	if err := c.QueryRow(ctx, "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("connection not usable after refusals: %v", err)
	}
}

// TestPlacementMatchesPostgresHashPartitioning checks that every row the
// proxy placed on shard i is one Postgres's own hash partitioning (modulus
// 4) would put in remainder i.
func TestPlacementMatchesPostgresHashPartitioning(t *testing.T) {
	c := mustConnect(t)
	for k := 0; k < 5; k++ {
		insertOrders(t, c, "orders", 300000+k*200, 200)
	}
	// Negative and large keys too.
	if _, err := c.Exec(context.Background(), `INSERT INTO users (id, name, email, city) VALUES
		(-1, 'a', 'a', 'x'), (-9223372036854775808, 'b', 'b', 'x'), (9223372036854775807, 'c', 'c', 'x'), (0, 'd', 'd', 'x'), (4294967296, 'e', 'e', 'x')`); err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	for i := 0; i < nShards; i++ {
		bad := shardInt(t, i, "SELECT count(*) FROM orders WHERE id >= 300000 AND id < 301000 AND NOT satisfies_hash_partition('hashcheck'::regclass, $1, $2, user_id)", nShards, i)
		if bad != 0 {
			t.Errorf("shard %d holds %d orders that Postgres hash partitioning puts elsewhere", i, bad)
		}
		badU := shardInt(t, i, "SELECT count(*) FROM users WHERE NOT satisfies_hash_partition('hashcheck'::regclass, $1, $2, id)", nShards, i)
		if badU != 0 {
			t.Errorf("shard %d holds %d misplaced users", i, badU)
		}
		got := shardInt(t, i, "SELECT count(*) FROM orders WHERE id >= 300000 AND id < 301000")
		if got == 0 {
			t.Errorf("shard %d got no rows: the split did not spread", i)
		}
		total += got
	}
	if total != 1000 {
		t.Fatalf("%d rows on shards, want 1000", total)
	}
	// And the proxy's own function agrees with the row's location.
	for _, id := range []int64{300001, 300777, 300999} {
		want := router.PartitionOf(router.HashInt(id), nShards)
		if shardInt(t, want, "SELECT count(*) FROM orders WHERE id = $1", id) != 1 {
			t.Errorf("order %d not on shard %d", id, want)
		}
	}
}

func TestTransactionsPinToOneShard(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	exec := func(sql string) error { _, err := c.Exec(ctx, sql); return err }
	count := func(where string) int64 {
		var n int64
		if err := c.QueryRow(ctx, "SELECT count(*) FROM orders WHERE "+where).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	must := func(sql string) {
		t.Helper()
		if err := exec(sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	must("BEGIN")
	must("INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (400001, 4001, 1, 1, 'new')")
	must("ROLLBACK")
	if n := count("user_id = 4001"); n != 0 {
		t.Fatalf("rolled back row visible: %d", n)
	}
	must("BEGIN ISOLATION LEVEL REPEATABLE READ")
	must("SAVEPOINT a")
	must("INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (400002, 4002, 1, 1, 'new')")
	must("INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (400003, 4002, 1, 1, 'new')")
	must("COMMIT")
	if n := count("user_id = 4002"); n != 2 {
		t.Fatalf("committed rows: %d", n)
	}
	// A second shard inside the transaction joins it; a statement the proxy
	// refuses then aborts the whole transaction exactly as Postgres would
	// have it: 25P02 until the end, and COMMIT answers ROLLBACK and keeps
	// nothing on any shard.
	other := int64(4003)
	for router.PartitionOf(router.HashInt(other), nShards) == router.PartitionOf(router.HashInt(4002), nShards) {
		other++
	}
	must("BEGIN")
	must("UPDATE orders SET status = 'tx4' WHERE user_id = 4002")
	must(fmt.Sprintf("INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (400009, %d, 1, 1, 'tx4')", other))
	if err := exec("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders"); pgCode(err) != "0A000" {
		t.Fatalf("refused statement in tx: %v", err)
	}
	if err := exec("SELECT 1"); pgCode(err) != "25P02" {
		t.Fatalf("after failed statement in tx: %v", err)
	}
	tag, err := c.Exec(ctx, "COMMIT")
	if err != nil || tag.String() != "ROLLBACK" {
		t.Fatalf("COMMIT of a failed transaction: %q %v", tag, err)
	}
	if n := count("status = 'tx4'"); n != 0 {
		t.Fatalf("aborted transaction left %d changed rows", n)
	}
	// An error from the shard aborts the transaction too.
	must("BEGIN")
	must("SELECT count(*) FROM orders WHERE user_id = 4002")
	if err := exec("SELECT 1/0 FROM orders WHERE user_id = 4002"); pgCode(err) != "22012" {
		t.Fatalf("division by zero: %v", err)
	}
	if err := exec("SELECT 1"); pgCode(err) != "25P02" {
		t.Fatalf("after shard error in tx: %v", err)
	}
	must("ROLLBACK")
	must("SELECT 1")
}

func TestWritesWithoutKeySumCounts(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	insertOrders(t, c, "orders", 500000, 30)
	tag, err := c.Exec(ctx, "UPDATE orders SET status = 'bulk' WHERE id >= 500000 AND id < 500030")
	if err != nil || tag.RowsAffected() != 30 {
		t.Fatalf("keyless UPDATE: %q %v", tag, err)
	}
	rows, err := c.Query(ctx, "DELETE FROM orders WHERE id >= 500000 AND id < 500010 RETURNING id")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || len(ids) != 10 || rows.CommandTag().RowsAffected() != 10 {
		t.Fatalf("DELETE RETURNING: %v %v %q", ids, err, rows.CommandTag())
	}
}

func TestSessionSettingsFollowTheClient(t *testing.T) {
	ctx := context.Background()
	a := mustConnect(t)
	b := mustConnect(t)
	if _, err := a.Exec(ctx, "SET statement_timeout = '12345ms'"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "SET statement_timeout = 'nonsense'"); pgCode(err) != "22023" {
		t.Fatalf("bad SET: %v", err)
	}
	for i := 0; i < 10; i++ { // different backends each time under transaction pooling
		var v string
		if err := a.QueryRow(ctx, "SHOW statement_timeout").Scan(&v); err != nil || v != "12345ms" {
			t.Fatalf("client a sees statement_timeout=%q (%v)", v, err)
		}
		if err := b.QueryRow(ctx, "SHOW statement_timeout").Scan(&v); err != nil || v != "0" {
			t.Fatalf("client b sees statement_timeout=%q (%v): session state leaked", v, err)
		}
	}
	if _, err := a.Exec(ctx, "RESET statement_timeout"); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := a.QueryRow(ctx, "SHOW statement_timeout").Scan(&v); err != nil || v != "0" {
		t.Fatalf("after RESET: %q %v", v, err)
	}
}

func TestReferenceAndRangeTables(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	if _, err := c.Exec(ctx, "INSERT INTO restaurants (id, name, city, cuisine) VALUES (9001, 'Casa', 'Madrid', 'tapas')"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < nShards; i++ {
		if shardInt(t, i, "SELECT count(*) FROM restaurants WHERE id = 9001") != 1 {
			t.Errorf("reference row missing on shard %d", i)
		}
	}
	if _, err := c.Exec(ctx, `INSERT INTO events (id, kind, created_at) VALUES
		(1, 'a', '2024-06-01 00:00:00+00'), (2, 'b', '2025-02-10 00:00:00+00'), (3, 'c', '2025-09-01 00:00:00+02'), (4, 'd', '2026-03-01 00:00:00+00')`); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int64{1, 1, 1, 1} {
		if got := shardInt(t, i, "SELECT count(*) FROM events WHERE id BETWEEN 1 AND 4"); got != want {
			t.Errorf("shard %d holds %d events, want %d", i, got, want)
		}
	}
	var n int64
	if err := c.QueryRow(ctx, "SELECT count(*) FROM events WHERE created_at >= '2025-01-01+00' AND created_at < '2026-01-01+00' AND id <= 4").Scan(&n); err != nil || n != 2 {
		t.Fatalf("range count %d %v", n, err)
	}
}

func TestMultiStatementStrings(t *testing.T) {
	other := int64(7002)
	for router.PartitionOf(router.HashInt(other), nShards) == router.PartitionOf(router.HashInt(7001), nShards) {
		other++
	}
	out, _ := psql(t, "app",
		"-c", "BEGIN; INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (700001, 7001, 1, 1, 'm'); INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (700002, 7001, 1, 1, 'm'); COMMIT",
		"-c", "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (700003, 7001, 1, 1, 'm'); SELECT 1/0",
		"-c", "SELECT count(*) AS multi FROM orders WHERE user_id = 7001",
		"-c", fmt.Sprintf("SELECT count(*) FROM orders WHERE user_id = 7001; SELECT count(*) FROM orders WHERE user_id = %d", other),
		"-c", "BEGIN; SELECT count(*) AS in_tx FROM orders WHERE user_id = 7001",
		"-c", "COMMIT")
	for _, want := range []string{
		"ERROR:  division by zero",
		" multi \n-------\n     2\n",                                      // the failed string was one implicit transaction: its INSERT rolled back
		" count \n-------\n     2\n(1 row)\n\n count \n-------\n     0\n", // statements for two shards in one string
		" in_tx \n-------\n     2\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("psql output lacks %q:\n%s", want, out)
		}
	}
}

func TestRoutingHints(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	insertOrders(t, c, "orders", 970000, 40)
	count := func(q string) int64 {
		t.Helper()
		var n int64
		if err := c.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	const where = "FROM orders WHERE id >= 970000 AND id < 970040"
	onShard := func(i int) int64 { return shardInt(t, i, "SELECT count(*) "+where) }
	if got := count("SELECT count(*) " + where); got != 40 {
		t.Fatalf("all shards: %d", got)
	}
	if got, want := count("/* shard: s1 */ SELECT count(*) "+where), onShard(1); got != want {
		t.Fatalf("comment hint: %d, want shard s1's %d", got, want)
	}
	for _, q := range []string{"SET shardproxy.shard = 's2'"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := count("SELECT count(*) "+where), onShard(2); got != want {
		t.Fatalf("session hint: %d, want shard s2's %d", got, want)
	}
	if _, err := c.Exec(ctx, "SET shardproxy.shard = 'nope'"); pgCode(err) != "22023" {
		t.Fatalf("unknown shard: %v", err)
	}
	if _, err := c.Exec(ctx, "RESET shardproxy.shard"); err != nil {
		t.Fatal(err)
	}
	if got := count("SELECT count(*) " + where); got != 40 {
		t.Fatalf("after RESET: %d", got)
	}
	// SET LOCAL lasts for the transaction only.
	for _, q := range []string{"BEGIN", "SET LOCAL shardproxy.shard = 's3'"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := count("SELECT count(*) "+where), onShard(3); got != want {
		t.Fatalf("local hint: %d, want %d", got, want)
	}
	if _, err := c.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if got := count("SELECT count(*) " + where); got != 40 {
		t.Fatalf("after the transaction: %d", got)
	}
}

// TestReferenceWritesAnswerOnce: a write to a reference table runs on every
// shard, but the client sees one copy's answer, in both protocols.
func TestReferenceWritesAnswerOnce(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		c := connectMode(t, mode)
		id := int64(9100)
		if mode != pgx.QueryExecModeSimpleProtocol {
			id = 9200
		}
		tag, err := c.Exec(ctx, "INSERT INTO restaurants (id, name, city, cuisine) VALUES ($1, 'Uno', 'Vigo', 'tapas')", id)
		if err != nil || tag.String() != "INSERT 0 1" {
			t.Fatalf("%v: insert tag %q %v", mode, tag, err)
		}
		rows, err := c.Query(ctx, "UPDATE restaurants SET rating = 4.5 WHERE id = $1 RETURNING id", id)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil || len(ids) != 1 || rows.CommandTag().String() != "UPDATE 1" {
			t.Fatalf("%v: RETURNING %v tag %q %v", mode, ids, rows.CommandTag(), err)
		}
		for i := 0; i < nShards; i++ {
			if shardInt(t, i, "SELECT count(*) FROM restaurants WHERE id = $1 AND rating = 4.5", id) != 1 {
				t.Fatalf("%v: copy on shard %d not updated", mode, i)
			}
		}
	}
}
