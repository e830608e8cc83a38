package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/delivery"
	"github.com/shardproxy/shardproxy/parser"
)

// The COPY tests load order_items for user ids from copyBase on (each test
// its own range) through the proxy, and the same data into one plain
// Postgres (database copyplain on cluster 0, the delivery schema), then
// compare.
const copyBase = 7_000_000

var plainOnce struct {
	sync.Once
	err error
}

// plainCopyDB returns a connection to the plain Postgres database.
func plainCopyDB(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	plainOnce.Do(func() {
		if plainOnce.err = shardExec(ctx, 0, "CREATE DATABASE copyplain"); plainOnce.err != nil {
			return
		}
		c, err := pgx.Connect(ctx, env.shards.Clusters[0].DSN("copyplain"))
		if err != nil {
			plainOnce.err = err
			return
		}
		defer c.Close(ctx)
		stmts, err := parser.Parse(delivery.Schema)
		if err != nil {
			plainOnce.err = err
			return
		}
		for _, st := range stmts {
			if _, err := c.Exec(ctx, st.SQL); err != nil {
				plainOnce.err = err
				return
			}
		}
	})
	if plainOnce.err != nil {
		t.Fatal(plainOnce.err)
	}
	c, err := pgx.Connect(ctx, env.shards.Clusters[0].DSN("copyplain"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// itemName is a name that exercises every escape: delimiters, quotes,
// backslashes, newlines, tabs, carriage returns, non-ASCII, a long one.
func itemName(i int) string {
	switch i % 9 {
	case 0:
		return fmt.Sprintf("plain %d", i)
	case 1:
		return "tab\there, comma, \"quote\""
	case 2:
		return "two\nlines\r\nand CRLF"
	case 3:
		return `back\slash \. \N NULL`
	case 4:
		return "ünïcødé ✓"
	case 5:
		return strings.Repeat("long;", 2000)
	case 6:
		return ","
	case 7:
		return `\.`
	}
	return ""
}

type item struct {
	id, userID int64
	name       string
	qty        int32
}

func items(base, n int) []item {
	out := make([]item, n)
	for i := range out {
		out[i] = item{id: int64(i + 1), userID: int64(base + i%97), name: itemName(i), qty: int32(i % 13)}
	}
	return out
}

// textFile writes items in COPY's text format.
func textFile(its []item) []byte {
	r := strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`)
	var b bytes.Buffer
	for _, it := range its {
		fmt.Fprintf(&b, "%d\t%d\t%d\t%s\t%d\t1.25\n", it.id, it.id, it.userID, r.Replace(it.name), it.qty)
	}
	return b.Bytes()
}

// csvFile writes items as CSV with a header, every name quoted.
func csvFile(its []item, delim string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "id%[1]sorder_id%[1]suser_id%[1]sname%[1]squantity%[1]sprice\n", delim)
	for _, it := range its {
		fmt.Fprintf(&b, "%d%s%d%s\"%d\"%s\"%s\"%s%d%s1.25\n", it.id, delim, it.id, delim, it.userID, delim,
			strings.ReplaceAll(it.name, `"`, `""`), delim, it.qty, delim)
	}
	return b.Bytes()
}

// digest sums what a load must preserve for a user range.
const digestSQL = `SELECT count(*), sum(hashtext(name)::int8 + quantity + id * 7 + price * 100)::float8
	FROM order_items WHERE user_id >= $1 AND user_id < $2`

func digest(t *testing.T, c *pgx.Conn, lo, hi int) string {
	t.Helper()
	return digestOf(t, c, digestSQL, lo, hi)
}

func digestOf(t *testing.T, c *pgx.Conn, sql string, lo, hi int) string {
	t.Helper()
	var n int64
	var sum *float64
	if err := c.QueryRow(context.Background(), sql, lo, hi).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	if sum == nil {
		return fmt.Sprintf("%d:0", n)
	}
	return fmt.Sprintf("%d:%.0f", n, *sum)
}

// checkPlacement fails if a row of the user range sits on a shard that
// Postgres's hash partitioning would not put it on.
func checkPlacement(t *testing.T, lo, hi int) {
	t.Helper()
	for i := 0; i < nShards; i++ {
		if bad := shardInt(t, i, "SELECT count(*) FROM order_items WHERE user_id >= $1 AND user_id < $2 AND NOT satisfies_hash_partition('hashcheck'::regclass, $3, $4, user_id)",
			lo, hi, nShards, i); bad != 0 {
			t.Fatalf("shard %d holds %d rows of users %d..%d that hash elsewhere", i, bad, lo, hi)
		}
	}
}

// spread counts the shards holding rows of the user range.
func spread(t *testing.T, lo, hi int) int {
	n := 0
	for i := 0; i < nShards; i++ {
		if shardInt(t, i, "SELECT count(*) FROM order_items WHERE user_id >= $1 AND user_id < $2", lo, hi) > 0 {
			n++
		}
	}
	return n
}

func psqlStrict(t *testing.T, args ...string) string {
	t.Helper()
	out, err := psql(t, "app", append([]string{"-v", "ON_ERROR_STOP=1"}, args...)...)
	if err != nil {
		t.Fatalf("psql %v: %v\n%s", args, err, out)
	}
	return out
}

func plainPsql(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("psql", append([]string{"-X", "-v", "ON_ERROR_STOP=1", env.shards.Clusters[0].DSN("copyplain")}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("plain psql %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestCopyPsqlBothWays loads the same files with psql's \copy through the
// proxy and into one plain Postgres (text, CSV with a header and a ';'
// delimiter), checks placement and digests, then copies out through the
// proxy (CSV with a header, text, binary) and loads those into the plain
// Postgres again: the data must survive the round trip.
func TestCopyPsqlBothWays(t *testing.T) {
	plain := plainCopyDB(t)
	c := mustConnect(t)
	dir := t.TempDir()
	for k, tc := range []struct {
		name, opts string
		data       []byte
	}{
		{"text", "", textFile(items(copyBase, 500))},
		{"csv", "WITH (FORMAT csv, HEADER true, DELIMITER ';')", csvFile(items(copyBase+1000, 500), ";")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lo := copyBase + k*1000
			file := filepath.Join(dir, tc.name)
			os.WriteFile(file, tc.data, 0o644)
			cmd := fmt.Sprintf(`\copy order_items FROM '%s' %s`, file, tc.opts)
			if out := psqlStrict(t, "-c", cmd); !strings.Contains(out, "COPY 500") {
				t.Fatalf("psql: %s", out)
			}
			plainPsql(t, "-c", cmd)
			if got, want := digest(t, c, lo, lo+1000), digest(t, plain, lo, lo+1000); got != want || !strings.HasPrefix(got, "500:") {
				t.Fatalf("proxy %s, plain %s", got, want)
			}
			checkPlacement(t, lo, lo+1000)
			if n := spread(t, lo, lo+1000); n != nShards {
				t.Fatalf("rows on %d shards, want all %d", n, nShards)
			}
		})
	}
	// Out through the proxy, back into the plain Postgres (a fresh table).
	for _, tc := range []struct{ name, opts string }{
		{"csv header", "WITH (FORMAT csv, HEADER)"},
		{"text", ""},
		{"binary", "WITH (FORMAT binary)"},
	} {
		t.Run("out "+tc.name, func(t *testing.T) {
			file := filepath.Join(dir, "out")
			out := psqlStrict(t, "-c", fmt.Sprintf(`\copy (SELECT * FROM order_items WHERE user_id >= %d AND user_id < %d) TO '%s' %s`,
				copyBase, copyBase+2000, file, tc.opts))
			if !strings.Contains(out, "COPY 1000") {
				t.Fatalf("psql: %s", out)
			}
			if tc.name == "csv header" {
				data, _ := os.ReadFile(file)
				if n := bytes.Count(data, []byte("id,order_id,user_id")); n != 1 {
					t.Fatalf("%d headers in the CSV", n)
				}
			}
			plainPsql(t, "-c", "DROP TABLE IF EXISTS rt", "-c", "CREATE TABLE rt (LIKE order_items)",
				"-c", fmt.Sprintf(`\copy rt FROM '%s' %s`, file, tc.opts))
			got := digestOf(t, plain, strings.Replace(digestSQL, "order_items", "rt", 1), copyBase, copyBase+2000)
			want := digest(t, plain, copyBase, copyBase+2000)
			if got != want {
				t.Fatalf("round trip %s, loaded %s", got, want)
			}
		})
	}
	// A whole sharded table out: one header, every shard's rows.
	file := filepath.Join(dir, "all")
	psqlStrict(t, "-c", fmt.Sprintf(`\copy order_items TO '%s' WITH (FORMAT csv, HEADER)`, file))
	data, _ := os.ReadFile(file)
	if bytes.Count(data, []byte("id,order_id,user_id")) != 1 {
		t.Fatal("whole-table CSV: want exactly one header")
	}
}

// TestCopyPgxAndErrors loads with pgx's CopyFrom (binary format), then
// checks that every kind of bad row fails the whole COPY on every shard
// with Postgres's SQLSTATE and the client's line in CONTEXT, and that the
// session stays usable.
func TestCopyPgxAndErrors(t *testing.T) {
	plain := plainCopyDB(t)
	ctx := context.Background()
	c := mustConnect(t)
	lo := copyBase + 10000
	its := items(lo, 700)
	rows := make([][]any, len(its))
	for i, it := range its {
		rows[i] = []any{it.id, it.id, it.userID, it.name, it.qty, 1.25}
	}
	cols := []string{"id", "order_id", "user_id", "name", "quantity", "price"}
	for _, conn := range []*pgx.Conn{c, plain} {
		n, err := conn.CopyFrom(ctx, pgx.Identifier{"order_items"}, cols, pgx.CopyFromRows(rows))
		if err != nil || n != 700 {
			t.Fatalf("CopyFrom: %d %v", n, err)
		}
	}
	if got, want := digest(t, c, lo, lo+1000), digest(t, plain, lo, lo+1000); got != want {
		t.Fatalf("proxy %s, plain %s", got, want)
	}
	checkPlacement(t, lo, lo+1000)

	elo := copyBase + 20000
	line := func(id, user int, name string) string {
		return fmt.Sprintf("%d\t%d\t%d\t%s\t1\t2.00\n", id, id, user, name)
	}
	good := line(1, elo, "a") + line(2, elo+1, "b") + line(3, elo+2, "c") + line(4, elo+3, "d")
	more := line(11, elo+10, "a") + line(12, elo+11, "b") + line(13, elo+12, "c") + line(14, elo+13, "d")
	cases := []struct {
		name, sql, data, code, where string
	}{
		{"extra column", "COPY order_items FROM STDIN", good + "5\t5\t5\tx\t1\t2\t3\n", "22P04", "COPY order_items, line 5: "},
		{"missing column", "COPY order_items FROM STDIN", good + "5\t5\n", "22P04", "COPY order_items, line 5: "},
		{"bad key", "COPY order_items FROM STDIN", good + line(5, 0, "x")[:4] + "abc\tx\t1\t2\n", "22P02", "COPY order_items, line 5, column user_id: \"abc\""},
		{"duplicate on a shard", "COPY order_items FROM STDIN", good + line(1, elo, "dup") + more, "23505", "COPY order_items, line 5"},
		{"bad value on a shard", "COPY order_items FROM STDIN", good + fmt.Sprintf("7\t7\t%d\tx\tnotanint\t1\n", elo+9) + more, "22P02", "COPY order_items, line 5, column quantity"},
		{"csv unterminated", "COPY order_items FROM STDIN (FORMAT csv)", "1,1,1,\"a,1,1\n", "22P04", "COPY order_items, line 1"},
		{"key not listed", "COPY order_items (id, name) FROM STDIN", "1\tx\n", "0A000", ""},
		{"no such table", "COPY nosuch FROM STDIN", "1\n", "42P01", ""},
		{"bad option", "COPY order_items FROM STDIN (FORMAT nosuch)", "1\n", "22023", ""},
		{"range key null", "COPY events (id, kind, created_at) FROM STDIN", "1\tk\t2025-02-01 00:00:00+00\n2\tk\t\\N\n", "23514", "COPY events, line 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.PgConn().CopyFrom(ctx, strings.NewReader(tc.data), tc.sql)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != tc.code || !strings.Contains(pe.Where, tc.where) {
				t.Fatalf("got %v (where %q), want %s with CONTEXT %q", err, whereOf(err), tc.code, tc.where)
			}
			if d := digest(t, c, elo, elo+100); d != "0:0" {
				t.Fatalf("a failed COPY left rows: %s", d)
			}
			if strings.HasPrefix(tc.where, "COPY order_items") && tc.name != "csv unterminated" {
				// The same data into one plain Postgres: the same error, word for word.
				_, perr := plain.PgConn().CopyFrom(ctx, strings.NewReader(tc.data), tc.sql)
				var ppe *pgconn.PgError
				if !errors.As(perr, &ppe) || ppe.Code != pe.Code || ppe.Message != pe.Message || ppe.Where != pe.Where {
					t.Fatalf("plain Postgres: %v (where %q); proxy: %v (where %q)", perr, whereOf(perr), err, pe.Where)
				}
			}
			var one int
			if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Fatalf("session unusable: %v", err)
			}
		})
	}
	t.Run("client CopyFail", func(t *testing.T) {
		r := io.MultiReader(strings.NewReader(good), errReader{})
		_, err := c.PgConn().CopyFrom(ctx, r, "COPY order_items FROM STDIN")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57014" {
			t.Fatalf("got %v, want 57014", err)
		}
		if d := digest(t, c, elo, elo+100); d != "0:0" {
			t.Fatalf("a failed COPY left rows: %s", d)
		}
	})
	t.Run("inside a transaction", func(t *testing.T) {
		one := line(1, elo+50, "a") + line(2, elo+50, "b")
		for _, end := range []string{"ROLLBACK", "COMMIT"} {
			if _, err := c.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			if tag, err := c.PgConn().CopyFrom(ctx, strings.NewReader(one), "COPY order_items FROM STDIN"); err != nil || tag.RowsAffected() != 2 {
				t.Fatalf("COPY in a transaction: %v %v", tag, err)
			}
			if _, err := c.Exec(ctx, end); err != nil {
				t.Fatal(err)
			}
			want := "0:0"
			if end == "COMMIT" {
				want = "2:"
			}
			if d := digest(t, c, elo+50, elo+51); !strings.HasPrefix(d, want) {
				t.Fatalf("after %s: %s", end, d)
			}
		}
		// A failed COPY aborts the client's transaction, as in Postgres.
		c.Exec(ctx, "BEGIN")
		_, err := c.PgConn().CopyFrom(ctx, strings.NewReader(line(3, elo+50, "c")+"x\n"), "COPY order_items FROM STDIN")
		if err == nil {
			t.Fatal("bad COPY in a transaction succeeded")
		}
		if _, err := c.Exec(ctx, "SELECT 1"); err == nil || !strings.Contains(err.Error(), "25P02") {
			t.Fatalf("after a failed COPY the transaction must be aborted: %v", err)
		}
		c.Exec(ctx, "ROLLBACK")
		if d := digest(t, c, elo+50, elo+51); !strings.HasPrefix(d, "2:") {
			t.Fatalf("after a failed COPY in a transaction: %s", d)
		}
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("client gave up") }

func whereOf(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Where
	}
	return ""
}

// TestCopyReferenceAndPlain: a reference table gets every row on every
// shard; a table not in the config goes whole to the default shard.
func TestCopyReferenceAndPlain(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	data := "7100001\tR1\tRome\tpizza\t4.5\n7100002\tR2\tOslo\tfish\t\\N\n"
	tag, err := c.PgConn().CopyFrom(ctx, strings.NewReader(data), "COPY restaurants FROM STDIN")
	if err != nil || tag.String() != "COPY 2" {
		t.Fatalf("%v %v", tag, err)
	}
	for i := 0; i < nShards; i++ {
		if n := shardInt(t, i, "SELECT count(*) FROM restaurants WHERE id IN (7100001, 7100002)"); n != 2 {
			t.Fatalf("shard %d has %d of the reference rows", i, n)
		}
	}
	if _, err := c.Exec(ctx, "CREATE TABLE copy_plain (a int, b text)"); err != nil {
		t.Fatal(err)
	}
	if tag, err := c.PgConn().CopyFrom(ctx, strings.NewReader("1\tx\n2\ty\n"), "COPY copy_plain FROM STDIN"); err != nil || tag.RowsAffected() != 2 {
		t.Fatalf("%v %v", tag, err)
	}
	var out bytes.Buffer
	if _, err := c.PgConn().CopyTo(ctx, &out, "COPY copy_plain TO STDOUT"); err != nil || out.String() != "1\tx\n2\ty\n" {
		t.Fatalf("%q %v", out.String(), err)
	}
}

// TestCopyOutRouting: a query on one shard key runs on one shard; ORDER BY
// across shards in binary is refused with 0A000; a binary COPY of a sharded table has
// one header and one trailer.
func TestCopyOutRouting(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	lo := copyBase + 30000
	c.PgConn().CopyFrom(ctx, bytes.NewReader(textFile(items(lo, 200))), "COPY order_items FROM STDIN")
	var out bytes.Buffer
	tag, err := c.PgConn().CopyTo(ctx, &out, fmt.Sprintf("COPY (SELECT id FROM order_items WHERE user_id = %d) TO STDOUT", lo+3))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(out.String())
	sort.Strings(lines)
	if tag.RowsAffected() != int64(len(lines)) || len(lines) != 3 {
		t.Fatalf("%v %q", tag, lines)
	}
	_, err = c.PgConn().CopyTo(ctx, io.Discard, "COPY (SELECT id FROM order_items ORDER BY id) TO STDOUT (FORMAT binary)")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "0A000" || pe.Hint == "" {
		t.Fatalf("binary ORDER BY across shards: %v", err)
	}
	out.Reset()
	tag, err = c.PgConn().CopyTo(ctx, &out, fmt.Sprintf("COPY (SELECT id FROM order_items WHERE user_id >= %d AND user_id < %d) TO STDOUT (FORMAT binary)", lo, lo+1000))
	if err != nil || tag.RowsAffected() != 200 {
		t.Fatalf("%v %v", tag, err)
	}
	b := out.Bytes()
	if !bytes.HasPrefix(b, []byte("PGCOPY\n\xff\r\n\x00")) || bytes.Count(b, []byte("PGCOPY")) != 1 || !bytes.HasSuffix(b, []byte{0xff, 0xff}) {
		t.Fatalf("binary stream: %d bytes, %d headers", len(b), bytes.Count(b, []byte("PGCOPY")))
	}
	// header 19 + per row: 2 (count) + 4 (len) + 8 (bigint) + trailer 2
	if len(b) != 19+200*14+2 {
		t.Fatalf("binary stream of %d bytes, want %d", len(b), 19+200*14+2)
	}
}

// TestCopyPsycopg runs psycopg 3's cursor.copy() in text and binary.
func TestCopyPsycopg(t *testing.T) {
	py := "/usr/bin/python3"
	requireTool(t, "python3-psycopg (Debian)", exists(py) && exec.Command(py, "-c", "import psycopg").Run() == nil)
	lo := copyBase + 40000
	runClient(t, py, nil, "testdata/clients/psycopg_copy.py",
		fmt.Sprintf("host=127.0.0.1 port=%s dbname=deliveryapp user=app password=app", portOf(env.addr)), fmt.Sprint(lo))
	checkPlacement(t, lo, lo+1000)
	if n := spread(t, lo, lo+1000); n != nShards {
		t.Fatalf("psycopg rows on %d shards", n)
	}
}

// TestCopyCancel: a CancelRequest during a COPY stops it on every shard.
func TestCopyCancel(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	lo := copyBase + 50000
	pr, pw := io.Pipe()
	go func() {
		// Rows for a while, then wait for the cancel.
		pw.Write(textFile(items(lo, 3000)))
		time.Sleep(5 * time.Second)
		pw.Write(textFile(items(lo, 10)))
		pw.Close()
	}()
	go func() {
		time.Sleep(time.Second)
		c.PgConn().CancelRequest(context.Background())
	}()
	_, err := c.PgConn().CopyFrom(ctx, pr, "COPY order_items FROM STDIN")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57014" {
		t.Fatalf("got %v, want 57014", err)
	}
	if d := digest(t, c, lo, lo+1000); d != "0:0" {
		t.Fatalf("a canceled COPY left rows: %s", d)
	}
}

// TestCopyClientGone: a client that disconnects mid-COPY leaves no rows and
// no shard still copying or holding a transaction.
func TestCopyClientGone(t *testing.T) {
	ctx := context.Background()
	c, err := connect(ctx, "app", "app")
	if err != nil {
		t.Fatal(err)
	}
	lo := copyBase + 60000
	pr, pw := io.Pipe()
	go func() {
		pw.Write(textFile(items(lo, 2000)))
		time.Sleep(500 * time.Millisecond)
		c.PgConn().Conn().Close() // gone mid-COPY
		pw.Close()
	}()
	c.PgConn().CopyFrom(ctx, pr, "COPY order_items FROM STDIN")
	check := mustConnect(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		busy := int64(0)
		for i := 0; i < nShards; i++ {
			busy += shardInt(t, i, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'deliveryapp' AND (query ILIKE 'COPY order_items%' AND state = 'active' OR state LIKE 'idle in transaction%')")
		}
		if busy == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d shard sessions still copying or in a transaction after the client left", busy)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d := digest(t, check, lo, lo+1000); d != "0:0" {
		t.Fatalf("an abandoned COPY left rows: %s", d)
	}
}

// TestCopyNodePgCopyStreams runs node-postgres's pg-copy-streams both ways,
// writing CSV in 7-byte pieces.
func TestCopyNodePgCopyStreams(t *testing.T) {
	mods, _ := filepath.Abs("testdata/clients/node_modules")
	_, err := exec.LookPath("node")
	requireTool(t, "node and npm packages pg, pg-copy-streams (npm install in integration/testdata/clients)",
		err == nil && exists(filepath.Join(mods, "pg-copy-streams")))
	lo := copyBase + 70000
	runClient(t, "node", []string{"NODE_PATH=" + mods}, "testdata/clients/node_copy.js", proxyURL("app", "app"), fmt.Sprint(lo))
	checkPlacement(t, lo, lo+1000)
	if n := spread(t, lo, lo+1000); n != nShards {
		t.Fatalf("node rows on %d shards", n)
	}
}

// TestCopyLargeRowsByRange loads range-sharded events with several-MB jsonb
// rows, written to the proxy in 1000-byte pieces: each row lands on the
// shard whose range holds its time, whole.
func TestCopyLargeRowsByRange(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	big := `{"k": "` + strings.Repeat("x", 4<<20) + `"}`
	times := []string{"2024-06-01 00:00:00+00", "2025-02-01 00:00:00+00", "2025-08-01 00:00:00+00", "2026-03-01 00:00:00+00"}
	var data strings.Builder
	for i, ts := range times {
		fmt.Fprintf(&data, "%d\tbig\t%s\t%s\n", 7200000+i, big, ts)
	}
	r := &pieceReader{data: []byte(data.String()), n: 1000}
	tag, err := c.PgConn().CopyFrom(ctx, r, "COPY events (id, kind, payload, created_at) FROM STDIN")
	if err != nil || tag.RowsAffected() != 4 {
		t.Fatalf("%v %v", tag, err)
	}
	for i := range times {
		if n := shardInt(t, i, "SELECT count(*) FROM events WHERE id = $1 AND length(payload->>'k') = $2", 7200000+i, 4<<20); n != 1 {
			t.Fatalf("shard %d: %d rows of its range, want 1", i, n)
		}
	}
}

// pieceReader returns data n bytes at a time, so pgx sends small CopyData.
type pieceReader struct {
	data []byte
	n    int
}

func (r *pieceReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n, len(r.data))
	copy(p, r.data[:k])
	r.data = r.data[k:]
	return k, nil
}

// TestCopyTextKeyEncoding: a text shard key is hashed as UTF-8, so COPY
// data in another encoding is refused rather than misplaced.
func TestCopyTextKeyEncoding(t *testing.T) {
	c := startOracleCluster(t, "enc", "  accounts: {strategy: hash, key: name, key_type: text}\n  mistyped: {strategy: hash, key: name}\n")
	ctx := context.Background()
	conn := c.open(t, c.proxyURL(), pgx.QueryExecModeSimpleProtocol)
	if _, err := conn.Exec(ctx, "CREATE TABLE accounts (name text PRIMARY KEY, n int)"); err != nil {
		t.Fatal(err)
	}
	if tag, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("zoë\t1\nanna\t2\n"), "COPY accounts FROM STDIN"); err != nil || tag.RowsAffected() != 2 {
		t.Fatalf("%v %v", tag, err)
	}
	// A text key the config calls bigint would hash wrongly: refused.
	if _, err := conn.Exec(ctx, "CREATE TABLE mistyped (name text, n int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("anna\t1\n"), "COPY mistyped FROM STDIN"); pgCode(err) != "0A000" {
		t.Fatalf("key type mismatch: got %v, want 0A000", err)
	}
	for _, sql := range []string{"COPY accounts FROM STDIN (ENCODING 'LATIN1')", "SET client_encoding TO 'LATIN1'"} {
		if strings.HasPrefix(sql, "SET") {
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
			sql = "COPY accounts FROM STDIN"
		}
		_, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("zo\xeb2\t1\n"), sql)
		if pgCode(err) != "0A000" {
			t.Fatalf("%s: got %v, want 0A000", sql, err)
		}
	}
	total := 0
	for i := 0; i < 4; i++ {
		sh, err := pgx.Connect(ctx, c.set.Clusters[i].DSN("enc"))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		sh.QueryRow(ctx, "SELECT count(*) FROM accounts").Scan(&n)
		sh.Close(ctx)
		total += n
	}
	if total != 2 {
		t.Fatalf("%d accounts on the shards, want the 2 loaded in UTF-8", total)
	}
}

// TestCopyJDBC runs JDBC's CopyManager through the proxy (copyIn of CSV,
// copyOut merged in order and of a whole table, a copyIn rolled back)
// and checks where the rows landed.
func TestCopyJDBC(t *testing.T) {
	jar := "/usr/share/java/postgresql.jar"
	_, err := exec.LookPath("java")
	requireTool(t, "java and libpostgresql-jdbc-java (Debian)", err == nil && exists(jar))
	lo := copyBase + 50000
	url := fmt.Sprintf("jdbc:postgresql://127.0.0.1:%s/deliveryapp?user=app&password=app&sslmode=disable", portOf(env.addr))
	runClient(t, "java", nil, "-cp", jar, "testdata/clients/JdbcCopy.java", url, fmt.Sprint(lo))
	checkPlacement(t, lo, lo+502)
	if spread(t, lo, lo+500) < 2 {
		t.Fatal("the rows sit on one shard")
	}
}
