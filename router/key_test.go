package router

import (
	"testing"

	"github.com/shardproxy/shardproxy/parser"
)

// TestShardOfKey: a COPY row goes where an INSERT of the same row goes.
func TestShardOfKey(t *testing.T) {
	r := testRouter(t)
	orders, events := r.Topology().Tables["orders"], r.Topology().Tables["events"]
	for _, v := range []string{"1", "42", "-7", " 99 ", "+5", "9223372036854775807"} {
		stmts, err := parser.Parse("INSERT INTO orders (user_id) VALUES ('" + v + "')")
		if err != nil {
			t.Fatal(err)
		}
		p, err := r.Route(stmts[0], nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, how := r.ShardOfKey(orders, v, false); how != KeyPlaced || !p.Single() || got != p.Shards[0] {
			t.Errorf("%q: ShardOfKey %d (%d), INSERT %v", v, got, how, p.Shards)
		}
	}
	cases := []struct {
		tb   *Table
		v    string
		null bool
		want int
		how  KeyPlacement
	}{
		{orders, "", true, 0, KeyPlaced}, // NULL: remainder 0
		{orders, "abc", false, 0, KeyInvalid},
		{orders, "1.5", false, 0, KeyInvalid},
		{events, "2025-03-01 10:00:00+00", false, 1, KeyPlaced},
		{events, "2024-12-31 23:59:59.999999+00", false, 0, KeyPlaced},
		{events, "2025-03-01 10:00:00", false, 1, KeyPlaced},    // far from a boundary: any zone
		{events, "2025-01-01 00:00:00", false, 0, KeyAmbiguous}, // on a boundary: the zone decides
		{events, "not a time", false, 0, KeyInvalid},
		{events, "", true, 0, KeyNoRange},
	}
	for _, c := range cases {
		if got, how := r.ShardOfKey(c.tb, c.v, c.null); got != c.want || how != c.how {
			t.Errorf("%s %q: got %d (%d), want %d (%d)", c.tb.Name, c.v, got, how, c.want, c.how)
		}
	}
}
