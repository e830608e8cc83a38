package integration

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// locksHeld counts the locks of mode on relation held on shard i.
func locksHeld(t *testing.T, i int, relation, mode string) int64 {
	t.Helper()
	return shardInt(t, i, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND c.relname = $1 AND l.mode = $2", relation, mode)
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// TestLockTable: LOCK outside a transaction fails with 25P01 as in
// Postgres; inside one it takes the lock on every shard holding the table
// (all shards for sharded and reference tables, the default shard for
// tables not in the config) until the transaction ends; a LOCK of a
// missing table fails the transaction with 42P01.
func TestLockTable(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	if _, err := c.Exec(ctx, "LOCK TABLE users IN ACCESS SHARE MODE"); sqlState(err) != "25P01" {
		t.Fatalf("LOCK outside a transaction: %v, want 25P01", err)
	}
	if err := shardExec(ctx, env.topo.Default, "CREATE TABLE IF NOT EXISTS lock_unlisted (x int)"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"BEGIN", "LOCK users IN SHARE ROW EXCLUSIVE MODE", "LOCK TABLE restaurants, orders IN EXCLUSIVE MODE NOWAIT", "LOCK lock_unlisted"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for i := 0; i < nShards; i++ {
		for _, l := range []struct{ rel, mode string }{{"users", "ShareRowExclusiveLock"}, {"restaurants", "ExclusiveLock"}, {"orders", "ExclusiveLock"}} {
			if n := locksHeld(t, i, l.rel, l.mode); n != 1 {
				t.Errorf("shard %d: %d %s locks on %s, want 1", i, n, l.mode, l.rel)
			}
		}
		want := int64(0)
		if i == env.topo.Default {
			want = 1
		}
		if n := locksHeld(t, i, "lock_unlisted", "AccessExclusiveLock"); n != want {
			t.Errorf("shard %d: %d locks on lock_unlisted, want %d", i, n, want)
		}
	}
	if _, err := c.Exec(ctx, "LOCK users, lock_unlisted"); sqlState(err) != "0A000" {
		t.Errorf("LOCK of a sharded and an unlisted table: %v, want 0A000", err)
	}
	if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < nShards; i++ {
		if n := locksHeld(t, i, "users", "ShareRowExclusiveLock"); n != 0 {
			t.Errorf("shard %d: the lock outlived the transaction", i)
		}
	}
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "LOCK no_such_table"); sqlState(err) != "42P01" {
		t.Errorf("LOCK of a missing table: %v, want 42P01", err)
	}
	if _, err := c.Exec(ctx, "SELECT 1"); sqlState(err) != "25P02" {
		t.Errorf("after a failed LOCK: %v, want 25P02", err)
	}
	if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Fatalf("session unusable after LOCK errors: %v", err)
	}
}

// TestSQLPrepare: SQL PREPARE/EXECUTE is the session's (it outlives
// transactions, even rolled-back ones, as in Postgres), whether the query
// names sharded tables or not, and whether it runs on one shard or on
// several (proxy/sqlprepare.go; TestSQLPrepareMatchesPostgres compares
// with one Postgres).
func TestSQLPrepare(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	if _, err := c.Exec(ctx, "PREPARE outside AS SELECT 1"); err != nil {
		t.Fatalf("PREPARE outside a transaction: %v", err)
	}
	var one int
	if err := c.QueryRow(ctx, "EXECUTE outside").Scan(&one); err != nil || one != 1 {
		t.Fatalf("EXECUTE outside: %d, %v", one, err)
	}
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "PREPARE rels(name) AS SELECT count(*) FROM pg_catalog.pg_class WHERE relname = $1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "PREPARE one_user AS SELECT count(*) FROM users WHERE id = 42"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		var n int64
		if err := c.QueryRow(ctx, "EXECUTE rels('users')").Scan(&n); err != nil || n != 1 {
			t.Fatalf("EXECUTE: %d, %v", n, err)
		}
		if err := c.QueryRow(ctx, "EXECUTE one_user").Scan(&n); err != nil {
			t.Fatalf("EXECUTE one_user: %d, %v", n, err)
		}
	}
	if _, err := c.Exec(ctx, "PREPARE everywhere AS SELECT count(*) FROM users"); err != nil {
		t.Errorf("PREPARE of a scatter query: %v", err)
	}
	if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := c.QueryRow(ctx, "EXECUTE rels('users')").Scan(&n); err != nil || n != 1 {
		t.Errorf("EXECUTE after a rolled-back transaction: %d, %v (Postgres keeps it)", n, err)
	}
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	var all, plain int64
	if err := c.QueryRow(ctx, "EXECUTE everywhere").Scan(&all); err != nil {
		t.Errorf("EXECUTE of a scatter query after the transaction ended: %v", err)
	}
	if err := c.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&plain); err != nil || all != plain {
		t.Errorf("EXECUTE everywhere: %d, the query itself: %d (%v)", all, plain, err)
	}
	if _, err := c.Exec(ctx, "EXECUTE one_user"); err != nil {
		t.Errorf("EXECUTE of a sharded one after the transaction ended: %v", err)
	}
	if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "DEALLOCATE ALL"); err != nil {
		t.Fatal(err)
	}
}
