package proxy

import "testing"

func TestMentionsParam(t *testing.T) {
	cases := []struct {
		sql  string
		n    int
		want bool
	}{
		{"SELECT id FROM orders LIMIT 5", 1, false},
		{"SELECT id FROM orders WHERE id = $1 LIMIT 5", 1, true},
		{"SELECT id FROM orders WHERE id = $10", 1, false},
		{"SELECT id FROM orders WHERE id = $10 OR id = $1", 1, true},
		{"SELECT $2", 2, true},
		{"SELECT $21", 2, false},
	}
	for _, c := range cases {
		if got := mentionsParam(c.sql, c.n); got != c.want {
			t.Errorf("mentionsParam(%q, %d) = %v, want %v", c.sql, c.n, got, c.want)
		}
	}
}
