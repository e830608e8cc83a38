package replication

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/proxy/proxytest"
)

// env is shared by the tests of this package: shard s0 is a primary with
// two streaming replicas (r1, r2), shard s1 a plain primary. Tests that
// destroy the topology (failover) start clusters of their own.
var env struct {
	set            *localpg.Set
	primary, other *localpg.Cluster
	r1, r2         *localpg.Cluster
}

const database = "app"

func TestMain(m *testing.M) {
	localpg.Main(m, localpg.Options{N: 2, Database: database}, func(set *localpg.Set) int { return run(m, set) })
}

func run(m *testing.M, set *localpg.Set) int {
	ctx := context.Background()
	env.set, env.primary, env.other = set, set.Clusters[0], set.Clusters[1]
	var err error
	for _, c := range set.Clusters {
		if err := schema(ctx, c.DSN(database)); err != nil {
			fmt.Fprintln(os.Stderr, "schema:", err)
			return 1
		}
	}
	if env.r1, err = set.StartReplica(ctx, env.primary, "shard0-r1"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if env.r2, err = set.StartReplica(ctx, env.primary, "shard0-r2"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// primaryWithReplica starts a primary of its own for one test, with the
// tables, and a streaming replica of it named name; both stop when the test
// ends (for tests that kill or promote them).
func primaryWithReplica(t *testing.T, name string) (prim, rep *localpg.Cluster) {
	t.Helper()
	ctx := context.Background()
	set := localpg.StartT(t, localpg.Options{N: 1, Database: database})
	prim = set.Clusters[0]
	if err := schema(ctx, prim.DSN(database)); err != nil {
		t.Fatal(err)
	}
	rep, err := set.StartReplica(ctx, prim, name)
	if err != nil {
		t.Fatal(err)
	}
	return prim, rep
}

// schema makes the tables the tests use, on a primary (its replicas get
// them by replication).
func schema(ctx context.Context, dsn string) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	for _, q := range []string{
		"CREATE TABLE IF NOT EXISTS kv (id bigint PRIMARY KEY, v text)",
		"CREATE TABLE IF NOT EXISTS filler (b text)",
		"CREATE SEQUENCE IF NOT EXISTS seq",
		"CREATE TABLE IF NOT EXISTS one (x int)", // on the default shard s0: a read of s0
		"INSERT INTO one SELECT 1 WHERE NOT EXISTS (SELECT FROM one)",
		`CREATE OR REPLACE FUNCTION bump(k bigint) RETURNS int LANGUAGE sql AS
			'INSERT INTO kv (id, v) VALUES (k, ''bumped'') ON CONFLICT (id) DO UPDATE SET v = ''bumped'' RETURNING inet_server_port()'`,
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// server is one server of a shard in a test's topology.
type server struct {
	dsn    string
	weight int
}

// startProxy serves a proxy over shard s0 (primary, then replicas) and
// the plain shard s1, with extra top-level config lines. Health checks
// run every 100ms. It returns the proxy's address.
func startProxy(t *testing.T, extra string, primary server, replicas ...server) string {
	t.Helper()
	return startProxyHealth(t, "{interval: 100ms, timeout: 1s, failures: 2, successes: 1}", extra, primary, replicas...)
}

// startProxyHealth is startProxy with the health section given.
func startProxyHealth(t *testing.T, health, extra string, primary server, replicas ...server) string {
	t.Helper()
	addr, _ := startServer(t, health, extra, primary, replicas...)
	return addr
}

// startServer is startProxyHealth that also returns the proxy.
func startServer(t *testing.T, health, extra string, primary server, replicas ...server) (string, *proxy.Server) {
	t.Helper()
	var sb strings.Builder
	if !strings.Contains("\n"+extra, "\nusers:") { // else extra lists them
		sb.WriteString("users: [{name: app, auth: trust}]\n")
	}
	if !strings.Contains("\n"+extra, "\nbackend_roles:") { // users reach the shards as the DSN's postgres
		sb.WriteString("backend_roles: shared\n")
	}
	sb.WriteString("admins: [app]\ndatabase: app\npool: {size: 8, acquire_timeout: 5s}\n")
	sb.WriteString("health: " + health + "\n")
	sb.WriteString(extra + "\nshards:\n")
	fmt.Fprintf(&sb, "  - name: s0\n    dsn: %q\n", primary.dsn)
	if primary.weight != 0 {
		fmt.Fprintf(&sb, "    weight: %d\n", primary.weight)
	}
	if len(replicas) > 0 {
		sb.WriteString("    replicas:\n")
	}
	for _, r := range replicas {
		fmt.Fprintf(&sb, "      - {dsn: %q", r.dsn)
		if r.weight != 0 {
			fmt.Fprintf(&sb, ", weight: %d", r.weight)
		}
		sb.WriteString("}\n")
	}
	fmt.Fprintf(&sb, "  - {name: s1, dsn: %q}\n", env.other.DSN(database))
	sb.WriteString("tables:\n  kv: {strategy: hash, key: id}\n")
	srv, addr := proxytest.Serve(t, sb.String())
	return addr, srv
}

func dsnOf(c *localpg.Cluster) server { return server{dsn: c.DSN(database)} }

// modes are the protocols every scenario runs in.
var modes = []struct {
	name string
	mode pgx.QueryExecMode
}{{"simple", pgx.QueryExecModeSimpleProtocol}, {"extended", pgx.QueryExecModeCacheStatement}}

func connect(t *testing.T, addr string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	return connectAs(t, addr, "app", mode)
}

// connectAs is connect as another user (trust).
func connectAs(t *testing.T, addr, user string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable", user, addr, database))
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = mode
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// port runs a one-int query and returns the answer (inet_server_port()
// tells which server ran it).
func port(t *testing.T, c *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var p int
	if err := c.QueryRow(context.Background(), sql, args...).Scan(&p); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return p
}

// replicaRow is one row of SHOW REPLICAS.
type replicaRow struct {
	server, role, state string
	writes, inRotation  bool
	lagBytes            int64
	lagSeconds          float64
	inFlight            int64
	routed              int64
	checks              int64
}

func showReplicas(t *testing.T, addr string) map[string]replicaRow {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://app@%s/shardproxy?sslmode=disable&default_query_exec_mode=simple_protocol", addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, "SHOW REPLICAS")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]replicaRow{}
	for rows.Next() {
		v, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = fmt.Sprint(x)
			if n, ok := x.(pgtype.Numeric); ok {
				f, _ := n.Float64Value()
				s[i] = fmt.Sprint(f.Float64)
			}
		}
		var r replicaRow
		r.server, r.role, r.state = s[1], s[4], s[5]
		r.writes, r.inRotation = s[6] == "true", s[7] == "true"
		fmt.Sscan(s[8], &r.lagBytes)
		fmt.Sscan(s[9], &r.lagSeconds)
		fmt.Sscan(s[10], &r.inFlight)
		fmt.Sscan(s[12], &r.routed)
		fmt.Sscan(s[13], &r.checks)
		out[r.server] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitFor polls cond (every 50ms) up to d; the test fails with what when
// it never holds.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitRotation waits until SHOW REPLICAS lists exactly want as in rotation.
func waitRotation(t *testing.T, addr string, want ...string) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("replicas in rotation = %v", want), func() bool {
		rows := showReplicas(t, addr)
		n := 0
		for _, r := range rows {
			if r.inRotation {
				n++
			}
		}
		for _, w := range want {
			if !rows[w].inRotation {
				return false
			}
		}
		return n == len(want)
	})
}

// waitProbed waits until the health checks have probed every server of
// the proxy at addr at least once and found the roles given (server ->
// role). A proxy's first probes run in the background as it starts: a
// test that changes the servers' roles before they ran would have the
// proxy see only the changed roles.
func waitProbed(t *testing.T, addr string, roles map[string]string) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("every server probed with roles %v", roles), func() bool {
		rows := showReplicas(t, addr)
		for name, role := range roles {
			if r, ok := rows[name]; !ok || r.checks == 0 || r.role != role {
				return false
			}
		}
		return true
	})
}

// delayRelay forwards TCP connections to target, holding every chunk the
// server sends for delay: a server made slow for fastest_response.
func delayRelay(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Connections end when the proxy closes them; the test does not
	// wait for them.
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(s, c); s.Close() }()
			go func() {
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						time.Sleep(delay)
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
