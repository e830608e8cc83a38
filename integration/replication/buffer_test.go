package replication

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestFailoverBuffer: while shard s0 has no writable primary (killed, not
// yet promoted), its writes wait up to failover_buffer and then fail with
// 08006, its reads keep going to the replica, and the other shard's
// writes are unaffected; a write waiting within a longer failover_buffer
// completes on the replica once it is promoted, with no error.
func TestFailoverBuffer(t *testing.T) {
	ctx := context.Background()
	prim, rep := primaryWithReplica(t, "buffer-r1")
	const health = "{interval: 100ms, timeout: 1s, failures: 2, successes: 1}"
	short := startProxyHealth(t, health, "replicas: {read_from: replicas, failover_buffer: 1s, read_your_writes: off}",
		dsnOf(prim), dsnOf(rep))
	long := startProxyHealth(t, health, "replicas: {read_from: replicas, failover_buffer: 60s, read_your_writes: off}",
		dsnOf(prim), dsnOf(rep))
	const write = "SELECT nextval('seq')::int * 0 + inet_server_port() FROM one"
	const read = "SELECT inet_server_port() FROM one"
	const other = "INSERT INTO kv (id, v) VALUES ($1, 'buffer') ON CONFLICT (id) DO UPDATE SET v = 'buffer' RETURNING inet_server_port()"
	var cs, cl []*pgx.Conn
	for _, m := range modes {
		cs = append(cs, connect(t, short, m.mode))
		cl = append(cl, connect(t, long, m.mode))
	}
	// An id of kv that lives on s1 (the other cluster).
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
	if err := prim.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{short, long} {
		waitFor(t, 20*time.Second, "primary marked down", func() bool {
			return showReplicas(t, addr)["s0"].state == "down"
		})
	}
	// The long buffer: writes wait (started now, finished after the
	// promotion).
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
			t.Fatalf("%s: write with no primary: %v, want 08006", m.name, err)
		}
		if waited := time.Since(start); waited < time.Second {
			t.Fatalf("%s: write failed after %v, before failover_buffer (1s)", m.name, waited)
		}
		// The session is usable; reads go on on the replica, the other
		// shard takes writes.
		if p := port(t, c, read); p != rep.Port {
			t.Fatalf("%s: read on port %d, want the replica %d", m.name, p, rep.Port)
		}
		if p := port(t, c, other, otherID); p != env.other.Port {
			t.Fatalf("%s: write on s1 ran on port %d, want %d", m.name, p, env.other.Port)
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

// TestServerMetrics: the per-server metrics of a replicated shard (role,
// write target, rotation, in flight, EWMA latency, leases routed) on a
// registry the test passes in.
func TestServerMetrics(t *testing.T) {
	addr, srv := startServer(t, "{interval: 100ms, timeout: 1s, failures: 2, successes: 1}",
		"replicas: {read_from: replicas, balance: round_robin, read_your_writes: off}",
		dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	reg := prometheus.NewRegistry()
	if err := srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	waitRotation(t, addr, "s0-r1", "s0-r2")
	c := connect(t, addr, pgx.QueryExecModeSimpleProtocol)
	reads(t, c, 10, "SELECT inet_server_port() FROM one")
	port(t, c, "SELECT nextval('seq')::int * 0 + inet_server_port() FROM one")
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]float64{} // metric -> server -> value
	for _, f := range fams {
		for _, m := range f.Metric {
			server := ""
			for _, l := range m.Label {
				if l.GetName() == "server" {
					server = l.GetValue()
				}
			}
			if server == "" {
				continue
			}
			if got[f.GetName()] == nil {
				got[f.GetName()] = map[string]float64{}
			}
			got[f.GetName()][server] = value(m)
		}
	}
	want := []struct {
		metric, server string
		ok             func(float64) bool
	}{
		{"shardproxy_server_up", "s0", eq(1)}, {"shardproxy_server_up", "s0-r1", eq(1)},
		{"shardproxy_server_primary", "s0", eq(1)}, {"shardproxy_server_primary", "s0-r1", eq(0)},
		{"shardproxy_server_write_target", "s0", eq(1)}, {"shardproxy_server_write_target", "s0-r2", eq(0)},
		{"shardproxy_server_in_rotation", "s0", eq(0)}, {"shardproxy_server_in_rotation", "s0-r1", eq(1)},
		{"shardproxy_server_in_flight", "s0-r1", eq(0)},
		{"shardproxy_server_routed_total", "s0-r1", atLeast(3)}, {"shardproxy_server_routed_total", "s0-r2", atLeast(3)},
		{"shardproxy_server_routed_total", "s0", atLeast(1)},
		{"shardproxy_server_latency_ewma_seconds", "s0-r1", func(v float64) bool { return v > 0 && v < 10 }},
		{"shardproxy_server_replay_lag_bytes", "s0-r2", func(v float64) bool { return v >= 0 }},
	}
	if n := got["shardproxy_server_routed_total"]["s0-r1"] + got["shardproxy_server_routed_total"]["s0-r2"]; n != 10 {
		t.Errorf("reads routed to the replicas: %v, want 10", n)
	}
	for _, w := range want {
		v, ok := got[w.metric][w.server]
		if !ok || !w.ok(v) {
			t.Errorf("%s{server=%q} = %v (present %v)", w.metric, w.server, v, ok)
		}
	}
}

func eq(x float64) func(float64) bool { return func(v float64) bool { return v == x } }

func atLeast(x float64) func(float64) bool { return func(v float64) bool { return v >= x } }

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return -1
}
