package parser

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
)

func parseOne(t *testing.T, sql string) *Statement {
	t.Helper()
	sts, err := Parse(sql)
	if err != nil {
		t.Fatalf("parse %q: %v", sql, err)
	}
	if len(sts) != 1 {
		t.Fatalf("parse %q: %d statements", sql, len(sts))
	}
	return sts[0]
}

func TestKinds(t *testing.T) {
	cases := []struct {
		sql    string
		kind   Kind
		tx     TxOp
		writes bool
	}{
		{"SELECT 1", Select, 0, false},
		{"SELECT * FROM t FOR UPDATE", Select, 0, true},
		{"SELECT * INTO x FROM t", Select, 0, true},
		{"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", Select, 0, true},
		{"INSERT INTO t VALUES (1)", Insert, 0, true},
		{"UPDATE t SET a = 1", Update, 0, true},
		{"DELETE FROM t", Delete, 0, true},
		{"CREATE TABLE t (a int)", DDL, 0, true},
		{"BEGIN", Transaction, Begin, false},
		{"START TRANSACTION", Transaction, Begin, false},
		{"COMMIT", Transaction, Commit, false},
		{"ROLLBACK", Transaction, Rollback, false},
		{"SAVEPOINT a", Transaction, Savepoint, false},
		{"PREPARE TRANSACTION 'x'", Transaction, TwoPhase, false},
		{"SET a = 1", Set, 0, false},
		{"SHOW a", Show, 0, false},
		{"EXPLAIN SELECT 1", Explain, 0, false},
		{"EXPLAIN ANALYZE DELETE FROM t", Explain, 0, true},
		{"MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN DELETE", Update, 0, true},
		{"LISTEN x", Unsupported, 0, false},
	}
	for _, c := range cases {
		st := parseOne(t, c.sql)
		if st.Kind != c.kind || st.Tx != c.tx || st.Writes != c.writes {
			t.Errorf("%s: kind %v tx %v writes %v, want %v %v %v", c.sql, st.Kind, st.Tx, st.Writes, c.kind, c.tx, c.writes)
		}
	}
}

func TestParseErrors(t *testing.T) {
	_, err := Parse("SELEC 1")
	var se *SyntaxError
	if !errors.As(err, &se) || se.Position != 1 {
		t.Fatalf("got %v, want a SyntaxError at 1", err)
	}
	if _, err := Parse("  ;  "); !errors.Is(err, ErrEmpty) {
		t.Fatalf("got %v, want ErrEmpty", err)
	}
}

func TestHints(t *testing.T) {
	cases := []struct {
		sql  string
		want [][]Hint // per statement
	}{
		{"/* shard: s2 */ SELECT 1", [][]Hint{{{"shard", "s2"}}}},
		{"SELECT 1 /* user_id: 42 */", [][]Hint{{{"user_id", "42"}}}},
		{"-- Shard: 's1'\nSELECT 1", [][]Hint{{{"shard", "s1"}}}},
		{"/* created_at: 2025-01-01 10:00:00+00 */ SELECT 1", [][]Hint{{{"created_at", "2025-01-01 10:00:00+00"}}}},
		{"SELECT '/* shard: s2 */'", [][]Hint{nil}},
		{"SELECT $$ -- shard: s2 $$", [][]Hint{nil}},
		{"/* just a comment */ SELECT 1", [][]Hint{nil}},
		{"/* app=checkout,route='x' */ SELECT 1", [][]Hint{nil}},
		{"/* 1x: y */ SELECT 1", [][]Hint{nil}},
		{"/* shard: s1 */ SELECT 1; /* shard: s2 */ SELECT 2; SELECT 3", [][]Hint{{{"shard", "s1"}}, {{"shard", "s2"}}, nil}},
	}
	for _, c := range cases {
		sts, err := Parse(c.sql)
		if err != nil {
			t.Fatal(err)
		}
		var got [][]Hint
		for _, st := range sts {
			got = append(got, st.Hints)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: hints %v, want %v", c.sql, got, c.want)
		}
	}
}

// keys is the shard key function of the delivery schema.
func keys(tb Table) string {
	switch tb.Name {
	case "users":
		return "id"
	case "orders", "order_items":
		return "user_id"
	}
	return ""
}

func TestAnalyseScopes(t *testing.T) {
	type occ struct {
		Name  string
		Scope int
	}
	cases := []struct {
		sql    string
		occs   []occ
		scopes int
		links  int
	}{
		{"SELECT * FROM orders", []occ{{"orders", 0}}, 1, 0},
		{"SELECT * FROM orders o JOIN users u ON u.id = o.user_id", []occ{{"orders", 0}, {"users", 0}}, 1, 1},
		{"SELECT * FROM orders o JOIN order_items i USING (user_id)", []occ{{"orders", 0}, {"order_items", 0}}, 1, 1},
		// The CTE body's orders is the table; the outer orders is the CTE.
		{"WITH orders AS (SELECT * FROM orders) SELECT * FROM orders", []occ{{"orders", 1}}, 2, 0},
		// Non-recursive: a CTE is not visible in the bodies before it.
		{"WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b", []occ{{"b", 1}}, 3, 0},
		{"WITH RECURSIVE a AS (SELECT * FROM a) SELECT * FROM a", nil, 2, 0},
		{"SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)", []occ{{"users", 0}, {"orders", 1}}, 2, 1},
		{"SELECT * FROM orders WHERE user_id IN (SELECT id FROM users)", []occ{{"orders", 0}, {"users", 1}}, 2, 1},
		{"SELECT * FROM orders WHERE user_id IN (SELECT id FROM users LIMIT 1)", []occ{{"orders", 0}, {"users", 1}}, 2, 0},
		{"SELECT * FROM orders o FOR UPDATE OF o", []occ{{"orders", 0}}, 1, 0},
		{"SELECT 1 UNION ALL SELECT 2", nil, 3, 0},
		{"UPDATE orders o SET total = 1 FROM users u WHERE u.id = o.user_id", []occ{{"orders", 0}, {"users", 0}}, 1, 1},
		{"INSERT INTO orders (user_id) SELECT id FROM users", []occ{{"orders", 0}, {"users", 1}}, 2, 0},
	}
	for _, c := range cases {
		a := parseOne(t, c.sql).Analyse(keys)
		var got []occ
		for _, o := range a.Occurrences {
			got = append(got, occ{o.Table.Name, o.Scope})
		}
		if !reflect.DeepEqual(got, c.occs) || len(a.Scopes) != c.scopes || len(a.Links) != c.links {
			t.Errorf("%s:\n occurrences %v scopes %d links %v\n want %v %d %d", c.sql, got, len(a.Scopes), a.Links, c.occs, c.scopes, c.links)
		}
	}
}

func TestRestriction(t *testing.T) {
	cases := []struct {
		sql  string
		occ  int
		want string
	}{
		{"SELECT * FROM orders WHERE user_id = 1", 0, "= 1"},
		{"SELECT * FROM orders WHERE user_id = 1 OR user_id = 2", 0, "(= 1 OR = 2)"},
		{"SELECT * FROM orders WHERE user_id = 1 OR status = 'x'", 0, "any"},
		{"SELECT * FROM orders WHERE NOT user_id = 1", 0, "any"},
		{"SELECT * FROM orders WHERE user_id BETWEEN 1 AND 3", 0, "(>= 1 AND <= 3)"},
		{"SELECT * FROM orders o WHERE o.user_id IN (1, $2)", 0, "= 1,$2"},
		// An unqualified name resolves only to a key column of its own level.
		{"SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders WHERE id = 5)", 0, "any"},
		// Inner-join conditions restrict, outer-join ones on the nullable side do not.
		{"SELECT * FROM users u JOIN orders o ON o.user_id = u.id AND u.id = 5", 0, "= 5"},
		{"SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.id AND o.user_id = 5", 1, "any"},
		{"SELECT * FROM users u LEFT JOIN (orders o JOIN order_items i ON i.user_id = o.user_id AND o.user_id = 5) ON true", 1, "any"},
		// IN (subquery) takes the subquery's restriction of its column.
		{"SELECT * FROM orders WHERE user_id IN (SELECT id FROM users WHERE id = 7)", 0, "= 7"},
		{"SELECT * FROM orders WHERE user_id IN (SELECT user_id FROM users WHERE id = 7)", 0, "any"},
		{"SELECT * FROM orders WHERE user_id::text = '1'", 0, "text= 1"},
		// Plain FROM subqueries: the enclosing filter applies through their outputs.
		{"SELECT * FROM (SELECT * FROM orders WHERE user_id > 0) x WHERE x.user_id = 3", 0, "(> 0 AND = 3)"},
		{"SELECT * FROM (SELECT user_id AS u FROM orders) x WHERE x.u = 3", 0, "any"},
		{"SELECT * FROM (SELECT *, status AS user_id FROM orders) x WHERE x.user_id = 3", 0, "any"},
		{"SELECT * FROM (SELECT * FROM orders LIMIT 1) x WHERE x.user_id = 3", 0, "any"},
		// So are plain CTEs named once.
		{"WITH x AS (SELECT * FROM orders WHERE user_id > 0) SELECT * FROM x WHERE x.user_id = 3", 0, "(> 0 AND = 3)"},
		{"WITH x AS (SELECT * FROM orders) SELECT * FROM x, x y WHERE x.user_id = 3", 0, "any"},
		{"WITH x AS (SELECT * FROM orders), y AS (SELECT * FROM x WHERE user_id = 3) SELECT * FROM y WHERE user_id IN (3, 4)", 0, "(= 3 AND = 3,4)"},
	}
	for _, c := range cases {
		a := parseOne(t, c.sql).Analyse(keys)
		o := a.Occurrences[c.occ]
		got := render(a.Restriction(c.occ, keys(o.Table)))
		if got != c.want {
			t.Errorf("%s: restriction %s, want %s", c.sql, got, c.want)
		}
	}
}

func render(p Pred) string {
	switch p.Op {
	case And, Or:
		op := " AND "
		if p.Op == Or {
			op = " OR "
		}
		s := "("
		for i, k := range p.Kids {
			if i > 0 {
				s += op
			}
			s += render(k)
		}
		return s + ")"
	case Cmp:
		s := p.ColCast + p.Cmp + " "
		for i, v := range p.Values {
			if i > 0 {
				s += ","
			}
			if v.Kind == ParamVal {
				s += fmt.Sprintf("$%d", v.Param)
			} else {
				s += v.Text
			}
		}
		return s
	}
	return "any"
}

func TestValues(t *testing.T) {
	cases := []struct {
		sql  string
		want Value
	}{
		{"SELECT * FROM orders WHERE user_id = 42", Value{Kind: IntLit, Text: "42"}},
		{"SELECT * FROM orders WHERE user_id = -42", Value{Kind: IntLit, Text: "-42"}},
		{"SELECT * FROM orders WHERE user_id = 9223372036854775807", Value{Kind: IntLit, Text: "9223372036854775807"}},
		{"SELECT * FROM orders WHERE user_id = 4.5", Value{Kind: FloatLit, Text: "4.5"}},
		{"SELECT * FROM orders WHERE user_id = '42'", Value{Kind: StringLit, Text: "42"}},
		{"SELECT * FROM orders WHERE user_id = 42::bigint", Value{Kind: IntLit, Text: "42", Cast: "int8"}},
		{"SELECT * FROM orders WHERE user_id = TIMESTAMP WITH TIME ZONE 'x'", Value{Kind: StringLit, Text: "x", Cast: "timestamptz"}},
		{"SELECT * FROM orders WHERE user_id = DATE 'x'", Value{Kind: StringLit, Text: "x", Cast: "date"}},
		{"SELECT * FROM orders WHERE user_id = $3", Value{Kind: ParamVal, Param: 3}},
		{"SELECT * FROM orders WHERE user_id = NULL", Value{Null: true}},
	}
	for _, c := range cases {
		a := parseOne(t, c.sql).Analyse(keys)
		p := a.Restriction(0, "user_id")
		if p.Op != Cmp || len(p.Values) != 1 || p.Values[0] != c.want {
			t.Errorf("%s: %+v, want %+v", c.sql, p, c.want)
		}
	}
}

func TestInsertKeysAndSplit(t *testing.T) {
	st := parseOne(t, "INSERT INTO orders (id, user_id, note) VALUES (1, 10, 'a'), (2, $1, 'it''s'), (3, now(), 'c') ON CONFLICT DO NOTHING RETURNING id")
	keys, err := st.InsertKeys("user_id")
	if err != nil {
		t.Fatal(err)
	}
	want := []Value{{Kind: IntLit, Text: "10"}, {Kind: ParamVal, Param: 1}, {}}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys %+v, want %+v", keys, want)
	}
	sqls, err := st.SplitInsert([][]int{{0, 2}, {1}})
	if err != nil {
		t.Fatal(err)
	}
	wantSQL := []string{
		"INSERT INTO orders (id, user_id, note) VALUES (1, 10, 'a'), (3, now(), 'c') ON CONFLICT DO NOTHING RETURNING id",
		"INSERT INTO orders (id, user_id, note) VALUES (2, $1, 'it''s') ON CONFLICT DO NOTHING RETURNING id",
	}
	if !reflect.DeepEqual(sqls, wantSQL) {
		t.Fatalf("split:\n%q\nwant\n%q", sqls, wantSQL)
	}
	// The shared statement is untouched.
	again, _ := st.SplitInsert([][]int{{0, 1, 2}})
	if again[0] != "INSERT INTO orders (id, user_id, note) VALUES (1, 10, 'a'), (2, $1, 'it''s'), (3, now(), 'c') ON CONFLICT DO NOTHING RETURNING id" {
		t.Fatalf("statement modified: %s", again[0])
	}
}

func TestMemo(t *testing.T) {
	st := parseOne(t, "SELECT 1")
	calls := 0
	for i := 0; i < 3; i++ {
		if v := st.Memo("k", func() any { calls++; return 7 }); v != 7 {
			t.Fatalf("memo %v", v)
		}
	}
	if calls != 1 {
		t.Fatalf("build ran %d times", calls)
	}
	// Old keys are dropped beyond memoSlots.
	for i := 0; i < memoSlots; i++ {
		st.Memo(i, func() any { return i })
	}
	st.Memo("k", func() any { calls++; return 7 })
	if calls != 2 {
		t.Fatalf("evicted key not rebuilt: %d", calls)
	}
}

func TestCache(t *testing.T) {
	c := NewCache(2)
	a1, _ := c.Parse("SELECT 1")
	a2, _ := c.Parse("SELECT 1")
	if &a1[0] != &a2[0] || a1[0] != a2[0] {
		t.Fatal("cache miss on the same text")
	}
	c.Parse("SELECT 2")
	c.Parse("SELECT 1") // most recent: SELECT 1, then SELECT 2
	c.Parse("SELECT 3") // evicts SELECT 2
	if hits, misses := c.Stats(); c.Len() != 2 || hits != 2 || misses != 3 {
		t.Fatalf("len %d hits %d misses %d", c.Len(), hits, misses)
	}
	b, _ := c.Parse("SELECT 1")
	if b[0] != a1[0] {
		t.Fatal("SELECT 1 was evicted instead of SELECT 2")
	}
	c.Parse("SELECT 2")
	if _, misses := c.Stats(); misses != 4 {
		t.Fatalf("SELECT 2 should have been evicted: %d misses", misses)
	}
	if _, err := c.Parse("SELEC"); err == nil {
		t.Fatal("syntax error not returned")
	}
}

func TestCacheConcurrent(t *testing.T) {
	c := NewCache(8)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				sql := fmt.Sprintf("SELECT %d", (i+g)%16)
				sts, err := c.Parse(sql)
				if err != nil || len(sts) != 1 || sts[0].SQL != sql {
					t.Errorf("%s: %v %v", sql, sts, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if hits, misses := c.Stats(); c.Len() > 8 || hits+misses != 1600 {
		t.Fatalf("len %d hits %d misses %d", c.Len(), hits, misses)
	}
}
