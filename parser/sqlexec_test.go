package parser

import (
	"errors"
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
