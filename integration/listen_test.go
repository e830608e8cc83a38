package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/proxy/proxytest"
	"github.com/shardproxy/shardproxy/router"
)

// LISTEN/NOTIFY (proxy/listen.go): the proxy's listener connection on the
// default shard forwards notifications to every client listening, as one
// plain Postgres would deliver them.

// notified collects a connection's notifications as pgconn hands them over.
type notified struct {
	mu   sync.Mutex
	list []*pgconn.Notification
}

func (n *notified) add(_ *pgconn.PgConn, m *pgconn.Notification) {
	n.mu.Lock()
	n.list = append(n.list, m)
	n.mu.Unlock()
}

func (n *notified) take() []*pgconn.Notification {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.list
	n.list = nil
	return out
}

func (n *notified) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.list)
}

func connectNotified(ctx context.Context, t *testing.T, dsn string) (*pgconn.PgConn, *notified) {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	n := &notified{}
	cfg.OnNotification = n.add
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c, n
}

// await reads from c until it holds want notifications (want < 0: none is
// expected, so it only waits quiet) or timeout, then a little longer for
// extras.
func (n *notified) await(c *pgconn.PgConn, want int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for want < 0 || n.count() < want {
		if time.Now().After(deadline) {
			break
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		c.WaitForNotification(ctx)
		cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
	c.WaitForNotification(ctx)
	cancel()
}

func describeNotes(ns []*pgconn.Notification) string {
	var parts []string
	for _, n := range ns {
		parts = append(parts, fmt.Sprintf("%s:%q", n.Channel, n.Payload))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

type listenStep struct {
	who        byte // 'A' listens; 'B' notifies
	sql        string
	simpleOnly bool // a multi-statement string
}

var listenScript = []listenStep{
	{'A', "LISTEN lt_a", false},
	{'A', "LISTEN lt_a", false},
	{'B', "NOTIFY lt_a, 'hello'", false},
	{'B', "SELECT pg_notify('lt_a', 'via function')", false},
	{'B', "NOTIFY lt_b, 'nobody listens'", false},
	{'A', "BEGIN", false},
	{'A', "LISTEN lt_b", false},
	{'B', "NOTIFY lt_a, 'while A is in a transaction'", false},
	{'A', "SELECT 1", false},
	{'A', "COMMIT", false},
	{'B', "NOTIFY lt_b, 'after the LISTEN committed'", false},
	{'B', "BEGIN", false},
	{'B', "NOTIFY lt_a, 'rolled back'", false},
	{'B', "SELECT pg_notify('lt_b', 'rolled back too')", false},
	{'B', "ROLLBACK", false},
	{'B', "BEGIN", false},
	{'B', "NOTIFY lt_a, 'first'", false},
	{'B', "SELECT pg_notify('lt_b', 'second')", false},
	{'B', "NOTIFY lt_a, 'first'", false}, // the same twice in one transaction: once
	{'B', "COMMIT", false},
	{'A', "NOTIFY lt_a, 'to myself'", false},
	{'A', "SELECT pg_notify('lt_b', 'to myself by function')", false},
	{'A', "BEGIN", false},
	{'A', "UNLISTEN lt_a", false},
	{'A', "ROLLBACK", false},
	{'B', "NOTIFY lt_a, 'still listening'", false},
	{'A', "UNLISTEN lt_a", false},
	{'B', "NOTIFY lt_a, 'not any more'", false},
	{'A', `LISTEN "lt_Mixed Case"`, false},
	{'B', `NOTIFY "lt_Mixed Case", 'quoted'`, false},
	{'B', "NOTIFY lt_b, 'it''s ünïcode, \"quoted\"; -- not a comment'", false},
	{'B', "NOTIFY lt_b", false},
	{'B', "SELECT pg_notify('lt_b', repeat('x', 8000))", false}, // 22023 payload string too long
	{'A', "UNLISTEN *", false},
	{'B', "NOTIFY lt_b, 'after UNLISTEN *'", false},
	{'A', "UNLISTEN never_listened", false},
	{'A', "LISTEN lt_c", false},
	{'A', "DISCARD ALL", true}, // DISCARD is refused in the extended protocol (reserve.go)
	{'B', "NOTIFY lt_c, 'after DISCARD ALL'", false},
	{'A', "BEGIN", false},
	{'A', "SELECT 1/0", false},
	{'A', "LISTEN lt_d", false}, // 25P02
	{'A', "ROLLBACK", false},
	{'B', "NOTIFY lt_d, 'not listening'", false},
	{'A', "LISTEN lt_e; NOTIFY lt_e, 'one string'", true},
	{'A', "LISTEN lt_f; SELECT 1/0", true}, // the implicit transaction fails: no LISTEN
	{'B', "NOTIFY lt_f, 'not listening'", false},
	{'A', "BEGIN; LISTEN lt_g; COMMIT; NOTIFY lt_g, 'after its own COMMIT'", true},
	{'B', "NOTIFY lt_e, 'e'", false},
	{'A', "UNLISTEN *", false},
}

// runListenScript runs the script with A and B on the given server and
// returns one line per step: A's or B's result and transaction status, the
// notifications A got while running the step, and those it got after.
// counts, when given, are how many notifications to wait for after each
// step (from the Postgres run); the proxy's run waits longer for them.
func runListenScript(t *testing.T, dsn, prefix string, extended bool, counts []int) ([]string, []int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, na := connectNotified(ctx, t, dsn)
	b, _ := connectNotified(ctx, t, dsn)
	var lines []string
	var after []int
	for i, st := range listenScript {
		if extended && st.simpleOnly {
			continue
		}
		st.sql = strings.ReplaceAll(st.sql, "lt_", prefix)
		c := a
		if st.who == 'B' {
			c = b
		}
		var res string
		if extended {
			r := c.ExecParams(ctx, st.sql, nil, nil, nil, nil).Read()
			res = r.CommandTag.String()
			if pe, ok := r.Err.(*pgconn.PgError); ok {
				res = "ERROR " + pe.Code + " " + pe.Message
			} else if r.Err != nil {
				res = "FAIL " + r.Err.Error()
			}
			res += fmt.Sprintf(" [%c]", c.TxStatus())
		} else {
			res = scriptStep(ctx, c, st.sql)
		}
		during := na.take()
		want, timeout := -1, 200*time.Millisecond
		if counts != nil {
			want, timeout = counts[len(after)], 5*time.Second
			if want == 0 {
				want, timeout = -1, 200*time.Millisecond
			}
		}
		na.await(a, want, timeout)
		got := na.take()
		after = append(after, len(got))
		lines = append(lines, fmt.Sprintf("%d %c %s => %s during %s after %s", i, st.who, st.sql, res, describeNotes(during), describeNotes(got)))
	}
	return lines, after
}

// TestListenMatchesPostgres runs one script through the proxy and on one
// plain Postgres (a database of its own, so the proxy's listener does not
// hear it), in the simple and the extended protocol: results, transaction
// status and the notifications the listening client gets, while each
// step runs and after it, must agree.
func TestListenMatchesPostgres(t *testing.T) {
	ctx := context.Background()
	cl := env.shards.Clusters[1]
	if err := cl.CreateDatabase(ctx, "listenref"); err != nil {
		t.Fatal(err)
	}
	for _, extended := range []bool{false, true} {
		t.Run(fmt.Sprintf("extended=%v", extended), func(t *testing.T) {
			t.Parallel()
			prefix := "lt_s_" // channels of their own: the two runs are at once
			if extended {
				prefix = "lt_x_"
			}
			want, counts := runListenScript(t, cl.DSN("listenref"), prefix, extended, nil)
			got, _ := runListenScript(t, proxyURL("app", "app"), prefix, extended, counts)
			for i := range want {
				if i >= len(got) || got[i] != want[i] {
					g := ""
					if i < len(got) {
						g = got[i]
					}
					t.Errorf("\nproxy:    %s\npostgres: %s", g, want[i])
				}
			}
		})
	}
}

// TestNotifyPID: a notification carries the PID of the backend that sent
// it, as Postgres reports it (here, the pooled backend the notifier's
// statement ran on).
func TestNotifyPID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, na := connectNotified(ctx, t, proxyURL("app", "app"))
	if _, err := a.Exec(ctx, "LISTEN lt_pid").ReadAll(); err != nil {
		t.Fatal(err)
	}
	b := mustConnect(t)
	var pid uint32
	if err := b.QueryRow(ctx, "SELECT pg_backend_pid() FROM pg_notify('lt_pid', 'p') AS n").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	na.await(a, 1, 5*time.Second)
	ns := na.take()
	if len(ns) != 1 || ns[0].PID != pid || ns[0].Payload != "p" {
		t.Fatalf("got %s, PID %v; want one from PID %d", describeNotes(ns), pids(ns), pid)
	}
}

func pids(ns []*pgconn.Notification) []uint32 {
	var out []uint32
	for _, n := range ns {
		out = append(out, n.PID)
	}
	return out
}

func listenMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := env.srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.Metric {
			name := f.GetName()
			for _, l := range m.Label {
				name += "/" + l.GetValue()
			}
			switch {
			case m.Gauge != nil:
				out[name] = m.GetGauge().GetValue()
			case m.Counter != nil:
				out[name] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// TestListenManyClients: clients listening on overlapping channel sets
// each get exactly the notifications of their channels, in commit order,
// from notifiers on several connections at once; the metrics count the
// channels and clients, and fall back when the clients leave.
func TestListenManyClients(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const clients, channels, perNotifier, notifiers = 15, 4, 25, 3
	// The sessions of earlier tests may still be leaving.
	for deadline := time.Now().Add(5 * time.Second); listenMetrics(t)["shardproxy_listen_clients"] != 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	before := listenMetrics(t)
	type listener struct {
		c    *pgconn.PgConn
		n    *notified
		mine map[string]bool
	}
	var ls []listener
	for i := range clients {
		c, n := connectNotified(ctx, t, proxyURL("app", "app"))
		mine := map[string]bool{}
		for j := range channels {
			if (i+1)>>j&1 == 1 { // client i: the bits of i+1
				ch := fmt.Sprintf("lt_many_%d", j)
				mine[ch] = true
				if _, err := c.Exec(ctx, "LISTEN "+ch).ReadAll(); err != nil {
					t.Fatal(err)
				}
			}
		}
		ls = append(ls, listener{c, n, mine})
	}
	m := listenMetrics(t)
	if got := m["shardproxy_listen_channels"]; got < channels {
		t.Errorf("shardproxy_listen_channels = %v, want >= %d", got, channels)
	}
	if got := m["shardproxy_listen_clients"] - before["shardproxy_listen_clients"]; got != clients {
		t.Errorf("shardproxy_listen_clients grew by %v, want %d", got, clients)
	}
	var wg sync.WaitGroup
	errs := make(chan error, notifiers)
	for k := range notifiers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := connect(ctx, "app", "app")
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(ctx)
			for i := range perNotifier {
				ch := fmt.Sprintf("lt_many_%d", (i+k)%channels)
				if _, err := c.Exec(ctx, "SELECT pg_notify($1, $2)", ch, fmt.Sprintf("%d/%d", k, i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, l := range ls {
		want := 0
		for k := range notifiers {
			for j := range perNotifier {
				if l.mine[fmt.Sprintf("lt_many_%d", (j+k)%channels)] {
					want++
				}
			}
		}
		l.n.await(l.c, want, 10*time.Second)
		got := l.n.take()
		if len(got) != want {
			t.Errorf("client %d: %d notifications, want %d", i, len(got), want)
		}
		last := map[string]int{} // per notifier, payloads arrive in order
		for _, n := range got {
			if !l.mine[n.Channel] {
				t.Errorf("client %d got %s on a channel it does not listen to", i, n.Channel)
			}
			var k, j int
			fmt.Sscanf(n.Payload, "%d/%d", &k, &j)
			if p, ok := last[fmt.Sprint(k)]; ok && j <= p {
				t.Errorf("client %d: %q after %d: out of order", i, n.Payload, p)
			}
			last[fmt.Sprint(k)] = j
		}
	}
	if m := listenMetrics(t); m["shardproxy_notifications_total/delivered"] <= before["shardproxy_notifications_total/delivered"] {
		t.Errorf("delivered counter did not grow: %v", m["shardproxy_notifications_total/delivered"])
	}
	for _, l := range ls {
		l.c.Close(ctx)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m := listenMetrics(t); m["shardproxy_listen_clients"] == before["shardproxy_listen_clients"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shardproxy_listen_clients stayed %v after the clients left", listenMetrics(t)["shardproxy_listen_clients"])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestListenPsql: psql prints a notification for the LISTEN of its own
// session after the NOTIFY that sent it, as against Postgres.
func TestListenPsql(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatal("psql not installed:", err)
	}
	script := "LISTEN lt_psql;\nNOTIFY lt_psql, 'from psql';\nSELECT 1 AS one;\nUNLISTEN lt_psql;\nNOTIFY lt_psql, 'not heard';\nSELECT 2 AS two;\n"
	file := filepath.Join(t.TempDir(), "listen.sql")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := psql(t, "app", "-f", file)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, `Asynchronous notification "lt_psql" with payload "from psql" received from server process with PID`) ||
		strings.Contains(out, "not heard") {
		t.Errorf("psql output:\n%s", out)
	}
}

// TestListenerReconnects: the listener connection comes back after the
// default shard restarts, LISTENs again on its clients' channels, and
// notifications flow again; a proxy of its own on a shard of its own.
func TestListenerReconnects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	set, err := localpg.Start(ctx, localpg.Options{N: 1, Database: "deliveryapp"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Stop)
	yaml := fmt.Sprintf("backend_roles: shared\nusers: [{name: app, password: app}]\npool: {size: 4, acquire_timeout: 5s}\nshards:\n  - {name: s0, dsn: %q}\n", set.DSNs()[0])
	srv := proxytest.New(t, yaml)
	reg := prometheus.NewRegistry()
	if err := srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", proxytest.Listen(t, srv))

	a, na := connectNotified(ctx, t, url)
	if _, err := a.Exec(ctx, "LISTEN lt_r1; LISTEN lt_r2").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if err := set.Clusters[0].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := set.Clusters[0].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// The first statements after the restart may meet dead pooled
	// backends (08006); the listener reconnects on its own.
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := connectNotified(ctx, t, url)
		_, err := b.Exec(ctx, "NOTIFY lt_r2, 'after restart'").ReadAll()
		b.Close(ctx)
		if err == nil {
			na.await(a, 1, 2*time.Second)
			if ns := na.take(); len(ns) > 0 {
				if ns[0].Channel != "lt_r2" || ns[0].Payload != "after restart" {
					t.Fatalf("got %s", describeNotes(ns))
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no notification after the shard restarted (last: %v)", err)
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range fams {
		if fam.GetName() == "shardproxy_listener_reconnects_total" && fam.Metric[0].GetCounter().GetValue() < 1 {
			t.Errorf("shardproxy_listener_reconnects_total = %v", fam.Metric[0].GetCounter().GetValue())
		}
		if fam.GetName() == "shardproxy_listen_channels" && fam.Metric[0].GetGauge().GetValue() != 2 {
			t.Errorf("shardproxy_listen_channels = %v, want 2", fam.Metric[0].GetGauge().GetValue())
		}
	}
}

// startProxyWith serves the package's shards through a proxy of its own
// whose config is the package's with extra appended.
func startProxyWith(t *testing.T, extra string) string {
	t.Helper()
	_, addr := proxytest.Serve(t, env.config+extra)
	return fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", addr)
}

// TestNotifyInTransactions: a notification is delivered once, at the
// COMMIT of its transaction, never before and never for a ROLLBACK; a
// transaction that notifies and writes on another shard commits by
// two-phase commit with the default shard deciding (Postgres cannot
// PREPARE a transaction that notified), whether the default shard is the
// first of the writers (s0) or not (s3).
func TestNotifyInTransactions(t *testing.T) {
	for _, def := range []int{0, 3} {
		t.Run(fmt.Sprintf("default=s%d", def), func(t *testing.T) {
			url := proxyURL("app", "app")
			if def != 0 {
				url = startProxyWith(t, fmt.Sprintf("default_shard: s%d\n", def))
			}
			notifyInTransactions(t, url, def)
		})
	}
}

func notifyInTransactions(t *testing.T, url string, def int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, na := connectNotified(ctx, t, url)
	if _, err := a.Exec(ctx, "LISTEN lt_tx").ReadAll(); err != nil {
		t.Fatal(err)
	}
	other := int64(7090000)
	for shardOfUser(other) == fmt.Sprintf("s%d", def) || (def == 3 && shardOfUser(other) != "s0") {
		other++
	}
	b, _ := connectNotified(ctx, t, url)
	exec := func(sql string) error {
		_, err := b.Exec(ctx, sql).ReadAll()
		return err
	}
	exec(fmt.Sprintf("DELETE FROM users WHERE id = %d", other))

	for _, end := range []string{"ROLLBACK", "COMMIT"} {
		for _, sql := range []string{"BEGIN", "NOTIFY lt_tx, 'default shard only'"} {
			if err := exec(sql); err != nil {
				t.Fatal(err)
			}
		}
		na.await(a, -1, 200*time.Millisecond)
		if ns := na.take(); len(ns) != 0 {
			t.Fatalf("delivered before %s: %s", end, describeNotes(ns))
		}
		if err := exec(end); err != nil {
			t.Fatal(err)
		}
		want := 0
		if end == "COMMIT" {
			want = 1
		}
		na.await(a, max(want, -1), 3*time.Second)
		if ns := na.take(); len(ns) != want {
			t.Fatalf("after %s: %s", end, describeNotes(ns))
		}
	}

	for _, end := range []string{"ROLLBACK", "COMMIT"} {
		for _, sql := range []string{"BEGIN",
			fmt.Sprintf("INSERT INTO users (id, name, email, city) VALUES (%d, 'n', 'e', 'c')", other),
			"SELECT pg_notify('lt_tx', 'two shards')"} {
			if err := exec(sql); err != nil {
				t.Fatal(err)
			}
		}
		if err := exec(end); err != nil {
			t.Fatalf("%s of a transaction that notified and wrote on %s: %v", end, shardOfUser(other), err)
		}
		want := 0
		if end == "COMMIT" {
			want = 1
		}
		if want == 0 {
			na.await(a, -1, 300*time.Millisecond)
		} else {
			na.await(a, 1, 3*time.Second)
		}
		if ns := na.take(); len(ns) != want {
			t.Fatalf("after %s: %s", end, describeNotes(ns))
		}
		if n := shardInt(t, int(router.PartitionOf(router.HashInt(other), nShards)), "SELECT count(*) FROM users WHERE id = $1", other); n != int64(want) {
			t.Fatalf("after %s the other shard holds %d rows", end, n)
		}
	}
}
