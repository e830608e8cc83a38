package parser

import "testing"

func TestShareable(t *testing.T) {
	cases := []struct {
		sql  string
		want bool
	}{
		{"SELECT * FROM users WHERE id = 1", true},
		{"SELECT count(*), lower(name) FROM restaurants GROUP BY 2", true},
		{"SELECT id FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 10", true},
		{"SELECT pg_catalog.lower(name) FROM users", true},
		{"SELECT now()", false},
		{"SELECT random() FROM users", false},
		{"SELECT nextval('s')", false},
		{"SELECT clock_timestamp()", false},
		{"SELECT my_func(id) FROM users", false},
		{"SELECT other.lower(name) FROM users", false},
		{"SELECT * FROM orders WHERE created_at > CURRENT_TIMESTAMP", false},
		{"SELECT * FROM orders WHERE created_at > current_date", false},
		{"SELECT * FROM orders WHERE created_at > 'now'::timestamptz", false},
		{"SELECT * FROM orders WHERE created_at > ' Today '", false},
		{"SELECT * FROM users WHERE id = 1 FOR UPDATE", false},
		{"SELECT * FROM users WHERE id IN (SELECT user_id FROM orders FOR SHARE)", false},
		{"SELECT * INTO x FROM users", false},
		{"SELECT * FROM pg_class", false},
		{"SELECT * FROM pg_catalog.pg_stat_activity", false},
		{"SELECT * FROM information_schema.tables", false},
		{"SELECT * FROM pg_temp.t", false},
		{"WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d", false},
		{"SELECT pg_advisory_lock(1)", false},
		{"INSERT INTO users VALUES (1)", false},
		{"UPDATE users SET name = 'x'", false},
		{"SHOW TimeZone", false},
		{"EXPLAIN SELECT 1", false},
	}
	for _, c := range cases {
		t.Run(c.sql, func(t *testing.T) {
			sts, err := Parse(c.sql)
			if err != nil {
				t.Fatal(err)
			}
			got := sts[0].Shareable() && !TimeLiteral(c.sql)
			if got != c.want {
				t.Errorf("Shareable(%q) = %v, want %v", c.sql, got, c.want)
			}
			if again := sts[0].Shareable() && !TimeLiteral(c.sql); again != got {
				t.Errorf("memoized answer %v differs from %v", again, got)
			}
		})
	}
}

func TestTimeLiteral(t *testing.T) {
	for sql, want := range map[string]bool{
		"SELECT 'now'":                  true,
		"SELECT 'x', ' YESTERDAY'":      true,
		"SELECT 'known', 'snow'":        false,
		"SELECT now":                    false,
		"SELECT 'it''s', 'tomorrow'":    true,
		"SELECT 'unterminated":          false,
		"-- it's\nSELECT 'now'":         true,
		"SELECT * FROM t WHERE a = 'b'": false,
	} {
		if got := TimeLiteral(sql); got != want {
			t.Errorf("TimeLiteral(%q) = %v, want %v", sql, got, want)
		}
	}
}
