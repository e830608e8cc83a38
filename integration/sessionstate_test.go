package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/proxy/proxytest"
)

// sessionView is what one client sees of its session.
type sessionView struct{ user, searchPath, timeout, workMem string }

const viewSQL = "SELECT current_user::text, current_setting('search_path'), current_setting('statement_timeout'), current_setting('work_mem')"

func viewOf(ctx context.Context, c *pgx.Conn) (sessionView, error) {
	var v sessionView
	err := c.QueryRow(ctx, viewSQL).Scan(&v.user, &v.searchPath, &v.timeout, &v.workMem)
	return v, err
}

// ensureRole creates a login-less role on every shard (roles are
// cluster-wide, which the proxy refuses to run).
func ensureRole(t *testing.T, name string) {
	t.Helper()
	for i := 0; i < nShards; i++ {
		if err := shardExec(context.Background(), i, fmt.Sprintf(
			`DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s; END IF; END$$`, name, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func connectExec(ctx context.Context, mode pgx.QueryExecMode) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(proxyURL("app", "app"))
	if err != nil {
		return nil, err
	}
	cc.DefaultQueryExecMode = mode
	return pgx.ConnectConfig(ctx, cc)
}

// TestSessionStateNeverLeaks runs many clients at once through a small
// pool: some change their session (set_config(..., false) anywhere in a
// statement, SET ROLE, SET SESSION AUTHORIZATION, set_config('role'), plain
// SET), in the simple and the extended protocol, while the others check
// after every statement that they still see a fresh session. Each changer
// checks that it keeps its own change, as on a dedicated Postgres
// connection.
func TestSessionStateNeverLeaks(t *testing.T) {
	ensureRole(t, "lowpriv")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seedUsers(t)
	base := mustConnect(t)
	fresh, err := viewOf(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	base.Close(ctx)

	type actor struct {
		name, sql string
		want      func(v sessionView) sessionView
	}
	actors := []actor{
		{"set_config search_path", "SELECT set_config('search_path', '', false)",
			func(v sessionView) sessionView { v.searchPath = ""; return v }},
		{"set_config statement_timeout", "SELECT pg_catalog.set_config('statement_timeout', '123s', false)",
			func(v sessionView) sessionView { v.timeout = "123s"; return v }},
		{"set_config in a cross-shard read", "SELECT count(*) FROM users WHERE set_config('work_mem', '1234kB', false) <> ''",
			func(v sessionView) sessionView { v.workMem = "1234kB"; return v }},
		{"set_config role", "SELECT set_config('role', 'lowpriv', false)",
			func(v sessionView) sessionView { v.user = "lowpriv"; return v }},
		{"SET ROLE", "SET ROLE lowpriv",
			func(v sessionView) sessionView { v.user = "lowpriv"; return v }},
		{"SET SESSION AUTHORIZATION", "SET SESSION AUTHORIZATION lowpriv",
			func(v sessionView) sessionView { v.user = "lowpriv"; return v }},
		{"SET search_path", "SET search_path TO pg_catalog",
			func(v sessionView) sessionView { v.searchPath = "pg_catalog"; return v }},
		{"set_config in a transaction", "BEGIN; SELECT set_config('statement_timeout', '77s', false); COMMIT",
			func(v sessionView) sessionView { v.timeout = "77s"; return v }}, // lasts past COMMIT, as in Postgres
	}
	modes := map[string]pgx.QueryExecMode{"simple": pgx.QueryExecModeSimpleProtocol, "extended": pgx.QueryExecModeCacheStatement}
	const rounds = 12
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for mname, mode := range modes {
		for _, a := range actors {
			if a.sql[:5] == "BEGIN" && mode != pgx.QueryExecModeSimpleProtocol {
				continue
			}
			wg.Add(1)
			go func(mname string, mode pgx.QueryExecMode, a actor) {
				defer wg.Done()
				c, err := connectExec(ctx, mode)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close(context.Background())
				for i := 0; i < rounds; i++ {
					rows, err := c.Query(ctx, a.sql) // extended mode: Parse/Bind/Execute
					if err == nil {
						rows.Close()
						err = rows.Err()
					}
					if err != nil {
						errs <- fmt.Errorf("%s/%s: %s: %w", a.name, mname, a.sql, err)
						return
					}
					if a.want == nil {
						continue
					}
					for j := 0; j < 2; j++ {
						v, err := viewOf(ctx, c)
						if err != nil {
							errs <- fmt.Errorf("%s/%s: view: %w", a.name, mname, err)
							return
						}
						if w := a.want(fresh); v != w {
							errs <- fmt.Errorf("%s/%s: the client lost its own setting: sees %+v, want %+v", a.name, mname, v, w)
							return
						}
					}
				}
			}(mname, mode, a)
		}
		for o := 0; o < 3; o++ {
			wg.Add(1)
			go func(mname string, mode pgx.QueryExecMode, o int) {
				defer wg.Done()
				c, err := connectExec(ctx, mode)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close(context.Background())
				for i := 0; i < rounds*4; i++ {
					v, err := viewOf(ctx, c)
					if err != nil {
						errs <- fmt.Errorf("observer %d/%s: %w", o, mname, err)
						return
					}
					if v != fresh {
						errs <- fmt.Errorf("observer %d/%s sees another client's session: %+v, want %+v", o, mname, v, fresh)
						return
					}
					var n int64
					if err := c.QueryRow(ctx, "SELECT count(*) FROM users WHERE id = 3").Scan(&n); err != nil || n != 1 {
						errs <- fmt.Errorf("observer %d/%s: users: %d %v", o, mname, n, err)
						return
					}
				}
			}(mname, mode, o)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Afterwards, every pooled backend is clean.
	c := mustConnect(t)
	for i := 0; i < 20; i++ {
		v, err := viewOf(ctx, c)
		if err != nil || v != fresh {
			t.Fatalf("after the run: %+v %v, want %+v", v, err, fresh)
		}
	}
}

// TestSessionResetAndDroppedRole: RESET ALL leaves the role alone (as in
// Postgres), RESET ROLE ends it, and dropping a role a client had set makes
// no later login or other client fail.
func TestSessionResetAndDroppedRole(t *testing.T) {
	ensureRole(t, "gone_soon")
	ctx := context.Background()
	c := mustConnect(t)
	for _, q := range []string{"SET ROLE gone_soon", "SET search_path TO pg_catalog", "RESET ALL"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	v, err := viewOf(ctx, c)
	if err != nil || v.user != "gone_soon" || v.searchPath != `"$user", public` {
		t.Fatalf("after RESET ALL: %+v %v", v, err)
	}
	if _, err := c.Exec(ctx, "RESET ROLE"); err != nil {
		t.Fatal(err)
	}
	if v, err := viewOf(ctx, c); err != nil || v.user == "gone_soon" {
		t.Fatalf("after RESET ROLE: %+v %v", v, err)
	}
	if _, err := c.Exec(ctx, "SET ROLE gone_soon"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < nShards; i++ {
		if err := shardExec(ctx, i, "DROP ROLE gone_soon"); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 10; i++ {
		o, err := connect(ctx, "app", "app")
		if err != nil {
			t.Fatalf("login %d after DROP ROLE: %v", i, err)
		}
		if v, err := viewOf(ctx, o); err != nil || v.user == "gone_soon" {
			t.Fatalf("other client: %+v %v", v, err)
		}
		o.Close(ctx)
	}
}

// TestNoTableFunctionsOnDefaultShard: a statement without tables that calls
// a sequence or a function reading a table answers from one fixed shard
// (the default), never from each shard in turn.
func TestNoTableFunctionsOnDefaultShard(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	for _, q := range []string{
		"DROP TABLE IF EXISTS tally", "DROP SEQUENCE IF EXISTS tally_seq",
		"CREATE TABLE tally (x int)", "CREATE SEQUENCE tally_seq",
		"CREATE OR REPLACE FUNCTION count_tally() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM tally'",
		"INSERT INTO tally VALUES (1)",
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for mname, mode := range map[string]pgx.QueryExecMode{"simple": pgx.QueryExecModeSimpleProtocol, "extended": pgx.QueryExecModeCacheStatement} {
		cc, err := connectExec(ctx, mode)
		if err != nil {
			t.Fatal(err)
		}
		var last int64
		for i := 0; i < 2*nShards; i++ {
			var n, cur, cnt int64
			if err := cc.QueryRow(ctx, "SELECT nextval('tally_seq')").Scan(&n); err != nil {
				t.Fatalf("%s: nextval: %v", mname, err)
			}
			if last != 0 && n != last+1 {
				t.Fatalf("%s: nextval gave %d after %d: another shard's sequence", mname, n, last)
			}
			last = n
			if err := cc.QueryRow(ctx, "SELECT currval('tally_seq')").Scan(&cur); err != nil || cur != n {
				t.Fatalf("%s: currval = %d %v, want %d", mname, cur, err, n)
			}
			if err := cc.QueryRow(ctx, "SELECT count_tally()").Scan(&cnt); err != nil || cnt != 1 {
				t.Fatalf("%s: count_tally() = %d %v, want 1", mname, cnt, err)
			}
		}
		cc.Close(ctx)
	}
}

// TestFunctionCallProtocol: libpq's function-call protocol (psql's
// \lo_import, \lo_export and \lo_unlink use it) runs on the default shard,
// inside psql's transaction, and errors come back at once.
func TestFunctionCallProtocol(t *testing.T) {
	dir := t.TempDir()
	src, dst := dir+"/in.bin", dir+"/out.bin"
	payload := make([]byte, 100000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	if err := os.WriteFile(src, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := psql(t, "app", "-At", "-c", `\lo_import `+src)
	if err != nil {
		t.Fatalf("lo_import: %v\n%s", err, out)
	}
	var oid int64
	if _, err := fmt.Sscanf(strings.TrimSpace(out), "lo_import %d", &oid); err != nil {
		t.Fatalf("lo_import output %q", out)
	}
	if got := shardInt(t, env.topo.Default, "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $1", oid); got != 1 {
		t.Fatalf("large object %d not on the default shard", oid)
	}
	if out, err := psql(t, "app", "-At", "-c", fmt.Sprintf(`\lo_export %d %s`, oid, dst)); err != nil {
		t.Fatalf("lo_export: %v\n%s", err, out)
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("exported %d bytes, %v; want the %d imported", len(got), err, len(payload))
	}
	if out, err := psql(t, "app", "-At", "-c", fmt.Sprintf(`\lo_unlink %d`, oid)); err != nil || !strings.Contains(out, "lo_unlink") {
		t.Fatalf("lo_unlink: %v\n%s", err, out)
	}
	// An error: answered at once (the test's timeout catches a hang), and
	// the session goes on.
	out, _ = psql(t, "app", "-At", "-c", fmt.Sprintf(`\lo_unlink %d`, oid), "-c", "SELECT 41 + 1")
	if !strings.Contains(out, "does not exist") || !strings.Contains(out, "42") {
		t.Fatalf("lo_unlink of a missing object: %s", out)
	}
}

// TestSetInsideMultiStatementString: Sequelize's connect string; the SETs of
// a string that succeeds outside a transaction become the client's
// settings on every backend, those of a failed string do not, and other
// clients see neither.
func TestSetInsideMultiStatementString(t *testing.T) {
	ctx := context.Background()
	seedUsers(t)
	c := mustConnect(t)
	if _, err := c.Exec(ctx, "SET client_min_messages TO warning;SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "SET work_mem TO '2MB'; SELECT 1/0"); pgCode(err) != "22012" {
		t.Fatalf("failing string: %v", err)
	}
	if _, err := c.Exec(ctx, "SET statement_timeout TO '55s'; SELECT count(*) FROM users WHERE id = 3"); err != nil {
		t.Fatal(err)
	}
	other := mustConnect(t)
	for i := 0; i < 2*nShards; i++ {
		var cmm, tz, wm, st string
		if err := c.QueryRow(ctx, "SELECT current_setting('client_min_messages'), current_setting('TimeZone'), current_setting('work_mem'), current_setting('statement_timeout') FROM users WHERE id = $1", i+1).
			Scan(&cmm, &tz, &wm, &st); err != nil {
			t.Fatal(err)
		}
		if cmm != "warning" || tz != "<+00>-00" || wm != "4MB" || st != "55s" {
			t.Fatalf("client's settings on a backend: %s %s %s %s", cmm, tz, wm, st)
		}
		if err := other.QueryRow(ctx, "SELECT current_setting('client_min_messages'), current_setting('statement_timeout')").Scan(&cmm, &st); err != nil || cmm != "notice" || st != "0" {
			t.Fatalf("other client: %s %s %v", cmm, st, err)
		}
	}
}

// TestStartupValuesAreTheSessionDefaults: the startup packet's
// application_name and DateStyle are the client's on every backend, and
// RESET (one, or ALL) returns to them, as Postgres does, not to the
// server's defaults.
func TestStartupValuesAreTheSessionDefaults(t *testing.T) {
	ctx := context.Background()
	cc, err := pgx.ParseConfig(proxyURL("app", "app"))
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cc.RuntimeParams["application_name"] = "sessions-test"
	cc.RuntimeParams["DateStyle"] = "SQL, DMY"
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	check := func(when string) {
		t.Helper()
		for i := 0; i < nShards; i++ {
			var app, ds string
			if err := c.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('DateStyle')").Scan(&app, &ds); err != nil {
				t.Fatal(err)
			}
			if app != "sessions-test" || ds != "SQL, DMY" {
				t.Fatalf("%s: application_name %q, DateStyle %q", when, app, ds)
			}
		}
		if got := c.PgConn().ParameterStatus("DateStyle"); got != "SQL, DMY" {
			t.Fatalf("%s: ParameterStatus DateStyle = %q", when, got)
		}
		if got := c.PgConn().ParameterStatus("application_name"); got != "sessions-test" {
			t.Fatalf("%s: ParameterStatus application_name = %q", when, got)
		}
	}
	check("at login")
	for _, q := range []string{"SET DateStyle TO ISO", "RESET DateStyle"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	check("after RESET DateStyle")
	for _, q := range []string{"SET DateStyle TO ISO", "SET application_name TO other", "RESET ALL"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	check("after RESET ALL")
	if _, err := c.Exec(ctx, "SET DateStyle TO DEFAULT"); err != nil {
		t.Fatal(err)
	}
	check("after SET TO DEFAULT")
	// SET DateStyle TO ymd keeps the output style the session has (ISO
	// here), on every backend, not the startup packet's.
	for _, q := range []string{"SET DateStyle TO iso", "SET DateStyle TO ymd"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < nShards; i++ {
		var ds string
		if err := c.QueryRow(ctx, "SELECT current_setting('DateStyle')").Scan(&ds); err != nil || ds != "ISO, YMD" {
			t.Fatalf("after SET DateStyle TO iso, then ymd: %q %v", ds, err)
		}
	}
}

// TestLoginLeaseFailureIsAnError: a login that needs a backend (startup
// parameters) whose shard cannot be reached gets an ErrorResponse with a
// SQLSTATE, not a silent close.
func TestLoginLeaseFailureIsAnError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, addr := proxytest.Serve(t, fmt.Sprintf(`backend_roles: shared
users: [{name: app, password: app}]
pool: {size: 2, acquire_timeout: 2s, connect_timeout: 2s}
shards:
  - {name: s0, dsn: "postgres://postgres@%s/deliveryapp?sslmode=disable"}
`, dead))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cc, err := pgx.ParseConfig(fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", addr))
	if err != nil {
		t.Fatal(err)
	}
	cc.RuntimeParams["TimeZone"] = "Europe/Madrid"
	_, err = pgx.ConnectConfig(ctx, cc)
	if code := pgCode(err); code != "08006" {
		t.Fatalf("login with an unreachable shard: %v (SQLSTATE %q), want 08006", err, code)
	}
}
