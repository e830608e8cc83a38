package parser

import "testing"

func one(t *testing.T, sql string) *Statement {
	t.Helper()
	sts, err := Parse(sql)
	if err != nil || len(sts) != 1 {
		t.Fatalf("parse %q: %v", sql, err)
	}
	return sts[0]
}

func TestCursorStatements(t *testing.T) {
	cases := []struct {
		sql  string
		want Cursor
	}{
		{"DECLARE c CURSOR FOR SELECT 1", Cursor{Op: DeclareCursor, Name: "c", QuerySQL: "SELECT 1"}},
		{`DECLARE "_django_curs_1" NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM orders WHERE user_id = 4`, Cursor{Op: DeclareCursor, Name: "_django_curs_1", Hold: true, QuerySQL: "SELECT * FROM orders WHERE user_id = 4"}},
		{"declare C scroll cursor without hold for select 1", Cursor{Op: DeclareCursor, Name: "c", Scroll: true, QuerySQL: "SELECT 1"}},
		{"FETCH 3 FROM c", Cursor{Op: FetchCursor, Name: "c", Count: 3}},
		{"FETCH c", Cursor{Op: FetchCursor, Name: "c", Count: 1}},
		{"FETCH NEXT FROM c", Cursor{Op: FetchCursor, Name: "c", Count: 1}},
		{"FETCH ALL IN c", Cursor{Op: FetchCursor, Name: "c", Count: -1}},
		{"DECLARE b BINARY CURSOR FOR SELECT 1", Cursor{Op: DeclareCursor, Name: "b", Binary: true, QuerySQL: "SELECT 1"}},
		{"FETCH FORWARD ALL FROM c", Cursor{Op: FetchCursor, Name: "c", Count: -1}},
		{"FETCH PRIOR FROM c", Cursor{Op: FetchCursor, Name: "c", Backward: true, Count: 1}},
		{"FETCH ABSOLUTE 2 FROM c", Cursor{Op: FetchCursor, Name: "c", Backward: true, Count: 2}},
		{"FETCH -2 FROM c", Cursor{Op: FetchCursor, Name: "c", Backward: true, Count: -2}},
		{"MOVE 5 IN c", Cursor{Op: FetchCursor, Name: "c", Move: true, Count: 5}},
		{"CLOSE c", Cursor{Op: CloseCursor, Name: "c"}},
		{"CLOSE ALL", Cursor{Op: CloseCursor, All: true}},
	}
	for _, c := range cases {
		t.Run(c.sql, func(t *testing.T) {
			got, ok := one(t, c.sql).Cursor()
			if !ok {
				t.Fatal("not a cursor statement")
			}
			if c.want.Op == DeclareCursor {
				if got.Query == nil || got.Query.Kind != Select {
					t.Fatalf("query %+v", got.Query)
				}
				got.Query = nil
			}
			if got != c.want {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
	if _, ok := one(t, "SELECT 1").Cursor(); ok {
		t.Fatal("SELECT is not a cursor statement")
	}
	q, _ := one(t, "DECLARE c CURSOR FOR SELECT * FROM orders WHERE user_id = 4").Cursor()
	if len(q.Query.Tables) != 1 || q.Query.Tables[0].Name != "orders" {
		t.Fatalf("cursor query tables %v", q.Query.Tables)
	}
}

func TestSessionObjects(t *testing.T) {
	name, q, ok := one(t, "PREPARE p1(int) AS SELECT v FROM tt WHERE id = $1").Prepare()
	if !ok || name != "p1" || q.Kind != Select || len(q.Tables) != 1 || q.Tables[0].Name != "tt" {
		t.Fatalf("PREPARE: %q %+v %v", name, q, ok)
	}
	if name, ok := one(t, "EXECUTE p1(4)").Execute(); !ok || name != "p1" {
		t.Fatalf("EXECUTE: %q %v", name, ok)
	}
	for sql, want := range map[string]DiscardWhat{"DISCARD ALL": DiscardAll, "DISCARD TEMP": DiscardTemp,
		"DISCARD TEMPORARY": DiscardTemp, "DISCARD PLANS": DiscardPlans, "DISCARD SEQUENCES": DiscardSequences} {
		if got, ok := one(t, sql).Discard(); !ok || got != want {
			t.Errorf("%s: %v %v", sql, got, ok)
		}
	}
	temps := map[string]string{
		"CREATE TEMP TABLE users (id int)":            "users",
		"CREATE TEMPORARY TABLE t2 AS SELECT 1":       "t2",
		"SELECT 1 AS a INTO TEMP t3":                  "t3",
		"CREATE TEMP VIEW v AS SELECT 1":              "v",
		"CREATE TEMP SEQUENCE s":                      "s",
		"CREATE TABLE pg_temp.t4 (a int)":             "",
		"CREATE TABLE t5 (a int)":                     "",
		"CREATE TEMP TABLE t6 (a int) ON COMMIT DROP": "t6",
	}
	for sql, want := range temps {
		st := one(t, sql)
		got, ok := st.TempRelation()
		if want == "" {
			if ok && sql != "CREATE TABLE pg_temp.t4 (a int)" {
				t.Errorf("%s: temp %v", sql, got)
			}
			continue
		}
		if !ok || got.Name != want || st.Session != TempTable {
			t.Errorf("%s: %v %v session %v", sql, got, ok, st.Session)
		}
	}
	if !one(t, "CREATE TEMP TABLE t6 (a int) ON COMMIT DROP").TempDropsAtCommit() || one(t, "CREATE TEMP TABLE t7 (a int)").TempDropsAtCommit() {
		t.Error("ON COMMIT DROP")
	}
	for sql, want := range map[string]bool{
		"SELECT pg_advisory_unlock(1)": true, "SELECT pg_catalog.pg_advisory_unlock_all()": true,
		"SELECT * FROM t WHERE pg_advisory_unlock_shared(id)": true, "SELECT pg_advisory_lock(1)": false, "SELECT 1": false,
	} {
		st := one(t, sql)
		if st.UnlocksAdvisory() != want {
			t.Errorf("%s: unlocks %v", sql, !want)
		}
		if want && st.Session != AdvisoryUnlock {
			t.Errorf("%s: session %v", sql, st.Session)
		}
	}
	if one(t, "SELECT pg_advisory_lock(1), pg_advisory_unlock(2)").Session != AdvisoryLock {
		t.Error("a lock outranks an unlock")
	}
}
