package replication

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/localpg"
)

// TestRetry25006: the primary is stopped, its replica promoted, and the
// old primary rejoins as a replica of it, while the proxy's health checks
// are far apart and have seen none of it. A write then meets 25006 on the
// old primary: the proxy re-probes, moves writes to the promoted server
// and runs the statement again there: in the extended protocol, the
// request replayed with its prepared statement. (The simple protocol's
// retry is older; here its write just follows.)
func TestRetry25006(t *testing.T) {
	ctx := context.Background()
	set, err := localpg.Start(ctx, localpg.Options{N: 1, Database: database})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Stop()
	prim := set.Clusters[0]
	if err := schema(ctx, prim.DSN(database)); err != nil {
		t.Fatal(err)
	}
	rep, err := set.StartReplica(ctx, prim, "retry-r1")
	if err != nil {
		t.Fatal(err)
	}
	addr := startProxyHealth(t, "{interval: 1h, timeout: 2s, failures: 1, successes: 1}",
		"replicas: {read_from: replicas, failover_buffer: 15s, read_your_writes: off}", dsnOf(prim), dsnOf(rep))
	waitRotation(t, addr, "s0-r1")
	const write = "SELECT nextval('seq')::int * 0 + inet_server_port() FROM one"
	clients := map[string]*pgx.Conn{}
	for _, m := range modes {
		c := connect(t, addr, m.mode)
		if p := port(t, c, write); p != prim.Port {
			t.Fatalf("%s: write on port %d before the failover, want the primary %d", m.name, p, prim.Port)
		}
		clients[m.name] = c
	}
	if err := prim.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := rep.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := prim.Follow(ctx, rep); err != nil {
		t.Fatal(err)
	}
	// The old primary is up, read-only: a direct write there gets 25006.
	waitFor(t, 20*time.Second, "old primary in recovery", func() bool {
		c, err := pgx.Connect(ctx, prim.DSN(database))
		if err != nil {
			return false
		}
		defer c.Close(ctx)
		var rec bool
		return c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec) == nil && rec
	})
	if r := showReplicas(t, addr)["s0"]; !r.writes {
		t.Fatalf("the proxy already moved writes (no 25006 to retry): %+v", r)
	}
	// Extended first: its statement is prepared on the old primary's
	// backends only.
	for _, name := range []string{"extended", "simple"} {
		start := time.Now()
		var p int
		if err := clients[name].QueryRow(ctx, write).Scan(&p); err != nil {
			t.Fatalf("%s: write after the failover: %v", name, err)
		}
		if p != rep.Port {
			t.Fatalf("%s: write on port %d, want the promoted server %d", name, p, rep.Port)
		}
		t.Logf("%s: write on the new primary after %v", name, time.Since(start).Round(time.Millisecond))
	}
	if r := showReplicas(t, addr)["s0-r1"]; !r.writes {
		t.Fatalf("writes not on the promoted server: %+v", r)
	}
}
