package parser

import "testing"

func TestExplainAround(t *testing.T) {
	for _, tc := range []struct {
		explain, query, want string
		structured           bool
	}{
		{"EXPLAIN SELECT 1", "SELECT id FROM orders LIMIT 3", "EXPLAIN SELECT id FROM orders LIMIT 3", false},
		{"EXPLAIN (ANALYZE, BUFFERS) SELECT 1", "SELECT 2", "EXPLAIN (ANALYZE, BUFFERS) SELECT 2", false},
		{"explain analyze verbose select 1", "SELECT 2", "EXPLAIN (ANALYZE, VERBOSE) SELECT 2", false},
		{"EXPLAIN (FORMAT JSON) SELECT 1", "SELECT 2", `EXPLAIN (FORMAT "json") SELECT 2`, true},
		{"EXPLAIN (FORMAT text) SELECT 1", "SELECT 2", "EXPLAIN (FORMAT text) SELECT 2", false},
	} {
		stmts, err := Parse(tc.explain)
		if err != nil {
			t.Fatal(err)
		}
		got, structured, err := stmts[0].ExplainAround(tc.query)
		if err != nil || got != tc.want || structured != tc.structured {
			t.Errorf("%s around %s = %q, %v, %v; want %q, %v", tc.explain, tc.query, got, structured, err, tc.want, tc.structured)
		}
	}
	if _, _, err := (&Statement{Kind: Select}).ExplainAround("SELECT 1"); err == nil {
		t.Error("a SELECT is not an EXPLAIN")
	}
}

func TestExplainDeclareRoutesItsQuery(t *testing.T) {
	stmts, err := Parse("EXPLAIN (COSTS OFF) DECLARE c SCROLL CURSOR FOR SELECT id FROM orders WHERE user_id = 5")
	if err != nil || len(stmts) != 1 {
		t.Fatal(stmts, err)
	}
	st := stmts[0]
	if st.Kind != Explain || !st.ExplainsCursor() || st.Inner == nil || st.Inner.Kind != Select {
		t.Fatalf("kind %v, cursor %v, inner %+v", st.Kind, st.ExplainsCursor(), st.Inner)
	}
	plain, _ := Parse("EXPLAIN SELECT 1")
	if plain[0].ExplainsCursor() {
		t.Fatal("EXPLAIN SELECT taken for EXPLAIN DECLARE")
	}
}
