package replication

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/localpg"
)

// TestFailoverBufferDeadPrimaryDial: the primary dies and the health checks
// are far apart, so nothing has marked it down yet when the next writes
// come: their dial of the primary fails at once. Like writes to a primary
// marked down, they wait within failover_buffer (1s: then 08006, not at
// once; 60s: they complete on the replica once it is promoted), and the
// other shard's writes are not delayed meanwhile.
func TestFailoverBufferDeadPrimaryDial(t *testing.T) {
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
	rep, err := set.StartReplica(ctx, prim, "deaddial-r1")
	if err != nil {
		t.Fatal(err)
	}
	const health = "{interval: 60s, timeout: 1s, failures: 2, successes: 1}"
	short := startProxyHealth(t, health, "replicas: {read_from: replicas, failover_buffer: 1s, read_your_writes: off}",
		dsnOf(prim), dsnOf(rep))
	long := startProxyHealth(t, health, "replicas: {read_from: replicas, failover_buffer: 60s, read_your_writes: off}",
		dsnOf(prim), dsnOf(rep))
	const write = "SELECT nextval('seq')::int * 0 + inet_server_port() FROM one"
	const other = "INSERT INTO kv (id, v) VALUES ($1, 'deaddial') ON CONFLICT (id) DO UPDATE SET v = 'deaddial' RETURNING inet_server_port()"
	var cs, cl []*pgx.Conn
	for _, m := range modes {
		cs = append(cs, connect(t, short, m.mode))
		cl = append(cl, connect(t, long, m.mode))
	}
	otherID := int64(0)
	for id := int64(100); id < 200 && otherID == 0; id++ {
		if port(t, cs[0], other, id) == env.other.Port {
			otherID = id
		}
	}
	if otherID == 0 {
		t.Fatal("no kv id on s1 among 100..199")
	}
	waitRotation(t, short, "s0-r1")
	waitRotation(t, long, "s0-r1")
	for _, c := range append(append([]*pgx.Conn(nil), cs...), cl...) {
		if p := port(t, c, write); p != prim.Port { // the pools hold primary backends
			t.Fatalf("write before the kill on port %d, want %d", p, prim.Port)
		}
	}
	if err := prim.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{short, long} {
		if st := showReplicas(t, addr)["s0"].state; st == "down" {
			t.Fatalf("the primary is marked down already (%s): the case needs an unmarked dead primary", st)
		}
	}
	type outcome struct {
		port int
		err  error
	}
	waiting := make([]chan outcome, len(cl))
	for i, c := range cl {
		waiting[i] = make(chan outcome, 1)
		go func() {
			var p int
			err := c.QueryRow(ctx, write).Scan(&p)
			waiting[i] <- outcome{p, err}
		}()
	}
	for i, m := range modes {
		c := cs[i]
		start := time.Now()
		var p int
		err := c.QueryRow(ctx, write).Scan(&p)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "08006" {
			t.Fatalf("%s: write with a dead primary: port %d, %v; want 08006", m.name, p, err)
		}
		if waited := time.Since(start); waited < time.Second {
			t.Fatalf("%s: write failed after %v, before failover_buffer (1s): %v", m.name, waited, err)
		}
		start = time.Now()
		if p := port(t, c, other, otherID); p != env.other.Port {
			t.Fatalf("%s: write on s1 ran on port %d, want %d", m.name, p, env.other.Port)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("%s: write on s1 took %v while s0 has no primary", m.name, d)
		}
	}
	for i, m := range modes {
		select {
		case o := <-waiting[i]:
			t.Fatalf("%s: a write within a 60s failover_buffer ended before the promotion: %+v", m.name, o)
		default:
		}
	}
	if err := rep.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	for i, m := range modes {
		select {
		case o := <-waiting[i]:
			if o.err != nil || o.port != rep.Port {
				t.Fatalf("%s: waiting write after the promotion: port %d, %v; want the promoted server %d", m.name, o.port, o.err, rep.Port)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: waiting write still blocked a minute after the promotion", m.name)
		}
	}
}
