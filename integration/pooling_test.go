package integration

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/router"
)

func TestSessionStateRefusedOrContained(t *testing.T) {
	ctx := context.Background()
	// Session advisory locks and temporary tables outside a transaction
	// keep the client on its backend (reserve.go) and end with the
	// session: another client never sees them.
	c := mustConnect(t)
	for _, q := range []string{"SELECT pg_advisory_lock(42)", "CREATE TEMP TABLE scratch (x int)", "INSERT INTO scratch VALUES (1)"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var n int64
	if err := c.QueryRow(ctx, "SELECT count(*) FROM scratch").Scan(&n); err != nil || n != 1 {
		t.Fatalf("temp table across transactions: %d %v", n, err)
	}
	other := mustConnect(t)
	var got bool
	if err := other.QueryRow(ctx, "SELECT pg_try_advisory_lock(42)").Scan(&got); err != nil || got {
		t.Fatalf("another client took the held advisory lock: %v %v", got, err)
	}
	if _, err := other.Exec(ctx, "SELECT count(*) FROM scratch"); pgCode(err) != "42P01" {
		t.Fatalf("another client sees the temp table: %v", err)
	}
	c.Close(ctx)
	other.Close(ctx)
	def := env.topo.Default
	deadline := time.Now().Add(5 * time.Second)
	for shardInt(t, def, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 42") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("advisory lock survived its client")
		}
		time.Sleep(50 * time.Millisecond)
	}

	c = mustConnect(t)
	// Transaction-scoped advisory locks are fine.
	if _, err := c.Exec(ctx, "SELECT pg_advisory_xact_lock(42)"); err != nil {
		t.Fatal(err)
	}
	// A temporary table inside a transaction works, and does not survive
	// on the pooled backend afterwards when it is ON COMMIT DROP.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"CREATE TEMP TABLE scratch2 (x int) ON COMMIT DROP", "INSERT INTO scratch2 VALUES (1), (2)"} {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM scratch2").Scan(&n); err != nil || n != 2 {
		t.Fatalf("temp table in tx: %d %v", n, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := shardInt(t, def, "SELECT count(*) FROM pg_class WHERE relname = 'scratch2' AND relpersistence = 't'"); got != 0 {
		t.Fatalf("temporary table survived on a pooled backend (%d)", got)
	}
}

// seedUsers puts users on every shard (one multi-row INSERT, split by the proxy).
func seedUsers(t *testing.T) {
	t.Helper()
	if _, err := mustConnect(t).Exec(context.Background(), `INSERT INTO users (id, name, email, city) VALUES
		(1, 'u', 'e', 'c'), (2, 'u', 'e', 'c'), (3, 'u', 'e', 'c'), (4, 'u', 'e', 'c'), (5, 'u', 'e', 'c'),
		(6, 'u', 'e', 'c'), (7, 'u', 'e', 'c'), (8, 'u', 'e', 'c'), (9, 'u', 'e', 'c'), (10, 'u', 'e', 'c')
		ON CONFLICT DO NOTHING`); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < nShards; i++ {
		if shardInt(t, i, "SELECT count(*) FROM users") == 0 {
			t.Fatalf("no users on shard %d", i)
		}
	}
}

func TestCancelReachesEveryShard(t *testing.T) {
	seedUsers(t)
	for _, q := range []string{
		"SELECT pg_sleep(30)", // one shard
		"SELECT count(*) FROM users WHERE pg_sleep(30) IS NULL", // every shard
	} {
		c := mustConnect(t)
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		start := time.Now()
		_, err := c.Exec(ctx, q)
		cancel()
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%s: cancel took %v", q, time.Since(start))
		}
		if err == nil {
			t.Fatalf("%s: not canceled", q)
		}
		// Nothing keeps sleeping on any shard.
		deadline := time.Now().Add(5 * time.Second)
		for i := 0; i < nShards; i++ {
			for shardInt(t, i, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND state = 'active' AND pid <> pg_backend_pid()") != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%s: still running on shard %d", q, i)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	// The canceled client's own connection (pgx closes it on a context
	// cancel); a fresh one works.
	c := mustConnect(t)
	var n int
	if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&n); err != nil {
		t.Fatal(err)
	}
}

func TestCancelRequestKeepsSession(t *testing.T) {
	seedUsers(t)
	// A CancelRequest on its own (psql's Ctrl-C) cancels the statement with
	// 57014 and leaves the session usable.
	c := mustConnect(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), "SELECT count(*) FROM users WHERE pg_sleep(30) IS NULL")
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	if err := c.PgConn().CancelRequest(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if pgCode(err) != "57014" {
			t.Fatalf("canceled statement: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancel did not stop the fan-out")
	}
	var n int
	if err := c.QueryRow(context.Background(), "SELECT 2").Scan(&n); err != nil || n != 2 {
		t.Fatalf("session after cancel: %v", err)
	}
}

func TestClientGoneMidTransactionLeavesNothing(t *testing.T) {
	ctx := context.Background()
	c, err := connect(ctx, "app", "app")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (960001, 96001, 1, 1, 'lost')"); err != nil {
		t.Fatal(err)
	}
	c.PgConn().Conn().Close() // vanish without a word
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < nShards; i++ {
		for shardInt(t, i, "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'") != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("shard %d keeps an open transaction", i)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	c2 := mustConnect(t)
	var n int64
	if err := c2.QueryRow(ctx, "SELECT count(*) FROM orders WHERE user_id = 96001").Scan(&n); err != nil || n != 0 {
		t.Fatalf("uncommitted row visible: %d %v", n, err)
	}
}

func TestDeadBackendsAreReplaced(t *testing.T) {
	seedUsers(t)
	ctx := context.Background()
	c := mustConnect(t)
	var n int64
	for i := 0; i < 8; i++ { // warm pools on every shard
		if err := c.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < nShards; i++ {
		shardExec(ctx, i, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = 'deliveryapp'")
	}
	time.Sleep(1200 * time.Millisecond) // past the idle check threshold
	for i := 0; i < 8; i++ {
		if err := c.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil {
			t.Fatalf("query %d after the shards dropped their connections: %v", i, err)
		}
	}
}

func TestStartupParametersFollowTheClient(t *testing.T) {
	ctx := context.Background()
	cc, err := pgx.ParseConfig(proxyURL("app", "app"))
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cc.RuntimeParams["TimeZone"] = "Europe/Madrid"
	cc.RuntimeParams["options"] = `-c statement_timeout=4321 -c application_name=ignored\ here`
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if got := c.PgConn().ParameterStatus("TimeZone"); got != "Europe/Madrid" {
		t.Errorf("ParameterStatus TimeZone = %q", got)
	}
	for i := 0; i < 6; i++ { // whichever backend the client gets
		var ts, st string
		if err := c.QueryRow(ctx, "SELECT '2025-01-01 00:00:00+00'::timestamptz::text").Scan(&ts); err != nil || ts != "2025-01-01 01:00:00+01" {
			t.Fatalf("timestamptz in the client's zone: %q %v", ts, err)
		}
		if err := c.QueryRow(ctx, "SHOW statement_timeout").Scan(&st); err != nil || st != "4321ms" {
			t.Fatalf("statement_timeout from options: %q %v", st, err)
		}
	}
	// Another client does not see them.
	other := mustConnect(t)
	var ts string
	if err := other.QueryRow(ctx, "SELECT '2025-01-01 00:00:00+00'::timestamptz::text").Scan(&ts); err != nil || ts != "2025-01-01 00:00:00+00" {
		t.Fatalf("other client: %q %v", ts, err)
	}
	// A bad value refuses the connection, as Postgres does.
	cc.RuntimeParams["TimeZone"] = "Mars/Olympus"
	if _, err := pgx.ConnectConfig(ctx, cc); pgCode(err) != "22023" {
		t.Fatalf("bad TimeZone at startup: %v", err)
	}
}

// otherShardUser returns a user id whose shard differs from id's.
func otherShardUser(id int64) int64 {
	o := id + 1
	for router.PartitionOf(router.HashInt(o), nShards) == router.PartitionOf(router.HashInt(id), nShards) {
		o++
	}
	return o
}

func TestTransactionReadsOtherShards(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		t.Run(mode.String(), func(t *testing.T) {
			c := connectMode(t, mode)
			other := mustConnect(t)
			a := int64(980000)
			if mode != pgx.QueryExecModeSimpleProtocol {
				a = 985000
			}
			b := otherShardUser(a)
			count := func(conn *pgx.Conn, uid int64) int64 {
				t.Helper()
				var n int64
				if err := conn.QueryRow(ctx, "SELECT count(*) FROM orders WHERE user_id = $1", uid).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES ($1, $2, 1, 1, 'tx')", a, a); err != nil {
				t.Fatal(err)
			}
			var before int64
			if err := tx.QueryRow(ctx, "SELECT count(*) FROM orders WHERE user_id = $1", b).Scan(&before); err != nil {
				t.Fatalf("read on a second shard inside the transaction: %v", err)
			}
			// Another client writes on that shard: the transaction's
			// snapshot there (REPEATABLE READ, like its BEGIN) does not see it.
			if _, err := other.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES ($1, $2, 1, 1, 'x')", b, b); err != nil {
				t.Fatal(err)
			}
			var again int64
			if err := tx.QueryRow(ctx, "SELECT count(*) FROM orders WHERE user_id = $1", b).Scan(&again); err != nil || again != before {
				t.Fatalf("snapshot on the second shard moved: %d then %d (%v)", before, again, err)
			}
			if mode == pgx.QueryExecModeSimpleProtocol { // a read on every shard, inside the transaction
				var all int64
				if err := tx.QueryRow(ctx, "SELECT count(*) FROM orders WHERE user_id IN ($1, $2)", a, b).Scan(&all); err != nil || all != 1+before {
					t.Fatalf("cross-shard read in the transaction: %d %v", all, err)
				}
			}
			// A write on the second shard joins the transaction (two-phase
			// commit at COMMIT); ROLLBACK undoes both shards' writes.
			if _, err := tx.Exec(ctx, "UPDATE orders SET status = 'no' WHERE user_id = $1", b); err != nil {
				t.Fatalf("a write on the second shard: %v", err)
			}
			tx.Rollback(ctx)
			if n := count(c, a); n != 0 {
				t.Fatalf("rolled back write visible: %d", n)
			}
			var no int64
			if err := c.QueryRow(ctx, "SELECT count(*) FROM orders WHERE user_id = $1 AND status = 'no'", b).Scan(&no); err != nil || no != 0 {
				t.Fatalf("rolled back write on the second shard visible: %d %v", no, err)
			}
			// Now commit one: the write lands, the readers end cleanly.
			tx, _ = c.Begin(ctx)
			tx.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES ($1, $2, 1, 1, 'tx')", a, a)
			if err := tx.QueryRow(ctx, "SELECT count(*) FROM orders WHERE user_id = $1", b).Scan(&before); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if n := count(c, a); n != 1 {
				t.Fatalf("committed write: %d", n)
			}
			for i := 0; i < nShards; i++ {
				if shardInt(t, i, "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'") != 0 {
					t.Fatalf("shard %d keeps a transaction open", i)
				}
			}
		})
	}
}
