package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/coordinator"
	"github.com/shardproxy/shardproxy/delivery"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/proxy/proxytest"
)

// withAppRole creates the example's app role on every shard
// (delivery/app_role.sql, as the demo and compose do) and makes the shards
// check its password with SCRAM (the harness's pg_hba trusts everyone
// else), until the test ends.
func withAppRole(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for i, c := range env.shards.Clusters {
		if err := shardExec(ctx, i, delivery.AppRole); err != nil {
			t.Fatalf("shard %d: app role: %v", i, err)
		}
		hba := filepath.Join(c.DataDir, "pg_hba.conf")
		old, err := os.ReadFile(hba)
		if err != nil {
			t.Fatal(err)
		}
		// Written in place: the file keeps its owner (the server's user).
		if err := os.WriteFile(hba, append([]byte("host all app all scram-sha-256\n"), old...), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			os.WriteFile(hba, old, 0o600)
			shardExec(ctx, i, "SELECT pg_reload_conf()")
			shardExec(ctx, i, "DROP OWNED BY app")
			shardExec(ctx, i, "DROP ROLE IF EXISTS app")
		})
		if err := shardExec(ctx, i, "SELECT pg_reload_conf()"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // the postmaster re-reads pg_hba.conf asynchronously
}

// TestLeastPrivilegeAppRole: with backend_roles: per_user the demo's app
// user reaches the shards as the unprivileged role app, logging in with its
// own password (SCRAM, checked by the shard): pg_read_file and writes to
// the catalogs are refused by Postgres with 42501, exactly as on a plain
// Postgres connection as app, and the session goes on; the app's own work
// (a write on several shards in one transaction, committed by two-phase
// commit) goes through. A user whose backend password is wrong gets the
// shard's 28P01 when it logs in.
func TestLeastPrivilegeAppRole(t *testing.T) {
	withAppRole(t)
	ctx := context.Background()
	cfg := env.cfg
	cfg.BackendRoles = proxy.BackendRolesPerUser
	cfg.Users = []proxy.User{{Name: "app", Password: "app"},
		{Name: "wrongpw", Password: "app", BackendUser: "app", BackendPassword: "not-app"}}
	addr := startProxy(t, cfg, nil)

	// The reference: the same statements on one plain Postgres as app.
	direct, err := pgx.Connect(ctx, strings.Replace(env.shards.Clusters[0].DSN("deliveryapp"), "postgres@", "app:app@", 1))
	if err != nil {
		t.Fatalf("direct login as app: %v", err)
	}
	defer direct.Close(ctx)
	denied := []string{
		"SELECT pg_read_file('/etc/hostname')",
		"SELECT pg_ls_dir('.')",
		"DELETE FROM pg_catalog.pg_class WHERE relname = 'users'",
		"SELECT pg_read_binary_file('/etc/passwd')",
		"SELECT lo_import('/etc/hostname')",
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		c := connectTo(t, addr, "app", mode)
		var who string
		if err := c.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != "app" {
			t.Fatalf("%v: current_user %q %v, want app", mode, who, err)
		}
		for _, sql := range denied {
			_, want := direct.Exec(ctx, sql, mode)
			_, got := c.Exec(ctx, sql)
			if code(want) != "42501" || code(got) != code(want) {
				t.Errorf("%v: %s: through the proxy %v, on Postgres as app %v; want 42501 from both", mode, sql, got, want)
			}
			var n int64
			if err := c.QueryRow(ctx, "SELECT count(*) FROM users WHERE id = 1").Scan(&n); err != nil {
				t.Fatalf("%v: after %s: %v", mode, sql, err)
			}
		}
	}

	// A write on several shards, in the client's transaction, as app.
	c := connectTo(t, addr, "app", pgx.QueryExecModeSimpleProtocol)
	const first = 915_000_100
	var vals []string
	for id := first; id < first+12; id++ {
		vals = append(vals, fmt.Sprintf("(%d, 'lp', 'lp@example.com', 'Oslo')", id))
	}
	cleanup := "DELETE FROM users WHERE id >= " + strconv.Itoa(first) + " AND id < " + strconv.Itoa(first+12)
	if _, err := c.Exec(ctx, cleanup); err != nil {
		t.Fatal(err)
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO users (id, name, email, city) VALUES "+strings.Join(vals, ", ")); err != nil {
		t.Fatalf("multi-shard insert as app: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit as app: %v", err)
	}
	total, shards := int64(0), 0
	for i := range env.shards.Clusters {
		n := shardInt(t, i, "SELECT count(*) FROM users WHERE id >= $1 AND id < $2", first, first+12)
		total += n
		if n > 0 {
			shards++
		}
	}
	if total != 12 || shards < 2 {
		t.Fatalf("after the commit: %d rows on %d shards, want 12 on several", total, shards)
	}
	if _, err := c.Exec(ctx, cleanup); err != nil {
		t.Fatal(err)
	}

	// The shard refuses the role at login (checkRole), not at every
	// statement after it.
	w, err := pgx.Connect(ctx, fmt.Sprintf("postgres://wrongpw:app@%s/deliveryapp?sslmode=disable", addr))
	if err == nil {
		w.Close(ctx)
	}
	if code(err) != "28P01" {
		t.Fatalf("backend password not the role's: %v, want the shard's 28P01 at login", err)
	}
}

// TestMaxQueryTokens: a 1.3M-item IN list (the PgDog report) is refused
// with 54001 before it is parsed, on both protocols, in and out of a
// transaction, and the session goes on; a statement under the cap runs.
func TestMaxQueryTokens(t *testing.T) {
	addr := limitsProxy(t, proxy.Limits{MaxQueryTokens: 100000}, 0)
	ctx := context.Background()
	var sb strings.Builder
	sb.WriteString("SELECT count(*) FROM users WHERE id IN (")
	for i := 0; i < 1_300_000; i++ {
		sb.WriteString(strconv.Itoa(i))
		sb.WriteString(",")
	}
	sb.WriteString("0)")
	huge := sb.String()
	small := "SELECT count(*) FROM users WHERE id IN (" + strings.TrimSuffix(strings.Repeat("1,", 20000), ",") + ")"
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		c := connectTo(t, addr, "app", mode)
		if _, err := c.Exec(ctx, huge); code(err) != "54001" {
			t.Fatalf("%v: huge IN list: %v, want 54001", mode, err)
		}
		var n int64
		if err := c.QueryRow(ctx, small).Scan(&n); err != nil {
			t.Fatalf("%v: a 20000-item IN list after the refusal: %v", mode, err)
		}
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, huge); code(err) != "54001" {
			t.Fatalf("%v: huge IN list in a transaction: %v, want 54001", mode, err)
		}
		// As after any error in a transaction (Postgres's 25P02).
		if _, err := tx.Exec(ctx, "SELECT 1"); code(err) != "25P02" {
			t.Fatalf("%v: statement after the refusal in the transaction: %v, want 25P02", mode, err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRow(ctx, "SELECT count(*) FROM users WHERE id = 1").Scan(&n); err != nil {
			t.Fatalf("%v: after the rollback: %v", mode, err)
		}
	}
}

// TestAdminPermissions: an admin limited to show runs every SHOW but gets
// 42501 for RELOAD, RECOVER and CACHE CLEAR, and stays connected; an admin
// without an entry (as before admin_permissions) runs them.
func TestAdminPermissions(t *testing.T) {
	cfg := env.cfg
	cfg.Admins = []string{"app", "trusty"}
	cfg.AdminPermissions = map[string][]string{"app": {"show"}}
	// Admin console users need no role on the shards, even when users
	// reach the shards as themselves and the client sends startup
	// settings (psql's application_name).
	cfg.BackendRoles = proxy.BackendRolesPerUser
	addr := startProxy(t, cfg, nil)
	ctx := context.Background()
	admin := func(user string) *pgx.Conn {
		cc, err := pgx.ParseConfig(fmt.Sprintf("postgres://%s:app@%s/shardproxy?sslmode=disable", user, addr))
		if err != nil {
			t.Fatal(err)
		}
		cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		cc.RuntimeParams["application_name"] = "psql"
		c, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			t.Fatalf("%s on the admin console: %v", user, err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		return c
	}
	app := admin("app")
	for _, sql := range []string{"SHOW POOLS", "SHOW CONFIG", "SHOW HELP"} {
		if _, err := app.Exec(ctx, sql); err != nil {
			t.Fatalf("app: %s: %v", sql, err)
		}
	}
	for _, sql := range []string{"RELOAD", "RECOVER", "CACHE CLEAR"} {
		if _, err := app.Exec(ctx, sql); code(err) != "42501" {
			t.Fatalf("app (show only): %s: %v, want 42501", sql, err)
		}
		if _, err := app.Exec(ctx, "SHOW SHARDS"); err != nil {
			t.Fatalf("app: after %s: %v", sql, err)
		}
	}
	trusty := admin("trusty")
	for _, sql := range []string{"RECOVER", "CACHE CLEAR", "SHOW POOLS"} {
		if _, err := trusty.Exec(ctx, sql); err != nil {
			t.Fatalf("trusty (no entry: every command): %s: %v", sql, err)
		}
	}
}

// TestAuthQueryPassThrough: a user not listed in the config is looked up
// with auth_query (a SECURITY DEFINER function run by a dedicated role on
// the first shard, as PgBouncer recommends), authenticates against its
// shard verifier, and reaches every shard as itself by SCRAM pass-through:
// the shards check the proof (pg_hba scram-sha-256 for app), nobody
// configured app's password. Wrong passwords and unknown users are
// refused as Postgres does.
func TestAuthQueryPassThrough(t *testing.T) {
	withAppRole(t)
	ctx := context.Background()
	c0, err := shardConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c0.Close(ctx)
	var verifier string
	if err := c0.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'").Scan(&verifier); err != nil {
		t.Fatal(err)
	}
	// Pass-through needs the same verifier (salt) on every shard.
	for i := 1; i < len(env.shards.Clusters); i++ {
		c, err := shardConn(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		var alter string
		if err := c.QueryRow(ctx, "SELECT format('ALTER ROLE app PASSWORD %L', $1::text)", verifier).Scan(&alter); err == nil {
			_, err = c.Exec(ctx, alter)
		}
		c.Close(ctx)
		if err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
	}
	for _, sql := range []string{
		"DROP FUNCTION IF EXISTS shardproxy_lookup(text)",
		"DROP ROLE IF EXISTS shardproxy_auth",
		"CREATE ROLE shardproxy_auth LOGIN",
		`CREATE FUNCTION shardproxy_lookup(name text, OUT rolname text, OUT rolpassword text) RETURNS record
		   LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
		   AS $$ SELECT rolname::text, rolpassword FROM pg_authid WHERE rolname = name AND rolcanlogin AND NOT rolsuper $$`,
		"REVOKE ALL ON FUNCTION shardproxy_lookup(text) FROM PUBLIC",
		"GRANT EXECUTE ON FUNCTION shardproxy_lookup(text) TO shardproxy_auth",
	} {
		if _, err := c0.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	t.Cleanup(func() {
		shardExec(ctx, 0, "DROP FUNCTION IF EXISTS shardproxy_lookup(text)")
		shardExec(ctx, 0, "DROP ROLE IF EXISTS shardproxy_auth")
	})

	cfg := env.cfg
	cfg.Users = []proxy.User{{Name: "trusty", Auth: "trust"}}
	cfg.AuthQuery = proxy.AuthQueryConfig{Query: "SELECT rolname, rolpassword FROM shardproxy_lookup($1)", User: "shardproxy_auth"}
	addr := startProxy(t, cfg, nil)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		c := connectTo(t, addr, "app", mode) // password app
		var who string
		if err := c.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != "app" {
			t.Fatalf("%v: current_user %q %v, want app", mode, who, err)
		}
		var n int64
		if err := c.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil {
			t.Fatalf("%v: a read on every shard as app: %v", mode, err)
		}
		if _, err := c.Exec(ctx, "SELECT pg_read_file('/etc/hostname')"); code(err) != "42501" {
			t.Fatalf("%v: pg_read_file: %v, want 42501", mode, err)
		}
	}
	for _, tc := range []struct{ user, password, want string }{
		{"app", "wrong", "28P01"},
		{"nobody", "app", "28000"},
		{"postgres", "", "28000"}, // superusers are not returned by the lookup
	} {
		c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/deliveryapp?sslmode=disable", tc.user, tc.password, addr))
		if err == nil {
			c.Close(ctx)
		}
		if code(err) != tc.want {
			t.Errorf("login as %s: %v, want %s", tc.user, err, tc.want)
		}
	}
}

// TestCoordinatorKeepsLeastPrivilege: the coordinator runs reads as its
// own DSN's user, so a session with a backend role does not get to use it:
// a read it would take (an ordered-set aggregate across shards) with
// pg_read_file in it answers for a user without a role (the coordinator is
// up) and is refused with 0A000 for the role's session, which never sees
// the file.
func TestCoordinatorKeepsLeastPrivilege(t *testing.T) {
	withAppRole(t)
	cl := env.shards.Clusters[0]
	ctx := context.Background()
	if err := cl.CreateDatabase(ctx, coordinatorDB); err != nil {
		t.Fatal(err)
	}
	cfg := env.cfg
	cfg.Users = []proxy.User{{Name: "app", Password: "app", BackendUser: "app", BackendPassword: "app"}, {Name: "trusty", Auth: "trust"}}
	cfg.Coordinator = coordinator.Config{DSN: cl.DSN(coordinatorDB), Mode: "fallback"}.WithDefaults()
	srv := proxytest.NewConfig(t, cfg, env.topo)
	srv.ProvisionCoordinator(ctx)
	addr := proxytest.Listen(t, srv)
	var err error
	const sql = "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total), pg_read_file('/etc/hostname') FROM orders"
	trusty := connectTo(t, addr, "trusty", pgx.QueryExecModeSimpleProtocol)
	for i := 0; i < 100; i++ { // provisioning runs in the background
		var p *float64
		var host string
		if err = trusty.QueryRow(ctx, sql).Scan(&p, &host); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("the coordinator read as the DSN's user: %v", err)
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		c := connectTo(t, addr, "app", mode)
		var p *float64
		var host string
		if err := c.QueryRow(ctx, sql).Scan(&p, &host); code(err) != "0A000" {
			t.Fatalf("%v: the same read as app: %v (%q), want 0A000", mode, err, host)
		}
	}
}
