package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// roleOnShard reports whether shard i's server has the role.
func roleOnShard(t *testing.T, i int, role string) bool {
	t.Helper()
	return shardInt(t, i, "SELECT count(*) FROM pg_roles WHERE rolname = $1", role) == 1
}

// TestClusterWideStatements: roles go to every shard's server through the
// proxy, inside and outside transactions (two-phase commit across the
// servers), with Postgres's errors, and the session can then switch to
// them as on Postgres.
func TestClusterWideStatements(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := mustConnect(t)
	for _, r := range []string{"regress_cw_a", "regress_cw_b", "regress_cw_tx"} {
		c.Exec(ctx, "DROP ROLE IF EXISTS "+r)
	}
	steps := []string{
		"CREATE ROLE regress_cw_a",
		"CREATE USER regress_cw_b",
		"GRANT regress_cw_a TO regress_cw_b",
		"ALTER ROLE regress_cw_b SET work_mem = '3MB'",
		"COMMENT ON ROLE regress_cw_a IS 'cluster-wide'",
		"GRANT SELECT ON restaurants TO regress_cw_a",
	}
	for _, sql := range steps {
		if _, err := c.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	for i := 0; i < nShards; i++ {
		if !roleOnShard(t, i, "regress_cw_a") || !roleOnShard(t, i, "regress_cw_b") {
			t.Fatalf("shard %d lacks the roles", i)
		}
		if n := shardInt(t, i, "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE r.rolname = 'regress_cw_a' AND u.rolname = 'regress_cw_b'"); n != 1 {
			t.Fatalf("shard %d: membership missing", i)
		}
	}
	// Postgres's errors: the role exists (42710), the role does not (42704).
	if _, err := c.Exec(ctx, "CREATE ROLE regress_cw_a"); pgCode(err) != "42710" {
		t.Fatalf("CREATE ROLE of an existing role: %v, want 42710", err)
	}
	if _, err := c.Exec(ctx, "DROP ROLE regress_cw_nosuch"); pgCode(err) != "42704" {
		t.Fatalf("DROP ROLE of a missing role: %v, want 42704", err)
	}
	// The session switches to the new role as on Postgres, and back.
	var user string
	if _, err := c.Exec(ctx, "SET SESSION AUTHORIZATION regress_cw_b"); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, "SELECT current_user::text").Scan(&user); err != nil || user != "regress_cw_b" {
		t.Fatalf("current_user %q, %v; want regress_cw_b", user, err)
	}
	if _, err := c.Exec(ctx, "SELECT count(*) FROM restaurants"); err != nil {
		t.Fatalf("a member of regress_cw_a reads restaurants: %v", err)
	}
	if _, err := c.Exec(ctx, "SELECT count(*) FROM users"); pgCode(err) != "42501" {
		t.Fatalf("regress_cw_b reads users: %v, want 42501", err)
	}
	if _, err := c.Exec(ctx, "SET ROLE regress_cw_a"); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, "SELECT current_user::text").Scan(&user); err != nil || user != "regress_cw_a" {
		t.Fatalf("current_user %q, %v; want regress_cw_a", user, err)
	}
	// RESET SESSION AUTHORIZATION resets the role as well, as in Postgres
	// (on every backend the session leases next).
	if _, err := c.Exec(ctx, "RESET SESSION AUTHORIZATION"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		var role string
		if err := c.QueryRow(ctx, "SELECT current_user::text, current_setting('role')").Scan(&user, &role); err != nil || user == "regress_cw_b" || user == "regress_cw_a" || role != "none" {
			t.Fatalf("current_user %q, role %q, %v after RESET SESSION AUTHORIZATION", user, role, err)
		}
	}

	// In a transaction: rolled back everywhere, or committed everywhere.
	for _, end := range []string{"ROLLBACK", "COMMIT"} {
		for _, sql := range []string{"BEGIN", "CREATE ROLE regress_cw_tx", end} {
			if _, err := c.Exec(ctx, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		for i := 0; i < nShards; i++ {
			if got := roleOnShard(t, i, "regress_cw_tx"); got != (end == "COMMIT") {
				t.Fatalf("after %s shard %d has the role: %v", end, i, got)
			}
		}
	}
	for _, sql := range []string{"REVOKE SELECT ON restaurants FROM regress_cw_a", "DROP ROLE regress_cw_tx", "DROP ROLE regress_cw_b", "DROP ROLE regress_cw_a"} {
		if _, err := c.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	for i := 0; i < nShards; i++ {
		if roleOnShard(t, i, "regress_cw_a") {
			t.Fatalf("shard %d still has the role", i)
		}
	}
	// ALTER SYSTEM stays refused.
	if _, err := c.Exec(ctx, "ALTER SYSTEM SET work_mem = '1MB'"); pgCode(err) != "0A000" {
		t.Fatalf("ALTER SYSTEM: %v, want 0A000", err)
	}
}

// TestClusterWideOncePerServer: two shards are two databases of one
// server; a role is created there once, not once per shard (which would
// fail with "role already exists").
func TestClusterWideOncePerServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := env.shards.Clusters[0]
	admin, err := pgx.Connect(ctx, cl.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	admin.Exec(ctx, "DROP DATABASE IF EXISTS cw_second")
	if _, err := admin.Exec(ctx, "CREATE DATABASE cw_second"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Exec(context.Background(), "DROP DATABASE IF EXISTS cw_second WITH (FORCE)") })
	cfg := fmt.Sprintf("backend_roles: shared\nusers: [{name: app, password: app}]\nshards:\n  - {name: s0, dsn: %q}\n  - {name: s1, dsn: %q}\n",
		cl.DSN("deliveryapp"), cl.DSN("cw_second"))
	addr := serveProxy(t, cfg)
	c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	admin.Exec(ctx, "DROP ROLE IF EXISTS regress_cw_one")
	for _, sql := range []string{"CREATE ROLE regress_cw_one", "ALTER ROLE regress_cw_one CONNECTION LIMIT 3",
		"BEGIN", "ALTER ROLE regress_cw_one CONNECTION LIMIT 4", "COMMIT", "DROP ROLE regress_cw_one"} {
		if _, err := c.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// TestDoCallMergeOnDefaultShard: DO, CALL and MERGE of tables not in the
// config run on the default shard (s0), in both protocols, inside and
// outside transactions; MERGE of a sharded table is refused.
func TestDoCallMergeOnDefaultShard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := mustConnect(t)
	for _, sql := range []string{
		"DROP TABLE IF EXISTS cw_t", "CREATE TABLE cw_t (id int PRIMARY KEY, v text)",
		`CREATE OR REPLACE PROCEDURE cw_p(n int) LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO cw_t VALUES (n, 'p'); COMMIT; INSERT INTO cw_t VALUES (n + 1, 'p'); ROLLBACK; END $$`,
	} {
		if _, err := c.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	count := func() int64 {
		var n int64
		if err := c.QueryRow(ctx, "SELECT count(*) FROM cw_t").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if _, err := c.Exec(ctx, "DO $$BEGIN INSERT INTO cw_t VALUES (1, 'do'); END$$"); err != nil {
		t.Fatal(err)
	}
	// A procedure with transaction control, outside a transaction block.
	if _, err := c.Exec(ctx, "CALL cw_p(10)"); err != nil {
		t.Fatal(err)
	}
	ext, err := connectExec(ctx, pgx.QueryExecModeExec)
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close(ctx)
	if _, err := ext.Exec(ctx, "CALL cw_p($1)", 20); err != nil {
		t.Fatalf("CALL in the extended protocol: %v", err)
	}
	if n := count(); n != 3 {
		t.Fatalf("%d rows, want 3", n)
	}
	// Inside a transaction the DO joins it: rolled back with it.
	tx, err := ext.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO cw_t VALUES (30, 'tx')"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "DO $$BEGIN INSERT INTO cw_t VALUES (31, 'do'); END$$"); err != nil {
		t.Fatal(err)
	}
	var inTx int64
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM cw_t WHERE id >= 30").Scan(&inTx); err != nil || inTx != 2 {
		t.Fatalf("inside the transaction %d rows, %v; want 2", inTx, err)
	}
	tx.Rollback(ctx)
	// MERGE of a table not in the config.
	tag, err := c.Exec(ctx, `MERGE INTO cw_t t USING (VALUES (1, 'm'), (2, 'm')) AS s(id, v) ON t.id = s.id
		WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)`)
	if err != nil || tag.String() != "MERGE 2" {
		t.Fatalf("MERGE: %q, %v", tag, err)
	}
	if n := count(); n != 4 {
		t.Fatalf("%d rows, want 4", n)
	}
	// Every row is on the default shard (s0); the others hold none.
	if n := shardInt(t, 0, "SELECT count(*) FROM cw_t"); n != 4 {
		t.Fatalf("default shard holds %d rows, want 4", n)
	}
	for i := 1; i < nShards; i++ {
		if n := shardInt(t, i, "SELECT count(*) FROM cw_t"); n != 0 {
			t.Fatalf("shard %d holds %d rows, want 0", i, n)
		}
	}
	// Errors as on Postgres, and the session stays usable.
	if _, err := c.Exec(ctx, "DO $$BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '22012'; END$$"); pgCode(err) != "22012" {
		t.Fatalf("DO raising: %v, want 22012", err)
	}
	if _, err := c.Exec(ctx, "CALL cw_nosuch()"); pgCode(err) != "42883" {
		t.Fatalf("CALL of a missing procedure: %v, want 42883", err)
	}
	if _, err := c.Exec(ctx, "MERGE INTO orders o USING cw_t s ON o.user_id = s.id WHEN MATCHED THEN DELETE"); pgCode(err) != "0A000" {
		t.Fatalf("MERGE into a sharded table: %v, want 0A000", err)
	}
	// A setting a DO block changes stays with the session (as on
	// Postgres), and with no one else.
	if _, err := c.Exec(ctx, "DO $$BEGIN PERFORM set_config('work_mem', '7MB', false); END$$"); err != nil {
		t.Fatal(err)
	}
	var wm string
	if err := c.QueryRow(ctx, "SELECT current_setting('work_mem')").Scan(&wm); err != nil || wm != "7MB" {
		t.Fatalf("work_mem %q, %v after the DO; want 7MB", wm, err)
	}
	if err := ext.QueryRow(ctx, "SELECT current_setting('work_mem')").Scan(&wm); err != nil || wm == "7MB" {
		t.Fatalf("another client sees work_mem %q, %v", wm, err)
	}
	if _, err := c.Exec(ctx, "DROP TABLE cw_t"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "DROP PROCEDURE cw_p"); err != nil {
		t.Fatal(err)
	}
}

// TestCreateTableAsOnDefaultShard: CREATE TABLE AS and SELECT INTO of a
// table not in the config put its rows on the default shard and an empty
// table on every other shard (like any DDL), answer Postgres's tag, and
// a later DROP TABLE works on every shard.
func TestCreateTableAsOnDefaultShard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := mustConnect(t)
	seedRestaurants := shardInt(t, 0, "SELECT count(*) FROM restaurants")
	for _, tc := range []struct {
		create string
		rows   int64
	}{
		{"CREATE TABLE cw_ctas AS SELECT g AS x FROM generate_series(1, 5) g", 5},
		{"SELECT g AS x INTO TABLE cw_ctas FROM generate_series(1, 7) g", 7},
		{"SELECT 1 AS x INTO cw_ctas UNION ALL SELECT 2", 2},
		{"SELECT name AS x INTO cw_ctas FROM restaurants", seedRestaurants},
	} {
		c.Exec(ctx, "DROP TABLE IF EXISTS cw_ctas")
		tag, err := c.Exec(ctx, tc.create)
		if err != nil {
			t.Fatalf("%s: %v", tc.create, err)
		}
		// Postgres's tag: the rows made, not their sum over shards.
		if tag.String() != fmt.Sprintf("SELECT %d", tc.rows) {
			t.Errorf("%s: tag %q, want SELECT %d", tc.create, tag, tc.rows)
		}
		var n int64
		if err := c.QueryRow(ctx, "SELECT count(*) FROM cw_ctas").Scan(&n); err != nil || n != tc.rows {
			t.Errorf("%s: %d rows through the proxy, %v; want %d", tc.create, n, err, tc.rows)
		}
		for i := 1; i < nShards; i++ {
			if got := shardInt(t, i, "SELECT count(*) FROM cw_ctas"); got != 0 {
				t.Errorf("%s: shard %d holds %d rows, want an empty table", tc.create, i, got)
			}
		}
		if _, err := c.Exec(ctx, "DROP TABLE cw_ctas"); err != nil {
			t.Fatalf("DROP TABLE after %s: %v", tc.create, err)
		}
	}
}
