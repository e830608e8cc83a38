package localpg

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestReplica: StartReplica streams from the primary (hot standby, in
// recovery, sees the primary's writes) and Promote makes it a primary.
func TestReplica(t *testing.T) {
	ctx := context.Background()
	set, err := Start(ctx, Options{N: 1, Database: "probe"})
	if err != nil {
		if InCI() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	defer set.Stop()
	prim := set.Clusters[0]
	exec := func(c *Cluster, sql string) {
		t.Helper()
		conn, err := pgx.Connect(ctx, c.DSN("probe"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %s: %v", c.Name, sql, err)
		}
	}
	scalar := func(c *Cluster, sql string) string {
		t.Helper()
		conn, err := pgx.Connect(ctx, c.DSN("probe"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var v string
		if err := conn.QueryRow(ctx, sql).Scan(&v); err != nil {
			t.Fatalf("%s: %s: %v", c.Name, sql, err)
		}
		return v
	}
	exec(prim, "CREATE TABLE t (x int)")
	rep, err := set.StartReplica(ctx, prim, "shard0-r1")
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Clusters) != 2 || rep.Port == prim.Port {
		t.Fatalf("replica not added to the set: %d clusters, ports %d %d", len(set.Clusters), prim.Port, rep.Port)
	}
	if got := scalar(rep, "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Fatalf("replica in recovery: %s", got)
	}
	exec(prim, "INSERT INTO t VALUES (42)")
	deadline := time.Now().Add(10 * time.Second)
	for scalar(rep, "SELECT count(*)::text FROM t") != "1" {
		if time.Now().After(deadline) {
			t.Fatal("the replica never saw the primary's insert")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := rep.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if got := scalar(rep, "SELECT pg_is_in_recovery()::text"); got != "false" {
		t.Fatalf("promoted replica still in recovery")
	}
	exec(rep, "INSERT INTO t VALUES (43)")
}
