package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
)

// Reserved backends (proxy/reserve.go): temporary tables, session advisory
// locks, cursors WITH HOLD and SQL prepared statements keep the client's
// backend while they last, as on a dedicated Postgres connection.

// sessionScript is run statement by statement through the proxy and on one
// plain Postgres: tags, rows, SQLSTATEs and transaction status must agree.
var sessionScript = []string{
	"CREATE TEMP TABLE tt (id int PRIMARY KEY, v text)",
	"INSERT INTO tt SELECT g, 'v' || g FROM generate_series(1, 20) g",
	"SELECT count(*), sum(id) FROM tt",
	"SELECT 1",
	"SELECT v FROM tt WHERE id = 7",
	"CREATE TEMP TABLE tt (x int)",                        // 42P07
	"DECLARE c0 CURSOR FOR SELECT id FROM tt ORDER BY id", // 25P01 outside a transaction
	"BEGIN",
	"DECLARE c1 SCROLL CURSOR FOR SELECT id FROM tt ORDER BY id",
	"FETCH 3 FROM c1",
	"FETCH PRIOR FROM c1",
	"MOVE FORWARD 5 IN c1",
	"FETCH NEXT FROM c1",
	"FETCH BACKWARD 2 FROM c1",
	"FETCH ABSOLUTE 20 FROM c1",
	"DECLARE h1 CURSOR WITH HOLD FOR SELECT id, v FROM tt WHERE id > 15 ORDER BY id",
	"FETCH 1 FROM h1",
	"INSERT INTO tt VALUES (21, 'in tx')",
	"COMMIT",
	"FETCH 2 FROM c1", // 34000: ended with the transaction
	"FETCH 2 FROM h1",
	"SELECT count(*) FROM tt",
	"FETCH ALL FROM h1",
	"FETCH 1 FROM h1",
	"CLOSE h1",
	"FETCH 1 FROM h1", // 34000
	"CLOSE h1",        // 34000
	"DECLARE h2 NO SCROLL CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 5) g",
	"FETCH FORWARD 2 FROM h2",
	"BEGIN",
	"FETCH FORWARD 2 FROM h2",
	"ROLLBACK",
	"FETCH FORWARD 2 FROM h2",
	"CLOSE ALL",
	"FETCH 1 FROM h2",
	"SELECT pg_advisory_lock(4242)",
	"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
	"SELECT pg_try_advisory_lock(4243)",
	"SELECT pg_advisory_unlock(4242)",
	"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
	"SELECT pg_advisory_unlock(4242)",
	"SELECT pg_advisory_unlock_all()",
	"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
	"PREPARE p1(int) AS SELECT v FROM tt WHERE id = $1",
	"EXECUTE p1(4)",
	"EXECUTE p1(21)",
	"PREPARE p1 AS SELECT 1", // 42P05
	"PREPARE p2 AS SELECT count(*) FROM tt",
	"EXECUTE p1(4, 5)", // 42601 (pg_prepared_statements does not list the proxy's: docs/pooling.md)
	"DEALLOCATE p1",
	"EXECUTE p1(4)", // 26000
	"EXECUTE p2",
	"DEALLOCATE ALL",
	"EXECUTE p2", // 26000
	"DEALLOCATE nope",
	"DISCARD TEMP",
	"SELECT count(*) FROM tt", // 42P01
	"CREATE TEMP TABLE tt2 AS SELECT 1 AS a",
	"CREATE TEMP VIEW tv AS SELECT a FROM tt2",
	"CREATE TEMP SEQUENCE ts",
	"SELECT nextval('ts'), (SELECT a FROM tv)",
	"BEGIN",
	"DISCARD ALL", // 25001
	"ROLLBACK",
	"DISCARD ALL",
	"SELECT count(*) FROM tt2", // 42P01
	"SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()",
}

func scriptStep(ctx context.Context, c *pgconn.PgConn, sql string) string {
	rs, err := c.Exec(ctx, sql).ReadAll()
	var parts []string
	for _, r := range rs {
		if r.Err != nil {
			if pe, ok := r.Err.(*pgconn.PgError); ok {
				parts = append(parts, "ERROR "+pe.Code+" "+pe.Message)
				continue
			}
		}
		var rows []string
		for _, row := range r.Rows {
			var vals []string
			for _, v := range row {
				vals = append(vals, string(v))
			}
			rows = append(rows, strings.Join(vals, ","))
		}
		parts = append(parts, r.CommandTag.String()+" "+strings.Join(rows, "|"))
	}
	if err != nil && (len(rs) == 0 || rs[len(rs)-1].Err == nil) {
		parts = append(parts, "FAIL "+err.Error())
	}
	return strings.Join(parts, "; ") + " [" + string(c.TxStatus()) + "]"
}

// TestSessionSQLMatchesPostgres: temporary tables, cursors (with and
// without HOLD, SCROLL), session advisory locks, SQL PREPARE/EXECUTE and
// DISCARD through the proxy answer as one plain Postgres connection does.
func TestSessionSQLMatchesPostgres(t *testing.T) {
	matchPostgresScript(t, sessionScript)
}

// TestTransactionModesMatchPostgres runs the transaction-mode part of
// Postgres's own `transactions` regression test (SET TRANSACTION, SET
// SESSION CHARACTERISTICS, a temporary table keeping the client on its
// backend) through the proxy and on Postgres. The proxy once replayed
// transaction_read_only as a session setting, so after SET SESSION
// CHARACTERISTICS every statement failed with 25001.
func TestTransactionModesMatchPostgres(t *testing.T) {
	matchPostgresScript(t, []string{
		"DROP TABLE IF EXISTS tm_writetest, tm_foobar",
		"CREATE TABLE tm_writetest (a int)",
		"CREATE TEMPORARY TABLE tm_temptest (a int)",
		"BEGIN",
		"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
		"SELECT * FROM tm_writetest",
		"SET TRANSACTION READ WRITE",
		"COMMIT",
		"BEGIN",
		"SET TRANSACTION READ ONLY",
		"SET TRANSACTION READ WRITE",
		"SET TRANSACTION READ ONLY",
		"SELECT * FROM tm_writetest",
		"SAVEPOINT x",
		"SET TRANSACTION READ ONLY",
		"SET TRANSACTION READ WRITE",
		"COMMIT",
		"BEGIN",
		"SET TRANSACTION READ WRITE",
		"SAVEPOINT x",
		"SET TRANSACTION READ ONLY",
		"SELECT * FROM tm_writetest",
		"ROLLBACK TO SAVEPOINT x",
		"SHOW transaction_read_only",
		"COMMIT",
		"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
		"DROP TABLE tm_writetest",
		"INSERT INTO tm_writetest VALUES (1)",
		"SELECT * FROM tm_writetest",
		"DELETE FROM tm_temptest",
		"SHOW transaction_read_only",
		"START TRANSACTION READ WRITE",
		"INSERT INTO tm_writetest VALUES (1)",
		"COMMIT",
		"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
		"CREATE TABLE tm_foobar (a int)",
		"SET default_transaction_isolation = 'repeatable read'",
		"SHOW transaction_isolation",
		"BEGIN",
		"SHOW transaction_isolation",
		"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
		"SHOW transaction_isolation",
		"COMMIT",
		"SHOW transaction_isolation",
		"RESET default_transaction_isolation",
		"SELECT count(*) FROM tm_writetest",
		"DROP TABLE tm_writetest, tm_foobar",
		"SHOW transaction_read_only",
	})
}

// matchPostgresScript runs script's statements one by one on the default
// shard's server directly (one plain Postgres), then through the proxy,
// and compares each step's tags, rows and SQLSTATEs.
func matchPostgresScript(t *testing.T, script []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Postgres first (the default shard's server, alone: the advisory
	// locks are the same), then the proxy.
	direct, err := pgconn.Connect(ctx, env.shards.Clusters[0].DSN("deliveryapp"))
	if err != nil {
		t.Fatal(err)
	}
	want := make([]string, len(script))
	for i, sql := range script {
		want[i] = scriptStep(ctx, direct, sql)
	}
	direct.Close(ctx)
	via, err := pgconn.Connect(ctx, proxyURL("app", "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer via.Close(ctx)
	for i, sql := range script {
		if got := scriptStep(ctx, via, sql); got != want[i] {
			t.Errorf("step %d %q:\nproxy:    %s\npostgres: %s", i, sql, got, want[i])
		}
	}
}

func reservedByReason(t *testing.T) map[string]float64 {
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
		if f.GetName() != "shardproxy_reserved_backends" {
			continue
		}
		for _, m := range f.Metric {
			out[m.Label[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	return out
}

// TestTempTableShadowsShardedTable: a temporary table named like a sharded
// table is the client's own object on the default shard; other clients
// still see the sharded table; the reservation shows in the metric and
// ends with DISCARD TEMP.
func TestTempTableShadowsShardedTable(t *testing.T) {
	seedUsers(t)
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		t.Run(mode.String(), func(t *testing.T) {
			other := mustConnect(t)
			var total int64
			if err := other.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&total); err != nil || total < 10 {
				t.Fatalf("users: %d %v", total, err)
			}
			c, err := connectExec(ctx, mode)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(ctx)
			before := reservedByReason(t)["temp"]
			if _, err := c.Exec(ctx, "CREATE TEMP TABLE users (id bigint, note text)"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Exec(ctx, "INSERT INTO users VALUES ($1, $2)", 1, "mine"); err != nil {
				t.Fatal(err)
			}
			if got := reservedByReason(t)["temp"]; got != before+1 {
				t.Errorf("reserved for temp: %v, want %v", got, before+1)
			}
			for i := 0; i < 5; i++ {
				var n int64
				if err := c.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil || n != 1 {
					t.Fatalf("own temp users: %d %v", n, err)
				}
				var m int64
				if err := other.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&m); err != nil || m != total {
					t.Fatalf("other client: %d %v, want %d", m, err, total)
				}
			}
			var n int64
			if err := c.QueryRow(ctx, "SELECT count(*) FROM public.users").Scan(&n); err != nil || n != total {
				t.Errorf("public.users: %d %v, want %d", n, err, total)
			}
			if _, err := c.Exec(ctx, "INSERT INTO users SELECT id, name FROM public.users"); err == nil || sqlstateOf(err) != "0A000" {
				t.Errorf("temp table filled from a sharded table: %v, want 0A000", err)
			}
			if _, err := c.Exec(ctx, "DISCARD TEMP"); err != nil {
				t.Fatal(err)
			}
			if err := c.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil || n != total {
				t.Errorf("after DISCARD TEMP: %d %v, want %d", n, err, total)
			}
			if got := reservedByReason(t)["temp"]; got != before {
				t.Errorf("reserved for temp after DISCARD TEMP: %v, want %v", got, before)
			}
		})
	}
}

func sqlstateOf(err error) string {
	if pe, ok := err.(*pgconn.PgError); ok {
		return pe.Code
	}
	return ""
}

// TestSessionAdvisoryLocks: a session lock held by one client excludes
// another until it is unlocked or its holder disconnects (the backend is
// reset, never pooled with the lock).
func TestSessionAdvisoryLocks(t *testing.T) {
	ctx := context.Background()
	a, b := mustConnect(t), mustConnect(t)
	try := func(c *pgx.Conn) bool {
		t.Helper()
		var ok bool
		if err := c.QueryRow(ctx, "SELECT pg_try_advisory_lock(777)").Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	before := reservedByReason(t)["advisory_lock"]
	if !try(a) {
		t.Fatal("a could not lock")
	}
	if got := reservedByReason(t)["advisory_lock"]; got != before+1 {
		t.Errorf("reserved for advisory locks: %v, want %v", got, before+1)
	}
	for i := 0; i < 3; i++ {
		if try(b) {
			t.Fatal("b got a's lock")
		}
	}
	if _, err := a.Exec(ctx, "SELECT pg_advisory_unlock(777)"); err != nil {
		t.Fatal(err)
	}
	if got := reservedByReason(t)["advisory_lock"]; got != before {
		t.Errorf("reserved for advisory locks after the unlock: %v, want %v", got, before)
	}
	if !try(b) {
		t.Fatal("b could not lock after a unlocked")
	}
	b.Close(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for !try(a) {
		if time.Now().After(deadline) {
			t.Fatal("the lock outlived its client")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := a.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
}

// TestReservationsNeverLeak runs many clients at once through the small
// pool: some hold temporary tables, advisory locks, cursors WITH HOLD, SQL
// prepared statements, roles and settings; the others check after every
// statement that their backend shows none of it.
func TestReservationsNeverLeak(t *testing.T) {
	ensureRole(t, "lowpriv")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const probe = `SELECT current_user::text || '|' || current_setting('search_path') || '|' ||
		(SELECT count(*) FROM pg_prepared_statements WHERE from_sql) || '|' ||
		(SELECT count(*) FROM pg_cursors WHERE name <> '') || '|' ||
		(SELECT count(*) FROM pg_listening_channels()) || '|' ||
		(SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) || '|' ||
		(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())`
	base := mustConnect(t)
	var fresh string
	if err := base.QueryRow(ctx, probe).Scan(&fresh); err != nil {
		t.Fatal(err)
	}
	type actor struct{ setup, repeat []string }
	actors := []actor{
		{[]string{"CREATE TEMP TABLE leak_t (a int)"}, []string{"INSERT INTO leak_t VALUES (1)", "SELECT count(*) FROM leak_t"}},
		{[]string{"SELECT pg_advisory_lock(9000)"}, []string{"SELECT 1"}},
		{[]string{"DECLARE leak_c CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 100) g"}, []string{"FETCH 1 FROM leak_c"}},
		{[]string{"PREPARE leak_p AS SELECT 1"}, []string{"EXECUTE leak_p"}},
		{nil, []string{"SET ROLE lowpriv", "SELECT 1", "RESET ROLE"}},
		{nil, []string{"SELECT set_config('search_path', 'pg_catalog', false)", "SELECT 1"}},
		{[]string{"BEGIN", "CREATE TEMP TABLE leak_tx (a int)", "SELECT pg_advisory_lock(9001)", "COMMIT"}, []string{"SELECT count(*) FROM leak_tx"}},
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i, a := range actors {
		mode := pgx.QueryExecModeSimpleProtocol
		if i%2 == 1 {
			mode = pgx.QueryExecModeCacheStatement
		}
		wg.Add(1)
		go func(i int, a actor, mode pgx.QueryExecMode) {
			defer wg.Done()
			c, err := connectExec(ctx, mode)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(context.Background())
			run := func(q string) bool {
				var err error
				switch strings.Fields(q)[0] {
				case "DECLARE", "FETCH", "PREPARE", "EXECUTE":
					_, err = c.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol) // SQL-level session objects
				default:
					_, err = c.Exec(ctx, q)
				}
				if err != nil {
					errs <- fmt.Errorf("actor %d (%s): %s: %w", i, mode, q, err)
				}
				return err == nil
			}
			for _, q := range a.setup {
				if !run(q) {
					return
				}
			}
			for round := 0; round < 8; round++ {
				for _, q := range a.repeat {
					if !run(q) {
						return
					}
				}
			}
		}(i, a, mode)
	}
	for o := 0; o < 4; o++ {
		wg.Add(1)
		go func(o int) {
			defer wg.Done()
			mode := pgx.QueryExecModeSimpleProtocol
			if o%2 == 1 {
				mode = pgx.QueryExecModeCacheStatement
			}
			c, err := connectExec(ctx, mode)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(context.Background())
			for i := 0; i < 40; i++ {
				var v string
				if err := c.QueryRow(ctx, probe).Scan(&v); err != nil {
					errs <- fmt.Errorf("observer %d: %w", o, err)
					return
				}
				if v != fresh {
					errs <- fmt.Errorf("observer %d sees another client's session: %s, want %s", o, v, fresh)
					return
				}
			}
		}(o)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every actor has gone: nothing is reserved, every pooled backend is
	// clean.
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := 0.0
		for _, n := range reservedByReason(t) {
			left += n
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backends still reserved after every client left: %v", reservedByReason(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 20; i++ {
		var v string
		if err := base.QueryRow(ctx, probe).Scan(&v); err != nil || v != fresh {
			t.Fatalf("after the run: %s %v, want %s", v, err, fresh)
		}
	}
}

// TestPortalsAcrossSyncMatchPostgres: a portal bound inside a transaction
// lives until the transaction ends, so Execute with a row limit may resume
// it after a Sync (JDBC's setFetchSize inside a transaction: `portal "C_3"
// does not exist` was reported).
func TestPortalsAcrossSyncMatchPostgres(t *testing.T) {
	ctx := context.Background()
	if _, err := mustConnect(t).Exec(ctx, "INSERT INTO restaurants (id, name, city, cuisine) VALUES (7777, 'Wire', 'Porto', 'grill') ON CONFLICT DO NOTHING"); err != nil {
		t.Fatal(err)
	}
	q := "SELECT x FROM restaurants, generate_series(1, 7) x WHERE id = 7777 ORDER BY x"
	scripts := map[string][]wireStep{
		"setFetchSize in a transaction": {
			{&pgproto3.Query{String: "BEGIN"}},
			{&pgproto3.Parse{Name: "S_1", Query: q}, &pgproto3.Bind{DestinationPortal: "C_3", PreparedStatement: "S_1"},
				&pgproto3.Describe{ObjectType: 'P', Name: "C_3"}, &pgproto3.Execute{Portal: "C_3", MaxRows: 3}, &pgproto3.Sync{}},
			{&pgproto3.Execute{Portal: "C_3", MaxRows: 3}, &pgproto3.Sync{}},
			{&pgproto3.Parse{Query: "SELECT 42"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
			{&pgproto3.Execute{Portal: "C_3", MaxRows: 3}, &pgproto3.Sync{}},
			{&pgproto3.Close{ObjectType: 'P', Name: "C_3"}, &pgproto3.Sync{}},
			{&pgproto3.Query{String: "COMMIT"}},
			{&pgproto3.Execute{Portal: "C_3", MaxRows: 3}, &pgproto3.Sync{}},
		},
	}
	direct := env.shards.Clusters[0].DSN("deliveryapp")
	for name, steps := range scripts {
		t.Run(name, func(t *testing.T) {
			want := transcript(t, direct, steps)
			got := transcript(t, proxyURL("app", "app"), steps)
			if got != want {
				t.Fatalf("through the proxy:\n%s\nstraight to Postgres:\n%s", got, want)
			}
		})
	}
}

// TestPsqlFetchCount: psql's FETCH_COUNT (BEGIN, DECLARE, FETCH FORWARD n,
// CLOSE, COMMIT) over a query on one shard and over a query on several
// shards.
func TestPsqlFetchCount(t *testing.T) {
	seedUsers(t)
	out, err := psql(t, "app", "-v", "FETCH_COUNT=3", "-At", "-c", "SELECT x FROM generate_series(1, 7) x ORDER BY x")
	if err != nil || strings.Join(strings.Fields(out), ",") != "1,2,3,4,5,6,7" {
		t.Fatalf("FETCH_COUNT over one shard: %v\n%s", err, out)
	}
	out, err = psql(t, "app", "-v", "FETCH_COUNT=2", "-At", "-c", "SELECT id FROM users WHERE id = 3")
	if err != nil || strings.TrimSpace(out) != "3" {
		t.Fatalf("FETCH_COUNT over a keyed read: %v\n%s", err, out)
	}
	// Over several shards the cursor reads through the merge
	// (TestPsqlFetchCountAcrossShards compares it with one Postgres).
	out, err = psql(t, "app", "-v", "FETCH_COUNT=2", "-At", "-c", "SELECT id FROM users WHERE id IN (3, 1, 2) ORDER BY id")
	if err != nil || strings.Join(strings.Fields(out), ",") != "1,2,3" {
		t.Fatalf("FETCH_COUNT over several shards: %v\n%s", err, out)
	}
}

// TestCursorsExtendedProtocol: DECLARE (with a bound parameter), FETCH and
// CLOSE and SQL PREPARE/EXECUTE through the extended protocol (psycopg 3's
// named cursors), inside and outside a transaction.
func TestCursorsExtendedProtocol(t *testing.T) {
	seedUsers(t)
	ctx := context.Background()
	c, err := connectExec(ctx, pgx.QueryExecModeCacheStatement)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	fetch := func(q string) []int64 {
		t.Helper()
		rows, err := c.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		ns, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return ns
	}
	before := reservedByReason(t)["cursor"]
	if _, err := c.Exec(ctx, "DECLARE xc CURSOR WITH HOLD FOR SELECT g::bigint FROM generate_series(1, $1::int) g", 5); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(fetch("FETCH 2 FROM xc"), fetch("FETCH ALL FROM xc")); got != "[1 2] [3 4 5]" {
		t.Fatalf("held cursor: %s", got)
	}
	if got := reservedByReason(t)["cursor"]; got != before+1 {
		t.Errorf("reserved for cursors: %v, want %v", got, before+1)
	}
	if _, err := c.Exec(ctx, "CLOSE xc"); err != nil {
		t.Fatal(err)
	}
	if got := reservedByReason(t)["cursor"]; got != before {
		t.Errorf("reserved for cursors after CLOSE: %v, want %v", got, before)
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "DECLARE kc CURSOR FOR SELECT id FROM users WHERE id = $1", 3); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(fetch("FETCH 5 FROM kc")); got != "[3]" {
		t.Fatalf("keyed cursor in a transaction: %s", got)
	}
	// Over several shards the cursor reads through the merge (mcursor.go).
	if _, err := tx.Exec(ctx, "DECLARE ac CURSOR FOR SELECT id FROM users WHERE id > $1 AND id <= 3 ORDER BY id", 0); err != nil {
		t.Fatalf("cursor over several shards: %v", err)
	}
	if got := fmt.Sprint(fetch("FETCH 2 FROM ac"), fetch("FETCH ALL FROM ac")); got != "[1 2] [3]" {
		t.Fatalf("cursor over several shards: %s", got)
	}
	if _, err := tx.Exec(ctx, "DECLARE hc CURSOR WITH HOLD FOR SELECT id FROM users WHERE id > $1", 0); sqlstateOf(err) != "0A000" {
		t.Fatalf("held cursor over several shards: %v, want 0A000", err)
	}
	tx.Rollback(ctx)
	if _, err := c.Exec(ctx, "FETCH 1 FROM kc"); sqlstateOf(err) != "34000" {
		t.Fatalf("cursor after its transaction: %v, want 34000", err)
	}
	if _, err := c.Exec(ctx, "PREPARE xp AS SELECT 40 + 2"); err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := c.QueryRow(ctx, "EXECUTE xp", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 42 {
		t.Fatalf("EXECUTE: %d %v", n, err)
	}
}
