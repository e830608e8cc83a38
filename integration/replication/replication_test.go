package replication

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/localpg"
)

// reads runs n reads of the server's port and counts them by port.
func reads(t *testing.T, c *pgx.Conn, n int, sql string) map[int]int {
	t.Helper()
	out := map[int]int{}
	for i := 0; i < n; i++ {
		out[port(t, c, sql)]++
	}
	return out
}

// TestRouting: reads outside transactions go to the replicas (round robin,
// evenly); writes, nextval(), FOR UPDATE, transactions and a function
// that writes run on the primary: no write ever lands on a replica.
func TestRouting(t *testing.T) {
	addr := startProxy(t, "replicas: {read_from: replicas, balance: round_robin, read_your_writes: -1s}",
		dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	waitRotation(t, addr, "s0-r1", "s0-r2")
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := connect(t, addr, m.mode)
			got := reads(t, c, 200, "SELECT inet_server_port() FROM one")
			if got[env.r1.Port]+got[env.r2.Port] != 200 || got[env.r1.Port] < 80 || got[env.r2.Port] < 80 {
				t.Fatalf("reads by port %v: want all on replicas %d and %d, evenly", got, env.r1.Port, env.r2.Port)
			}
			// Writes: every one on a primary (s0's or s1's).
			for id := int64(1); id <= 20; id++ {
				p := port(t, c, "INSERT INTO kv (id, v) VALUES ($1, 'w') ON CONFLICT (id) DO UPDATE SET v = 'w2' RETURNING inet_server_port()", id)
				if p != env.primary.Port && p != env.other.Port {
					t.Fatalf("write of id %d ran on port %d, not a primary", id, p)
				}
			}
			for _, q := range []string{
				"SELECT count(*)::int * 0 + inet_server_port() FROM kv WHERE id = 1",
				"SELECT count(*)::int * 0 + inet_server_port() FROM kv WHERE id = 2",
			} {
				if p := port(t, c, q); p != env.r1.Port && p != env.r2.Port && p != env.other.Port {
					t.Fatalf("%s ran on port %d, not a replica (nor s1)", q, p)
				}
			}
			for _, q := range []string{
				"SELECT nextval('seq')::int * 0 + inet_server_port() FROM one",
				"SELECT inet_server_port() FROM kv WHERE id = 1 FOR UPDATE",
				"SELECT inet_server_port() FROM kv WHERE id = 2 FOR SHARE",
				"WITH x AS (UPDATE one SET x = 1 RETURNING 1) SELECT inet_server_port() FROM one",
				"SELECT inet_server_port() FROM pg_advisory_xact_lock(1)",
			} {
				if p := port(t, c, q); p != env.primary.Port && p != env.other.Port {
					t.Errorf("%s ran on port %d, want a primary", q, p)
				}
			}
			// Reads across shards: s0's part on a replica; writes across
			// shards on the primaries. The replicas first replay the
			// writes above (replication is asynchronous).
			caughtUp(t)
			for _, q := range []struct {
				sql     string
				allowed []int
			}{
				{"SELECT inet_server_port() FROM kv", []int{env.r1.Port, env.r2.Port, env.other.Port}},
				{"UPDATE kv SET v = v RETURNING inet_server_port()", []int{env.primary.Port, env.other.Port}},
			} {
				// Every row from an allowed server, each shard's part from
				// one (a loaded machine can leave a replica's part empty for
				// a moment after the wait above: asked again, briefly).
				var seen map[int]int
				for attempt := 0; attempt < 20; attempt++ {
					rows, err := c.Query(context.Background(), q.sql)
					if err != nil {
						t.Fatal(err)
					}
					ports, err := pgx.CollectRows(rows, pgx.RowTo[int32])
					if err != nil {
						t.Fatalf("%s: %v", q.sql, err)
					}
					seen = map[int]int{}
					for _, p := range ports {
						if !slices.Contains(q.allowed, int(p)) {
							t.Fatalf("%s: a row from port %d, want only %v", q.sql, p, q.allowed)
						}
						seen[int(p)]++
					}
					if len(seen) == 2 {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if len(seen) != 2 {
					t.Fatalf("%s: rows by port %v, want one server per shard (allowed %v)", q.sql, seen, q.allowed)
				}
			}
			// A transaction (even one that only reads) stays on the primary.
			ctx := context.Background()
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var p int
			if err := tx.QueryRow(ctx, "SELECT inet_server_port() FROM one").Scan(&p); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if p != env.primary.Port {
				t.Fatalf("read in a transaction ran on port %d, want the primary", p)
			}
		})
	}
	// A function the proxy cannot see into writes: the replica refuses it
	// with 25006 and the proxy runs it again on the primary (simple
	// protocol; see docs/operations.md for the extended protocol).
	c := connect(t, addr, pgx.QueryExecModeSimpleProtocol)
	if p := port(t, c, "SELECT bump(1000) FROM one"); p != env.primary.Port {
		t.Fatalf("bump() ran on port %d, want the primary", p)
	}
}

// TestReadFromPrimary: read_from primary keeps reads there; any spreads
// them over the primary and the replicas.
func TestReadFromPrimary(t *testing.T) {
	addr := startProxy(t, "replicas: {read_from: primary}", dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	c := connect(t, addr, pgx.QueryExecModeSimpleProtocol)
	if got := reads(t, c, 20, "SELECT inet_server_port() FROM one"); got[env.primary.Port] != 20 {
		t.Fatalf("read_from primary: reads by port %v", got)
	}
	addr = startProxy(t, "replicas: {read_from: any, read_your_writes: -1s}", dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	waitRotation(t, addr, "s0-r1", "s0-r2")
	c = connect(t, addr, pgx.QueryExecModeSimpleProtocol)
	got := reads(t, c, 150, "SELECT inet_server_port() FROM one")
	for _, p := range []int{env.primary.Port, env.r1.Port, env.r2.Port} {
		if got[p] < 30 {
			t.Fatalf("read_from any: reads by port %v, want each server about a third", got)
		}
	}
}

// TestReadFromUser: a user's read_from overrides the proxy's, both ways.
func TestReadFromUser(t *testing.T) {
	addr := startProxy(t, "users: [{name: app, auth: trust}, {name: prim, auth: trust, read_from: primary}]\n"+
		"replicas: {read_from: replicas, read_your_writes: off}", dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	waitRotation(t, addr, "s0-r1", "s0-r2")
	for _, m := range modes {
		app := connectAs(t, addr, "app", m.mode)
		if got := reads(t, app, 20, "SELECT inet_server_port() FROM one"); got[env.r1.Port]+got[env.r2.Port] != 20 {
			t.Fatalf("%s: proxy read_from replicas: reads by port %v", m.name, got)
		}
		prim := connectAs(t, addr, "prim", m.mode)
		if got := reads(t, prim, 20, "SELECT inet_server_port() FROM one"); got[env.primary.Port] != 20 {
			t.Fatalf("%s: user read_from primary: reads by port %v", m.name, got)
		}
	}
	addr = startProxy(t, "users: [{name: app, auth: trust}, {name: rep, auth: trust, read_from: replicas}]\n"+
		"replicas: {read_from: primary, read_your_writes: off}", dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	waitRotation(t, addr, "s0-r1", "s0-r2")
	rep := connectAs(t, addr, "rep", pgx.QueryExecModeSimpleProtocol)
	if got := reads(t, rep, 20, "SELECT inet_server_port() FROM one"); got[env.r1.Port]+got[env.r2.Port] != 20 {
		t.Fatalf("user read_from replicas under a proxy on primary: reads by port %v", got)
	}
}

// TestWeighted: weights 1 and 3 split reads 25/75 (within tolerance).
func TestWeighted(t *testing.T) {
	r2 := dsnOf(env.r2)
	r2.weight = 3
	addr := startProxy(t, "replicas: {read_from: replicas, balance: weighted, read_your_writes: -1s}",
		dsnOf(env.primary), dsnOf(env.r1), r2)
	waitRotation(t, addr, "s0-r1", "s0-r2")
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := connect(t, addr, m.mode)
			const n = 800
			got := reads(t, c, n, "SELECT inet_server_port() FROM one")
			share := float64(got[env.r2.Port]) / n
			if got[env.r1.Port]+got[env.r2.Port] != n || math.Abs(share-0.75) > 0.07 {
				t.Fatalf("reads by port %v: r2's share %.2f, want 0.75 +- 0.07", got, share)
			}
		})
	}
}

// TestLeastConnections: while one replica runs a long read, the next
// reads all go to the other one (round robin would alternate). The long
// read lasts until the test cancels it, so a slow machine cannot end it
// before the other reads are done.
func TestLeastConnections(t *testing.T) {
	addr := startProxy(t, "replicas: {read_from: replicas, balance: least_connections, read_your_writes: -1s}",
		dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	waitRotation(t, addr, "s0-r1", "s0-r2")
	slow := connect(t, addr, pgx.QueryExecModeSimpleProtocol)
	fast := connect(t, addr, pgx.QueryExecModeSimpleProtocol)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		var p int
		slow.QueryRow(ctx, "SELECT inet_server_port() FROM one, pg_sleep(30)").Scan(&p)
	}()
	defer func() {
		// A CancelRequest through the proxy ends the long read.
		slow.PgConn().CancelRequest(context.Background())
		cancel()
		<-done
	}()
	busy := ""
	waitFor(t, 10*time.Second, "the long read in flight on a replica", func() bool {
		rows := showReplicas(t, addr)
		for _, name := range []string{"s0-r1", "s0-r2"} {
			if rows[name].inFlight == 1 {
				busy = name
				return true
			}
		}
		return false
	})
	busyPort, otherPort := env.r1.Port, env.r2.Port
	if busy == "s0-r2" {
		busyPort, otherPort = otherPort, busyPort
	}
	got := reads(t, fast, 20, "SELECT inet_server_port() FROM one")
	if got[otherPort] != 20 {
		t.Fatalf("reads while port %d was busy: %v, want all on the other replica %d", busyPort, got, otherPort)
	}
	if r := showReplicas(t, addr)[busy]; r.inFlight != 1 {
		t.Fatalf("the long read ended before the other reads did: %+v", r)
	}
}

// TestFastestResponse: reads move away from a replica behind a link that
// adds 15ms to every reply.
func TestFastestResponse(t *testing.T) {
	slowAddr := delayRelay(t, fmt.Sprintf("127.0.0.1:%d", env.r1.Port), 15*time.Millisecond)
	slow := server{dsn: fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", slowAddr, database)}
	addr := startProxy(t, "replicas: {read_from: replicas, balance: fastest_response, read_your_writes: -1s}",
		dsnOf(env.primary), slow, dsnOf(env.r2))
	waitRotation(t, addr, "s0-r1", "s0-r2")
	c := connect(t, addr, pgx.QueryExecModeSimpleProtocol)
	reads(t, c, 20, "SELECT inet_server_port() FROM one") // both get samples
	got := reads(t, c, 200, "SELECT inet_server_port() FROM one")
	if got[env.r2.Port] < 180 {
		t.Fatalf("reads by port %v: want at least 90%% on the fast replica %d", got, env.r2.Port)
	}
}

// TestLag: a replica whose replay is paused falls out of rotation once it
// is max_lag_bytes behind, and is back when it catches up; with every
// replica out, reads go to the primary.
func TestLag(t *testing.T) {
	addr := startProxy(t, "replicas: {read_from: replicas, max_lag_bytes: 65536, read_your_writes: -1s}",
		dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	waitRotation(t, addr, "s0-r1", "s0-r2")
	ctx := context.Background()
	t.Cleanup(func() {
		for _, r := range []*localpg.Cluster{env.r1, env.r2} {
			exec(t, r, "SELECT pg_wal_replay_resume()")
		}
	})
	fill := func() {
		exec(t, env.primary, "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 300)")
	}
	exec(t, env.r1, "SELECT pg_wal_replay_pause()")
	fill()
	waitRotation(t, addr, "s0-r2")
	if lag := showReplicas(t, addr)["s0-r1"].lagBytes; lag <= 65536 {
		t.Fatalf("r1 out of rotation with lag_bytes %d", lag)
	}
	c := connect(t, addr, pgx.QueryExecModeSimpleProtocol)
	if got := reads(t, c, 20, "SELECT inet_server_port() FROM one"); got[env.r2.Port] != 20 {
		t.Fatalf("reads with r1 lagging: %v, want all on r2", got)
	}
	exec(t, env.r2, "SELECT pg_wal_replay_pause()")
	fill()
	waitRotation(t, addr)
	if got := reads(t, c, 20, "SELECT inet_server_port() FROM one"); got[env.primary.Port] != 20 {
		t.Fatalf("reads with every replica lagging: %v, want all on the primary", got)
	}
	for _, r := range []*localpg.Cluster{env.r1, env.r2} {
		exec(t, r, "SELECT pg_wal_replay_resume()")
	}
	waitRotation(t, addr, "s0-r1", "s0-r2")
	_ = ctx
}

// TestLagTime: with max_lag (time) and no byte limit, a replica whose
// replay is paused behind received WAL falls out of rotation once its
// last replayed transaction is max_lag old, shows that lag in SHOW
// REPLICAS, and is back when replay resumes.
func TestLagTime(t *testing.T) {
	addr := startProxy(t, "replicas: {read_from: replicas, max_lag: 1s, max_lag_bytes: -1, read_your_writes: off}",
		dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	waitRotation(t, addr, "s0-r1", "s0-r2")
	t.Cleanup(func() { exec(t, env.r1, "SELECT pg_wal_replay_resume()") })
	// A transaction replayed first: lag in time counts from the last one
	// (pg_last_xact_replay_timestamp() is null before any).
	exec(t, env.primary, "INSERT INTO filler VALUES ('lag-time-0')")
	caughtUp(t)
	exec(t, env.r1, "SELECT pg_wal_replay_pause()")
	exec(t, env.primary, "INSERT INTO filler VALUES ('lag-time')")
	waitRotation(t, addr, "s0-r2")
	var lag float64
	waitFor(t, 10*time.Second, "r1 lagging with lag_seconds over 1", func() bool {
		r := showReplicas(t, addr)["s0-r1"]
		lag = r.lagSeconds
		return r.state == "lagging" && r.lagSeconds >= 1
	})
	c := connect(t, addr, pgx.QueryExecModeSimpleProtocol)
	if got := reads(t, c, 10, "SELECT inet_server_port() FROM one"); got[env.r2.Port] != 10 {
		t.Fatalf("reads with r1 %.1fs behind: %v, want all on r2", lag, got)
	}
	exec(t, env.r1, "SELECT pg_wal_replay_resume()")
	waitRotation(t, addr, "s0-r1", "s0-r2")
}

// TestStoppedReplica: reads keep working while a replica stops (none
// fails), go to the other one, and the replica is back once restarted.
func TestStoppedReplica(t *testing.T) {
	addr := startProxy(t, "replicas: {read_from: replicas, read_your_writes: -1s}",
		dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	waitRotation(t, addr, "s0-r1", "s0-r2")
	stop := make(chan struct{})
	var failed [2]atomic.Int64
	var firstErr atomic.Pointer[string]
	var wg sync.WaitGroup
	for i, m := range modes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := connect(t, addr, m.mode)
			for {
				select {
				case <-stop:
					return
				default:
				}
				var p int
				if err := c.QueryRow(context.Background(), "SELECT inet_server_port() FROM one").Scan(&p); err != nil {
					failed[i].Add(1)
					s := err.Error()
					firstErr.CompareAndSwap(nil, &s)
					if c.IsClosed() {
						c = connect(t, addr, m.mode)
					}
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if err := env.r2.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.r2.Restart(context.Background()) })
	waitRotation(t, addr, "s0-r1")
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	// The simple protocol runs a read cut short by the replica's shutdown
	// again elsewhere; the extended protocol relays the error of a read in
	// flight on the stopping replica (at most one per connection).
	if n := failed[0].Load(); n > 0 {
		t.Fatalf("%d simple-protocol reads failed while a replica stopped; first: %s", n, *firstErr.Load())
	}
	if n := failed[1].Load(); n > 1 {
		t.Fatalf("%d extended-protocol reads failed while a replica stopped; first: %s", n, *firstErr.Load())
	}
	c := connect(t, addr, pgx.QueryExecModeSimpleProtocol)
	if got := reads(t, c, 20, "SELECT inet_server_port() FROM one"); got[env.r1.Port] != 20 {
		t.Fatalf("reads with r2 stopped: %v", got)
	}
	if err := env.r2.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitRotation(t, addr, "s0-r1", "s0-r2")
}

// TestReadYourWrites: after a session writes, its reads go to the primary
// (and see the write) for read_your_writes; then to replicas again.
func TestReadYourWrites(t *testing.T) {
	addr := startProxy(t, "replicas: {read_from: replicas, read_your_writes: 2s}",
		dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	waitRotation(t, addr, "s0-r1", "s0-r2")
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := connect(t, addr, m.mode)
			other := connect(t, addr, m.mode)
			ctx := context.Background()
			if p := port(t, c, "SELECT inet_server_port() FROM one"); p == env.primary.Port {
				t.Fatalf("read before any write ran on the primary")
			}
			v := fmt.Sprintf("ryw-%s-%d", m.name, time.Now().UnixNano())
			if _, err := c.Exec(ctx, "UPDATE kv SET v = $1 WHERE id = 0", v); err != nil {
				t.Fatal(err)
			}
			// id 0: make sure it exists (on whichever shard holds it).
			if _, err := c.Exec(ctx, "INSERT INTO kv (id, v) VALUES (0, $1) ON CONFLICT (id) DO UPDATE SET v = $1", v); err != nil {
				t.Fatal(err)
			}
			var got string
			var p int
			if err := c.QueryRow(ctx, "SELECT v, inet_server_port() FROM kv WHERE id = 0").Scan(&got, &p); err != nil {
				t.Fatal(err)
			}
			if got != v || (p != env.primary.Port && p != env.other.Port) {
				t.Fatalf("read after write: %q on port %d, want %q from a primary", got, p, v)
			}
			// Another session has not written: it reads from a replica.
			if p := port(t, other, "SELECT inet_server_port() FROM one"); p == env.primary.Port {
				t.Fatalf("a session that never wrote read from the primary")
			}
			time.Sleep(2100 * time.Millisecond) // past the window
			if p := port(t, c, "SELECT inet_server_port() FROM one"); p == env.primary.Port {
				t.Fatalf("read after the read_your_writes window ran on the primary")
			}
			// A write inside a transaction counts from the transaction.
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "UPDATE one SET x = 1"); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if p := port(t, c, "SELECT inet_server_port() FROM one"); p != env.primary.Port {
				t.Fatalf("read after a transaction that wrote ran on port %d, want the primary", p)
			}
			// So does a write in a multi-statement query string.
			time.Sleep(2100 * time.Millisecond) // past the window
			if m.mode == pgx.QueryExecModeSimpleProtocol {
				if _, err := c.Exec(ctx, "UPDATE one SET x = 1; SELECT 1"); err != nil {
					t.Fatal(err)
				}
				if p := port(t, c, "SELECT inet_server_port() FROM one"); p != env.primary.Port {
					t.Fatalf("read after a multi-statement write ran on port %d, want the primary", p)
				}
			}
		})
	}
}

// TestRoleDetection: the configured "primary" is a replica and the real
// primary is listed as a replica: the probes find out, and writes go to
// the server that is not in recovery.
func TestRoleDetection(t *testing.T) {
	addr := startProxy(t, "replicas: {read_from: replicas, failover_buffer: 5s, read_your_writes: -1s}",
		dsnOf(env.r1), dsnOf(env.primary), dsnOf(env.r2))
	waitFor(t, 20*time.Second, "writes on the real primary", func() bool {
		return showReplicas(t, addr)["s0-r1"].writes
	})
	for _, m := range modes {
		c := connect(t, addr, m.mode)
		if p := port(t, c, "SELECT nextval('seq')::int * 0 + inet_server_port() FROM one"); p != env.primary.Port {
			t.Fatalf("%s: write ran on port %d, want the primary %d", m.name, p, env.primary.Port)
		}
	}
}

// TestFailover: under a steady load of writes and reads, the primary dies
// and the replica is promoted; writes resume on it (fenced: the old
// primary, restarted, is never written again), reads never fail.
func TestFailover(t *testing.T) {
	ctx := context.Background()
	prim, rep := primaryWithReplica(t, "failover-r1")
	addr := startProxy(t, "replicas: {read_from: replicas, failover_buffer: 10s, read_your_writes: -1s}",
		dsnOf(prim), dsnOf(rep))
	waitRotation(t, addr, "s0-r1")

	type result struct {
		at   time.Time
		port int
		err  error
	}
	var mu sync.Mutex
	var writes, readRes []result
	stop := make(chan struct{})
	var wg sync.WaitGroup
	load := func(sql string, out *[]result, mode pgx.QueryExecMode) {
		c := connect(t, addr, mode)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var p int
				err := c.QueryRow(ctx, sql).Scan(&p)
				mu.Lock()
				*out = append(*out, result{time.Now(), p, err})
				mu.Unlock()
				if err != nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	// Writes on the only shard that fails over (s1 is another cluster):
	// nextval() is a write on s0.
	load("SELECT nextval('seq')::int * 0 + inet_server_port() FROM one", &writes, pgx.QueryExecModeSimpleProtocol)
	load("SELECT inet_server_port() FROM one", &readRes, pgx.QueryExecModeSimpleProtocol)
	load("SELECT inet_server_port() FROM one", &readRes, pgx.QueryExecModeCacheStatement)
	time.Sleep(500 * time.Millisecond)
	if err := prim.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	promoted := time.Now()
	if err := rep.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "writes on the promoted replica", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(writes) > 0 && writes[len(writes)-1].err == nil && writes[len(writes)-1].port == rep.Port
	})
	// The old primary comes back, still a primary (split brain): fenced.
	if err := prim.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "old primary fenced", func() bool {
		r := showReplicas(t, addr)["s0"]
		return r.state == "fenced" && r.role == "primary"
	})
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	var firstOK time.Time
	writeErrs := 0
	for _, w := range writes {
		switch {
		case w.err != nil:
			writeErrs++
			var pe *pgconn.PgError
			// 08006 (shard lost, or no primary within failover_buffer),
			// or the dying server's own 57P0x relayed at connect.
			if !errors.As(w.err, &pe) || (pe.Code != "08006" && !strings.HasPrefix(pe.Code, "57P0")) {
				t.Errorf("write error %v, want 08006", w.err)
			}
		case w.port != prim.Port && w.port != rep.Port:
			t.Fatalf("write on port %d", w.port)
		case w.at.After(promoted) && w.port == rep.Port && firstOK.IsZero():
			firstOK = w.at
		}
		if w.err == nil && !firstOK.IsZero() && w.port != rep.Port {
			t.Fatalf("write on the old primary (port %d) after the failover", w.port)
		}
	}
	readErrs := 0
	for _, r := range readRes {
		if r.err != nil {
			readErrs++
			t.Logf("read error: %v", r.err)
		}
	}
	t.Logf("failover: %d writes (%d failed), %d reads (%d failed); first write on the new primary %v after promote returned",
		len(writes), writeErrs, len(readRes), readErrs, firstOK.Sub(promoted).Round(time.Millisecond))
	if readErrs > 0 {
		t.Fatalf("%d reads failed during the failover", readErrs)
	}
}

func exec(t *testing.T, c *localpg.Cluster, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.DSN(database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s on %s: %v", sql, c.Name, err)
	}
}

// caughtUp waits until both replicas of shard 0 have replayed everything
// its primary has written so far.
func caughtUp(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	pc, err := pgx.Connect(ctx, env.primary.DSN(database))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(ctx)
	var lsn string
	if err := pc.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*localpg.Cluster{env.r1, env.r2} {
		rc, err := pgx.Connect(ctx, r.DSN(database))
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "replica "+r.Name+" replays "+lsn, func() bool {
			var ok bool
			return rc.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn).Scan(&ok) == nil && ok
		})
		rc.Close(ctx)
	}
}
