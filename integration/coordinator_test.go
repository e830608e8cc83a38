package integration

import (
	"context"
	"fmt"
	"math"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

// coordinatorDB is the coordinator database the tests create beside a
// cluster's own database.
const coordinatorDB = "shardproxy_coordinator"

// mergeCoordinatorRefused are the corpus queries that stay refused with a
// coordinator configured, with the reason (docs/routing.md lists them).
var mergeCoordinatorRefused = map[int]string{
	44: icuMergeTime, 45: icuMergeTime, 46: icuMergeTime, 47: icuMergeTime, 48: icuMergeTime,
}

// icuMergeTime: these are refused by the merge once the shards' columns are
// known (an ICU collation), not by the router, and only router refusals
// fall back to the coordinator.
const icuMergeTime = "text under an ICU collation is refused at merge time, after routing"

// mergeUndefined are queries whose rows Postgres itself does not define
// (row_number() OVER () numbers rows in scan order): their answers are
// compared column by column, each as a multiset.
var mergeUndefined = map[int]bool{225: true}

// byColumn turns r into one row per column value ("column: value"), so
// that a multiset comparison compares each column's multiset.
func byColumn(r *mergeResult) *mergeResult {
	out := &mergeResult{cols: []string{"column value"}, tolerant: []bool{false}, tag: r.tag}
	for _, row := range r.rows {
		for i, v := range row {
			out.rows = append(out.rows, []string{r.cols[i] + ": " + v})
		}
	}
	return out
}

// orderedAtTop reports whether sql has an ORDER BY outside parentheses: its
// rows come in a defined order (an ORDER BY inside OVER (...) or a
// subquery orders nothing the client sees).
func orderedAtTop(sql string) bool {
	u := strings.ToUpper(sql)
	depth := 0
	for i := 0; i < len(u); i++ {
		switch u[i] {
		case '(':
			depth++
		case ')':
			depth--
		case 'O':
			if depth == 0 && strings.HasPrefix(u[i:], "ORDER BY") {
				return true
			}
		}
	}
	return false
}

// checkMergeCoordinator is TestMergeOracle's second half (issue #17): a
// second proxy over the same shards, with a coordinator database on the
// plain Postgres's cluster, must answer every query the first proxy
// refuses (the corpus's "refuse" queries and the pending ones) exactly as
// the plain Postgres does, in both protocols: through the coordinator.
func checkMergeCoordinator(t *testing.T, oc *oracleCluster, corpus []mergeQuery, plain mergeConns, plainX mergeConns) {
	ctx := context.Background()
	cl := oc.set.Clusters[4]
	if err := cl.CreateDatabase(ctx, coordinatorDB); err != nil {
		t.Fatal(err)
	}
	addr := serveProxy(t, oc.config+fmt.Sprintf("coordinator: {dsn: %q}\n", cl.DSN(coordinatorDB)))
	url := "postgres://app@" + addr + "/" + oc.database + "?sslmode=disable"
	conns := map[string]mergeConns{
		"simple":   {proxy: oc.open(t, url, pgx.QueryExecModeSimpleProtocol), plain: plain.plain},
		"extended": {proxy: oc.open(t, url, pgx.QueryExecModeCacheStatement), plain: plainX.plain},
	}
	pending := readMergePending(t, corpus)
	var equal, refused int
	for _, q := range corpus {
		if q.expect != "refuse" && !pending[mergeKey{q.n, "simple"}] && !pending[mergeKey{q.n, "extended"}] {
			continue
		}
		for _, proto := range []string{"simple", "extended"} {
			c := conns[proto]
			name := fmt.Sprintf("query %d (%s:%d, %s protocol, coordinator)", q.n, mergeCorpus, q.line, proto)
			want, err := mergeRun(ctx, c.plain, q.sql)
			if err != nil {
				t.Errorf("%s: plain Postgres: %v", name, err)
				continue
			}
			got, err := mergeRun(ctx, c.proxy, q.sql)
			if reason, ok := mergeCoordinatorRefused[q.n]; ok {
				if code(err) != "0A000" {
					t.Errorf("%s: listed as refused with a coordinator (%s), got err=%v: remove it from mergeCoordinatorRefused if it answers", name, reason, err)
				}
				refused++
				continue
			}
			if err != nil {
				t.Errorf("%s: %v, want the plain Postgres's answer\n%s", name, err, q.sql)
				continue
			}
			if mergeUndefined[q.n] {
				got, want = byColumn(got), byColumn(want)
			}
			if diff, _ := mergeDiff(got, want, orderedAtTop(q.sql)); diff != "" {
				t.Errorf("%s: WRONG ANSWER\n%s\n%s", name, q.sql, diff)
				continue
			}
			equal++
		}
	}
	t.Logf("coordinator: %d answers equal to the plain Postgres's, %d refused as listed", equal, refused)
}

// startCoordinatorProxy starts a second proxy over the package's shards
// with a coordinator database on the first shard's cluster and user app as
// an admin; it returns the proxy's address and the coordinator's DSN.
func startCoordinatorProxy(t *testing.T) (addr, coordDSN string) {
	t.Helper()
	cl := env.shards.Clusters[0]
	if err := cl.CreateDatabase(context.Background(), coordinatorDB); err != nil {
		t.Fatal(err)
	}
	coordDSN = cl.DSN(coordinatorDB)
	return serveProxy(t, env.config+fmt.Sprintf("admins: [app]\ncoordinator: {dsn: %q, mode: fallback}\n", coordDSN)), coordDSN
}

// TestCoordinator covers the coordinator route end to end (issue #17):
// tables created through the proxy appear on the coordinator, refused reads
// answer there in both protocols with the session's settings, the wire
// replies equal the coordinator database's own, transactions refuse what
// the coordinator cannot see, SHOW ROUTE and EXPLAIN name the route, and
// psql and JDBC each run a coordinator query.
func TestCoordinator(t *testing.T) {
	ctx := context.Background()
	addr, coordDSN := startCoordinatorProxy(t)
	url := "postgres://app:app@" + addr + "/deliveryapp?sslmode=disable"
	open := func(mode pgx.QueryExecMode) *pgx.Conn {
		cc, err := pgx.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cc.DefaultQueryExecMode = mode
		c, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	simple := open(pgx.QueryExecModeSimpleProtocol)
	ext := open(pgx.QueryExecModeCacheStatement)

	// Rows of our own, on every shard; an unlisted table created through
	// the proxy (DDL refreshes the coordinator).
	var totals []float64
	for i := 1; i <= 40; i++ {
		total := float64(i*7%23) + 0.25
		totals = append(totals, total)
		if _, err := simple.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status, created_at) VALUES ($1, $2, $3, $4, 'coord17', '2025-03-01')",
			1_700_000+i, 1_700_000+i, i%5, total); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { simple.Exec(context.Background(), "DELETE FROM orders WHERE status = 'coord17'") })
	if _, err := simple.Exec(ctx, "CREATE TABLE coord_labels (restaurant_id bigint, label text)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { simple.Exec(context.Background(), "DROP TABLE IF EXISTS coord_labels") })
	if _, err := simple.Exec(ctx, "INSERT INTO coord_labels VALUES (0, 'zero'), (1, 'one'), (2, 'two')"); err != nil {
		t.Fatal(err)
	}
	median := percentileCont(totals, 0.5)

	t.Run("refused reads answer in both protocols", func(t *testing.T) {
		for name, c := range map[string]*pgx.Conn{"simple": simple, "extended": ext} {
			var got float64
			if err := c.QueryRow(ctx, "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders WHERE status = 'coord17'").Scan(&got); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got != median {
				t.Errorf("%s: percentile_cont %v, want %v", name, got, median)
			}
			// An unlisted table (default shard) joined to a sharded
			// table: refused by the router, answered by the coordinator
			// once the DDL above reached it.
			var n int64
			if err := c.QueryRow(ctx, "SELECT count(*) FROM orders o JOIN coord_labels l USING (restaurant_id) WHERE o.status = $1", "coord17").Scan(&n); err != nil {
				t.Fatalf("%s: join with an unlisted table: %v", name, err)
			}
			if n != 24 { // restaurant_id 0, 1, 2 of i%5 for i in 1..40
				t.Errorf("%s: join counted %d, want 24", name, n)
			}
		}
		// Parameters, binary results, several executions of one statement.
		for _, q := range []float64{0.1, 0.5, 0.9} {
			var got float64
			if err := ext.QueryRow(ctx, "SELECT percentile_cont($1::float8) WITHIN GROUP (ORDER BY total) FROM orders WHERE status = $2", q, "coord17").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if want := percentileCont(totals, q); got != want {
				t.Errorf("percentile_cont(%v) = %v, want %v", q, got, want)
			}
		}
	})

	t.Run("session settings are replayed", func(t *testing.T) {
		if _, err := simple.Exec(ctx, "SET TimeZone = 'Asia/Tokyo'"); err != nil {
			t.Fatal(err)
		}
		defer simple.Exec(ctx, "RESET TimeZone")
		var tz, first string
		if err := simple.QueryRow(ctx, "SELECT current_setting('TimeZone'), min(created_at)::text FROM (SELECT created_at, rank() OVER (ORDER BY total) FROM orders WHERE status = 'coord17') x").Scan(&tz, &first); err != nil {
			t.Fatal(err)
		}
		if tz != "Asia/Tokyo" || first != "2025-03-01 09:00:00+09" {
			t.Errorf("on the coordinator: TimeZone %q, min(created_at) %q; want Asia/Tokyo and 2025-03-01 09:00:00+09", tz, first)
		}
	})

	t.Run("wire replies equal the coordinator database's", func(t *testing.T) {
		text := func(s string) []byte { return []byte(s) }
		q := "SELECT id, total, rank() OVER (ORDER BY total DESC, id) FROM orders WHERE status = $1 ORDER BY 3, 1"
		script := []wireStep{
			{&pgproto3.Parse{Name: "w", Query: q}, &pgproto3.Describe{ObjectType: 'S', Name: "w"}, &pgproto3.Sync{}},
			{&pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "w", Parameters: [][]byte{text("coord17")}, ResultFormatCodes: []int16{1, 0, 1}},
				&pgproto3.Describe{ObjectType: 'P', Name: "p"}, &pgproto3.Execute{Portal: "p", MaxRows: 3}, &pgproto3.Execute{Portal: "p", MaxRows: 2},
				&pgproto3.Close{ObjectType: 'P', Name: "p"}, &pgproto3.Sync{}},
			{&pgproto3.Bind{PreparedStatement: "w", Parameters: [][]byte{text("coord17")}}, &pgproto3.Execute{}, &pgproto3.Sync{}},
			{&pgproto3.Parse{Query: "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders WHERE status = 'nope' AND 1/0 = 1"},
				&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
			{&pgproto3.Query{String: "SELECT status, percentile_disc(0.5) WITHIN GROUP (ORDER BY total) FROM orders WHERE status = 'coord17' GROUP BY status"}},
		}
		got := transcript(t, url, script)
		want := transcript(t, coordDSN, script)
		if got != want {
			t.Errorf("through the proxy:\n%s\non the coordinator database:\n%s", got, want)
		}
		if !strings.Contains(got, "PortalSuspended") || !strings.Contains(got, "ErrorResponse 22012") {
			t.Errorf("the script lost its point:\n%s", got)
		}
	})

	t.Run("transactions", func(t *testing.T) {
		percentile := "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders WHERE status = 'coord17'"
		// Nothing written yet: the read runs on the coordinator.
		tx, err := simple.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got float64
		if err := tx.QueryRow(ctx, percentile).Scan(&got); err != nil || got != median {
			t.Fatalf("in a read-only transaction: %v, %v", got, err)
		}
		// After a write: refused, the transaction is aborted as in Postgres.
		if _, err := tx.Exec(ctx, "UPDATE orders SET total = total + 1 WHERE user_id = 1700001"); err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, percentile)
		if code(err) != "0A000" || !strings.Contains(err.Error(), "uncommitted") {
			t.Fatalf("after a write: %v, want 0A000 about uncommitted writes", err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		// REPEATABLE READ: refused (the coordinator does not read the
		// transaction's snapshot).
		tx, err = simple.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, percentile); code(err) != "0A000" {
			t.Fatalf("in REPEATABLE READ: %v, want 0A000", err)
		}
		tx.Rollback(ctx)
		// Writes never go to the coordinator: a write the router refuses
		// stays refused.
		if _, err := simple.Exec(ctx, "UPDATE orders o SET total = 0 FROM users u WHERE u.name = o.status AND o.status = 'coord17'"); code(err) != "0A000" {
			t.Fatalf("a refused write: %v, want 0A000", err)
		}
	})

	t.Run("SHOW ROUTE and EXPLAIN name the coordinator", func(t *testing.T) {
		admin, err := pgx.Connect(ctx, "postgres://app:app@"+addr+"/shardproxy?sslmode=disable&default_query_exec_mode=simple_protocol")
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(ctx)
		var shards, kind string
		rows, err := admin.Query(ctx, "SHOW ROUTE SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			vals, _ := rows.Values()
			shards, kind = fmt.Sprint(vals[0]), fmt.Sprint(vals[1])
		}
		if rows.Err() != nil || shards != "coordinator" || kind != "coordinator" {
			t.Errorf("SHOW ROUTE: %q %q %v, want the coordinator", shards, kind, rows.Err())
		}
		var plan []string
		rows, err = simple.Query(ctx, "EXPLAIN SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders WHERE status = 'coord17'")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var l string
			rows.Scan(&l)
			plan = append(plan, l)
		}
		if all := strings.Join(plan, "\n"); !strings.Contains(all, "Foreign Scan") || !strings.Contains(all, "Append") {
			t.Errorf("EXPLAIN shows no coordinator plan over the shards' foreign partitions:\n%s", all)
		}
		// A statement the merge answers is not explained by the
		// coordinator's plan (that is not the path it takes).
		rows, err = simple.Query(ctx, "EXPLAIN SELECT id FROM orders ORDER BY created_at DESC LIMIT 3")
		if err == nil {
			plan = plan[:0]
			for rows.Next() {
				var l string
				rows.Scan(&l)
				plan = append(plan, l)
			}
			err = rows.Err()
		}
		if all := strings.Join(plan, "\n"); err == nil && strings.Contains(all, "Foreign Scan") {
			t.Errorf("EXPLAIN of a merged statement shows the coordinator's plan:\n%s", all)
		}
	})

	t.Run("psql", func(t *testing.T) {
		_, err := exec.LookPath("psql")
		requireTool(t, "psql", err == nil)
		out, err := exec.Command("psql", "-XAt", url, "-c",
			"SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY total) FROM orders WHERE status = 'coord17'").CombinedOutput()
		want := strconv.FormatFloat(percentileDisc(totals, 0.5), 'f', 2, 64)
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("psql: %v %q, want %s", err, out, want)
		}
	})

	t.Run("JDBC", func(t *testing.T) {
		jar := "/usr/share/java/postgresql.jar"
		_, err := exec.LookPath("java")
		requireTool(t, "java and libpostgresql-jdbc-java (Debian)", err == nil && exists(jar))
		jurl := fmt.Sprintf("jdbc:postgresql://127.0.0.1:%s/deliveryapp?user=app&password=app&prepareThreshold=1&sslmode=disable", portOf(addr))
		runClient(t, "java", nil, "-cp", jar, "testdata/clients/JdbcCoordinator.java", jurl, strconv.FormatFloat(median, 'f', -1, 64))
	})
}

// percentileCont is Postgres's percentile_cont over xs.
func percentileCont(xs []float64, q float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	if lo == hi {
		return s[lo]
	}
	return s[lo] + (pos-float64(lo))*(s[hi]-s[lo])
}

// percentileDisc is Postgres's percentile_disc over xs: the first value
// whose position in the sorted order reaches q.
func percentileDisc(xs []float64, q float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(i, 0)]
}
