package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/router"
)

// adminRows runs sql on the admin console at addr as ops and returns its
// rows by column name.
func adminRows(t *testing.T, addr, sql string) []map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, fmt.Sprintf("postgres://ops:ops@%s/shardproxy?sslmode=disable", addr))
	if err != nil {
		t.Fatalf("admin console: %v", err)
	}
	defer c.Close(ctx)
	res, err := c.Exec(ctx, sql).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	var out []map[string]string
	for _, row := range res[0].Rows {
		m := map[string]string{}
		for i, f := range res[0].FieldDescriptions {
			m[f.Name] = string(row[i])
		}
		out = append(out, m)
	}
	return out
}

// TestDefaultBackendRoleIsPerUser: without backend_roles, a user reaches
// the shards as the role of its own name (least privilege by default, as
// PgBouncer does); a user the shards refuse (no such role, or no password
// where the shards ask for one) fails at login with the shard's SQLSTATE
// and a hint, instead of at every statement after it; the admin console
// needs no role on the shards.
func TestDefaultBackendRoleIsPerUser(t *testing.T) {
	withAppRole(t) // role app, password app, checked with SCRAM
	ctx := context.Background()
	cfg := env.cfg
	cfg.BackendRoles = "" // as in a config without the key
	cfg.Users = []proxy.User{{Name: "app", Password: "app"}, {Name: "ops", Password: "ops"},
		{Name: "nopw", Auth: "trust", BackendUser: "app"}, {Name: "ghost", Password: "ghost"}}
	cfg.Admins = []string{"ops"}
	var logs lockedBuffer
	srv, err := proxy.New(cfg, env.topo, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	go srv.Serve(sctx, ln)
	t.Cleanup(func() { cancel(); srv.Close() })
	addr := ln.Addr().String()

	c := connectTo(t, addr, "app", pgx.QueryExecModeSimpleProtocol)
	var who string
	if err := c.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != "app" {
		t.Fatalf("current_user %q %v, want app", who, err)
	}
	if _, err := c.Exec(ctx, "SELECT pg_read_file('/etc/hostname')"); code(err) != "42501" {
		t.Fatalf("pg_read_file as the default backend role: %v, want 42501", err)
	}

	for _, tc := range []struct{ user, password, want, hint string }{
		{"nopw", "", "28P01", "has no password for the shards"},
		{"ghost", "ghost", "28000", "backend_roles: shared"},
	} {
		cc, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/deliveryapp?sslmode=disable", tc.user, tc.password, addr))
		if err == nil {
			cc.Close(ctx)
			t.Fatalf("%s logged in", tc.user)
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != tc.want || pe.Severity != "FATAL" || !strings.Contains(pe.Hint, tc.hint) ||
			!strings.Contains(pe.Message, "refused backend role") {
			t.Fatalf("%s: %v (hint %q), want FATAL %s with a hint about %q", tc.user, err, hintOf(err), tc.want, tc.hint)
		}
		if line := "shard refused backend role\" user=" + tc.user; !strings.Contains(logs.String(), line) {
			t.Fatalf("no log line %q in:\n%s", line, logs.String())
		}
	}
	// ops has no role on the shards either: the admin console does not care.
	if rows := adminRows(t, addr, "SHOW SHARDS"); len(rows) != len(env.shards.Clusters) {
		t.Fatalf("SHOW SHARDS as ops: %d rows", len(rows))
	}
}

// lockedBuffer is a log destination safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func hintOf(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Hint
	}
	return ""
}

// TestRolePoolsVisible: the pools of a backend role are listed by SHOW
// POOLS and SHOW SERVERS (column user / backend_user) and in the pool
// metrics (label user), beside the default pools of the DSN's user.
func TestRolePoolsVisible(t *testing.T) {
	withAppRole(t)
	ctx := context.Background()
	cfg := env.cfg
	cfg.BackendRoles = proxy.BackendRolesPerUser
	cfg.Users = []proxy.User{{Name: "app", Password: "app"}, {Name: "ops", Password: "ops"}}
	cfg.Admins = []string{"ops"}
	srv, err := proxy.New(cfg, env.topo, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	go srv.Serve(sctx, ln)
	t.Cleanup(func() { cancel(); srv.Close() })
	addr := ln.Addr().String()

	c := connectTo(t, addr, "app", pgx.QueryExecModeSimpleProtocol)
	var n int64
	if err := c.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil {
		t.Fatal(err)
	}
	tx, err := c.Begin(ctx) // holds app's backend on one shard while we look
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM users WHERE id = 1").Scan(&n); err != nil {
		t.Fatal(err)
	}

	appPools := map[string]bool{}
	for _, r := range adminRows(t, addr, "SHOW POOLS") {
		if r["user"] == "app" {
			appPools[r["shard"]] = true
			if r["open"] == "0" || r["connects"] == "0" {
				t.Errorf("app's pool on %s: %v, want an open connection", r["shard"], r)
			}
		} else if r["user"] != "postgres" {
			t.Errorf("SHOW POOLS row of user %q: %v", r["user"], r)
		}
	}
	if len(appPools) != len(env.shards.Clusters) {
		t.Fatalf("SHOW POOLS lists app's pools on %v, want every shard", appPools)
	}
	active, idle := 0, 0
	for _, r := range adminRows(t, addr, "SHOW SERVERS") {
		if r["backend_user"] != "app" {
			continue
		}
		switch r["state"] {
		case "active":
			active++
			if r["user"] != "app" {
				t.Errorf("active backend of app held by %q", r["user"])
			}
		case "idle":
			idle++
		}
	}
	if active != 1 || idle < len(env.shards.Clusters)-1 {
		t.Fatalf("SHOW SERVERS: app's backends %d active, %d idle; want 1 active (the transaction's) and the others idle", active, idle)
	}

	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, f := range fams {
		if f.GetName() != "shardproxy_pool_connections" {
			continue
		}
		for _, m := range f.Metric {
			var user string
			for _, l := range m.Label {
				if l.GetName() == "user" {
					user = l.GetValue()
				}
			}
			series[user]++
		}
	}
	// One idle and one in_use series per shard and user.
	if want := 2 * len(env.shards.Clusters); series["app"] != want || series["postgres"] != want {
		t.Fatalf("shardproxy_pool_connections series by user %v, want %d for app and postgres", series, want)
	}
}

// TestRolePoolsFollowHealth: a shard the health checker marks down fails
// a backend role's statements at once with 08006, as the default pools
// do, without dialing the dead shard again; once it is up again the
// role's pool dials anew and the role's session goes on.
func TestRolePoolsFollowHealth(t *testing.T) {
	ctx := context.Background()
	set := localpg.StartT(t, localpg.Options{N: 1, Database: "rolehealth"})
	cl := set.Clusters[0]
	admin, err := pgx.Connect(ctx, cl.DSN("rolehealth"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{"CREATE ROLE app LOGIN", "CREATE TABLE t (id int PRIMARY KEY)", "GRANT SELECT ON t TO app"} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	admin.Close(ctx)
	topo, err := router.NewTopology(&router.Config{Shards: []router.ShardConfig{{Name: "h0", DSN: cl.DSN("rolehealth")}},
		Tables: map[string]router.TableConfig{"t": {Strategy: "hash", Key: "id"}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := proxy.Config{Database: "rolehealth", Admins: []string{"ops"},
		// app: trust here, and no password to the shard, which trusts it.
		Users:  []proxy.User{{Name: "app", Auth: "trust"}, {Name: "ops", Password: "ops"}},
		Health: proxy.HealthConfig{Interval: 100 * time.Millisecond, Timeout: time.Second, Failures: 1, Successes: 1},
		Pool:   proxy.PoolConfig{Size: 2, ConnectTimeout: 2 * time.Second, AcquireTimeout: 2 * time.Second}}
	addr := startProxy(t, cfg, topo)
	cc, err := pgx.ParseConfig(fmt.Sprintf("postgres://app@%s/rolehealth?sslmode=disable", addr))
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var who string
	if err := c.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != "app" {
		t.Fatalf("current_user %q %v, want app", who, err)
	}
	if _, err := c.Exec(ctx, "SELECT count(*) FROM t"); err != nil {
		t.Fatal(err)
	}
	appPool := func() map[string]string {
		for _, r := range adminRows(t, addr, "SHOW POOLS") {
			if r["user"] == "app" {
				return r
			}
		}
		t.Fatal("SHOW POOLS has no pool of app")
		return nil
	}
	shardState := func() string { return adminRows(t, addr, "SHOW SHARDS")[0]["state"] }

	if err := cl.Stop(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			cl.Restart(ctx)
		}
	}()
	waitUntil(t, "the shard marked down", func() bool { return shardState() == "down" })
	before := appPool()
	for i := 0; i < 3; i++ {
		_, err := c.Exec(ctx, "SELECT count(*) FROM t")
		if code(err) != "08006" || !strings.Contains(err.Error(), "marked down") {
			t.Fatalf("statement %d on the down shard: %v, want 08006 (marked down)", i, err)
		}
	}
	after := appPool()
	if after["connect_errors"] != before["connect_errors"] || after["connects"] != before["connects"] || after["open"] != "0" {
		t.Fatalf("app's pool while the shard is down: before %v, after %v; want no dial and no open connection", before, after)
	}

	if err := cl.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	waitUntil(t, "the shard up again", func() bool { return shardState() == "up" })
	if err := c.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != "app" {
		t.Fatalf("after the shard came back: %q %v", who, err)
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
