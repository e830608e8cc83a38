package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/router"
)

// TestGoldenThroughProxy is the routing oracle end to end: four shards
// behind a proxy with the golden topology and one plain Postgres hold the
// same data, loaded through the proxy (and straight into the plain one);
// every golden statement runs through the proxy and on the plain Postgres,
// and the answers must be equal as multisets. Statements the golden files
// refuse must come back as 0A000, never as rows.
func TestGoldenThroughProxy(t *testing.T) {
	ctx := context.Background()
	oc := startOracleCluster(t, "oracle", `  users:            {strategy: hash, key: id}
  orders:           {strategy: hash, key: user_id}
  order_items:      {strategy: hash, key: user_id}
  restaurants:      {strategy: reference}
  cities:           {strategy: reference}
  carts:            {strategy: hash, key: session_id, key_type: text}
  billing.invoices: {strategy: hash, key: user_id}
  events:
    strategy: range
    key: created_at
    ranges: [{to: "2025-01-01", shard: s0}, {from: "2025-01-01", to: "2025-07-01", shard: s1}, {from: "2025-07-01", to: "2026-01-01", shard: s2}, {from: "2026-01-01", shard: s3}]
  daily:
    strategy: range
    key: day
    key_type: date
    ranges: [{to: "2025-01-01", shard: s0}, {from: "2025-01-01", to: "2025-07-01", shard: s1}, {from: "2025-07-01", to: "2026-01-01", shard: s2}, {from: "2026-01-01", shard: s3}]
`)
	viaSimple := oc.open(t, oc.proxyURL(), pgx.QueryExecModeSimpleProtocol)
	viaExt := oc.open(t, oc.proxyURL(), pgx.QueryExecModeCacheStatement)
	oracle := oc.open(t, oc.plainURL(), pgx.QueryExecModeSimpleProtocol)
	oracleExt := oc.open(t, oc.plainURL(), pgx.QueryExecModeCacheStatement)
	both := func(sql string, args ...any) {
		t.Helper()
		c := viaSimple
		if len(args) > 0 {
			c = viaExt
		}
		if _, err := c.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("through the proxy: %s: %v", sql, err)
		}
		o := oracle
		if len(args) > 0 {
			o = oracleExt
		}
		if _, err := o.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("oracle: %s: %v", sql, err)
		}
	}
	loadGoldenData(t, both)

	files, _ := filepath.Glob("../router/testdata/*.route")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	compared, refused, skipped := 0, 0, 0
	for _, path := range files {
		for _, c := range readGoldenFile(t, path) {
			name := fmt.Sprintf("%s:%d", filepath.Base(path), c.line)
			hinted := c.session != "" || strings.Contains(c.sql, "/*") || strings.Contains(c.sql, "--")
			nondet := strings.Contains(c.sql, "now()") || strings.Contains(c.sql, "random()")
			if c.session != "" || sessionLevel(c.sql) {
				skipped++
				continue
			}
			args := make([]any, len(c.params))
			for i, p := range c.params {
				if p != nil {
					args[i] = *p
				}
			}
			if strings.Contains(c.sql, "$") && len(args) == 0 {
				skipped++
				continue
			}
			proxyConn, oracleConn := viaSimple, oracle
			if len(args) > 0 {
				proxyConn, oracleConn = viaExt, oracleExt
			}
			if strings.HasPrefix(c.want, "refused 0A000") {
				_, err := runRows(ctx, proxyConn, c.sql, args, true)
				if code(err) != "0A000" {
					t.Errorf("%s: golden refuses %q, the proxy answered (err %v)", name, c.sql, err)
				}
				refused++
				continue
			}
			if hinted || nondet || !isQuery(c.sql) {
				skipped++
				continue
			}
			want, werr := runRows(ctx, oracleConn, c.sql, args, true)
			if werr != nil {
				skipped++ // not valid SQL for this schema: Postgres refuses it too
				continue
			}
			got, err := runRows(ctx, proxyConn, c.sql, args, true)
			if err != nil {
				if code(err) == "0A000" {
					refused++ // the proxy refuses what it cannot merge: allowed, never wrong rows
					continue
				}
				t.Errorf("%s: %q through the proxy: %v", name, c.sql, err)
				continue
			}
			if u := strings.ToUpper(c.sql); strings.Contains(u, "LIMIT") && !strings.Contains(u, "ORDER BY") {
				// LIMIT without ORDER BY returns some n rows: only the count is defined.
				if len(got) != len(want) {
					t.Errorf("%s: %q: %d rows through the proxy, %d from Postgres", name, c.sql, len(got), len(want))
				}
				compared++
				continue
			}
			if g, w := multiset(got), multiset(want); g != w {
				t.Errorf("%s: %q\nthrough the proxy:\n%s\nplain Postgres:\n%s", name, c.sql, g, w)
			}
			compared++
		}
	}
	// ORDER BY and LIMIT across shards: the merge must give Postgres's
	// exact order (each ORDER BY ends in a unique column, so the order is
	// total), in text and binary result formats.
	ordered := []struct {
		sql    string
		args   []any
		simple bool // only the simple protocol
	}{
		{"SELECT id, total FROM orders ORDER BY total DESC, id LIMIT 5 OFFSET 3", nil, false},
		{"SELECT id FROM orders ORDER BY id OFFSET 40", nil, false},
		{"SELECT * FROM events ORDER BY created_at, id LIMIT 4 OFFSET 10", nil, false},
		{"SELECT id, total FROM orders ORDER BY total, id LIMIT 3 OFFSET 1000", nil, false},
		{"SELECT id, total FROM orders ORDER BY total DESC, id LIMIT 7", nil, false},
		{"SELECT id, total, status FROM orders ORDER BY status NULLS FIRST, total, id", nil, false},
		{"SELECT id, created_at FROM orders ORDER BY created_at DESC, id DESC LIMIT 5", nil, false},
		{"SELECT name, id FROM users ORDER BY name, id LIMIT 10", nil, false},
		{"SELECT id, note FROM orders ORDER BY note NULLS LAST, id LIMIT 3", nil, false},
		{"SELECT o.id, o.total FROM orders o ORDER BY 2, 1 LIMIT 4", nil, false},
		{"SELECT id, user_id FROM orders ORDER BY user_id, id", nil, false},
		{"SELECT u.id, u.city FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.id, u.city ORDER BY u.city, u.id LIMIT 6", nil, false},
		{"SELECT id, total FROM orders WHERE total > $1 ORDER BY total, id LIMIT $2", []any{"10.5", 5}, false},
		{"SELECT id, created_at FROM orders WHERE id > $1 ORDER BY created_at, id LIMIT 6", []any{3}, false},
		{"SELECT session_id, item FROM carts ORDER BY session_id DESC, item", nil, false},
		{"SELECT id, kind, created_at FROM events ORDER BY created_at DESC, id LIMIT 9", nil, false},
		{"SELECT * FROM orders ORDER BY created_at DESC, id LIMIT 8", nil, false},
		{"SELECT o.* FROM orders o WHERE o.total > $1 ORDER BY o.total, o.id", []any{"20"}, false},
		// Hidden ORDER BY columns, OFFSET with parameters.
		{"SELECT id FROM orders ORDER BY total DESC, id", nil, false},
		{"SELECT id, status FROM orders ORDER BY total * 2, created_at DESC, id LIMIT 11", nil, false},
		{"SELECT id FROM orders ORDER BY total, id LIMIT $1 OFFSET $2", []any{4, 6}, false},
		// Groups merged across shards, then sorted.
		{"SELECT status, count(*), sum(total), min(total), max(created_at), avg(total) FROM orders GROUP BY status ORDER BY status NULLS FIRST", nil, false},
		{"SELECT user_id % 3 AS k, count(*) AS n, avg(id) FROM orders GROUP BY 1 ORDER BY n DESC, k", nil, false},
		{"SELECT status, count(*) FROM orders GROUP BY status HAVING count(*) > 1 ORDER BY count(*) DESC, status LIMIT 2", nil, false},
		{"SELECT DISTINCT status FROM orders ORDER BY status DESC NULLS LAST OFFSET 1", nil, false},
		{"SELECT count(*), avg(total), bool_and(total > 0), count(*) FILTER (WHERE status = 'new') FROM orders", nil, false},
		{"SELECT count(DISTINCT user_id), sum(DISTINCT user_id) FROM orders", nil, false},
		{"SELECT count(DISTINCT status), count(*), sum(total), avg(id) FROM orders", nil, false},
		{"SELECT user_id % 3, count(DISTINCT total), max(status) FROM orders GROUP BY 1 HAVING count(DISTINCT total) > 1 ORDER BY 2 DESC, 1", nil, false},
		{"SELECT status, avg(total) FROM orders WHERE total > $1 GROUP BY status HAVING sum(total) > $2 ORDER BY status", []any{"1", "5"}, false},
		// Groups merged in key order, streaming, LIMIT pushed down.
		{"SELECT date_trunc('month', created_at) AS m, count(*), avg(total) FROM orders GROUP BY 1 ORDER BY 1 DESC LIMIT 3 OFFSET 1", nil, false},
		{"SELECT status, user_id % 2 AS p, count(*), max(total) FROM orders GROUP BY 1, 2 ORDER BY p, status NULLS FIRST LIMIT $1", []any{4}, false},
		{"SELECT DISTINCT user_id % 5, status FROM orders ORDER BY 1 DESC, 2 LIMIT 6", nil, false},
		// Window functions partitioned by the shard key: whole on each shard.
		{"SELECT user_id, id, row_number() OVER (PARTITION BY user_id ORDER BY id), sum(total) OVER (PARTITION BY user_id) FROM orders ORDER BY user_id, id", nil, false},
		// UNION across shards: deduplicated after the merge.
		{"SELECT status FROM orders UNION SELECT status FROM orders ORDER BY 1 NULLS FIRST", nil, false},
		{"SELECT user_id, status FROM orders UNION SELECT id, city FROM users ORDER BY user_id DESC, status LIMIT 7 OFFSET 2", nil, false},
		{"SELECT id FROM orders UNION ALL SELECT id FROM users ORDER BY id DESC LIMIT 5", nil, false},
		{"SELECT id, total FROM orders WHERE total > $1 UNION SELECT id, total FROM orders ORDER BY total, id LIMIT $2 OFFSET $3", []any{"3", 4, 3}, false},
		// Expressions over aggregates, computed after the merge.
		{"SELECT max(total) - min(total), count(*) * 2, avg(total)::numeric(10,2), sum(total) / count(total), sum(id) / count(*), (avg(id) * 3)::int8 AS x FROM orders", nil, false},
		{"SELECT status, (max(total) - min(total))::int, -count(*), sum(total)::float8 / 3 FROM orders GROUP BY status ORDER BY status", nil, false},
		{"SELECT user_id % 4, avg(total) * 100 / sum(total) FROM orders GROUP BY 1 ORDER BY 2 DESC NULLS LAST, 1", nil, false},
	}
	for _, q := range ordered {
		for _, ext := range []bool{false, true} {
			if q.simple && ext {
				if _, err := runRows(ctx, viaExt, q.sql, q.args, true); code(err) != "0A000" {
					t.Errorf("%s in the extended protocol: %v, want 0A000", q.sql, err)
				}
				continue
			}
			pc, oc := viaSimple, oracle
			if ext || len(q.args) > 0 {
				pc, oc = viaExt, oracleExt
			}
			want, werr := runRows(ctx, oc, q.sql, q.args, true)
			if werr != nil {
				t.Fatalf("oracle: %s: %v", q.sql, werr)
			}
			got, err := runRows(ctx, pc, q.sql, q.args, true)
			if err != nil {
				t.Errorf("ordered %q (extended %v): %v", q.sql, ext, err)
				continue
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("ordered %q (extended %v):\nthrough the proxy:\n%s\nplain Postgres:\n%s", q.sql, ext, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			compared++
		}
	}
	if rows, err := runRows(ctx, viaSimple, "SELECT id FROM orders LIMIT 5", nil, true); err != nil || len(rows) != 5 {
		t.Errorf("LIMIT without ORDER BY: %d rows, %v", len(rows), err)
	}
	// Mistakes get Postgres's own error, as from one Postgres.
	for _, q := range []string{"SELECT * FROM orders ORDER BY nosuch", "SELECT *, 1 AS id FROM orders ORDER BY id",
		"SELECT count(*) / 0 FROM orders", "SELECT (count(*) * 100000)::int2 FROM orders", "SELECT sum(total)::numeric(3,1) FROM orders"} {
		_, perr := runRows(ctx, viaSimple, q, nil, true)
		_, oerr := runRows(ctx, oracle, q, nil, true)
		if code(perr) == "" || code(perr) != code(oerr) {
			t.Errorf("%s: through the proxy %v, Postgres %v", q, perr, oerr)
		}
	}
	if rows, err := runRows(ctx, viaSimple, "SELECT id FROM orders LIMIT 5 OFFSET 2", nil, true); err != nil || len(rows) != 5 {
		t.Errorf("LIMIT OFFSET without ORDER BY: %d rows, %v", len(rows), err)
	}
	for _, q := range []string{"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders",
		"SELECT id FROM orders INTERSECT SELECT id FROM users", "SELECT id FROM orders EXCEPT SELECT user_id FROM order_items",
		"SELECT count(DISTINCT status), count(DISTINCT total) FROM orders", "SELECT max(status) || 'x' FROM orders",
		"SELECT id FROM orders ORDER BY id OFFSET now()::int"} {
		if _, err := runRows(ctx, viaSimple, q, nil, true); code(err) != "0A000" {
			t.Errorf("%s: %v, want 0A000", q, err)
		}
	}
	t.Logf("golden statements: %d answers compared, %d refused (0A000), %d skipped (hints, sessions, writes, nondeterministic)", compared, refused, skipped)
	if compared < 150 {
		t.Fatalf("only %d golden statements compared", compared)
	}
}

func code(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// isQuery reports whether sql reads only: writes are compared elsewhere
// (tag sums, placement), as applying them here would make the two copies
// drift apart.
func isQuery(sql string) bool {
	u := strings.ToUpper(strings.TrimSpace(sql))
	return (strings.HasPrefix(u, "SELECT") || strings.HasPrefix(u, "WITH") || strings.HasPrefix(u, "TABLE") || strings.HasPrefix(u, "VALUES")) &&
		!strings.Contains(u, "INSERT") && !strings.Contains(u, "UPDATE") && !strings.Contains(u, "DELETE") && !strings.Contains(u, " INTO ") &&
		!strings.Contains(u, "FOR UPDATE") && !strings.Contains(u, "FOR SHARE")
}

func runRows(ctx context.Context, c *pgx.Conn, sql string, args []any, _ bool) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		out = append(out, fmt.Sprint(vals...))
	}
	return out, rows.Err()
}

func multiset(rows []string) string {
	s := append([]string(nil), rows...)
	sort.Strings(s)
	return strings.Join(s, "\n")
}

type goldenCase struct {
	line    int
	sql     string
	params  []*string
	session string
	want    string
}

// readGoldenFile reads router/testdata/*.route: "route [session=s] [params=a|b]",
// the SQL, "----", the expected plan or refusal, a blank line.
func readGoldenFile(t *testing.T, path string) []goldenCase {
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var lines []string
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	var out []goldenCase
	for i := 0; i < len(lines); {
		l := lines[i]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			i++
			continue
		}
		c := goldenCase{line: i + 1}
		head := l
		if k := strings.Index(l, " params="); k >= 0 {
			for _, p := range strings.Split(l[k+len(" params="):], "|") {
				if p == "NULL" {
					c.params = append(c.params, nil)
				} else {
					c.params = append(c.params, &p)
				}
			}
			head = l[:k]
		}
		for _, arg := range strings.Fields(head)[1:] {
			if k, v, _ := strings.Cut(arg, "="); k == "session" {
				c.session = v
			}
		}
		i++
		var sql, want []string
		for ; i < len(lines) && lines[i] != "----"; i++ {
			sql = append(sql, lines[i])
		}
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			want = append(want, lines[i])
		}
		c.sql, c.want = strings.Join(sql, "\n"), strings.Join(want, "\n")
		out = append(out, c)
	}
	return out
}

// loadGoldenData creates the golden schema and a deterministic data set
// (skewed keys, NULLs, numerics with scale, timestamps across the range
// bounds), every statement through the proxy and on the plain Postgres.
func loadGoldenData(t *testing.T, both func(sql string, args ...any)) {
	for _, ddl := range []string{
		"CREATE SCHEMA billing",
		"CREATE TABLE users (id bigint, name text, email text, city text, created_at timestamptz)",
		"CREATE TABLE orders (id bigint, user_id bigint, restaurant_id bigint, total numeric(10,2), status text, created_at timestamptz, note text)",
		"CREATE TABLE order_items (id bigint, order_id bigint, user_id bigint, name text, quantity int, price numeric(10,2))",
		"CREATE TABLE restaurants (id bigint, name text, city text, cuisine text, rating numeric(2,1))",
		"CREATE TABLE cities (id bigint, name text)",
		"CREATE TABLE carts (session_id text, item int)",
		"CREATE TABLE billing.invoices (id bigint, user_id bigint)",
		"CREATE TABLE events (id bigint, user_id bigint, kind text, payload jsonb, created_at timestamptz)",
		"CREATE TABLE daily (day date, n int)",
		"CREATE TABLE audit_log (id bigint, msg text)",
	} {
		both(ddl)
	}
	cities := []string{"Lisbon", "Porto", "x", "Braga"}
	for r := int64(1); r <= 8; r++ {
		both("INSERT INTO restaurants (id, name, city, cuisine, rating) VALUES ($1, $2, $3, $4, $5)", r, fmt.Sprint("r", r), cities[r%4], "pizza", fmt.Sprintf("%d.%d", 3+r%3, r%10))
	}
	for c := int64(1); c <= 4; c++ {
		both("INSERT INTO cities (id, name) VALUES ($1, $2)", c, cities[c-1])
	}
	base := time.Date(2024, 11, 1, 0, 0, 0, 0, time.UTC)
	oid, iid := int64(1), int64(1)
	for u := int64(1); u <= 48; u++ {
		both("INSERT INTO users (id, name, email, city, created_at) VALUES ($1, $2, $3, $4, $5)", u, fmt.Sprint("user", u), fmt.Sprintf("u%d@x", u), cities[u%4], base)
		both("INSERT INTO billing.invoices (id, user_id) VALUES ($1, $2)", u*10, u)
		for k := int64(0); k < u%4; k++ {
			status := []string{"new", "paid", "x", "done"}[(u+k)%4]
			both("INSERT INTO orders (id, user_id, restaurant_id, total, status, created_at, note) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
				oid, u, (u+k)%8+1, fmt.Sprintf("%d.%02d", (u*7+k)%150, k*25), status, base.Add(time.Duration(u*k)*time.Hour))
			for q := int64(0); q <= k; q++ {
				both("INSERT INTO order_items (id, order_id, user_id, name, quantity, price) VALUES ($1, $2, $3, $4, $5, $6)",
					iid, oid, u, "item", q+1, fmt.Sprintf("%d.50", q*(u%3)))
				iid++
			}
			oid++
		}
	}
	for i, key := range []string{"abc", "abc ", "def", "a", "b", "c", "b c", "d\"e"} {
		both("INSERT INTO carts (session_id, item) VALUES ($1, $2)", key, i)
	}
	var instants []time.Time
	for d := time.Date(2024, 6, 1, 7, 0, 0, 0, time.UTC); d.Before(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)); d = d.Add(5 * 24 * time.Hour) {
		instants = append(instants, d)
	}
	for _, b := range []string{"2025-01-01", "2025-07-01", "2026-01-01"} {
		bt, _ := router.ParseBound(b)
		for _, off := range []time.Duration{-16 * time.Hour, -time.Hour, -time.Microsecond, 0, time.Hour, 15 * time.Hour} {
			instants = append(instants, bt.Add(off))
		}
	}
	instants = append(instants, time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC), time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2024, 12, 31, 23, 59, 59, 999999000, time.UTC), time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	for i, at := range instants {
		both("INSERT INTO events (id, user_id, kind, payload, created_at) VALUES ($1, $2, $3, NULL, $4)", int64(i+1), int64(i%48+1), []string{"x", "y", "z"}[i%3], at)
	}
	for d := time.Date(2024, 12, 25, 0, 0, 0, 0, time.UTC); d.Before(time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)); d = d.Add(24 * time.Hour) {
		both("INSERT INTO daily (day, n) VALUES ($1::date, $2)", d.Format("2006-01-02"), int32(d.YearDay()))
	}
	for i := int64(1); i <= 5; i++ {
		both("INSERT INTO audit_log (id, msg) VALUES ($1, $2)", i, "m")
	}
}

// sessionLevel reports whether the proxy's session runs sql before the
// router sees it (cursors, SQL PREPARE, DISCARD, LOCK: proxy/reserve.go,
// lock.go; LISTEN, UNLISTEN: listen.go), so the router's golden answer is
// not the proxy's; those have their own differential tests
// (TestSessionSQLMatchesPostgres, TestListenMatchesPostgres).
func sessionLevel(sql string) bool {
	sql = strings.TrimSpace(sql)
	if strings.HasPrefix(sql, "/*") {
		if _, rest, ok := strings.Cut(sql, "*/"); ok {
			sql = strings.TrimSpace(rest) // a hint comment
		}
	}
	first, _, _ := strings.Cut(sql, " ")
	switch strings.ToUpper(first) {
	case "DECLARE", "FETCH", "MOVE", "CLOSE", "PREPARE", "EXECUTE", "DEALLOCATE", "DISCARD", "LOCK", "LISTEN", "UNLISTEN":
		return true
	}
	return false
}
