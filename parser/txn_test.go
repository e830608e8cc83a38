package parser

import "testing"

func TestSavepointOp(t *testing.T) {
	cases := []struct {
		sql  string
		op   SavepointOp
		name string
		ok   bool
	}{
		{"SAVEPOINT a", SavepointSet, "a", true},
		{"/* undo */ rollback to savepoint A", SavepointRollbackTo, "a", true},
		{"ROLLBACK TO \"Mixed\"", SavepointRollbackTo, "Mixed", true},
		{"-- c\nRELEASE one", SavepointRelease, "one", true},
		{"release savepoint two", SavepointRelease, "two", true},
		{"ROLLBACK", 0, "", false},
		{"SELECT 1", 0, "", false},
	}
	for _, c := range cases {
		t.Run(c.sql, func(t *testing.T) {
			sts, err := Parse(c.sql)
			if err != nil {
				t.Fatal(err)
			}
			op, name, ok := sts[0].Savepoint()
			if op != c.op || name != c.name || ok != c.ok {
				t.Fatalf("got %v %q %v, want %v %q %v", op, name, ok, c.op, c.name, c.ok)
			}
		})
	}
}

func TestNoTransactionBlock(t *testing.T) {
	cases := map[string]bool{
		"CREATE INDEX CONCURRENTLY i ON t (a)": true,
		"CREATE INDEX i ON t (a)":              false,
		"DROP INDEX CONCURRENTLY i":            true,
		"DROP TABLE t":                         false,
		"VACUUM t":                             true,
		"ANALYZE t":                            false,
		"REINDEX TABLE CONCURRENTLY t":         true,
		"REINDEX TABLE t":                      false,
		"ALTER SYSTEM SET work_mem = '1MB'":    true,
		"CLUSTER":                              true,
		"CLUSTER t USING i":                    false,
	}
	for sql, want := range cases {
		sts, err := Parse(sql)
		if err != nil {
			t.Fatal(err)
		}
		if got := sts[0].NoTransactionBlock(); got != want {
			t.Errorf("%s: got %v, want %v", sql, got, want)
		}
	}
}

func TestAssignmentOf(t *testing.T) {
	cases := []struct {
		sql             string
		ok, excl, known bool
		text            string
		param           int
	}{
		{"UPDATE orders SET user_id = 42, status = 'x' WHERE id = 1", true, false, true, "42", 0},
		{"UPDATE orders SET status = $2, user_id = $1 WHERE id = $3", true, false, true, "", 1},
		{"UPDATE orders SET user_id = user_id + 1", true, false, false, "", 0},
		{"UPDATE orders SET status = 'x'", false, false, false, "", 0},
		{"INSERT INTO orders (id, user_id) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id", true, true, false, "", 0},
		{"INSERT INTO orders (id, user_id) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.id", true, false, false, "", 0},
		{"INSERT INTO orders (id, user_id) VALUES (1, 2)", false, false, false, "", 0},
	}
	for _, c := range cases {
		sts, err := Parse(c.sql)
		if err != nil {
			t.Fatal(err)
		}
		a, ok := sts[0].AssignmentOf("user_id")
		if ok != c.ok || a.Excluded != c.excl || a.Known != c.known || a.Value.Text != c.text || a.Value.Param != c.param {
			t.Errorf("%s: got %+v %v", c.sql, a, ok)
		}
	}
}

func TestReturnsRows(t *testing.T) {
	cases := map[string]bool{
		"SELECT 1":                              true,
		"INSERT INTO t VALUES (1)":              false,
		"INSERT INTO t VALUES (1) RETURNING id": true,
		"UPDATE t SET a = 1":                    false,
		"DELETE FROM t RETURNING *":             true,
		"CREATE TABLE x (a int)":                false,
		"WITH d AS (DELETE FROM t) SELECT 1":    true,
	}
	for sql, want := range cases {
		sts, err := Parse(sql)
		if err != nil {
			t.Fatal(err)
		}
		if got := sts[0].ReturnsRows(); got != want {
			t.Errorf("%s: %v, want %v", sql, got, want)
		}
	}
}
