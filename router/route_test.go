package router

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/shardproxy/shardproxy/parser"
)

func testRouter(t *testing.T) *Router {
	t.Helper()
	cfg := &Config{
		Shards: []ShardConfig{{Name: "s0", DSN: "x"}, {Name: "s1", DSN: "x"}, {Name: "s2", DSN: "x"}, {Name: "s3", DSN: "x"}},
		Tables: map[string]TableConfig{
			"users":       {Strategy: Hash, Key: "id"},
			"orders":      {Strategy: Hash, Key: "user_id"},
			"order_items": {Strategy: Hash, Key: "user_id"},
			"restaurants": {Strategy: Reference},
			"events": {Strategy: Range, Key: "created_at", Ranges: []RangeConfig{
				{To: "2025-01-01", Shard: "s0"}, {From: "2025-01-01", To: "2025-07-01", Shard: "s1"},
				{From: "2025-07-01", To: "2026-01-01", Shard: "s2"}, {From: "2026-01-01", Shard: "s3"}}},
		},
	}
	topo, err := NewTopology(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return New(topo)
}

// contradiction is where a contradictory key predicate goes: the shared
// shard if the values happen to share one, else shard 0.
func contradiction(a, b []int) []int {
	if s := intersect(a, b); len(s) > 0 {
		return s
	}
	return []int{0}
}

func shardOf(id int64) int { return PartitionOf(HashInt(id), 4) }

func TestRoute(t *testing.T) {
	r := testRouter(t)
	all := []int{0, 1, 2, 3}
	one := func(ids ...int64) []int {
		var s shardSet
		for _, id := range ids {
			s = union(s, shardSet{shardOf(id)})
		}
		return s
	}
	cases := []struct {
		sql    string
		shards []int // nil: do not check
		refuse string
		aggs   int
	}{
		{sql: "SELECT * FROM orders WHERE user_id = 42", shards: one(42)},
		{sql: "SELECT * FROM orders WHERE 42 = user_id", shards: one(42)},
		{sql: "SELECT * FROM orders o WHERE o.user_id = '42'", shards: one(42)},
		{sql: "SELECT * FROM public.orders WHERE user_id = 42::bigint", shards: one(42)},
		{sql: `SELECT * FROM "orders" WHERE "user_id" = 42 AND status = 'new'`, shards: one(42)},
		{sql: "SELECT * FROM orders WHERE user_id IN (1, 2, 3)", shards: one(1, 2, 3)},
		{sql: "SELECT * FROM orders WHERE user_id = ANY('{1,2}')", shards: one(1, 2)},
		{sql: "SELECT * FROM orders WHERE user_id = 1 OR user_id = 7", shards: one(1, 7)},
		{sql: "SELECT * FROM orders WHERE user_id = 1 OR status = 'x'", shards: all},
		{sql: "SELECT * FROM orders WHERE NOT (user_id = 1)", shards: all},
		{sql: "SELECT * FROM orders WHERE user_id > 5", shards: all},
		{sql: "SELECT * FROM orders WHERE user_id = 4294967296", shards: one(4294967296)},
		{sql: "SELECT * FROM orders WHERE user_id = -9223372036854775808", shards: one(-9223372036854775808)},
		{sql: "SELECT * FROM orders WHERE user_id = 42.5", shards: all},
		{sql: "SELECT * FROM orders WHERE user_id + 0 = 5", shards: all},
		{sql: "SELECT * FROM orders WHERE user_id = 1 AND user_id = 2", shards: contradiction(one(1), one(2))},
		{sql: "SELECT count(*) FROM orders", shards: all, aggs: 1},
		{sql: "SELECT count(*), sum(total), min(created_at), max(total) FROM orders", shards: all, aggs: 4},
		{sql: "SELECT avg(total) FROM orders", shards: all, aggs: 1},
		{sql: "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders", refuse: "ordered aggregate"},
		{sql: "SELECT count(DISTINCT status) FROM orders", shards: all, aggs: 1},
		{sql: "SELECT count(DISTINCT status), count(DISTINCT restaurant_id) FROM orders", refuse: "two different expressions"},
		{sql: "SELECT sum(DISTINCT total) FROM orders", refuse: "only over the shard key"},
		{sql: "SELECT count(DISTINCT user_id) FROM orders", shards: all, aggs: 1},
		{sql: "SELECT count(*) * 2 FROM orders", shards: all, aggs: 2},
		{sql: "SELECT max(status) || 'x' FROM orders", refuse: "expression over aggregates"},
		{sql: "SELECT * FROM orders ORDER BY id", shards: all},
		{sql: "SELECT * FROM orders ORDER BY id OFFSET 2", shards: all},
		{sql: "SELECT id FROM orders ORDER BY id LIMIT 2 OFFSET now()::int", refuse: "OFFSET expression"},
		{sql: "SELECT id FROM orders ORDER BY total", shards: all},
		{sql: "SELECT * FROM orders ORDER BY total + 1", refuse: "SELECT *"},
		{sql: "SELECT * FROM orders ORDER BY id LIMIT 3", shards: all},
		{sql: "SELECT status, count(*) FROM orders GROUP BY status", shards: all, aggs: 1},
		{sql: "SELECT status, count(*) FROM orders GROUP BY ROLLUP (status)", refuse: "ROLLUP"},
		{sql: "SELECT DISTINCT ON (status) status, id FROM orders", refuse: "DISTINCT ON"},
		{sql: "SELECT * FROM orders WHERE user_id = 3 ORDER BY id LIMIT 3", shards: one(3)},
		{sql: "SELECT o.id FROM orders o JOIN users u ON o.user_id = u.id WHERE u.id = 9", shards: one(9)},
		{sql: "SELECT o.id FROM orders o JOIN users u ON o.user_id = u.id", shards: all},
		{sql: "SELECT o.id FROM orders o JOIN users u ON o.restaurant_id = u.id", refuse: "not on their shard keys"},
		{sql: "SELECT o.id FROM orders o JOIN restaurants r ON r.id = o.restaurant_id WHERE o.user_id = 5", shards: one(5)},
		{sql: "SELECT * FROM orders WHERE total > (SELECT avg(total) FROM orders)", refuse: "subquery"},
		{sql: "SELECT * FROM restaurants", shards: nil},
		{sql: "INSERT INTO restaurants (id, name, city, cuisine) VALUES (1, 'a', 'b', 'c')", shards: all},
		{sql: "INSERT INTO orders (id, user_id) VALUES (1, 42)", shards: one(42)},
		{sql: "INSERT INTO orders (id, user_id) VALUES (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)", shards: one(1, 2, 3, 4, 5)},
		{sql: "INSERT INTO orders VALUES (1, 42)", refuse: "column list"},
		{sql: "INSERT INTO orders (id, user_id) VALUES (1, random())", refuse: "no shard key value"},
		{sql: "INSERT INTO orders (id) VALUES (1)", refuse: "no shard key value"},
		{sql: "INSERT INTO orders (id, user_id) SELECT id, 1 FROM users", refuse: "INSERT ... SELECT"},
		{sql: "UPDATE orders SET status = 'x' WHERE user_id = 42", shards: one(42)},
		{sql: "UPDATE orders SET status = 'x'", shards: all},
		{sql: "UPDATE orders SET user_id = 3 WHERE user_id = 42", shards: one(42)}, // guarded: see TestKeyGuard
		{sql: "UPDATE orders SET user_id = user_id + 1 WHERE user_id = 42", refuse: "shard key column"},
		{sql: "DELETE FROM orders WHERE user_id IN (5, 6)", shards: one(5, 6)},
		{sql: "CREATE TABLE foo (id int)", shards: all},
		{sql: "SELECT 1", shards: nil},
		{sql: "SELECT * FROM unknown_table", shards: []int{0}},
		{sql: "SELECT * FROM unknown_table JOIN orders ON true", refuse: "not in the config"},
		{sql: "LISTEN x", refuse: "LISTEN"},
		{sql: "NOTIFY x, 'p'", shards: []int{0}},
		{sql: "COPY orders FROM STDIN", refuse: "COPY"},
		{sql: "SELECT * FROM events WHERE created_at >= '2025-02-01+00' AND created_at < '2025-03-01+00'", shards: []int{1}},
		{sql: "SELECT * FROM events WHERE created_at BETWEEN '2025-02-01' AND '2025-08-01'", shards: []int{1, 2}},
		{sql: "SELECT * FROM events WHERE created_at = '2025-01-01 00:00:00+00'", shards: []int{1}},
		{sql: "SELECT * FROM events WHERE created_at = '2025-01-01'", shards: []int{0, 1}},
		{sql: "SELECT * FROM events WHERE created_at < '2024-06-01'::date", shards: []int{0}},
		{sql: "SELECT * FROM events WHERE created_at > now()", shards: all},
		{sql: "SELECT * FROM events WHERE created_at > '2026-02-01+00' OR created_at < '2024-01-01+00'", shards: []int{0, 3}},
		{sql: "INSERT INTO events (id, kind, created_at) VALUES (1, 'x', '2025-03-04 10:00:00+00')", shards: []int{1}},
		{sql: "EXPLAIN SELECT * FROM orders WHERE user_id = 42", shards: one(42)},
	}
	for _, c := range cases {
		t.Run(c.sql, func(t *testing.T) {
			sts, err := parser.Parse(c.sql)
			if err != nil {
				t.Fatal(err)
			}
			p, err := r.Route(sts[0], nil)
			if c.refuse != "" {
				var u *Unsupported
				if !errors.As(err, &u) || !strings.Contains(err.Error(), c.refuse) || u.Hint == "" {
					t.Fatalf("got plan %+v err %v, want refusal containing %q with a hint", p, err, c.refuse)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.shards != nil && !reflect.DeepEqual(p.Shards, c.shards) {
				t.Fatalf("shards %v, want %v (%s)", p.Shards, c.shards, p.Reason)
			}
			aggs := 0
			if p.Merge != nil {
				for _, col := range p.Merge.Cols {
					if col.Agg != "" {
						aggs++
					}
				}
			}
			if aggs != c.aggs {
				t.Fatalf("aggs %v, want %d", p.Merge, c.aggs)
			}
		})
	}
}

func TestSplitInsertDeparses(t *testing.T) {
	r := testRouter(t)
	sts, _ := parser.Parse("INSERT INTO orders (id, user_id, status) VALUES (1, 1, 'a'), (2, 2, 'b''c'), (3, 3, 'x') RETURNING id")
	p, err := r.Route(sts[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.SQL) != len(p.Shards) || len(p.Shards) < 2 {
		t.Fatalf("plan %+v", p)
	}
	joined := strings.Join(p.SQL, "\n")
	for _, want := range []string{"'b''c'", "RETURNING id"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("split SQL lost %q:\n%s", want, joined)
		}
	}
	if n := strings.Count(joined, "INSERT INTO"); n != len(p.Shards) {
		t.Fatalf("%d statements for %d shards", n, len(p.Shards))
	}
}

func TestKeyGuard(t *testing.T) {
	r := New(goldenTopology(t))
	cases := []struct {
		sql    string
		params Params
		guard  []int
	}{
		// The ORM save pattern: the key written with its own value.
		{"UPDATE orders SET user_id = 42, status = 'x' WHERE user_id = 42", nil, nil},
		{"UPDATE orders SET user_id = $1, status = $2 WHERE user_id = $1", tp("42", "x"), nil},
		// By another column: every shard but the value's must change nothing.
		{"UPDATE orders SET user_id = $1 WHERE id = $2", tp("42", "7"), []int{0, 1, 3}},
		// A real move off the row's shard.
		{"UPDATE orders SET user_id = 1 WHERE user_id = 42", nil, []int{2}},
	}
	for _, c := range cases {
		p, err := r.Route(mustParse(t, c.sql), c.params)
		if err != nil {
			t.Fatalf("%s: %v", c.sql, err)
		}
		if !reflect.DeepEqual(p.KeyGuard, c.guard) {
			t.Errorf("%s: key guard %v, want %v", c.sql, p.KeyGuard, c.guard)
		}
	}
}

func tp(vals ...string) textParams {
	out := make(textParams, len(vals))
	for i := range vals {
		out[i] = &vals[i]
	}
	return out
}

func TestInsertWithoutColumnList(t *testing.T) {
	r := New(goldenTopology(t))
	st := mustParse(t, "INSERT INTO orders VALUES (1, 42, 7), (2, 5, 7)")
	if _, err := r.Route(st, nil); err == nil {
		t.Fatal("routed without knowing the column order")
	}
	r.SetColumnOrder(map[string][]string{"orders": {"id", "user_id", "restaurant_id"}})
	p, err := r.Route(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]bool{PartitionOf(HashInt(42), 4): true, PartitionOf(HashInt(5), 4): true}
	if len(p.Shards) != len(want) {
		t.Fatalf("shards %v, want those of keys 42 and 5", p.Shards)
	}
	for _, s := range p.Shards {
		if !want[s] {
			t.Fatalf("shards %v, want those of keys 42 and 5", p.Shards)
		}
	}
	// The shards disagree: refused again.
	r.SetColumnOrder(map[string][]string{"orders": nil})
	if _, err := r.Route(st, nil); err == nil {
		t.Fatal("routed although the shards disagree on the columns")
	}
}
