package parser

import (
	"reflect"
	"testing"
)

func TestStrip(t *testing.T) {
	cases := []struct {
		sql, key string
		consts   []string
		ok       bool
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 42;", "SELECT abalance FROM pgbench_accounts WHERE aid = $1;", []string{"42"}, true},
		{"select * from t1 where a = 'it''s' and b >= 1.5e3 and c < .5", "select * from t1 where a = $1 and b >= $2 and c < $3", []string{"it's", "1.5e3", ".5"}, true},
		{`SELECT "col1", x2 FROM "t 3" WHERE y = -7 AND z IN (-1, - 2) AND w - 3 > 0`, `SELECT "col1", x2 FROM "t 3" WHERE y = $1 AND z IN ($2, - $3) AND w - $4 > $5`, []string{"-7", "-1", "2", "3", "0"}, true},
		{"SELECT 1 /* shard: s1 */ -- 2\n, 3", "SELECT $1 /* shard: s1 */ -- 2\n, $2", []string{"1", "3"}, true},
		{"SELECT '2025-01-01'::date, x::int4", "SELECT $1::date, x::int4", []string{"2025-01-01"}, true},
		{"SELECT $1", "", nil, false},
		{"SELECT $$x$$", "", nil, false},
		{"SELECT E'\\n'", "", nil, false},
		{"SELECT DATE '2025-01-01'", "SELECT DATE $1", []string{"2025-01-01"}, true}, // the template does not parse: full path
		{"SELECT 'a'\n'b'", "", nil, false},
		{"SELECT 'unterminated", "", nil, false},
		{"SELECT 0x1F", "", nil, false},
		{"SELECT a[1:2] FROM t", "SELECT a[$1:$2] FROM t", []string{"1", "2"}, true},
	}
	for _, c := range cases {
		key, consts, ok := Strip(c.sql)
		if ok != c.ok || (ok && (key != c.key || !reflect.DeepEqual(consts, c.consts))) {
			t.Errorf("Strip(%q) = %q %q %v, want %q %q %v", c.sql, key, consts, ok, c.key, c.consts, c.ok)
		}
	}
}

func FuzzStrip(f *testing.F) {
	for _, s := range []string{"SELECT 1", "select * from t where a = 'x''y' and b = 2.5", "/* c */ SELECT \"a\" -- x\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		key, consts, ok := Strip(sql)
		if !ok {
			return
		}
		// Putting the constants back must give a query that parses the
		// same way: same statement count and kinds.
		a, errA := Parse(sql)
		b, errB := Parse(key)
		if errA != nil || errB != nil {
			return
		}
		if len(a) != len(b) {
			t.Fatalf("%q -> %q: %d vs %d statements", sql, key, len(a), len(b))
		}
		_ = consts
	})
}
