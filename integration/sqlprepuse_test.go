package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/proxy/proxytest"
)

// oneShardProxy serves a proxy over shard s0 alone with no tables listed
// (the `make compat COMPAT=sp1` layout) and one backend, so that anything
// a statement leaves on a backend meets the next statement.
func oneShardProxy(t *testing.T) string {
	t.Helper()
	cfg := fmt.Sprintf("backend_roles: shared\nusers: [{name: app, password: app}]\npool: {size: 1, acquire_timeout: 5s}\nshards:\n  - {name: s0, dsn: %q}\n",
		env.shards.DSNs()[0])
	_, addr := proxytest.Serve(t, cfg)
	return fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", addr)
}

// matchPostgresScriptAt is matchPostgresScript through the proxy at url.
func matchPostgresScriptAt(t *testing.T, url string, script []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(conn string) []string {
		c, err := pgconn.Connect(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		out := make([]string, len(script))
		for i, sql := range script {
			out[i] = scriptStep(ctx, c, sql)
		}
		return out
	}
	want := run(env.shards.Clusters[0].DSN("deliveryapp"))
	got := run(url)
	for i := range script {
		if got[i] != want[i] {
			t.Errorf("step %d %q:\nproxy:    %s\npostgres: %s", i, script[i], got[i], want[i])
		}
	}
}

// TestSQLPreparedInExplainAndCTASMatchPostgres: EXPLAIN EXECUTE and
// CREATE TABLE ... AS EXECUTE of a SQL prepared statement (the session's,
// which no backend has) answer as in Postgres: the plan Postgres makes for
// the prepared statement (custom, or generic with $1 under
// force_generic_plan), the table with the prepared query's columns, the
// errors, inside and outside transactions; the statement made on the
// backend for it does not stay there (one backend: a leftover would fail
// the later PREPARE of the same name). Postgres's regression tests
// tablespace, select_into, write_parallel, rowsecurity and select_parallel
// do this.
func TestSQLPreparedInExplainAndCTASMatchPostgres(t *testing.T) {
	url := oneShardProxy(t)
	matchPostgresScriptAt(t, url, []string{
		"DROP TABLE IF EXISTS pe_t, pe_c, pe_d, pe_e",
		"CREATE TABLE pe_t (a int PRIMARY KEY, b text)",
		"INSERT INTO pe_t SELECT g, 'v' || g FROM generate_series(1, 50) g",
		"ANALYZE pe_t",
		"PREPARE pe_q(int) AS SELECT b FROM pe_t WHERE a = $1",
		"EXPLAIN (COSTS OFF) EXECUTE pe_q(3)",
		"SET plan_cache_mode = force_generic_plan",
		"EXPLAIN (COSTS OFF) EXECUTE pe_q(3)",
		"RESET plan_cache_mode",
		"CREATE TABLE pe_c AS EXECUTE pe_q(4)",
		"SELECT * FROM pe_c",
		"CREATE TABLE pe_c AS EXECUTE pe_q(4)",
		"CREATE TABLE IF NOT EXISTS pe_c AS EXECUTE pe_q(4)",
		"PREPARE pe_s AS SELECT generate_series(1, 3) AS n",
		"CREATE TABLE pe_d (x) AS EXECUTE pe_s WITH NO DATA",
		"SELECT count(*), pg_typeof(min(x)) FROM pe_d",
		"EXPLAIN (ANALYZE, COSTS OFF, SUMMARY OFF, TIMING OFF) CREATE TABLE pe_e AS EXECUTE pe_s",
		"SELECT * FROM pe_e ORDER BY 1",
		"EXPLAIN EXECUTE pe_nope",
		"EXPLAIN EXECUTE pe_q",
		"EXPLAIN (COSTS OFF) EXECUTE pe_q('x')",
		"EXPLAIN (COSTS OFF) EXECUTE pe_q(2); SELECT 1",
		"BEGIN",
		"EXPLAIN (COSTS OFF) EXECUTE pe_q(1)",
		"CREATE TABLE pe_c AS EXECUTE pe_q(1)",
		"EXPLAIN (COSTS OFF) EXECUTE pe_q(1)",
		"ROLLBACK",
		"DEALLOCATE pe_q",
		"EXPLAIN EXECUTE pe_q(1)",
		"PREPARE pe_q(int) AS SELECT $1 + 1",
		"EXPLAIN (COSTS OFF, VERBOSE) EXECUTE pe_q(1)",
		"DEALLOCATE ALL",
		"PREPARE pe_s AS SELECT 1",
		"DEALLOCATE pe_s",
		"DROP TABLE pe_t, pe_c, pe_d, pe_e",
	})
}

// TestSQLPreparedCTASAcrossShardsRefused: with tables on several shards,
// CREATE TABLE AS EXECUTE (the new table goes to every shard) is refused
// with 0A000 rather than answered wrongly, and the session goes on.
func TestSQLPreparedCTASAcrossShardsRefused(t *testing.T) {
	ctx := context.Background()
	c, err := pgconn.Connect(ctx, proxyURL("app", "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	steps := []string{
		"PREPARE pe_x AS SELECT 1 AS a",
		"CREATE TABLE pe_x_t AS EXECUTE pe_x",
		"EXECUTE pe_x",
	}
	var got []string
	for _, sql := range steps {
		got = append(got, scriptStep(ctx, c, sql))
	}
	if !strings.Contains(got[1], "0A000") || got[2] != "SELECT 1 1 [I]" {
		t.Fatalf("got %q", got)
	}
}
