package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/delivery"
	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/router"
)

// env is the cluster shared by every test of this package: 4 shards and a
// proxy in front of them.
var env struct {
	shards *localpg.Set
	srv    *proxy.Server
	addr   string
	topo   *router.Topology
	cfg    proxy.Config // the proxy's config, for tests that reload it
	config string       // the config file, for tests that start another proxy
}

const nShards = 4

func TestMain(m *testing.M) {
	localpg.Main(m, localpg.Options{N: nShards, Database: "deliveryapp"}, func(set *localpg.Set) int { return run(m, set) })
}

func run(m *testing.M, set *localpg.Set) int {
	ctx := context.Background()
	env.shards = set
	stopRedis, err := startRedis(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot start redis-server in CI:", err)
		return 1
	}
	defer stopRedis()

	var sb strings.Builder
	sb.WriteString("backend_roles: shared\nusers: [{name: app, password: app}, {name: trusty, auth: trust}]\npool: {size: 8, acquire_timeout: 5s}\nshards:\n")
	for i, dsn := range set.DSNs() {
		fmt.Fprintf(&sb, "  - {name: s%d, dsn: %q}\n", i, dsn)
	}
	sb.WriteString(`tables:
  users:       {strategy: hash, key: id}
  orders:      {strategy: hash, key: user_id}
  order_items: {strategy: hash, key: user_id}
  restaurants: {strategy: reference}
  events:
    strategy: range
    key: created_at
    ranges:
      - {to: "2025-01-01", shard: s0}
      - {from: "2025-01-01", to: "2025-07-01", shard: s1}
      - {from: "2025-07-01", to: "2026-01-01", shard: s2}
      - {from: "2026-01-01", shard: s3}
`)
	f, err := config.Parse([]byte(sb.String()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "config:", err)
		return 1
	}
	topo, err := router.NewTopology(&f.Topology)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env.topo, env.cfg, env.config = topo, f.Proxy, sb.String()
	srv, err := proxy.New(f.Proxy, topo, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv.Warm(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env.srv, env.addr = srv, ln.Addr().String()
	go srv.Serve(ctx, ln)
	defer srv.Close()

	// The schema goes through the proxy (DDL reaches every shard); the
	// hash-check table is created on each shard directly.
	conn, err := connect(ctx, "app", "app")
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect through proxy:", err)
		return 1
	}
	stmts, err := parser.Parse(delivery.Schema)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, st := range stmts {
		if _, err := conn.Exec(ctx, st.SQL); err != nil {
			fmt.Fprintln(os.Stderr, "schema:", err)
			return 1
		}
	}
	conn.Close(ctx)
	for i := range set.Clusters {
		if err := shardExec(ctx, i, "CREATE TABLE hashcheck (k bigint) PARTITION BY HASH (k)"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

func proxyURL(user, password string) string {
	return fmt.Sprintf("postgres://%s:%s@%s/deliveryapp?sslmode=disable", user, password, env.addr)
}

// connect opens a pgx connection through the proxy with the simple protocol.
func connect(ctx context.Context, user, password string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(proxyURL(user, password))
	if err != nil {
		return nil, err
	}
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return pgx.ConnectConfig(ctx, cc)
}

func mustConnect(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := connect(ctx, "app", "app")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// shardConn connects straight to shard i.
func shardConn(ctx context.Context, i int) (*pgx.Conn, error) {
	return pgx.Connect(ctx, env.shards.Clusters[i].DSN("deliveryapp"))
}

func shardExec(ctx context.Context, i int, sql string) error {
	c, err := shardConn(ctx, i)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, sql)
	return err
}

func shardInt(t *testing.T, i int, sql string, args ...any) int64 {
	t.Helper()
	ctx := context.Background()
	c, err := shardConn(ctx, i)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int64
	if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("shard %d: %s: %v", i, sql, err)
	}
	return n
}

// psql runs psql against the proxy with the given arguments.
func psql(t *testing.T, password string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("psql", append([]string{"-X", "-v", "ON_ERROR_STOP=0", fmt.Sprintf("postgres://app@%s/deliveryapp?sslmode=disable", env.addr)}, args...)...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	return string(out), err
}
