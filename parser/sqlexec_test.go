package parser

import (
	"errors"
	"strings"
	"testing"
)

func TestPreparedBind(t *testing.T) {
	cases := []struct {
		prepare, execute string
		types            []string
		want, code       string
	}{
		{"PREPARE p(bigint) AS SELECT id FROM orders WHERE user_id = $1", "EXECUTE p(42)", []string{"bigint"},
			"SELECT id FROM orders WHERE user_id = 42::bigint", ""},
		{"PREPARE p AS SELECT $2, $1 || 'x' FROM t WHERE a = $1", "EXECUTE p('o''k', now())",
			[]string{"text", "timestamp with time zone"},
			"SELECT now()::timestamp with time zone, 'o''k'::text || 'x' FROM t WHERE a = 'o''k'::text", ""},
		{"PREPARE p AS SELECT $1", "EXECUTE p(1 + 2)", []string{`public."My Type"`}, `SELECT (1 + 2)::public."My Type"`, ""},
		{"PREPARE p AS SELECT 1", "EXECUTE p(7)", nil, "SELECT 1", ""},
		{"PREPARE p AS SELECT $1", "EXECUTE p(id)", []string{"int"}, "", "42703"},
		{"PREPARE p AS SELECT $1", "EXECUTE p((SELECT 1))", []string{"int"}, "", "0A000"},
		{"PREPARE p AS SELECT $1", "EXECUTE p(sum(1))", []string{"int"}, "", "42803"},
		{"PREPARE p AS SELECT $1", "EXECUTE p(row_number() OVER ())", []string{"int"}, "", "42P20"},
	}
	for _, c := range cases {
		ps, _ := Parse(c.prepare)
		es, _ := Parse(c.execute)
		p, ok := ps[0].SQLPrepared()
		e, ok2 := es[0].SQLExecution()
		if !ok || !ok2 {
			t.Fatalf("%s / %s: not recognised", c.prepare, c.execute)
		}
		if err := p.SetTypes(c.types); err != nil {
			t.Fatal(err)
		}
		got, err := p.Bind(e)
		var ae *ArgError
		switch {
		case c.code != "":
			if !errors.As(err, &ae) || ae.Code != c.code {
				t.Errorf("%s: %v, want %s", c.execute, err, c.code)
			}
		case err != nil || got != c.want:
			t.Errorf("%s with %s:\n got %s (%v)\nwant %s", c.prepare, c.execute, got, err, c.want)
		}
	}
}

// BenchmarkPreparedBind: what EXECUTE adds before routing (substitute and
// deparse; the bound text then takes the simple query's path, templates
// shared across constants).
func BenchmarkPreparedBind(b *testing.B) {
	ps, _ := Parse("PREPARE p(bigint, text) AS SELECT id, status, total FROM orders WHERE user_id = $1 AND status = $2 ORDER BY created_at DESC LIMIT 10")
	es, _ := Parse("EXECUTE p(42, 'paid')")
	p, _ := ps[0].SQLPrepared()
	e, _ := es[0].SQLExecution()
	if err := p.SetTypes([]string{"bigint", "text"}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Bind(e); err != nil {
			b.Fatal(err)
		}
	}
}

// TestArgPosition: an error position inside a bound argument maps to the
// argument in the client's EXECUTE; one in the prepared query maps to
// nothing (Postgres reports none for it).
func TestArgPosition(t *testing.T) {
	cases := []struct {
		prepare, execute string
		types            []string
		at               string // the error's place in the bound text
		want             int
	}{
		{"PREPARE foo(xml) AS SELECT $1", "EXECUTE foo ('bad')", []string{"xml"}, "'bad'", 14},
		{"PREPARE p(int, int) AS SELECT $1 + $2 FROM t", "EXECUTE p(1, 'x')", []string{"integer", "integer"}, "'x'", 14},
		{"PREPARE p(int, int) AS SELECT $1 + $2 FROM t", "EXECUTE p(1, 1 + 'x')", []string{"integer", "integer"}, "'x'", 18},
		{"PREPARE p(int) AS SELECT a FROM t WHERE b = $1", "EXECUTE p(1)", []string{"integer"}, "a FROM", 0},
		{"PREPARE p AS SELECT a FROM t GROUP BY b", "EXECUTE p", nil, "a FROM", 0},
	}
	for _, c := range cases {
		_, e, bound, i := bindAt(t, c.prepare, c.execute, c.types, c.at)
		if got := e.ArgPosition(bound, c.execute, i+1); got != c.want {
			t.Errorf("%s in %q: position %d, want %d", c.at, bound, got, c.want)
		}
	}
}

// TestQueryPosition: an error position in the bound statement, outside
// the arguments, maps to the same place in the PREPARE's text.
func TestQueryPosition(t *testing.T) {
	cases := []struct {
		prepare, execute string
		types            []string
		at               string // in the bound text
		want             string // in the PREPARE's text
	}{
		{"PREPARE pos_g AS SELECT a, b FROM pos_t GROUP BY a", "EXECUTE pos_g", nil, "b FROM", "b FROM"},
		{"PREPARE p(int) AS\n  SELECT a,   nope\n  FROM t WHERE c = $1 AND d > 2", "EXECUTE p(7)", []string{"integer"}, "d > 2", "d > 2"},
		{"PREPARE p(int) AS SELECT x FROM t WHERE c = $1 AND nope(c) = 1", "EXECUTE p(7)", []string{"integer"}, "nope(c)", "nope(c)"},
	}
	for _, c := range cases {
		p, _, bound, i := bindAt(t, c.prepare, c.execute, c.types, c.at)
		if got, want := p.QueryPosition(bound, c.prepare, i+1), strings.Index(c.prepare, c.want)+1; got != want {
			t.Errorf("%s in %q: position %d, want %d", c.at, bound, got, want)
		}
	}
}

// bindAt binds execute to prepare (its parameters of the given types) and
// returns them, the bound text and the index of at in it.
func bindAt(t *testing.T, prepare, execute string, types []string, at string) (*Prepared, *Execution, string, int) {
	t.Helper()
	ps, _ := Parse(prepare)
	es, _ := Parse(execute)
	p, _ := ps[0].SQLPrepared()
	e, _ := es[0].SQLExecution()
	if err := p.SetTypes(types); err != nil {
		t.Fatal(err)
	}
	bound, err := p.Bind(e)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(bound, at)
	if i < 0 {
		t.Fatalf("%q not in %q", at, bound)
	}
	return p, e, bound, i
}
