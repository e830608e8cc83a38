package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Cross-shard cursors: portals executed with a row limit and DECLARE over a
// query on several shards, read through the merge in parts. Each test runs
// the same statements through the proxy (orders hash-sharded over four
// shards) and against one plain Postgres holding the same rows (a table
// orders in the first cluster's postgres database), and compares.

const (
	curLo, curN = 960000, 300
	curWhere    = "WHERE id BETWEEN 960000 AND 960299"
)

var curOnce sync.Once

// curPlain is the plain Postgres of the cursor tests.
func curPlain() string { return env.shards.Clusters[0].DSN("postgres") }

// seedCursorRows writes the same rows through the proxy and into the plain
// Postgres, once per test binary.
func seedCursorRows(t testing.TB) {
	t.Helper()
	var err error
	curOnce.Do(func() {
		ctx := context.Background()
		var sb strings.Builder
		sb.WriteString("INSERT INTO orders (id, user_id, restaurant_id, total, status, created_at) VALUES ")
		for i := 0; i < curN; i++ {
			if i > 0 {
				sb.WriteString(", ")
			}
			id := curLo + i
			fmt.Fprintf(&sb, "(%d, %d, %d, %d.%02d, '%s', '2025-%02d-%02d 10:%02d:00+00')",
				id, id, i%5, i%37, i%100, []string{"new", "paid", "sent"}[i%3], 1+i%12, 1+i%28, i%60)
		}
		insert := sb.String()
		plain, cerr := pgconn.Connect(ctx, curPlain())
		if cerr != nil {
			err = cerr
			return
		}
		defer plain.Close(ctx)
		for _, q := range []string{
			`CREATE TABLE IF NOT EXISTS orders (id bigint NOT NULL, user_id bigint NOT NULL, restaurant_id bigint NOT NULL,
				total numeric(10,2) NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, created_at))`,
			"DELETE FROM orders " + curWhere,
			insert,
		} {
			if _, err = plain.Exec(ctx, q).ReadAll(); err != nil {
				return
			}
		}
		c, cerr := connect(ctx, "app", "app")
		if cerr != nil {
			err = cerr
			return
		}
		defer c.Close(ctx)
		if _, err = c.Exec(ctx, "DELETE FROM orders "+curWhere); err != nil {
			return
		}
		_, err = c.Exec(ctx, insert)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// cursorTranscript is transcript for scripts whose steps may end with
// Flush instead of Sync: such a step's replies are read up to the first
// PortalSuspended, CommandComplete, ErrorResponse or CloseComplete after
// its last Execute or Close.
func cursorTranscript(t *testing.T, connString string, steps []wireStep) string {
	t.Helper()
	hj := rawConn(t, connString)
	defer hj.Conn.Close() // not only at the test's end: scripts run in loops
	fe := hj.Frontend
	var sb strings.Builder
	for _, step := range steps {
		synced := false
		for _, m := range step {
			fe.Send(m)
			switch m.(type) {
			case *pgproto3.Sync, *pgproto3.Query:
				synced = true
			}
		}
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		hj.Conn.SetDeadline(time.Now().Add(20 * time.Second))
		for done := false; !done; {
			m, err := fe.Receive()
			if err != nil {
				t.Fatalf("receive: %v (so far:\n%s)", err, sb.String())
			}
			switch x := m.(type) {
			case *pgproto3.ParseComplete:
				sb.WriteString("ParseComplete\n")
			case *pgproto3.BindComplete:
				sb.WriteString("BindComplete\n")
			case *pgproto3.CloseComplete:
				sb.WriteString("CloseComplete\n")
				done = !synced
			case *pgproto3.NoData:
				sb.WriteString("NoData\n")
			case *pgproto3.RowDescription:
				var cols []string
				for _, f := range x.Fields {
					cols = append(cols, fmt.Sprintf("%s:%d:%d", f.Name, f.DataTypeOID, f.Format))
				}
				fmt.Fprintf(&sb, "RowDescription %s\n", strings.Join(cols, ","))
			case *pgproto3.DataRow:
				var vals []string
				for _, v := range x.Values {
					vals = append(vals, string(v))
				}
				fmt.Fprintf(&sb, "DataRow %s\n", strings.Join(vals, "|"))
			case *pgproto3.CommandComplete:
				fmt.Fprintf(&sb, "CommandComplete %s\n", x.CommandTag)
				done = !synced
			case *pgproto3.PortalSuspended:
				sb.WriteString("PortalSuspended\n")
				done = !synced
			case *pgproto3.ErrorResponse:
				fmt.Fprintf(&sb, "ErrorResponse %s\n", x.Code)
				done = !synced
			case *pgproto3.ReadyForQuery:
				fmt.Fprintf(&sb, "ReadyForQuery %c\n", x.TxStatus)
				done = true
			case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
			default:
				fmt.Fprintf(&sb, "%T\n", m)
			}
		}
	}
	return sb.String()
}

// TestCrossShardPortalsMatchPostgres: Execute with a row limit on merged
// cross-shard portals (ORDER BY, LIMIT/OFFSET, GROUP BY) answers exactly
// as one Postgres: maxRows rows then PortalSuspended, the next Execute
// continuing, the last one's tag counting its own rows; in an implicit
// transaction with Flush (pg-cursor) and in an explicit one across Syncs
// with a one-shard statement in between (JDBC's fetch size); Close of a
// half-read portal; an error.
func TestCrossShardPortalsMatchPostgres(t *testing.T) {
	seedCursorRows(t)
	ordered := "SELECT id, total, created_at FROM orders " + curWhere + " ORDER BY created_at DESC, id"
	limited := "SELECT id FROM orders " + curWhere + " ORDER BY total, id LIMIT 250 OFFSET 7"
	grouped := "SELECT status, count(*), sum(total), max(id) FROM orders " + curWhere + " GROUP BY status ORDER BY status"
	param := "SELECT id, status FROM orders WHERE id BETWEEN $1 AND $2 ORDER BY status DESC, id LIMIT $3"
	exec := func(n uint32) *pgproto3.Execute { return &pgproto3.Execute{MaxRows: n} }
	flush := &pgproto3.Flush{}
	sync := &pgproto3.Sync{}
	scripts := map[string][]wireStep{
		"pg-cursor over an ORDER BY": {
			{&pgproto3.Parse{Query: ordered}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, exec(100), flush},
			{exec(100), flush}, {exec(100), flush}, {exec(100), flush},
			{&pgproto3.Close{ObjectType: 'P'}, sync},
			{&pgproto3.Query{String: "SELECT count(*) FROM orders " + curWhere}},
		},
		"exactly the rows left": {
			{&pgproto3.Parse{Query: limited}, &pgproto3.Bind{}, exec(125), flush},
			{exec(125), flush}, {exec(125), sync},
		},
		"grouped, binary results": {
			{&pgproto3.Parse{Query: grouped}, &pgproto3.Bind{ResultFormatCodes: []int16{0, 1, 0, 1}}, exec(2), flush},
			{exec(2), sync},
		},
		"parameters and a limit": {
			{&pgproto3.Parse{Query: param, ParameterOIDs: []uint32{20, 20, 20}},
				&pgproto3.Bind{Parameters: [][]byte{[]byte("960010"), []byte("960100"), []byte("40")}}, exec(15), flush},
			{exec(15), flush}, {exec(15), sync},
		},
		"explicit transaction, a one-shard statement in between": {
			{&pgproto3.Query{String: "BEGIN"}},
			{&pgproto3.Parse{Name: "S_1", Query: ordered}, &pgproto3.Bind{DestinationPortal: "C_3", PreparedStatement: "S_1"},
				&pgproto3.Describe{ObjectType: 'P', Name: "C_3"}, &pgproto3.Execute{Portal: "C_3", MaxRows: 120}, sync},
			{&pgproto3.Execute{Portal: "C_3", MaxRows: 120}, sync},
			{&pgproto3.Parse{Query: "SELECT id, status FROM orders WHERE user_id = 960005"}, &pgproto3.Bind{}, exec(0), sync},
			{&pgproto3.Query{String: "UPDATE orders SET status = 'upd' WHERE user_id = 960006"}},
			{&pgproto3.Execute{Portal: "C_3", MaxRows: 120}, sync},
			{&pgproto3.Execute{Portal: "C_3", MaxRows: 120}, sync},
			{&pgproto3.Close{ObjectType: 'P', Name: "C_3"}, sync},
			{&pgproto3.Query{String: "SELECT status FROM orders WHERE user_id = 960006"}},
			{&pgproto3.Query{String: "ROLLBACK"}},
			{&pgproto3.Execute{Portal: "C_3", MaxRows: 3}, sync},
		},
		"close a half-read portal, then another query": {
			{&pgproto3.Parse{Query: ordered}, &pgproto3.Bind{}, exec(5), flush},
			{&pgproto3.Close{ObjectType: 'P'}, flush},
			{&pgproto3.Parse{Query: grouped}, &pgproto3.Bind{}, exec(0), sync},
			{&pgproto3.Query{String: "BEGIN"}},
			{&pgproto3.Parse{Name: "h", Query: limited}, &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "h"}, &pgproto3.Execute{Portal: "p", MaxRows: 3}, sync},
			{&pgproto3.Close{ObjectType: 'P', Name: "p"}, sync},
			{&pgproto3.Query{String: "COMMIT"}},
		},
		"an error at the first fetch": {
			{&pgproto3.Parse{Query: "SELECT id, 1 / (id - 960123) FROM orders " + curWhere + " ORDER BY id"}, &pgproto3.Bind{}, exec(10), flush},
			{sync},
			{&pgproto3.Query{String: "BEGIN"}},
			{&pgproto3.Parse{Query: "SELECT id, 1 / (id - 960123) FROM orders " + curWhere + " ORDER BY id"}, &pgproto3.Bind{}, exec(10), sync},
			{&pgproto3.Query{String: "SELECT 1"}},
			{&pgproto3.Query{String: "ROLLBACK"}},
			{&pgproto3.Query{String: "SELECT count(*) FROM orders " + curWhere}},
		},
	}
	for name, steps := range scripts {
		t.Run(name, func(t *testing.T) {
			want := cursorTranscript(t, curPlain(), steps)
			got := cursorTranscript(t, proxyURL("app", "app"), steps)
			if got != want {
				t.Fatalf("through the proxy:\n%s\nplain Postgres:\n%s", got, want)
			}
			t.Logf("%d messages alike, %d rows", strings.Count(got, "\n"), strings.Count(got, "DataRow"))
		})
	}
}

// TestCrossShardCursorsMatchPostgres: DECLARE over a cross-shard query in a
// transaction, FETCH n / NEXT / ALL, MOVE, CLOSE and CLOSE ALL, the same as
// one Postgres; backward fetches, SCROLL and WITH HOLD refused with 0A000.
func TestCrossShardCursorsMatchPostgres(t *testing.T) {
	seedCursorRows(t)
	q := func(sql string) wireStep { return wireStep{&pgproto3.Query{String: sql}} }
	scripts := map[string][]wireStep{
		"fetch, move, close": {
			q("BEGIN"),
			q("DECLARE c NO SCROLL CURSOR FOR SELECT id, total FROM orders " + curWhere + " ORDER BY total DESC, id"),
			q("FETCH 3 FROM c"), q("FETCH NEXT FROM c"), q("FETCH FORWARD 2 IN c"), q("MOVE 250 IN c"), q("FETCH c"),
			q("FETCH ALL FROM c"), q("FETCH 5 FROM c"), q("MOVE 1 IN c"),
			q("DECLARE g CURSOR WITHOUT HOLD FOR SELECT status, count(*), avg(total) FROM orders " + curWhere + " GROUP BY status ORDER BY 2 DESC, 1"),
			q("FETCH 2 FROM g"), q("CLOSE g"), q("FETCH 1 FROM g"),
			q("ROLLBACK"),
			q("BEGIN"),
			q("DECLARE a CURSOR FOR SELECT id FROM orders " + curWhere + " ORDER BY id LIMIT 20 OFFSET 290"),
			q("DECLARE b CURSOR FOR SELECT DISTINCT status FROM orders " + curWhere + " ORDER BY status"),
			q("FETCH 4 FROM a"), q("FETCH ALL FROM b"), q("SELECT id FROM orders WHERE user_id = 960007"),
			q("FETCH ALL FROM a"), q("CLOSE ALL"), q("FETCH a"),
			q("COMMIT"),
			q("FETCH 1 FROM a"),
		},
		"outside a transaction": {
			q("DECLARE o CURSOR FOR SELECT id FROM orders " + curWhere + " ORDER BY id"),
			q("SELECT 1"),
		},
	}
	for name, steps := range scripts {
		t.Run(name, func(t *testing.T) {
			want := cursorTranscript(t, curPlain(), steps)
			got := cursorTranscript(t, proxyURL("app", "app"), steps)
			if got != want {
				t.Fatalf("through the proxy:\n%s\nplain Postgres:\n%s", got, want)
			}
			t.Logf("%d messages alike, %d rows", strings.Count(got, "\n"), strings.Count(got, "DataRow"))
		})
	}
	refusals := [][]wireStep{
		{q("BEGIN"), q("DECLARE c CURSOR FOR SELECT id FROM orders " + curWhere + " ORDER BY id"), q("FETCH 2 FROM c"), q("FETCH PRIOR FROM c"), q("ROLLBACK")},
		{q("BEGIN"), q("DECLARE c SCROLL CURSOR FOR SELECT id FROM orders " + curWhere), q("ROLLBACK")},
		{q("DECLARE c CURSOR WITH HOLD FOR SELECT id FROM orders " + curWhere), q("SELECT 1")},
	}
	for i, steps := range refusals {
		got := cursorTranscript(t, proxyURL("app", "app"), steps)
		if !strings.Contains(got, "ErrorResponse 0A000") || strings.Count(got, "ReadyForQuery") != len(steps) {
			t.Errorf("refusal %d:\n%s", i, got)
		}
	}
}

// clientOutput runs a client program and returns its output, failing the
// test unless it exits cleanly.
func clientOutput(t *testing.T, name string, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// TestNodeCursorsMatchPostgres: pg-cursor and pg-query-stream over
// cross-shard queries, through the proxy and against one Postgres.
func TestNodeCursorsMatchPostgres(t *testing.T) {
	seedCursorRows(t)
	mods, _ := filepath.Abs("testdata/clients/node_modules")
	_, err := exec.LookPath("node")
	requireTool(t, "node and npm packages pg-cursor, pg-query-stream (npm install in integration/testdata/clients)",
		err == nil && exists(filepath.Join(mods, "pg-cursor")) && exists(filepath.Join(mods, "pg-query-stream")))
	run := func(url string) string {
		return clientOutput(t, "node", []string{"NODE_PATH=" + mods}, "testdata/clients/node_cursor.js", url)
	}
	want := run(curPlain())
	got := run(proxyURL("app", "app"))
	if got != want || !strings.Contains(got, "OK") {
		t.Fatalf("through the proxy:\n%s\nplain Postgres:\n%s", got, want)
	}
}

// TestPsqlFetchCountAcrossShards: psql's FETCH_COUNT (DECLARE, FETCH
// FORWARD n in a transaction) over a scatter read with ORDER BY prints what
// it prints against one Postgres.
func TestPsqlFetchCountAcrossShards(t *testing.T) {
	seedCursorRows(t)
	run := func(url string) string {
		cmd := exec.Command("psql", "-X", "-v", "FETCH_COUNT=3", "-At", "-d", url,
			"-c", "SELECT id, total FROM orders "+curWhere+" ORDER BY total, id LIMIT 40",
			"-c", "SELECT status, count(*) FROM orders "+curWhere+" GROUP BY status ORDER BY status")
		cmd.Env = append(os.Environ(), "PGPASSWORD=app", "PGCONNECT_TIMEOUT=10")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		return string(out)
	}
	want := run(curPlain())
	if got := run(proxyURL("app", "app")); got != want {
		t.Fatalf("through the proxy:\n%s\nplain Postgres:\n%s", got, want)
	}
}

// TestPsycopgNamedCursorsMatchPostgres: psycopg 3 named cursors (DECLARE
// with parameters in the extended protocol, Describe of the cursor,
// FETCH FORWARD n) over cross-shard queries.
func TestPsycopgNamedCursorsMatchPostgres(t *testing.T) {
	seedCursorRows(t)
	py := "/usr/bin/python3"
	requireTool(t, "python3-psycopg (Debian)", exists(py) && exec.Command(py, "-c", "import psycopg").Run() == nil)
	run := func(conninfo string) string {
		return clientOutput(t, py, nil, "testdata/clients/psycopg_cursor.py", conninfo)
	}
	want := run(curPlain())
	got := run(fmt.Sprintf("host=127.0.0.1 port=%s dbname=deliveryapp user=app password=app", portOf(env.addr)))
	if got != want || !strings.Contains(got, "OK") {
		t.Fatalf("through the proxy:\n%s\nplain Postgres:\n%s", got, want)
	}
}

// TestJDBCFetchSizeMatchesPostgres: JDBC's setFetchSize in a transaction
// over cross-shard queries (a portal resumed across Syncs), with a keyed
// statement between two fetches.
func TestJDBCFetchSizeMatchesPostgres(t *testing.T) {
	seedCursorRows(t)
	jar := "/usr/share/java/postgresql.jar"
	_, err := exec.LookPath("java")
	requireTool(t, "java and libpostgresql-jdbc-java (Debian)", err == nil && exists(jar))
	run := func(url string) string {
		return clientOutput(t, "java", nil, "-cp", jar, "testdata/clients/JdbcCursor.java", url)
	}
	plainPort := env.shards.Clusters[0].Port
	want := run(fmt.Sprintf("jdbc:postgresql://127.0.0.1:%d/postgres?user=postgres&sslmode=disable", plainPort))
	got := run(fmt.Sprintf("jdbc:postgresql://127.0.0.1:%s/deliveryapp?user=app&password=app&prepareThreshold=1&sslmode=disable", portOf(env.addr)))
	if got != want || !strings.Contains(got, "OK") {
		t.Fatalf("through the proxy:\n%s\nplain Postgres:\n%s", got, want)
	}
}

// shardsIdleInTx counts the shards' backends left idle in a transaction.
func shardsIdleInTx(t *testing.T) int64 {
	t.Helper()
	var n int64
	for i := range env.shards.Clusters {
		n += shardInt(t, i, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'deliveryapp' AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()")
	}
	return n
}

// TestCrossShardPortalErrorsAndCancel: an error in the middle of a merged
// portal (a shard fails in its second batch), a cancel while a shard
// computes a batch, and a client that leaves mid-portal each leave the
// session usable and every backend out of its transaction.
func TestCrossShardPortalErrorsAndCancel(t *testing.T) {
	seedCursorRows(t)
	ctx := context.Background()
	open := func() *pgconn.HijackedConn {
		conn, err := pgconn.Connect(ctx, proxyURL("app", "app"))
		if err != nil {
			t.Fatal(err)
		}
		hj, err := conn.Hijack()
		if err != nil {
			t.Fatal(err)
		}
		return hj
	}
	// until reads up to a message of one of the types, returning the
	// types seen.
	until := func(hj *pgconn.HijackedConn, stop ...string) []string {
		t.Helper()
		hj.Conn.SetDeadline(time.Now().Add(20 * time.Second))
		var seen []string
		for {
			m, err := hj.Frontend.Receive()
			if err != nil {
				t.Fatalf("receive: %v after %v", err, seen)
			}
			name := fmt.Sprintf("%T", m)
			if e, ok := m.(*pgproto3.ErrorResponse); ok {
				name = "Error " + e.Code
			}
			if _, ok := m.(*pgproto3.DataRow); ok {
				name = "DataRow"
			}
			if len(seen) == 0 || seen[len(seen)-1] != name {
				seen = append(seen, name)
			}
			for _, s := range stop {
				if strings.HasPrefix(name, s) {
					return seen
				}
			}
		}
	}
	send := func(hj *pgconn.HijackedConn, msgs ...pgproto3.FrontendMessage) {
		for _, m := range msgs {
			hj.Frontend.Send(m)
		}
		if err := hj.Frontend.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	late := "SELECT o.id, 1 / (g - 1800) FROM orders o, generate_series(1, 2000) g WHERE o.id BETWEEN 960000 AND 960003"
	for _, explicit := range []bool{false, true} {
		hj := open()
		if explicit {
			send(hj, &pgproto3.Query{String: "BEGIN"})
			until(hj, "*pgproto3.ReadyForQuery")
		}
		send(hj, &pgproto3.Parse{Query: late}, &pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 100}, &pgproto3.Flush{})
		if got := until(hj, "*pgproto3.PortalSuspended", "Error"); fmt.Sprint(got) != "[*pgproto3.ParseComplete *pgproto3.BindComplete DataRow *pgproto3.PortalSuspended]" {
			t.Fatalf("first fetch: %v", got)
		}
		send(hj, &pgproto3.Execute{}, &pgproto3.Sync{})
		got := until(hj, "*pgproto3.ReadyForQuery")
		if fmt.Sprint(got) != "[DataRow Error 22012 *pgproto3.ReadyForQuery]" {
			t.Fatalf("error mid-portal (explicit %v): %v", explicit, got)
		}
		if explicit {
			send(hj, &pgproto3.Query{String: "SELECT 1"})
			if got := until(hj, "*pgproto3.ReadyForQuery"); got[0] != "Error 25P02" {
				t.Fatalf("after the error in a transaction: %v", got)
			}
			send(hj, &pgproto3.Query{String: "ROLLBACK"})
			until(hj, "*pgproto3.ReadyForQuery")
		}
		send(hj, &pgproto3.Query{String: "SELECT count(*) FROM orders " + curWhere})
		if got := until(hj, "*pgproto3.ReadyForQuery"); fmt.Sprint(got) != "[*pgproto3.RowDescription DataRow *pgproto3.CommandComplete *pgproto3.ReadyForQuery]" {
			t.Fatalf("after the error: %v", got)
		}
		hj.Conn.Close()
	}

	// A cancel while the shards compute a batch.
	hj := open()
	slow := "SELECT o.id, pg_sleep(0.01) FROM orders o " + curWhere + " ORDER BY o.id"
	send(hj, &pgproto3.Parse{Query: slow}, &pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 10}, &pgproto3.Flush{})
	time.Sleep(300 * time.Millisecond)
	cc, err := net.Dial("tcp", env.addr)
	if err != nil {
		t.Fatal(err)
	}
	cancel, _ := (&pgproto3.CancelRequest{ProcessID: hj.PID, SecretKey: hj.SecretKey}).Encode(nil)
	cc.Write(cancel)
	cc.Close()
	if got := until(hj, "Error"); got[len(got)-1] != "Error 57014" {
		t.Fatalf("cancel: %v", got)
	}
	send(hj, &pgproto3.Sync{})
	until(hj, "*pgproto3.ReadyForQuery")
	send(hj, &pgproto3.Query{String: "SELECT 1"})
	if got := until(hj, "*pgproto3.ReadyForQuery"); got[0] != "*pgproto3.RowDescription" {
		t.Fatalf("after the cancel: %v", got)
	}
	// A client that leaves with a portal half read.
	send(hj, &pgproto3.Parse{Query: "SELECT id FROM orders " + curWhere + " ORDER BY id"}, &pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 5}, &pgproto3.Flush{})
	until(hj, "*pgproto3.PortalSuspended")
	hj.Conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for shardsIdleInTx(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("backends left idle in a transaction: %d", shardsIdleInTx(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkMergedPortal reads 100k merged rows (ORDER BY across four
// shards) through the proxy at once (Execute without a limit) and through
// a portal fetched 500 rows at a time (pg-cursor's way), and reports the
// proxy's heap in use after the read.
//
//	go test ./integration/ -run '^$' -bench MergedPortal -benchtime 5x
func BenchmarkMergedPortal(b *testing.B) {
	seedCursorRows(b)
	q := "SELECT o.id, g FROM orders o, generate_series(1, 1000) g WHERE o.id BETWEEN 960000 AND 960099 ORDER BY g, o.id"
	for _, limit := range []uint32{0, 500} {
		b.Run(fmt.Sprintf("maxRows=%d", limit), func(b *testing.B) {
			ctx := context.Background()
			conn, err := pgconn.Connect(ctx, proxyURL("app", "app"))
			if err != nil {
				b.Fatal(err)
			}
			hj, err := conn.Hijack()
			if err != nil {
				b.Fatal(err)
			}
			defer hj.Conn.Close()
			fe := hj.Frontend
			for i := 0; i < b.N; i++ {
				fe.Send(&pgproto3.Parse{Query: q})
				fe.Send(&pgproto3.Bind{})
				rows := 0
				for done := false; !done; {
					fe.Send(&pgproto3.Execute{MaxRows: limit})
					fe.Send(&pgproto3.Flush{})
					if err := fe.Flush(); err != nil {
						b.Fatal(err)
					}
					for {
						m, err := fe.Receive()
						if err != nil {
							b.Fatal(err)
						}
						if _, ok := m.(*pgproto3.DataRow); ok {
							rows++
							continue
						}
						if _, ok := m.(*pgproto3.PortalSuspended); ok {
							break
						}
						if _, ok := m.(*pgproto3.CommandComplete); ok {
							done = true
							break
						}
						if e, ok := m.(*pgproto3.ErrorResponse); ok {
							b.Fatal(e.Message)
						}
					}
				}
				fe.Send(&pgproto3.Sync{})
				if err := fe.Flush(); err != nil {
					b.Fatal(err)
				}
				for {
					m, err := fe.Receive()
					if err != nil {
						b.Fatal(err)
					}
					if _, ok := m.(*pgproto3.ReadyForQuery); ok {
						break
					}
				}
				if rows != 100000 {
					b.Fatalf("%d rows", rows)
				}
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap_MB")
		})
	}
}

// TestCoordinatorCursorMatchesPostgres: a cursor over a query only the
// coordinator answers (percentile_cont) is declared there inside the
// client's transaction and fetched in parts, like one Postgres.
func TestCoordinatorCursorMatchesPostgres(t *testing.T) {
	seedCursorRows(t)
	addr, _ := startCoordinatorProxy(t)
	url := "postgres://app:app@" + addr + "/deliveryapp?sslmode=disable"
	q := func(sql string) wireStep { return wireStep{&pgproto3.Query{String: sql}} }
	steps := []wireStep{
		q("BEGIN"),
		q("DECLARE pc CURSOR FOR SELECT status, percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders " + curWhere + " GROUP BY status ORDER BY status"),
		q("FETCH 2 FROM pc"), q("SELECT id FROM orders WHERE user_id = 960003"), q("FETCH ALL FROM pc"), q("CLOSE pc"),
		q("COMMIT"),
	}
	want := cursorTranscript(t, curPlain(), steps)
	var got string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		// The coordinator is provisioned in the background.
		if got = cursorTranscript(t, url, steps); got == want || time.Now().After(deadline) {
			break
		}
	}
	if got != want {
		t.Fatalf("through the proxy:\n%s\nplain Postgres:\n%s", got, want)
	}
}
