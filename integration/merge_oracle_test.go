package integration

import (
	"bufio"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

var updatePending = flag.Bool("update-pending", false,
	"TestMergeOracle: rewrite testdata/merge/pending.txt with the answerable queries the proxy refuses now")

const (
	mergeCorpus  = "testdata/merge/corpus.sql"
	mergePending = "testdata/merge/pending.txt"
)

// mergeTables is the topology of TestMergeOracle: users, orders,
// order_items and refunds hash-sharded by user id (co-located), restaurants
// a reference table, events range-sharded by month.
const mergeTables = `  users:       {strategy: hash, key: id}
  orders:      {strategy: hash, key: user_id}
  order_items: {strategy: hash, key: user_id}
  refunds:     {strategy: hash, key: user_id}
  restaurants: {strategy: reference}
  events:
    strategy: range
    key: created_at
    ranges: [{to: "2025-01-01", shard: s0}, {from: "2025-01-01", to: "2025-07-01", shard: s1}, {from: "2025-07-01", to: "2026-01-01", shard: s2}, {from: "2026-01-01", shard: s3}]
`

// TestMergeOracle is the oracle of cross-shard merging (issue #4): four
// shards behind the proxy and one plain Postgres hold the same generated
// data (skewed keys, NULLs, duplicates, mixed-case text, numerics of
// several scales, timestamps across months, empty shards), and every query
// of testdata/merge/corpus.sql, none restricted to one shard, must give the
// plain Postgres's answer through the proxy, in the simple and in the
// extended protocol: row for row where the corpus says "ordered", as
// multisets where it says "multiset", and SQLSTATE 0A000 where it says
// "refuse".
//
// An answerable query refused with 0A000 fails the test unless
// testdata/merge/pending.txt lists it for that protocol: the proxy does
// not merge that form yet. A wrong answer, a refusal where the corpus
// expects one and got rows, and any other error always fail. Column names
// and types, and the command tag, are part of the answer.
//
// One tolerance: float8 columns named sum or avg may differ in the last
// digits (relative 1e-12), since the shards add in another order than one
// Postgres does. Everything else compares exactly, as text (simple
// protocol) or as decoded binary values (extended protocol, pgx's formats).
func TestMergeOracle(t *testing.T) {
	ctx := context.Background()
	oc := startOracleCluster(t, "mergeoracle", mergeTables)
	simple := mergeConns{
		proxy: oc.open(t, oc.proxyURL(), pgx.QueryExecModeSimpleProtocol),
		plain: oc.open(t, oc.plainURL(), pgx.QueryExecModeSimpleProtocol),
	}
	extended := mergeConns{
		proxy: oc.open(t, oc.proxyURL(), pgx.QueryExecModeCacheStatement),
		plain: oc.open(t, oc.plainURL(), pgx.QueryExecModeCacheStatement),
	}
	begin := time.Now()
	loadMergeData(t, simple)
	t.Logf("data loaded in %v", time.Since(begin).Round(time.Millisecond))
	checkMergePlacement(t, oc)

	corpus := readMergeCorpus(t)
	pending := map[mergeKey]bool{}
	if !*updatePending {
		pending = readMergePending(t, corpus)
	}
	var equal, refusedOK, loose int
	pendingN := map[string]int{}
	var stale []string
	refusedNow := map[mergeKey]bool{}
	for _, q := range corpus {
		for _, proto := range []string{"simple", "extended"} {
			conns := simple
			if proto == "extended" {
				conns = extended
			}
			key := mergeKey{q.n, proto}
			name := fmt.Sprintf("query %d (%s:%d, %s protocol)", q.n, mergeCorpus, q.line, proto)
			want, werr := mergeRun(ctx, conns.plain, q.sql)
			if werr != nil {
				t.Errorf("%s: plain Postgres rejects it, fix the corpus: %v\n%s", name, werr, q.sql)
				continue
			}
			got, err := mergeRun(ctx, conns.proxy, q.sql)
			refused := code(err) == "0A000"
			switch {
			case q.expect == "refuse" && refused:
				refusedOK++
			case q.expect == "refuse" && err == nil:
				verdict := "The answer equals Postgres's here, by luck of the data."
				if diff, _ := mergeDiff(got, want, strings.Contains(strings.ToUpper(q.sql), "ORDER BY")); diff != "" {
					verdict = "The answer is WRONG: " + diff
				}
				t.Errorf("%s: answered through the proxy, want 0A000 (no exact merge exists)\n%s\n%s", name, q.sql, verdict)
			case err != nil && !refused:
				t.Errorf("%s: %v, want rows or 0A000\n%s", name, err, q.sql)
			case refused:
				refusedNow[key] = true
				if pending[key] {
					pendingN[proto]++
					t.Logf("pending: %s refused: %v", name, err)
				} else if !*updatePending {
					t.Errorf("%s: refused (%v), want an answer; if the proxy does not merge this yet, list \"%d %s\" in %s\n%s",
						name, err, q.n, proto, mergePending, q.sql)
				}
			default:
				diff, tolerated := mergeDiff(got, want, q.expect == "ordered")
				if diff != "" {
					t.Errorf("%s: WRONG ANSWER (%s)\n%s\n%s", name, q.expect, q.sql, diff)
					continue
				}
				equal++
				if tolerated {
					loose++
				}
				if pending[key] {
					stale = append(stale, fmt.Sprintf("%d %s", q.n, proto))
				}
			}
		}
	}
	if *updatePending {
		writeMergePending(t, corpus, refusedNow)
	}
	counts := map[string]int{}
	for _, q := range corpus {
		counts[q.expect]++
	}
	if len(stale) > 0 {
		t.Logf("listed in %s but answered equal now, remove: %s", mergePending, strings.Join(stale, ", "))
	}
	t.Logf("merge oracle: %d queries (%d ordered, %d multiset, %d refuse) x 2 protocols: %d answered equal (%d within the float tolerance), "+
		"%d refused as expected, %d pending (refused, listed in %s: %d simple, %d extended)",
		len(corpus), counts["ordered"], counts["multiset"], counts["refuse"], equal, loose,
		refusedOK, pendingN["simple"]+pendingN["extended"], mergePending, pendingN["simple"], pendingN["extended"])
	t.Run("coordinator", func(t *testing.T) { checkMergeCoordinator(t, oc, corpus, simple, extended) })
}

type mergeConns struct{ proxy, plain *pgx.Conn }

// mergeKey names one run of a corpus query: its number and protocol.
type mergeKey struct {
	n     int
	proto string
}

type mergeQuery struct {
	n      int // 1-based position in the corpus
	line   int
	expect string // ordered, multiset or refuse
	sql    string
}

// oneLine is q's SQL on one line, as pending.txt quotes it.
func (q mergeQuery) oneLine() string { return strings.Join(strings.Fields(q.sql), " ") }

var expectLine = regexp.MustCompile(`^-- (ordered|multiset|refuse)(:|\s|$)`)

// readMergeCorpus reads the corpus: statements ending in ";" at the end of
// a line, each preceded by a line "-- ordered", "-- multiset" or
// "-- refuse" (anything after the word is a note); other "--" lines are
// comments.
func readMergeCorpus(t *testing.T) []mergeQuery {
	t.Helper()
	fh, err := os.Open(mergeCorpus)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var out []mergeQuery
	var cur mergeQuery
	var sql []string
	sc := bufio.NewScanner(fh)
	for ln := 1; sc.Scan(); ln++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" && len(sql) == 0 {
			continue
		}
		if strings.HasPrefix(l, "--") && len(sql) == 0 {
			if m := expectLine.FindStringSubmatch(l); m != nil {
				if cur.expect != "" {
					t.Fatalf("%s:%d: two expectations for one statement", mergeCorpus, ln)
				}
				cur.expect = m[1]
			}
			continue
		}
		if len(sql) == 0 {
			cur.line = ln
		}
		sql = append(sql, l)
		if !strings.HasSuffix(l, ";") {
			continue
		}
		cur.sql = strings.TrimSuffix(strings.Join(sql, "\n"), ";")
		cur.n = len(out) + 1
		switch {
		case cur.expect == "":
			t.Fatalf("%s:%d: statement without an expectation (-- ordered, -- multiset or -- refuse)", mergeCorpus, cur.line)
		case cur.expect == "ordered" && !strings.Contains(strings.ToUpper(cur.sql), "ORDER BY"):
			t.Fatalf("%s:%d: ordered without ORDER BY", mergeCorpus, cur.line)
		}
		out = append(out, cur)
		cur, sql = mergeQuery{}, nil
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(sql) > 0 || cur.expect != "" {
		t.Fatalf("%s: the last statement does not end in ;", mergeCorpus)
	}
	if len(out) < 120 {
		t.Fatalf("%s: %d queries, want at least 120", mergeCorpus, len(out))
	}
	return out
}

// readMergePending reads pending.txt: lines "<n> <simple|extended|both>",
// optionally followed by "# <the query on one line>", which must then be
// query n (so that an edit of the corpus cannot move an allowance to
// another query). "#" lines are comments.
func readMergePending(t *testing.T, corpus []mergeQuery) map[mergeKey]bool {
	t.Helper()
	data, err := os.ReadFile(mergePending)
	if err != nil {
		if os.IsNotExist(err) {
			return map[mergeKey]bool{}
		}
		t.Fatal(err)
	}
	out := map[mergeKey]bool{}
	for i, l := range strings.Split(string(data), "\n") {
		l, text, hasText := strings.Cut(l, "#")
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.Atoi(f[0])
		if err != nil || n < 1 || n > len(corpus) || len(f) != 2 {
			t.Fatalf("%s:%d: want \"<query number> <simple|extended|both> [# query]\", got %q", mergePending, i+1, l)
		}
		if text = strings.TrimSpace(text); hasText && text != corpus[n-1].oneLine() {
			t.Fatalf("%s:%d: query %d is now\n%s\nnot\n%s", mergePending, i+1, n, corpus[n-1].oneLine(), text)
		}
		if corpus[n-1].expect == "refuse" {
			t.Fatalf("%s:%d: query %d is expected to be refused, it cannot be pending", mergePending, i+1, n)
		}
		switch f[1] {
		case "simple", "extended":
			out[mergeKey{n, f[1]}] = true
		case "both":
			out[mergeKey{n, "simple"}], out[mergeKey{n, "extended"}] = true, true
		default:
			t.Fatalf("%s:%d: protocol %q, want simple, extended or both", mergePending, i+1, f[1])
		}
	}
	return out
}

// writeMergePending rewrites pending.txt (flag -update-pending) with the
// answerable queries refused in this run.
func writeMergePending(t *testing.T, corpus []mergeQuery, refused map[mergeKey]bool) {
	var sb strings.Builder
	sb.WriteString(`# Queries of corpus.sql that a correct router answers but shardproxy refuses
# (0A000) for now, by protocol: "<query number> <simple|extended|both> # <query>".
# TestMergeOracle fails on any other refusal of an answerable query, and logs
# the entries here that answer now: remove them as merging features land.
# Regenerate: CI=true go test ./integration/ -run TestMergeOracle -update-pending
`)
	for _, q := range corpus {
		s, x := refused[mergeKey{q.n, "simple"}], refused[mergeKey{q.n, "extended"}]
		proto := ""
		switch {
		case s && x:
			proto = "both"
		case s:
			proto = "simple"
		case x:
			proto = "extended"
		default:
			continue
		}
		fmt.Fprintf(&sb, "%d %s # %s\n", q.n, proto, q.oneLine())
	}
	if err := os.WriteFile(mergePending, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// mergeResult is one answer: columns (name and type OID), rows of rendered
// values, the command tag.
type mergeResult struct {
	cols     []string
	tolerant []bool // float8 sum/avg columns, compared with relative 1e-12
	rows     [][]string
	tag      string
}

func (r *mergeResult) String() string {
	if r == nil {
		return "(none)"
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "  [%s] %s\n", strings.Join(r.cols, ", "), r.tag)
	for i, row := range r.rows {
		if i == 30 {
			fmt.Fprintf(&sb, "  ... %d rows in all\n", len(r.rows))
			break
		}
		fmt.Fprintf(&sb, "  %s\n", strings.Join(row, " | "))
	}
	return sb.String()
}

// mergeRun runs sql and renders its answer exactly: text-format values as
// sent, binary ones decoded (numeric with its scale), NULL as \N.
func mergeRun(ctx context.Context, c *pgx.Conn, sql string) (*mergeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rows, err := c.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	res := &mergeResult{}
	var fds []pgconn.FieldDescription
	for rows.Next() {
		fds = rows.FieldDescriptions()
		raw := rows.RawValues()
		row := make([]string, len(raw))
		for i, v := range raw {
			if row[i], err = renderValue(c.TypeMap(), fds[i], v); err != nil {
				return nil, err
			}
		}
		res.rows = append(res.rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, fd := range rows.FieldDescriptions() {
		res.cols = append(res.cols, fmt.Sprintf("%s:%d", fd.Name, fd.DataTypeOID))
		res.tolerant = append(res.tolerant, fd.DataTypeOID == pgtype.Float8OID && (fd.Name == "sum" || fd.Name == "avg"))
	}
	res.tag = rows.CommandTag().String()
	return res, nil
}

func renderValue(m *pgtype.Map, fd pgconn.FieldDescription, v []byte) (string, error) {
	switch {
	case v == nil:
		return `\N`, nil
	case fd.Format == pgtype.TextFormatCode:
		return string(v), nil
	case fd.DataTypeOID == pgtype.NumericOID:
		return numericText(v)
	}
	dt, ok := m.TypeForOID(fd.DataTypeOID)
	if !ok {
		return fmt.Sprintf("%d:%x", fd.DataTypeOID, v), nil
	}
	val, err := dt.Codec.DecodeValue(m, fd.DataTypeOID, fd.Format, v)
	if err != nil {
		return "", fmt.Errorf("decode %s (type %d): %w", fd.Name, fd.DataTypeOID, err)
	}
	switch x := val.(type) {
	case time.Time:
		return x.UTC().Format("2006-01-02 15:04:05.999999Z07:00"), nil
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32), nil
	case [16]byte:
		return fmt.Sprintf("%x-%x-%x-%x-%x", x[0:4], x[4:6], x[6:8], x[8:10], x[10:16]), nil
	}
	return fmt.Sprint(val), nil
}

// numericText prints a binary numeric as numeric_out does, scale included.
func numericText(v []byte) (string, error) {
	if len(v) < 8 {
		return "", fmt.Errorf("short numeric %x", v)
	}
	ndigits := int(int16(binary.BigEndian.Uint16(v)))
	weight := int(int16(binary.BigEndian.Uint16(v[2:])))
	sign := binary.BigEndian.Uint16(v[4:])
	dscale := int(int16(binary.BigEndian.Uint16(v[6:])))
	switch sign {
	case 0xC000:
		return "NaN", nil
	case 0xD000:
		return "Infinity", nil
	case 0xF000:
		return "-Infinity", nil
	}
	if len(v) != 8+2*ndigits {
		return "", fmt.Errorf("bad numeric %x", v)
	}
	digit := func(i int) int {
		if i < 0 || i >= ndigits {
			return 0
		}
		return int(binary.BigEndian.Uint16(v[8+2*i:]))
	}
	var sb strings.Builder
	if sign == 0x4000 {
		sb.WriteByte('-')
	}
	if weight < 0 {
		sb.WriteByte('0')
	}
	for i := 0; i <= weight; i++ {
		if i == 0 {
			fmt.Fprintf(&sb, "%d", digit(i))
		} else {
			fmt.Fprintf(&sb, "%04d", digit(i))
		}
	}
	if dscale > 0 {
		var frac strings.Builder
		for i := weight + 1; frac.Len() < dscale; i++ {
			fmt.Fprintf(&frac, "%04d", digit(i))
		}
		sb.WriteByte('.')
		sb.WriteString(frac.String()[:dscale])
	}
	return sb.String(), nil
}

// mergeDiff compares an answer through the proxy with Postgres's: "" when
// equal, else a description of both. tolerated says that some float8
// sum/avg differed within the tolerance.
func mergeDiff(got, want *mergeResult, ordered bool) (diff string, tolerated bool) {
	show := func(why string) string {
		return fmt.Sprintf("%s\nthrough the proxy:\n%splain Postgres:\n%s", why, got, want)
	}
	if strings.Join(got.cols, ",") != strings.Join(want.cols, ",") {
		return show("columns differ"), false
	}
	if got.tag != want.tag {
		return show(fmt.Sprintf("command tag %q, want %q", got.tag, want.tag)), false
	}
	if len(got.rows) != len(want.rows) {
		return show(fmt.Sprintf("%d rows, want %d", len(got.rows), len(want.rows))), false
	}
	g, w := got.rows, want.rows
	if !ordered {
		g, w = sortedRows(g, want.tolerant), sortedRows(w, want.tolerant)
	}
	how := "sorted"
	if ordered {
		how = "in order"
	}
	for i := range g {
		ok, loose := rowsEqual(g[i], w[i], want.tolerant)
		if !ok {
			return show(fmt.Sprintf("row %d (%s): %s, want %s", i+1, how, strings.Join(g[i], " | "), strings.Join(w[i], " | "))), false
		}
		tolerated = tolerated || loose
	}
	return "", tolerated
}

// sortedRows sorts a copy of rows, by the exact columns first so that rows
// whose tolerant columns differ in the last digits still pair up.
func sortedRows(rows [][]string, tolerant []bool) [][]string {
	key := func(r []string) string {
		var exact, loose []string
		for i, v := range r {
			if tolerant[i] {
				loose = append(loose, v)
			} else {
				exact = append(exact, v)
			}
		}
		return strings.Join(exact, "\x1f") + "\x1e" + strings.Join(loose, "\x1f")
	}
	out := append([][]string(nil), rows...)
	sort.SliceStable(out, func(i, j int) bool { return key(out[i]) < key(out[j]) })
	return out
}

// rowsEqual compares two rendered rows; loose says that a tolerant column
// differed within the tolerance.
func rowsEqual(a, b []string, tolerant []bool) (ok, loose bool) {
	for i := range a {
		if a[i] == b[i] {
			continue
		}
		if !tolerant[i] {
			return false, false
		}
		x, err1 := strconv.ParseFloat(a[i], 64)
		y, err2 := strconv.ParseFloat(b[i], 64)
		if err1 != nil || err2 != nil || math.IsNaN(x) || math.IsInf(x, 0) || math.Abs(x-y) > 1e-12*math.Max(math.Abs(x), math.Abs(y)) {
			return false, false
		}
		loose = true
	}
	return true, loose
}

// checkMergePlacement checks, on the shards directly, the properties the
// corpus relies on: rows on every shard, a range shard without events, a
// hash table with empty shards, and the skewed user.
func checkMergePlacement(t *testing.T, oc *oracleCluster) {
	t.Helper()
	ctx := context.Background()
	var orders, events, refunds [4]int64
	for i := 0; i < 4; i++ {
		c, err := pgx.Connect(ctx, oc.set.Clusters[i].DSN(oc.database))
		if err != nil {
			t.Fatal(err)
		}
		err = c.QueryRow(ctx, "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM events), (SELECT count(*) FROM refunds)").
			Scan(&orders[i], &events[i], &refunds[i])
		c.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
	}
	emptyRefunds := 0
	for i := 0; i < 4; i++ {
		if orders[i] == 0 {
			t.Errorf("shard s%d holds no orders", i)
		}
		if (events[i] == 0) != (i == 2) {
			t.Errorf("shard s%d holds %d events; want s2, and only s2, empty", i, events[i])
		}
		if refunds[i] == 0 {
			emptyRefunds++
		}
	}
	if emptyRefunds == 0 {
		t.Errorf("refunds on every shard (%v): want an empty shard", refunds)
	}
	t.Logf("rows per shard: orders %v, events %v, refunds %v", orders, events, refunds)
}

// loadMergeData creates the tables and loads the generated rows, with
// multi-row INSERTs (split over the shards by the proxy) through the proxy
// and the same statements on the plain Postgres.
func loadMergeData(t *testing.T, c mergeConns) {
	t.Helper()
	ctx := context.Background()
	both := func(sql string) {
		t.Helper()
		if _, err := c.proxy.Exec(ctx, sql); err != nil {
			t.Fatalf("through the proxy: %.300s: %v", sql, err)
		}
		if _, err := c.plain.Exec(ctx, sql); err != nil {
			t.Fatalf("plain Postgres: %.300s: %v", sql, err)
		}
	}
	for _, ddl := range []string{
		`CREATE TABLE users (id bigint PRIMARY KEY, name text, email varchar(64), city text, age smallint, score float8,
			vip bool, signup date, created_at timestamptz, token uuid, label text COLLATE "en-x-icu", grade char(3))`,
		`CREATE TABLE orders (id bigint, user_id bigint, restaurant_id int, total numeric(12,2), tip numeric, qty int,
			prio smallint, weight float8, status text, code varchar(16), paid bool, day date, placed_at timestamp,
			created_at timestamptz, ref uuid, note text)`,
		`CREATE TABLE order_items (id bigint, order_id bigint, user_id bigint, sku varchar(12), name text, quantity int,
			price numeric(12,2), discount numeric)`,
		`CREATE TABLE refunds (id bigint, user_id bigint, amount numeric(12,2), reason text, created_at timestamptz)`,
		`CREATE TABLE restaurants (id int, name text, city text, cuisine text, rating numeric(2,1), open bool)`,
		`CREATE TABLE events (id bigint, user_id bigint, kind text, amount numeric, score float8, seen bool,
			created_at timestamptz NOT NULL)`,
	} {
		both(ddl)
	}
	data := generateMergeData()
	tables := make([]string, 0, len(data))
	for table := range data {
		tables = append(tables, table)
	}
	sort.Strings(tables)
	for _, table := range tables {
		rows := data[table]
		for len(rows) > 0 {
			n := min(len(rows), 250)
			both("INSERT INTO " + table + " VALUES " + strings.Join(rows[:n], ",\n"))
			rows = rows[n:]
		}
	}
}

// generateMergeData returns, per table with its column list, the rows as
// SQL literals "(...)". The data is fixed by the seed.
func generateMergeData() map[string][]string {
	r := rand.New(rand.NewSource(4))
	maybe := func(pct int, v string) string { // NULL with probability pct%
		if r.Intn(100) < pct {
			return "NULL"
		}
		return v
	}
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	pick := func(xs ...string) string { return xs[r.Intn(len(xs))] }
	float := func() string {
		return quote(strconv.FormatFloat(r.Float64()*100, 'g', -1, 64))
	}
	uuid := func() string {
		var b [16]byte
		r.Read(b[:])
		return fmt.Sprintf("'%x-%x-%x-%x-%x'", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	}
	// Instants across months (2024-10 .. 2026-03) with microseconds.
	start := time.Date(2024, 10, 1, 0, 0, 0, 0, time.UTC)
	instant := func() time.Time {
		return start.Add(time.Duration(r.Int63n(int64(547 * 24 * time.Hour)))).Truncate(time.Microsecond)
	}
	tstz := func(at time.Time) string { return quote(at.Format("2006-01-02 15:04:05.999999") + "+00") }
	names := []string{"alice", "Alice", "ALICE", "bob", "Bob", "carol", "Émile", "émile", "zoë", "Zoe", "o'neil", "", "dave", "Dave"}
	cities := []string{"Lisbon", "lisbon", "Porto", "PORTO", "Braga", "Évora", "", "Faro"}
	statuses := []string{"new", "New", "NEW", "paid", "Paid", "shipped", "done", "Done", "cancelled", ""}
	tips := []string{"1.5", "2.25", "3", "0", "0.125", "10", "-0.5", "100.000"}
	data := map[string][]string{}
	add := func(table string, vals ...string) {
		data[table] = append(data[table], "("+strings.Join(vals, ", ")+")")
	}

	for id := 1; id <= 12; id++ {
		add("restaurants (id, name, city, cuisine, rating, open)", strconv.Itoa(id), quote(fmt.Sprintf("%s %d", pick("Roma", "roma", "Sakura", "Taj"), id%5)),
			maybe(10, quote(pick(cities...))), maybe(10, quote(pick("Pizza", "pizza", "Sushi", "THAI", "thai"))),
			maybe(10, fmt.Sprintf("%d.%d", r.Intn(5), r.Intn(10))), maybe(10, pick("true", "false")))
	}
	const nUsers = 400
	for id := 1; id <= nUsers; id++ {
		score := quote(strconv.FormatFloat(r.NormFloat64()*10, 'g', -1, 64))
		switch id {
		case 13:
			score = "'NaN'"
		case 77:
			score = "'Infinity'"
		case 150:
			score = "'-Infinity'"
		case 201:
			score = "'-0'"
		}
		name := pick(names...)
		if r.Intn(3) == 0 {
			name += strconv.Itoa(r.Intn(5))
		}
		add("users (id, name, email, city, age, score, vip, signup, created_at, token, label, grade)", strconv.Itoa(id),
			maybe(10, quote(name)), maybe(10, quote(fmt.Sprintf("%s%d@%s.example", pick("u", "U"), id%97, pick("mail", "Mail")))),
			maybe(10, quote(pick(cities...))), maybe(10, strconv.Itoa(18+r.Intn(70))), maybe(10, score),
			maybe(10, pick("true", "false")), maybe(10, quote(instant().AddDate(-1, 0, 0).Format("2006-01-02"))),
			maybe(10, tstz(instant())), maybe(10, uuid()), maybe(10, quote(pick("alice", "Alice", "ALICE", "bob", "Bob", "Émile", "émile", "zoë", "Zoe")+strconv.Itoa(r.Intn(20)))),
			maybe(10, pick("'a'", "'A'", "E'a\\t'", "'ab'", "'b'", "E'b\\t'", "'b c'")))
	}
	item := 1
	for id := 1; id <= 3000; id++ {
		user := "NULL"
		switch x := r.Intn(100); {
		case x < 2:
		case x < 32:
			user = "7" // the skewed key: about 30% of the orders
		default:
			user = strconv.Itoa(1 + r.Intn(nUsers+20)) // a few users without a users row
		}
		weight := float()
		if id == 1234 {
			weight = "'-0'"
		}
		at := instant()
		add("orders (id, user_id, restaurant_id, total, tip, qty, prio, weight, status, code, paid, day, placed_at, created_at, ref, note)",
			strconv.Itoa(id), user, maybe(10, strconv.Itoa(1+r.Intn(12))),
			maybe(10, fmt.Sprintf("%d.%02d", r.Intn(1000)-30, r.Intn(4)*25)), maybe(10, pick(tips...)),
			maybe(10, strconv.Itoa(1+r.Intn(10))), maybe(10, strconv.Itoa(r.Intn(9)-3)), maybe(10, weight),
			maybe(10, quote(pick(statuses...))), maybe(10, quote(fmt.Sprintf("%s%03d", pick("C", "c"), r.Intn(40)))),
			maybe(10, pick("true", "false")), maybe(10, quote(at.Format("2006-01-02"))),
			maybe(10, quote(at.Add(-time.Duration(r.Intn(3600))*time.Second).Format("2006-01-02 15:04:05.999999"))),
			maybe(10, tstz(at)), maybe(10, uuid()), maybe(10, quote(pick(names...)+" "+pick(statuses...))))
		for k := r.Intn(3); k > 0; k-- {
			row := []string{strconv.Itoa(item), strconv.Itoa(id), user, maybe(10, quote(fmt.Sprintf("SKU-%d", r.Intn(30)))),
				maybe(10, quote(pick("Pizza", "pizza", "Soup", "soup", "Tea"))), maybe(10, strconv.Itoa(1+r.Intn(5))),
				maybe(10, fmt.Sprintf("%d.%02d", r.Intn(50), r.Intn(100))), maybe(10, pick("0.1", "0.25", "1", "0.005"))}
			add("order_items (id, order_id, user_id, sku, name, quantity, price, discount)", row...)
			if r.Intn(30) == 0 {
				add("order_items (id, order_id, user_id, sku, name, quantity, price, discount)", row...) // an exact duplicate row
			}
			item++
		}
	}
	for _, rf := range [][]string{{"1", "7", "12.50", "'late'"}, {"2", "8", "3.50", "'Late'"}, {"3", "7", "1.25", "NULL"}} {
		add("refunds (id, user_id, amount, reason, created_at)", append(rf, tstz(start.AddDate(0, 2, 3)))...)
	}
	// Events in 2024-10..2025-06 and 2026-01..2026-03: shard s2
	// (2025-07..2025-12) holds none.
	for id := 1; id <= 900; id++ {
		at := instant()
		for !at.Before(time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)) && at.Before(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
			at = instant()
		}
		switch id {
		case 100:
			at = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		case 101:
			at = time.Date(2024, 12, 31, 23, 59, 59, 999999000, time.UTC)
		}
		amount := maybe(10, pick("1.5", "2.25", "3", "0.001", "-7", "12.3456", "1000"))
		if id == 500 {
			amount = "'NaN'"
		}
		add("events (id, user_id, kind, amount, score, seen, created_at)", strconv.Itoa(id), maybe(10, strconv.Itoa(1+r.Intn(nUsers))),
			quote(pick("click", "Click", "view", "VIEW", "buy")), amount, maybe(10, float()), maybe(10, pick("true", "false")), tstz(at))
	}
	return data
}
