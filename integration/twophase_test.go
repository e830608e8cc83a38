package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/proxy/proxytest"
	"github.com/shardproxy/shardproxy/router"
)

// userOn returns n user ids whose orders live on shard i, from base up.
func userOn(i int, base int64) int64 {
	for u := base; ; u++ {
		if router.PartitionOf(router.HashInt(u), nShards) == i {
			return u
		}
	}
}

// noneLeft checks that no shard keeps a prepared transaction or a
// decision lock.
func noneLeft(t *testing.T) {
	t.Helper()
	for i := 0; i < nShards; i++ {
		if n := shardInt(t, i, "SELECT count(*) FROM pg_prepared_xacts"); n != 0 {
			t.Fatalf("shard %d keeps %d prepared transactions", i, n)
		}
		if n := shardInt(t, i, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1936750642"); n != 0 {
			t.Fatalf("shard %d keeps %d decision locks", i, n)
		}
	}
}

func TestMultiShardWritesAreAtomic(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			c := connectMode(t, mode)
			base := int64(620000) + int64(mode)*1000
			u0, u1, u2 := userOn(0, base), userOn(1, base), userOn(2, base)
			count := func(where string, args ...any) int64 {
				t.Helper()
				var n int64
				if err := c.QueryRow(ctx, "SELECT count(*) FROM orders WHERE "+where, args...).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			// A transaction writing on three shards commits on all.
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i, u := range []int64{u0, u1, u2} {
				if _, err := tx.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES ($1, $2, 1, 10, 'twopc')", base+int64(i), u); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatalf("commit on three shards: %v", err)
			}
			if n := count("status = 'twopc' AND id BETWEEN $1 AND $2", base, base+9); n != 3 {
				t.Fatalf("committed rows: %d, want 3", n)
			}
			// A multi-shard UPDATE that fails on one shard changes nothing
			// anywhere (it ran in one distributed transaction).
			_, err = c.Exec(ctx, "UPDATE orders SET total = total / (CASE WHEN user_id = $1 THEN 0 ELSE 1 END), status = 'half' WHERE id BETWEEN $2 AND $3", u2, base, base+9)
			if pgCode(err) != "22012" {
				t.Fatalf("update failing on one shard: %v", err)
			}
			if n := count("status = 'half'"); n != 0 {
				t.Fatalf("failed multi-shard update left %d rows changed", n)
			}
			// A multi-row INSERT over shards with a duplicate key on one
			// shard inserts nothing.
			if _, err := c.Exec(ctx, "INSERT INTO users (id, name, email, city) VALUES ($1, 'a', 'a@x', 'dup')", u1); err != nil {
				t.Fatal(err)
			}
			_, err = c.Exec(ctx, "INSERT INTO users (id, name, email, city) VALUES ($1, 'b', 'b@x', 'dup'), ($2, 'c', 'c@x', 'dup'), ($3, 'd', 'd@x', 'dup')",
				u0, u2, u1)
			if pgCode(err) != "23505" {
				t.Fatalf("multi-row insert with a duplicate: %v", err)
			}
			var users int64
			if err := c.QueryRow(ctx, "SELECT count(*) FROM users WHERE city = 'dup'").Scan(&users); err != nil || users != 1 {
				t.Fatalf("failed multi-row insert left %d rows (%v)", users-1, err)
			}
			c.Exec(ctx, "DELETE FROM users WHERE city = 'dup'")
			// And without the duplicate it lands on every shard at once.
			tag, err := c.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES ($1, $2, 1, 1, 'multi'), ($3, $4, 1, 1, 'multi'), ($5, $6, 1, 1, 'multi')",
				base+10, u0, base+11, u1, base+12, u2)
			if err != nil || tag.String() != "INSERT 0 3" {
				t.Fatalf("multi-row insert: %q %v", tag, err)
			}
			// The example: a refused statement aborts the
			// transaction, COMMIT answers ROLLBACK and keeps nothing.
			tx, _ = c.Begin(ctx)
			tx.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES ($1, $2, 1, 22, 'pending')", base+20, u0)
			if _, err := tx.Exec(ctx, "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders"); pgCode(err) != "0A000" {
				t.Fatalf("refused statement: %v", err)
			}
			if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
				t.Fatalf("commit of a failed transaction: %v", err)
			}
			if n := count("id = $1", base+20); n != 0 {
				t.Fatalf("insert of a failed transaction committed")
			}
			noneLeft(t)
		})
	}
}

func TestDDLIsAtomicAcrossShards(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	if _, err := c.Exec(ctx, "CREATE TABLE ddl_atomic (id int)"); err != nil {
		t.Fatal(err)
	}
	defer c.Exec(ctx, "DROP TABLE IF EXISTS ddl_atomic")
	// A row on one shard violates the constraint: no shard keeps it.
	if err := shardExec(ctx, 2, "INSERT INTO ddl_atomic VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	_, err := c.Exec(ctx, "ALTER TABLE ddl_atomic ADD CONSTRAINT not42 CHECK (id <> 42)")
	if pgCode(err) != "23514" {
		t.Fatalf("constraint violated on one shard: %v", err)
	}
	for i := 0; i < nShards; i++ {
		if n := shardInt(t, i, "SELECT count(*) FROM pg_constraint WHERE conname = 'not42'"); n != 0 {
			t.Fatalf("shard %d kept the constraint", i)
		}
	}
	// CREATE INDEX CONCURRENTLY cannot be atomic: it runs shard by shard.
	if _, err := c.Exec(ctx, "CREATE INDEX CONCURRENTLY ddl_atomic_id ON ddl_atomic (id)"); err != nil {
		t.Fatalf("create index concurrently: %v", err)
	}
	for i := 0; i < nShards; i++ {
		if n := shardInt(t, i, "SELECT count(*) FROM pg_indexes WHERE indexname = 'ddl_atomic_id'"); n != 1 {
			t.Fatalf("shard %d lacks the index", i)
		}
	}
	noneLeft(t)
}

// crashPoints is how many randomized crash points TestTwoPhaseCrashRecovery
// runs: 200 in make test, more with SHARDPROXY_CRASH_POINTS (make stress).
func crashPoints() int {
	if n, err := strconv.Atoi(os.Getenv("SHARDPROXY_CRASH_POINTS")); err == nil && n > 0 {
		return n
	}
	return 200
}

// TestTwoPhaseCrashRecovery crashes a proxy at random points of two-phase
// commits (after the decider's lock, after some PREPAREs, after the
// decision, during COMMIT PREPARED) and checks that after recovery every
// transaction is all or nothing (all exactly when the decision was made),
// with no prepared transaction or lock left behind.
func TestTwoPhaseCrashRecovery(t *testing.T) {
	ctx := context.Background()
	// A deployment of its own (gid prefix): the shared proxy's recovery
	// leaves its transactions alone, so what recovers them is this test.
	cfg := env.cfg
	cfg.TwoPhase.GIDPrefix = "crashtest"
	cfg.Admins = []string{"app"}
	srv := proxytest.NewConfig(t, cfg, env.topo)
	addr := proxytest.Listen(t, srv)
	url := fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", addr)

	// Checks go over one connection per shard (opening one per check
	// would dominate the test's time).
	direct := make([]*pgx.Conn, nShards)
	for i := range direct {
		c, err := shardConn(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		direct[i] = c
	}
	sum := func(sql string, args ...any) int64 {
		t.Helper()
		var total int64
		for i, c := range direct {
			var n int64
			if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
				t.Fatalf("shard %d: %s: %v", i, sql, err)
			}
			total += n
		}
		return total
	}
	crash := errors.New("crash")
	points := []string{"locked", "prepared", "decided", "committing", "none"}
	rng := rand.New(rand.NewPCG(12, 34))
	n := crashPoints()
	seen := map[string]int{}
	for it := 0; it < n; it++ {
		point := points[rng.IntN(len(points))]
		k := 2 + rng.IntN(nShards-1) // shards written
		shards := rng.Perm(nShards)[:k]
		at := 0
		if point == "prepared" || point == "committing" {
			at = rng.IntN(k - 1)
		}
		calls := 0
		srv.SetFaultHook(func(p string, shard int) error {
			if p != point {
				return nil
			}
			calls++
			if calls-1 == at {
				return crash
			}
			return nil
		})
		marker := fmt.Sprintf("crash%d", it)
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for j, sh := range shards {
			u := userOn(sh, 630000+int64(it)*10)
			if _, err := tx.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES ($1, $2, 1, 1, $3)",
				int64(6300000+it*10+j), u, marker); err != nil {
				t.Fatal(err)
			}
		}
		err = tx.Commit(ctx)
		c.Close(ctx)
		if point == "none" {
			if err != nil {
				t.Fatalf("iteration %d: commit without a crash: %v", it, err)
			}
		} else if pgCode(err) != "08006" {
			t.Fatalf("iteration %d (%s): commit after a crash: %v", it, point, err)
		}
		srv.SetFaultHook(nil)
		if point == "decided" && seen[point] == 0 {
			// The admin console lists the transaction in doubt.
			admin, err := pgx.Connect(ctx, fmt.Sprintf("postgres://app:app@%s/shardproxy?sslmode=disable", addr))
			if err != nil {
				t.Fatal(err)
			}
			rows, err := admin.Query(ctx, "SHOW TRANSACTIONS", pgx.QueryExecModeSimpleProtocol)
			if err != nil {
				t.Fatal(err)
			}
			listed := 0
			for rows.Next() {
				listed++
			}
			rows.Close()
			if listed != k-1 {
				t.Fatalf("SHOW TRANSACTIONS lists %d prepared transactions, want %d", listed, k-1)
			}
			if tag, err := admin.Exec(ctx, "RECOVER", pgx.QueryExecModeSimpleProtocol); err != nil || !strings.HasPrefix(tag.String(), "RECOVER") {
				t.Fatalf("RECOVER: %q %v", tag, err)
			}
			admin.Close(ctx)
		}
		// Recovery: the shards notice the dropped connections (and release
		// the decider's lock) asynchronously, so run it until clean.
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := srv.Recover(ctx); err != nil {
				t.Fatalf("iteration %d: recover: %v", it, err)
			}
			left := sum("SELECT count(*) FROM pg_prepared_xacts")
			if left == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("iteration %d (%s): %d prepared transactions left after recovery", it, point, left)
			}
			time.Sleep(5 * time.Millisecond)
		}
		want := int64(0)
		if point == "decided" || point == "committing" || point == "none" {
			want = int64(k)
		}
		got := sum("SELECT count(*) FROM orders WHERE status = $1", marker)
		if got != want {
			t.Fatalf("iteration %d: crash at %s (participant %d) over shards %v: %d rows committed, want %d", it, point, at, shards, got, want)
		}
		seen[point]++
	}
	// Locks go when the shards notice the dropped connections.
	deadline := time.Now().Add(10 * time.Second)
	for {
		locks := sum("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1936750642")
		if locks == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d decision locks still held", locks)
		}
		time.Sleep(10 * time.Millisecond)
	}
	noneLeft(t)
	var parts []string
	for _, p := range points {
		parts = append(parts, fmt.Sprintf("%s=%d", p, seen[p]))
	}
	t.Logf("%d crash points: %s", n, strings.Join(parts, " "))
}

// TestShardKeyWrites: the ORM save and upsert patterns write the shard key
// with its unchanged value and work; a real change of the key moves the row
// to its new shard atomically.
func TestShardKeyWrites(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			c := connectMode(t, mode)
			base := int64(640000) + int64(mode)*1000
			u0, u1 := userOn(0, base), userOn(1, base)
			if _, err := c.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES ($1, $2, 1, 5, 'new')", base, u0); err != nil {
				t.Fatal(err)
			}
			// Django save(): every column, the key among them, by primary key.
			tag, err := c.Exec(ctx, "UPDATE orders SET user_id = $1, restaurant_id = $2, total = $3, status = $4 WHERE id = $5",
				u0, 2, 6, "saved", base)
			if err != nil || tag.String() != "UPDATE 1" {
				t.Fatalf("save: %q %v", tag, err)
			}
			// Inside a transaction too.
			tx, _ := c.Begin(ctx)
			if _, err := tx.Exec(ctx, "UPDATE orders SET user_id = $1, status = 'saved2' WHERE id = $2", u0, base); err != nil {
				t.Fatalf("save in a transaction: %v", err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			// A real change of the key moves the row to its new shard, in
			// one distributed transaction, with an ordinary UPDATE's count
			// and RETURNING.
			var ret int64
			err = c.QueryRow(ctx, "UPDATE orders SET user_id = $1, status = 'moved' WHERE id = $2 RETURNING user_id", u1, base).Scan(&ret)
			if err != nil || ret != u1 {
				t.Fatalf("moving a row: %d %v", ret, err)
			}
			onShard := func(sh int) int64 {
				return shardInt(t, sh, "SELECT count(*) FROM orders WHERE id = $1", base)
			}
			if onShard(0) != 0 || onShard(1) != 1 {
				t.Fatalf("after the move: %d rows on shard 0, %d on shard 1; want 0 and 1", onShard(0), onShard(1))
			}
			var status string
			var uid int64
			if err := c.QueryRow(ctx, "SELECT user_id, status FROM orders WHERE id = $1", base).Scan(&uid, &status); err != nil || uid != u1 || status != "moved" {
				t.Fatalf("row after the move: %d %q %v", uid, status, err)
			}
			// And back, inside a transaction that is then rolled back:
			// nothing moves.
			tx, _ = c.Begin(ctx)
			if tag, err := tx.Exec(ctx, "UPDATE orders SET user_id = $1 WHERE user_id = $2 AND id = $3", u0, u1, base); err != nil || tag.String() != "UPDATE 1" {
				t.Fatalf("move in a transaction: %q %v", tag, err)
			}
			tx.Rollback(ctx)
			if onShard(0) != 0 || onShard(1) != 1 {
				t.Fatalf("a rolled back move moved the row")
			}
			// Committed, it moves back.
			tx, _ = c.Begin(ctx)
			if _, err := tx.Exec(ctx, "UPDATE orders SET user_id = $1, status = 'saved2' WHERE user_id = $2 AND id = $3", u0, u1, base); err != nil {
				t.Fatalf("move in a transaction: %v", err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if onShard(0) != 1 || onShard(1) != 0 {
				t.Fatalf("a committed move left the row where it was")
			}
			// A range key too: an event moved from 2024 (shard 0) to 2026
			// (shard 3).
			eid := base + 7
			if _, err := c.Exec(ctx, "INSERT INTO events (id, kind, payload, created_at) VALUES ($1, 'mv', '{\"a\": 1}', '2024-05-01 00:00:00+00')", eid); err != nil {
				t.Fatal(err)
			}
			if tag, err := c.Exec(ctx, "UPDATE events SET created_at = '2026-03-01 00:00:00+00' WHERE id = $1", eid); err != nil || tag.String() != "UPDATE 1" {
				t.Fatalf("moving an event: %q %v", tag, err)
			}
			if a, b := shardInt(t, 0, "SELECT count(*) FROM events WHERE id = $1", eid), shardInt(t, 3, "SELECT count(*) FROM events WHERE id = $1 AND payload->>'a' = '1'", eid); a != 0 || b != 1 {
				t.Fatalf("after moving the event: %d on shard 0, %d on shard 3", a, b)
			}
			c.Exec(ctx, "DELETE FROM events WHERE id = $1", eid)
			// The key set by an expression cannot be placed: refused.
			if _, err := c.Exec(ctx, "UPDATE orders SET user_id = user_id + 1 WHERE id = $1", base); pgCode(err) != "0A000" {
				t.Fatalf("key set by an expression: %v", err)
			}
			// Sequelize upsert: ON CONFLICT DO UPDATE SET id = EXCLUDED.id.
			for i := 0; i < 2; i++ {
				if _, err := c.Exec(ctx, `INSERT INTO users (id, name, email, city) VALUES ($1, $2, 'u@x', 'up')
					ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id, name = EXCLUDED.name`, u1, fmt.Sprint("n", i)); err != nil {
					t.Fatalf("upsert %d: %v", i, err)
				}
			}
			var name string
			if err := c.QueryRow(ctx, "SELECT name FROM users WHERE id = $1", u1).Scan(&name); err != nil || name != "n1" {
				t.Fatalf("after upserts: %q %v", name, err)
			}
			c.Exec(ctx, "DELETE FROM users WHERE id = $1", u1)
			noneLeft(t)
		})
	}
}

// TestInsertWithoutColumnList: the proxy knows each sharded table's column
// order from the shards (at start and after DDL, in either protocol).
func TestInsertWithoutColumnList(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			c := connectMode(t, mode)
			base := int64(650000) + int64(mode)*1000
			u0, u3 := userOn(0, base), userOn(3, base)
			tag, err := c.Exec(ctx, "INSERT INTO users VALUES ($1, 'a', 'a@x', 'nocols'), ($2, 'b', 'b@x', 'nocols')", u0, u3)
			if err != nil || tag.String() != "INSERT 0 2" {
				t.Fatalf("insert without a column list: %q %v", tag, err)
			}
			if n := shardInt(t, 0, "SELECT count(*) FROM users WHERE id = $1", u0); n != 1 {
				t.Fatalf("row of user %d not on shard 0", u0)
			}
			if n := shardInt(t, 3, "SELECT count(*) FROM users WHERE id = $1", u3); n != 1 {
				t.Fatalf("row of user %d not on shard 3", u3)
			}
			c.Exec(ctx, "DELETE FROM users WHERE city = 'nocols'")
		})
	}
}

// TestPgbenchInitSharded runs `pgbench -i` through a proxy where
// pgbench_accounts is sharded on aid and branches and tellers are reference
// tables: its TRUNCATE of all four tables inside a transaction, its INSERTs
// and its COPY of the accounts commit on every shard together. Then
// `pgbench -S` reads through the proxy and every account sits where
// Postgres's hash partitioning puts it.
func TestPgbenchInitSharded(t *testing.T) {
	_, err := exec.LookPath("pgbench")
	requireTool(t, "pgbench", err == nil)
	var sb strings.Builder
	sb.WriteString("backend_roles: shared\nusers: [{name: app, password: app}]\npool: {size: 8}\nshards:\n")
	for i, dsn := range env.shards.DSNs() {
		fmt.Fprintf(&sb, "  - {name: s%d, dsn: %q}\n", i, dsn)
	}
	sb.WriteString(`tables:
  pgbench_accounts: {strategy: hash, key: aid}
  pgbench_branches: {strategy: reference}
  pgbench_tellers:  {strategy: reference}
`)
	url := fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", serveProxy(t, sb.String()))
	defer exec.Command("psql", url, "-c", "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history").Run()
	for round := 0; round < 2; round++ { // the second run truncates loaded tables
		if out, err := exec.Command("pgbench", "-i", "-s", "1", "-I", "dtgp", url).CombinedOutput(); err != nil {
			t.Fatalf("pgbench -i: %v\n%s", err, out)
		}
	}
	out, err := exec.Command("pgbench", "-n", "-S", "-M", "extended", "-c", "4", "-t", "100", url).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "number of failed transactions: 0") {
		t.Fatalf("pgbench -S: %v\n%s", err, out)
	}
	var total int64
	for i := 0; i < nShards; i++ {
		n := shardInt(t, i, "SELECT count(*) FROM pgbench_accounts")
		total += n
		if bad := shardInt(t, i, fmt.Sprintf("SELECT count(*) FROM pgbench_accounts WHERE NOT satisfies_hash_partition('hashcheck'::regclass, %d, %d, aid::bigint)", nShards, i)); bad != 0 {
			t.Fatalf("shard %d holds %d accounts of other shards", i, bad)
		}
		if b := shardInt(t, i, "SELECT count(*) FROM pgbench_branches"); b != 1 {
			t.Fatalf("shard %d has %d branches, want the reference copy (1)", i, b)
		}
	}
	if total != 100000 {
		t.Fatalf("%d accounts over the shards, want 100000", total)
	}
	noneLeft(t)
}

// TestWithoutPreparedTransactions: shards with max_prepared_transactions = 0
// cannot take part in two-phase commit. Writes on several shards are then
// refused with 0A000 and a hint naming the setting, before anything is
// written; writes on one shard work as before.
func TestWithoutPreparedTransactions(t *testing.T) {
	ctx := context.Background()
	set := localpg.StartT(t, localpg.Options{N: 2, Database: "nompt", Settings: map[string]string{"max_prepared_transactions": "0"}})
	var sb strings.Builder
	sb.WriteString("database: nompt\nbackend_roles: shared\nusers: [{name: app, auth: trust}]\nshards:\n")
	for i, c := range set.Clusters {
		fmt.Fprintf(&sb, "  - {name: s%d, dsn: %q}\n", i, c.DSN("nompt"))
	}
	sb.WriteString("tables:\n  kv: {strategy: hash, key: k}\n")
	c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://app@%s/nompt?sslmode=disable", serveProxy(t, sb.String())))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	// DDL on every shard is itself a write on several shards: create the
	// table on each shard directly.
	for _, cl := range set.Clusters {
		d, err := pgx.Connect(ctx, cl.DSN("nompt"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Exec(ctx, "CREATE TABLE kv (k bigint PRIMARY KEY, v int)"); err != nil {
			t.Fatal(err)
		}
		d.Close(ctx)
	}
	k0, k1 := int64(1), int64(2)
	for router.PartitionOf(router.HashInt(k1), 2) == router.PartitionOf(router.HashInt(k0), 2) {
		k1++
	}
	if _, err := c.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 1)", k0); err != nil {
		t.Fatalf("a write on one shard: %v", err)
	}
	_, err = c.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 1), ($2, 1)", k0+1000, k1)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "0A000" || !strings.Contains(pe.Message+pe.Hint, "max_prepared_transactions") {
		t.Fatalf("a write on two shards: %v, want 0A000 naming max_prepared_transactions", err)
	}
	tx, _ := c.Begin(ctx)
	tx.Exec(ctx, "UPDATE kv SET v = 2 WHERE k = $1", k0)
	if _, err := tx.Exec(ctx, "UPDATE kv SET v = 2 WHERE k = $1", k1); pgCode(err) != "0A000" {
		t.Fatalf("a transaction's second writing shard: %v", err)
	}
	tx.Rollback(ctx)
	var n int64
	if err := c.QueryRow(ctx, "SELECT count(*) FROM kv").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows after refusals: %d %v, want 1", n, err)
	}
}

// TestTwoPhaseShardStops stops a shard in each phase of a two-phase commit
// (its own two shards): a participant before its PREPARE, a participant
// after it (the commit stands and recovery finishes it once the shard is
// back), and the decider before the decision (recovery rolls the prepared
// participant back). Each transaction ends all or nothing.
func TestTwoPhaseShardStops(t *testing.T) {
	ctx := context.Background()
	set := localpg.StartT(t, localpg.Options{N: 2, Database: "stops"})
	var sb strings.Builder
	sb.WriteString("database: stops\nbackend_roles: shared\nusers: [{name: app, auth: trust}]\npool: {connect_timeout: 2s}\ntwo_phase: {recovery_interval: 1h}\nshards:\n")
	for i, c := range set.Clusters {
		fmt.Fprintf(&sb, "  - {name: s%d, dsn: %q}\n", i, c.DSN("stops"))
	}
	sb.WriteString("tables:\n  kv: {strategy: hash, key: k}\n")
	srv, addr := serveProxyServer(t, sb.String())
	url := fmt.Sprintf("postgres://app@%s/stops?sslmode=disable", addr)
	for _, cl := range set.Clusters {
		d, err := pgx.Connect(ctx, cl.DSN("stops"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Exec(ctx, "CREATE TABLE kv (k bigint PRIMARY KEY, tag text)"); err != nil {
			t.Fatal(err)
		}
		d.Close(ctx)
	}
	// Keys on shard 0 (the decider: the lowest writer) and shard 1.
	key := func(sh int, from int64) int64 {
		for k := from; ; k++ {
			if router.PartitionOf(router.HashInt(k), 2) == sh {
				return k
			}
		}
	}
	count := func(sh int, tag string) int64 {
		d, err := pgx.Connect(ctx, set.Clusters[sh].DSN("stops"))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close(ctx)
		var n int64
		if err := d.QueryRow(ctx, "SELECT count(*) FROM kv WHERE tag = $1", tag).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	cases := []struct {
		name, point string
		stop        int  // the shard stopped at point
		committed   bool // the outcome once recovered
	}{
		{"participant before PREPARE", "locked", 1, false},
		{"participant after PREPARE", "prepared", 1, true},
		{"decider before the decision", "prepared", 0, false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tag := fmt.Sprintf("stop%d", i)
			stopped := false
			srv.SetFaultHook(func(point string, shard int) error {
				if point == c.point && !stopped {
					stopped = true
					set.Clusters[c.stop].Stop()
				}
				return nil
			})
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			tx, _ := conn.Begin(ctx)
			for sh := 0; sh < 2; sh++ {
				if _, err := tx.Exec(ctx, "INSERT INTO kv (k, tag) VALUES ($1, $2)", key(sh, int64(100*(i+1))), tag); err != nil {
					t.Fatal(err)
				}
			}
			cerr := tx.Commit(ctx)
			conn.Close(ctx)
			srv.SetFaultHook(nil)
			if c.committed && cerr != nil {
				t.Fatalf("commit decided before the stop: %v", cerr)
			}
			if !c.committed && cerr == nil {
				t.Fatalf("commit succeeded although shard %d stopped before the decision", c.stop)
			}
			if err := set.Clusters[c.stop].Restart(ctx); err != nil {
				t.Fatal(err)
			}
			// The restarted shard's pool reconnects; recovery resolves what
			// was left prepared.
			deadline := time.Now().Add(20 * time.Second)
			for {
				srv.Recover(ctx)
				list := 0
				for sh := 0; sh < 2; sh++ {
					d, err := pgx.Connect(ctx, set.Clusters[sh].DSN("stops"))
					if err != nil {
						t.Fatal(err)
					}
					var n int
					d.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts").Scan(&n)
					d.Close(ctx)
					list += n
				}
				if list == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d prepared transactions left", list)
				}
				time.Sleep(100 * time.Millisecond)
			}
			want := int64(0)
			if c.committed {
				want = 1
			}
			if a, b := count(0, tag), count(1, tag); a != want || b != want {
				t.Fatalf("rows on shards 0 and 1: %d and %d, want %d each", a, b, want)
			}
		})
	}
}
