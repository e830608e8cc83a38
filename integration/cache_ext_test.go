package integration

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

// connectMode connects to p in pgx's query exec mode m.
func (p *cacheProxy) connectMode(t *testing.T, m pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", p.addr))
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = m
	c, err := pgx.ConnectConfig(context.Background(), cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// rawAnswer runs q and renders the field descriptions and raw values
// (in the formats the client asked for) or the error's SQLSTATE.
func rawAnswer(ctx context.Context, c *pgx.Conn, q string, args ...any) string {
	rows, err := c.Query(ctx, q, args...)
	if err != nil {
		return "error " + sqlstate(err)
	}
	var sb strings.Builder
	for _, f := range rows.FieldDescriptions() {
		fmt.Fprintf(&sb, "%s/%d/%d ", f.Name, f.DataTypeOID, f.Format)
	}
	sb.WriteString("|")
	for rows.Next() {
		for _, v := range rows.RawValues() {
			if v == nil {
				sb.WriteString(" NULL")
			} else {
				fmt.Fprintf(&sb, " %x", v)
			}
		}
		sb.WriteString(";")
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return sb.String() + " error " + sqlstate(err)
	}
	return sb.String() + " " + rows.CommandTag().String()
}

func sqlstate(err error) string {
	var pe interface{ SQLState() string }
	if ok := asPgErr(err, &pe); ok {
		return pe.SQLState()
	}
	return err.Error()
}

func asPgErr(err error, target *interface{ SQLState() string }) bool {
	for err != nil {
		if e, ok := err.(interface{ SQLState() string }); ok {
			*target = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// TestCacheExtendedMatchesUncached runs the same parameterized reads in
// each of pgx's extended modes through a proxy with the result cache (and
// consolidation) and through one without: single-shard and cross-shard
// reads, text and binary formats, NULLs, parameters of several types, bad
// input. Each read runs twice on the cached proxy (the second is a hit);
// the answers must be byte for byte those of the uncached proxy. A change
// made behind the proxy's back then proves the hits came from the cache,
// and a write through the proxy in the extended protocol invalidates.
func TestCacheExtendedMatchesUncached(t *testing.T) {
	ctx := context.Background()
	cached := startCacheProxy(t, "  rules:\n    - {name: users, tables: [users], ttl: 1m}\n    - {name: restaurants, tables: [restaurants], ttl: 1m}\n")
	plain := startCacheProxy(t, "  consolidate: false\n")
	ids := []int64{930001, 930002, 930003, 930004, 930005, 930006}
	t.Cleanup(func() { deleteUsers(t, ids...) })
	setup := plain.connect(t)
	for _, id := range ids {
		setup.Exec(ctx, fmt.Sprintf("DELETE FROM users WHERE id = %d", id))
		city := fmt.Sprintf("'c%d'", id%3)
		if id%2 == 0 {
			city = "''"
		}
		if _, err := setup.Exec(ctx, fmt.Sprintf("INSERT INTO users (id, name, email, city, created_at) VALUES (%d, 'n%d', 'e', %s, '2026-01-0%d 10:00+00')", id, id, city, id%9+1)); err != nil {
			t.Fatal(err)
		}
	}
	type query struct {
		sql  string
		args []any
	}
	queries := []query{
		{"SELECT id, name, CASE WHEN city = '' THEN NULL ELSE city END, created_at FROM users WHERE id = $1", []any{int64(930001)}},
		{"SELECT id, name, CASE WHEN city = '' THEN NULL ELSE city END, created_at FROM users WHERE id = $1", []any{int64(930002)}},
		{"SELECT id, name, city FROM users WHERE id = $1", []any{int64(939999)}}, // no row
		{"SELECT name, city = '' FROM users WHERE id = $1 AND (CASE WHEN city = '' THEN NULL ELSE city END) IS NOT DISTINCT FROM $2", []any{int64(930004), nil}},
		{"SELECT $1::text, $2::int, $3::numeric, $4::bool, $5::bytea, $6::date, $7::float8 FROM users WHERE id = $8",
			[]any{"héllo", int32(-7), "12.50", true, []byte{0, 1, 255}, "2026-12-03", 1.5, int64(930003)}},
		{"SELECT $1::text, $2::int FROM users WHERE id = $3", []any{nil, nil, int64(930003)}},
		{"SELECT id, name, city FROM users WHERE id = ANY($1) ORDER BY id", []any{ids}},                                            // cross-shard
		{"SELECT count(*), min(name), max(created_at) FROM users WHERE id BETWEEN $1 AND $2", []any{int64(930001), int64(930006)}}, // merged
		{"SELECT id FROM users WHERE id = $1", []any{"not a number"}},                                                              // 22P02
		{"SELECT id, name FROM restaurants WHERE id = $1", []any{int64(1)}},
	}
	modes := []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec}
	for _, m := range modes {
		c, p := cached.connectMode(t, m), plain.connectMode(t, m)
		for _, q := range queries {
			want := rawAnswer(ctx, p, q.sql, q.args...)
			for i := 0; i < 2; i++ {
				if got := rawAnswer(ctx, c, q.sql, q.args...); got != want {
					t.Errorf("mode %v, %s %v, run %d:\n got %s\nwant %s", m, q.sql, q.args, i, got, want)
				}
			}
		}
		// The session stays usable after the error, and in a pipeline.
		b := &pgx.Batch{}
		for _, q := range queries[:4] {
			b.Queue(q.sql, q.args...)
		}
		if err := c.SendBatch(ctx, b).Close(); err != nil {
			t.Errorf("mode %v: batch: %v", m, err)
		}
	}

	// Hits are from the cache: a change behind the proxy's back is not
	// seen until a write through the proxy, in the extended protocol,
	// commits.
	c := cached.connectMode(t, pgx.QueryExecModeCacheStatement)
	one := func() string {
		var name string
		if err := c.QueryRow(ctx, "SELECT name FROM users WHERE id = $1", int64(930005)).Scan(&name); err != nil {
			t.Fatal(err)
		}
		return name
	}
	if got := one(); got != "n930005" {
		t.Fatalf("name = %q", got)
	}
	if err := shardExec(ctx, shardIndex(930005), "UPDATE users SET name = 'behind' WHERE id = 930005"); err != nil {
		t.Fatal(err)
	}
	if got := one(); got != "n930005" {
		t.Fatalf("after a change behind the proxy: %q, want the cached n930005", got)
	}
	if _, err := c.Exec(ctx, "UPDATE users SET city = $1 WHERE id = $2", "x", int64(930006)); err != nil {
		t.Fatal(err)
	}
	if got := one(); got != "behind" {
		t.Fatalf("after a write through the proxy: %q, want behind", got)
	}
	out := cached.admin(t, "SHOW CACHE")
	if !strings.Contains(out, " users ") {
		t.Fatalf("SHOW CACHE:\n%s", out)
	}
	t.Logf("SHOW CACHE:\n%s", out)
}

// TestCacheCopyInvalidates: COPY FROM through the proxy invalidates the
// table's entries when it commits, outside and inside a transaction.
func TestCacheCopyInvalidates(t *testing.T) {
	ctx := context.Background()
	p := startCacheProxy(t, "  rules:\n    - {name: users, tables: [users], ttl: 1m}\n")
	c := p.connect(t)
	const id = 930101
	t.Cleanup(func() { deleteUsers(t, id, id+1, id+2) })
	for _, i := range []int{id, id + 1, id + 2} {
		c.Exec(ctx, fmt.Sprintf("DELETE FROM users WHERE id = %d", i))
	}
	q := fmt.Sprintf("SELECT count(*) FROM users WHERE id BETWEEN %d AND %d", id, id+2)
	count := func() int64 {
		var n int64
		if err := c.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("count = %d", n)
	}
	if _, err := c.PgConn().CopyFrom(ctx, bytes.NewBufferString(fmt.Sprintf("%d\tc1\te\tc\n", id)), "COPY users (id, name, email, city) FROM STDIN"); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("after COPY: count = %d, want 1", n)
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewBufferString(fmt.Sprintf("%d\tc2\te\tc\n%d\tc3\te\tc\n", id+1, id+2)), "COPY users (id, name, email, city) FROM STDIN"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 3 {
		t.Fatalf("after COPY in a transaction: count = %d, want 3", n)
	}
}

// TestCacheUntilWrite: with until_write, reads in a READ COMMITTED
// transaction are answered from the cache until its first write (simple
// and extended protocol); never after it, never after a SET, never in
// REPEATABLE READ or SERIALIZABLE.
func TestCacheUntilWrite(t *testing.T) {
	ctx := context.Background()
	p := startCacheProxy(t, "  until_write: true\n  rules:\n    - {name: users, tables: [users], ttl: 1m}\n    - {name: restaurants, tables: [restaurants], ttl: 1m, until_write: false}\n")
	simple, ext := p.connect(t), p.connectMode(t, pgx.QueryExecModeCacheStatement)
	const id, other = 930201, 930202
	t.Cleanup(func() { deleteUsers(t, id, other) })
	for _, q := range []string{
		fmt.Sprintf("DELETE FROM users WHERE id IN (%d, %d)", id, other),
		fmt.Sprintf("INSERT INTO users (id, name, email, city) VALUES (%d, 'v1', 'e', 'c'), (%d, 'o', 'e', 'c')", id, other),
	} {
		if _, err := simple.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	extName := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) string {
		var n string
		if err := q.QueryRow(ctx, "SELECT name FROM users WHERE id = $1", int64(id)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	simpleName := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) string {
		var n string
		if err := q.QueryRow(ctx, fmt.Sprintf("SELECT name FROM users WHERE id = %d", id)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	fill := func(want string) {
		t.Helper()
		if got := simpleName(simple); got != want {
			t.Fatalf("simple read outside a transaction = %q, want %q", got, want)
		}
		if got := extName(ext); got != want {
			t.Fatalf("extended read outside a transaction = %q, want %q", got, want)
		}
	}
	behind := func(name string) {
		t.Helper()
		if err := shardExec(ctx, shardIndex(id), fmt.Sprintf("UPDATE users SET name = '%s' WHERE id = %d", name, id)); err != nil {
			t.Fatal(err)
		}
	}
	fill("v1")
	behind("v2")
	type txCase struct {
		begin      string
		set        bool // a SET LOCAL before the reads
		cached     bool
		writeFirst bool
	}
	for _, tc := range []txCase{
		{begin: "BEGIN", cached: true},
		{begin: "BEGIN ISOLATION LEVEL READ COMMITTED", cached: true},
		{begin: "BEGIN ISOLATION LEVEL REPEATABLE READ"},
		{begin: "BEGIN ISOLATION LEVEL SERIALIZABLE"},
		{begin: "BEGIN", set: true},
		{begin: "BEGIN", writeFirst: true},
	} {
		want := "v2"
		if tc.cached {
			want = "v1"
		}
		for _, c := range []*pgx.Conn{simple, ext} {
			read := simpleName
			if c == ext {
				read = extName
			}
			tx, err := c.BeginTx(ctx, pgx.TxOptions{BeginQuery: tc.begin})
			if err != nil {
				t.Fatal(err)
			}
			if tc.set {
				if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = '5min'"); err != nil {
					t.Fatal(err)
				}
			}
			if tc.writeFirst {
				// A write to another table: the transaction's reads still
				// stop using the cache.
				if _, err := tx.Exec(ctx, "UPDATE restaurants SET rating = rating WHERE id = -1"); err != nil {
					t.Fatal(err)
				}
			}
			if got := read(tx); got != want {
				t.Errorf("%+v, extended %v: read in the transaction = %q, want %q", tc, c == ext, got, want)
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf("UPDATE users SET city = 'x' WHERE id = %d", other)); err != nil {
				t.Fatal(err)
			}
			// After the transaction's first write: never from the cache.
			if got := read(tx); got != "v2" {
				t.Errorf("%+v, extended %v: read after the write = %q, want v2", tc, c == ext, got)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			// The rolled-back write invalidated (harmless): fill again
			// and move the data behind the proxy's back again.
			behind("v1")
			fill("v1")
			behind("v2")
		}
	}
}

// TestCacheWireScriptsMatchPostgres runs extended-protocol pipelines
// through a proxy caching restaurants, twice (misses, then hits), and
// straight against a shard: the transcripts must be equal. They cover the
// held Describe (answered with the Execute, or before anything else that
// follows it), row limits, a portal executed twice, binary results and a
// transaction begun in the same pipeline.
func TestCacheWireScriptsMatchPostgres(t *testing.T) {
	ctx := context.Background()
	p := startCacheProxy(t, "  rules:\n    - {name: restaurants, tables: [restaurants], ttl: 1m}\n")
	c := p.connect(t)
	if _, err := c.Exec(ctx, "INSERT INTO restaurants (id, name, city, cuisine, rating) VALUES (7781, 'A', 'Porto', 'grill', 4.5), (7782, 'B', 'Porto', 'fish', NULL), (7783, 'C', 'Lisboa', 'fish', 3.0) ON CONFLICT DO NOTHING"); err != nil {
		t.Fatal(err)
	}
	text := func(s string) []byte { return []byte(s) }
	q := &pgproto3.Parse{Name: "rq", Query: "SELECT id, name, rating FROM restaurants WHERE id >= $1 AND id <= 7783 ORDER BY id", ParameterOIDs: []uint32{20}}
	bind := func(portal, from string, formats ...int16) *pgproto3.Bind {
		return &pgproto3.Bind{DestinationPortal: portal, PreparedStatement: "rq", Parameters: [][]byte{text(from)}, ResultFormatCodes: formats}
	}
	scripts := map[string][]wireStep{
		"describe, execute": {
			{q, bind("", "7781"), &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}},
			{bind("", "7782", 1), &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}},
			{bind("", "7783", 0, 1, 0), &pgproto3.Execute{}, &pgproto3.Sync{}},
		},
		"two portals interleaved": {
			{q, bind("p1", "7781"), &pgproto3.Describe{ObjectType: 'P', Name: "p1"}, bind("p2", "7782", 1),
				&pgproto3.Describe{ObjectType: 'P', Name: "p2"}, &pgproto3.Execute{Portal: "p1"}, &pgproto3.Execute{Portal: "p2"}, &pgproto3.Sync{}},
		},
		"describe then flush then execute": {
			{q, bind("", "7781"), &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Flush{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		},
		"row limit": {
			{q, bind("", "7781"), &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{MaxRows: 2}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		},
		"bad parameter": {
			{q, bind("", "x"), &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}},
			{bind("", "7783"), &pgproto3.Execute{}, &pgproto3.Sync{}},
		},
		"other messages after a held portal": {
			{q, bind("p1", "7781"), &pgproto3.Describe{ObjectType: 'P', Name: "p1"}, &pgproto3.Describe{ObjectType: 'S', Name: "rq"},
				&pgproto3.Execute{Portal: "p1"}, &pgproto3.Sync{}},
			{bind("p1", "7782"), &pgproto3.Describe{ObjectType: 'P', Name: "p1"}, &pgproto3.Describe{ObjectType: 'P', Name: "p1"},
				&pgproto3.Execute{Portal: "p1"}, &pgproto3.Execute{Portal: "p1"}, &pgproto3.Sync{}},
			{bind("p1", "7783"), &pgproto3.Close{ObjectType: 'P', Name: "p1"}, &pgproto3.Sync{}},
		},
		"in a transaction": {
			{&pgproto3.Query{String: "BEGIN"}},
			{q, bind("", "7781"), &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}},
			{&pgproto3.Query{String: "ROLLBACK"}},
		},
	}
	direct := env.shards.Clusters[0].DSN("deliveryapp")
	url := fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", p.addr)
	for name, steps := range scripts {
		t.Run(name, func(t *testing.T) {
			want := transcript(t, direct, steps)
			for i := 0; i < 2; i++ {
				if got := transcript(t, url, steps); got != want {
					t.Fatalf("run %d through the caching proxy:\n%s\nstraight to Postgres:\n%s", i, got, want)
				}
			}
		})
	}
}

// TestCacheUntilWriteScatter: until_write answers cross-shard reads too
// (a merged read over every shard, in the simple and the extended
// protocol) from the cache in a READ COMMITTED transaction before its
// first write; after it, and in REPEATABLE READ, they read the shards.
func TestCacheUntilWriteScatter(t *testing.T) {
	ctx := context.Background()
	p := startCacheProxy(t, "  until_write: true\n  rules:\n    - {name: users, tables: [users], ttl: 1m}\n")
	simple, ext := p.connect(t), p.connectMode(t, pgx.QueryExecModeCacheStatement)
	const lo, hi = 930301, 930304
	t.Cleanup(func() { deleteUsers(t, lo, lo+1, lo+2, hi) })
	if _, err := simple.Exec(ctx, fmt.Sprintf("DELETE FROM users WHERE id BETWEEN %d AND %d", lo, hi)); err != nil {
		t.Fatal(err)
	}
	if _, err := simple.Exec(ctx, fmt.Sprintf("INSERT INTO users (id, name, email, city) VALUES (%d, 'a1', 'e', 'c'), (%d, 'b', 'e', 'c'), (%d, 'c', 'e', 'c'), (%d, 'd', 'e', 'c')", lo, lo+1, lo+2, hi)); err != nil {
		t.Fatal(err)
	}
	if shardIndex(lo) == shardIndex(lo+1) && shardIndex(lo) == shardIndex(lo+2) && shardIndex(lo) == shardIndex(hi) {
		t.Fatal("the test's users all live on one shard: pick other ids")
	}
	// EXPLAIN of the cross-shard read names its rule.
	var plan []string
	rows, err := simple.Query(ctx, fmt.Sprintf("EXPLAIN SELECT name FROM users WHERE id BETWEEN %d AND %d ORDER BY id", lo, hi))
	if err != nil {
		t.Fatal(err)
	}
	if plan, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(plan, "  Result cache: rule users (ttl 1m0s)") {
		t.Errorf("EXPLAIN does not name the cache rule:\n%s", strings.Join(plan, "\n"))
	}
	names := func(q interface {
		Query(context.Context, string, ...any) (pgx.Rows, error)
	}, extended bool, hi int64) string {
		t.Helper()
		var rows pgx.Rows
		var err error
		if extended {
			rows, err = q.Query(ctx, "SELECT name FROM users WHERE id BETWEEN $1 AND $2 ORDER BY id", int64(lo), hi)
		} else {
			rows, err = q.Query(ctx, fmt.Sprintf("SELECT name FROM users WHERE id BETWEEN %d AND %d ORDER BY id", lo, hi))
		}
		if err != nil {
			t.Fatal(err)
		}
		ns, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(ns, ",")
	}
	behind := func(name string) {
		t.Helper()
		if err := shardExec(ctx, shardIndex(lo), fmt.Sprintf("UPDATE users SET name = '%s' WHERE id = %d", name, lo)); err != nil {
			t.Fatal(err)
		}
	}
	for _, extended := range []bool{false, true} {
		c := simple
		if extended {
			c = ext
		}
		for _, tc := range []struct {
			begin  string
			cached bool
		}{{"BEGIN", true}, {"BEGIN ISOLATION LEVEL REPEATABLE READ", false}} {
			behind("a1")
			if got := names(c, extended, hi); got != "a1,b,c,d" { // fills the entry
				t.Fatalf("extended %v: read outside a transaction = %q", extended, got)
			}
			behind("a2")
			tx, err := c.BeginTx(ctx, pgx.TxOptions{BeginQuery: tc.begin})
			if err != nil {
				t.Fatal(err)
			}
			want := "a2,b,c,d"
			if tc.cached {
				want = "a1,b,c,d"
			}
			if got := names(tx, extended, hi); got != want {
				t.Errorf("extended %v, %s: cross-shard read before a write = %q, want %q", extended, tc.begin, got, want)
			}
			// A miss (no entry for this range): held, then run in the
			// transaction on the shards.
			if got := names(tx, extended, hi-1); got != "a2,b,c" {
				t.Errorf("extended %v, %s: uncached cross-shard read = %q, want the shards'", extended, tc.begin, got)
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf("UPDATE users SET city = 'x' WHERE id = %d", hi)); err != nil {
				t.Fatal(err)
			}
			if got := names(tx, extended, hi); got != "a2,b,c,d" {
				t.Errorf("extended %v, %s: cross-shard read after the write = %q, want the shards'", extended, tc.begin, got)
			}
			if err := tx.Rollback(ctx); err != nil { // invalidates users: the next case fills again
				t.Fatal(err)
			}
		}
	}
}
