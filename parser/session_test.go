package parser

import "testing"

func TestSessionUse(t *testing.T) {
	cases := []struct {
		sql  string
		want SessionUse
	}{
		{"SELECT 1", NoSessionUse},
		{"SELECT set_config('search_path', '', false)", SetConfig},
		{"SELECT pg_catalog.set_config('search_path', '', false)", SetConfig},
		{"SELECT x FROM t WHERE set_config('statement_timeout', '1', false) IS NOT NULL", SetConfig},
		{"SELECT set_config('role', $1, $2)", SetConfig},
		{"SELECT set_config('search_path', 'x', true)", NoSessionUse},
		{"SELECT set_config('search_path', 'x', 't')", NoSessionUse},
		{"WITH c AS (SELECT set_config('a.b', 'x', false)) SELECT * FROM c", SetConfig},
		{"SELECT pg_advisory_lock(1)", AdvisoryLock},
		{"SELECT pg_advisory_lock(1), set_config('a.b', 'x', false)", AdvisoryLock},
		{"CREATE TEMP TABLE t (x int)", TempTable},
	}
	for _, c := range cases {
		t.Run(c.sql, func(t *testing.T) {
			st := mustParseOne(t, c.sql)
			if st.Session != c.want {
				t.Fatalf("Session = %d, want %d", st.Session, c.want)
			}
		})
	}
}

func mustParseOne(t *testing.T, sql string) *Statement {
	t.Helper()
	stmts, err := Parse(sql)
	if err != nil || len(stmts) != 1 {
		t.Fatalf("parse %q: %v", sql, err)
	}
	return stmts[0]
}
