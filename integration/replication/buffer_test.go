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

	"github.com/shardproxy/shardproxy/localpg"
)

// TestFailoverBuffer: while shard s0 has no writable primary (killed, not
// yet promoted), its writes wait up to failover_buffer and then fail with
// 08006, its reads keep going to the replica, and the other shard's
// writes are unaffected; a write waiting within a longer failover_buffer
// completes on the replica once it is promoted, with no error.
func TestFailoverBuffer(t *testing.T) {
	ctx := context.Background()
	b := newBufferCase(t, "buffer-r1", "{interval: 100ms, timeout: 1s, failures: 2, successes: 1}")
	if err := b.prim.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{b.short, b.long} {
		waitFor(t, 20*time.Second, "primary marked down", func() bool {
			return showReplicas(t, addr)["s0"].state == "down"
		})
	}
	waiting := b.startWaiting(ctx)
	b.shortWritesFail(t, ctx, func(m string, c *pgx.Conn) {
		// The session is usable; reads go on on the replica.
		if p := port(t, c, "SELECT inet_server_port() FROM one"); p != b.rep.Port {
			t.Fatalf("%s: read on port %d, want the replica %d", m, p, b.rep.Port)
		}
	})
	b.promoteAndFinish(t, ctx, waiting)
}

// bufferCase is shard s0 (a primary with one replica) behind two proxies,
// one with a 1s failover_buffer and one with 60s, a connection to each per
// protocol mode, and an id of kv that lives on s1 (the other cluster).
type bufferCase struct {
	prim, rep   *localpg.Cluster
	short, long string
	cs, cl      []*pgx.Conn
	otherID     int64
}

// bufferWrite writes on s0 and answers the port that took the write.
const bufferWrite = "SELECT nextval('seq')::int * 0 + inet_server_port() FROM one"

// bufferOther writes the kv row $1 and answers the port that took it.
const bufferOther = "INSERT INTO kv (id, v) VALUES ($1, 'buffer') ON CONFLICT (id) DO UPDATE SET v = 'buffer' RETURNING inet_server_port()"

func newBufferCase(t *testing.T, replica, health string) *bufferCase {
	t.Helper()
	b := &bufferCase{}
	b.prim, b.rep = primaryWithReplica(t, replica)
	b.short = startProxyHealth(t, health, "replicas: {read_from: replicas, failover_buffer: 1s, read_your_writes: off}",
		dsnOf(b.prim), dsnOf(b.rep))
	b.long = startProxyHealth(t, health, "replicas: {read_from: replicas, failover_buffer: 60s, read_your_writes: off}",
		dsnOf(b.prim), dsnOf(b.rep))
	for _, m := range modes {
		b.cs = append(b.cs, connect(t, b.short, m.mode))
		b.cl = append(b.cl, connect(t, b.long, m.mode))
	}
	for id := int64(100); id < 200 && b.otherID == 0; id++ {
		if port(t, b.cs[0], bufferOther, id) == env.other.Port {
			b.otherID = id
		}
	}
	if b.otherID == 0 {
		t.Fatal("no kv id on s1 among 100..199")
	}
	waitRotation(t, b.short, "s0-r1")
	waitRotation(t, b.long, "s0-r1")
	return b
}

type bufferOutcome struct {
	port int
	err  error
}

// startWaiting sends a write on s0 through each of the long buffer's
// connections; they are to finish after the promotion.
func (b *bufferCase) startWaiting(ctx context.Context) []chan bufferOutcome {
	waiting := make([]chan bufferOutcome, len(b.cl))
	for i, c := range b.cl {
		waiting[i] = make(chan bufferOutcome, 1)
		go func() {
			var p int
			err := c.QueryRow(ctx, bufferWrite).Scan(&p)
			waiting[i] <- bufferOutcome{p, err}
		}()
	}
	return waiting
}

// shortWritesFail checks that a write on s0 through the short buffer fails
// with 08006, not before the buffer's 1s, that the session then runs check
// and writes on s1 at once.
func (b *bufferCase) shortWritesFail(t *testing.T, ctx context.Context, check func(mode string, c *pgx.Conn)) {
	t.Helper()
	for i, m := range modes {
		c := b.cs[i]
		start := time.Now()
		var p int
		err := c.QueryRow(ctx, bufferWrite).Scan(&p)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "08006" {
			t.Fatalf("%s: write with no primary: port %d, %v; want 08006", m.name, p, err)
		}
		if waited := time.Since(start); waited < time.Second {
			t.Fatalf("%s: write failed after %v, before failover_buffer (1s): %v", m.name, waited, err)
		}
		if check != nil {
			check(m.name, c)
		}
		start = time.Now()
		if p := port(t, c, bufferOther, b.otherID); p != env.other.Port {
			t.Fatalf("%s: write on s1 ran on port %d, want %d", m.name, p, env.other.Port)
		}
		if d := time.Since(start); d >= time.Second {
			t.Fatalf("%s: write on s1 took %v while s0 has no primary: it waited like s0's writes", m.name, d)
		}
	}
}

// promoteAndFinish checks that the waiting writes are still waiting,
// promotes the replica, and checks that they complete on it.
func (b *bufferCase) promoteAndFinish(t *testing.T, ctx context.Context, waiting []chan bufferOutcome) {
	t.Helper()
	for i, m := range modes {
		select {
		case o := <-waiting[i]:
			t.Fatalf("%s: a write within a 60s failover_buffer ended before the promotion: %+v", m.name, o)
		default:
		}
	}
	if err := b.rep.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	for i, m := range modes {
		select {
		case o := <-waiting[i]:
			if o.err != nil || o.port != b.rep.Port {
				t.Fatalf("%s: waiting write after the promotion: port %d, %v; want the promoted server %d", m.name, o.port, o.err, b.rep.Port)
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
