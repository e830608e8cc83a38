package router

import (
	"errors"
	"reflect"
	"testing"

	"github.com/shardproxy/shardproxy/parser"
)

func routeOne(t *testing.T, r *Router, sql string) (*Plan, error) {
	t.Helper()
	sts, err := parser.Parse(sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return r.Route(sts[0], nil)
}

func TestClusterWideOncePerServer(t *testing.T) {
	r := testRouter(t)
	stmts := []string{
		"CREATE ROLE regress_x", "ALTER ROLE regress_x NOSUPERUSER", "ALTER ROLE regress_x SET work_mem = '1MB'",
		"DROP ROLE regress_x", "GRANT regress_x TO regress_y", "REVOKE regress_x FROM regress_y",
		"CREATE USER u", "CREATE GROUP g", "ALTER ROLE a RENAME TO b", "COMMENT ON ROLE a IS 'x'",
		"CREATE TABLESPACE ts LOCATION '/tmp/x'", "DROP TABLESPACE ts", "ALTER TABLESPACE ts SET (random_page_cost = 1)",
		"CREATE DATABASE d", "DROP DATABASE d", "ALTER DATABASE d RENAME TO e", "ALTER DATABASE d OWNER TO a",
		"ALTER DATABASE d SET work_mem = '1MB'", "CHECKPOINT",
	}
	for _, sql := range stmts {
		p, err := routeOne(t, r, sql)
		if err != nil || !reflect.DeepEqual(p.Shards, []int{0, 1, 2, 3}) || !p.Write {
			t.Errorf("%s: plan %+v, err %v; want every shard (each its own server)", sql, p, err)
		}
	}
	// s0 and s2 on one server, s1 and s3 on another.
	r.SetServers([]string{"a:1", "b:1", "a:1", "b:1"})
	for _, sql := range stmts {
		if p, err := routeOne(t, r, sql); err != nil || !reflect.DeepEqual(p.Shards, []int{0, 1}) {
			t.Errorf("%s: plan %+v, err %v; want s0 and s1, once per server", sql, p, err)
		}
	}
	// Per-database statements stay DDL on every shard.
	for _, sql := range []string{"REASSIGN OWNED BY a TO b", "DROP OWNED BY a", "GRANT SELECT ON t TO a", "COMMENT ON TABLE t IS 'x'", "ALTER TABLE t RENAME TO u"} {
		if p, err := routeOne(t, r, sql); err != nil || !reflect.DeepEqual(p.Shards, []int{0, 1, 2, 3}) {
			t.Errorf("%s: plan %+v, err %v; want every shard", sql, p, err)
		}
	}
	// Still refused.
	for _, sql := range []string{"ALTER SYSTEM SET work_mem = '1MB'", "LOAD 'x'"} {
		var u *Unsupported
		if _, err := routeOne(t, r, sql); !errors.As(err, &u) {
			t.Errorf("%s: err %v, want a refusal", sql, err)
		}
	}
}

func TestClusterWideDefaultShardFirst(t *testing.T) {
	topo, err := NewTopology(&Config{Shards: []ShardConfig{{Name: "s0", DSN: "x"}, {Name: "s1", DSN: "x"}, {Name: "s2", DSN: "x"}}, DefaultShard: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	r := New(topo)
	r.SetServers([]string{"a:1", "a:1", "b:1"})
	if p, err := routeOne(t, r, "CREATE ROLE x"); err != nil || !reflect.DeepEqual(p.Shards, []int{1, 2}) {
		t.Errorf("plan %+v, err %v; want s1 (the default shard, for server a) and s2", p, err)
	}
}

func TestDoCallMergeOnDefaultShard(t *testing.T) {
	r := testRouter(t)
	for _, sql := range []string{
		"DO $$BEGIN PERFORM 1; END$$", "CALL p(1)", "CALL p((SELECT max(x) FROM unlisted))",
		"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v",
		"MERGE INTO t USING restaurants s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id)",
		"WITH m AS (MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE) SELECT 1",
	} {
		p, err := routeOne(t, r, sql)
		if err != nil || !reflect.DeepEqual(p.Shards, []int{0}) || !p.Write {
			t.Errorf("%s: plan %+v, err %v; want the default shard", sql, p, err)
		}
	}
	for _, sql := range []string{
		"MERGE INTO orders o USING s ON o.user_id = s.id WHEN MATCHED THEN DELETE",
		"MERGE INTO t USING orders o ON t.id = o.id WHEN MATCHED THEN DELETE",
		"MERGE INTO restaurants r USING s ON r.id = s.id WHEN MATCHED THEN DELETE",
		"CALL p((SELECT max(id) FROM orders))",
		"WITH m AS (MERGE INTO orders t USING s ON t.id = s.id WHEN MATCHED THEN DELETE) SELECT 1",
	} {
		var u *Unsupported
		if _, err := routeOne(t, r, sql); !errors.As(err, &u) || u.Hint == "" {
			t.Errorf("%s: err %v, want a refusal with a hint", sql, err)
		}
	}
}

func TestCreateFromQueryOnDefaultShard(t *testing.T) {
	r := testRouter(t)
	for sql, empty := range map[string]string{
		"CREATE TABLE t AS SELECT a, b FROM u WHERE a > 1":                 "CREATE TABLE t AS SELECT * FROM (SELECT a, b FROM u WHERE a > 1) q LIMIT 0",
		"SELECT a, nextval('s') AS n INTO TABLE t FROM u":                  "CREATE TABLE t AS SELECT * FROM (SELECT a, nextval('s') AS n FROM u) q LIMIT 0",
		"SELECT 1 AS x INTO t UNION SELECT 2":                              "CREATE TABLE t AS SELECT * FROM (SELECT 1 AS x UNION SELECT 2) q LIMIT 0",
		"CREATE TABLE IF NOT EXISTS t (x) AS SELECT name FROM restaurants": "CREATE TABLE IF NOT EXISTS t(x) AS SELECT * FROM (SELECT name FROM restaurants) q LIMIT 0",
	} {
		p, err := routeOne(t, r, sql)
		if err != nil || !reflect.DeepEqual(p.Shards, []int{0, 1, 2, 3}) || len(p.SQL) != 4 {
			t.Fatalf("%s: plan %+v, err %v", sql, p, err)
		}
		if p.SQL[0] != sql {
			t.Errorf("%s: the default shard runs %q", sql, p.SQL[0])
		}
		for i := 1; i < 4; i++ {
			if p.SQL[i] != empty {
				t.Errorf("%s: shard %d runs %q, want %q", sql, i, p.SQL[i], empty)
			}
		}
	}
	// Over sharded tables, into a configured name, WITH NO DATA, temporary:
	// as before (refused, or DDL on every shard as sent).
	for _, sql := range []string{"CREATE TABLE t AS SELECT * FROM orders", "SELECT * INTO t FROM orders"} {
		var u *Unsupported
		if _, err := routeOne(t, r, sql); !errors.As(err, &u) {
			t.Errorf("%s: %v, want a refusal", sql, err)
		}
	}
	for _, sql := range []string{"CREATE TABLE t AS SELECT 1 WITH NO DATA", "CREATE MATERIALIZED VIEW m AS SELECT 1"} {
		if p, err := routeOne(t, r, sql); err != nil || p.SQL != nil || len(p.Shards) != 4 {
			t.Errorf("%s: plan %+v, err %v; want every shard as sent", sql, p, err)
		}
	}
}
