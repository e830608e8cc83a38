package router

import (
	"testing"

	"github.com/shardproxy/shardproxy/parser"
)

// TestTemplateRoutingNeverNarrower checks the simple-protocol fast path
// against the full parse: whenever the template (constants as parameters)
// is routed, the full parse must route too (no refusal skipped) and the
// template's shards must include all of the full parse's shards.
func TestTemplateRoutingNeverNarrower(t *testing.T) {
	r := New(goldenTopology(t))
	corpus := []string{
		"SELECT * FROM orders WHERE user_id = 42",
		"SELECT * FROM orders WHERE user_id = -42",
		"SELECT * FROM orders WHERE user_id = '42'",
		"SELECT * FROM orders WHERE user_id = 42::bigint",
		"SELECT * FROM orders WHERE user_id = 42.5",
		"SELECT * FROM orders WHERE user_id = 4294967296",
		"SELECT * FROM orders WHERE user_id IN (1, 2, 3)",
		"SELECT * FROM orders WHERE user_id = ANY('{1,2}')",
		"SELECT * FROM orders WHERE user_id = 1 OR user_id = 7",
		"SELECT * FROM orders WHERE user_id = 1 AND user_id = 2",
		"SELECT * FROM orders WHERE user_id - 1 = 5",
		"SELECT * FROM orders WHERE user_id = 3 ORDER BY id LIMIT 3",
		"SELECT * FROM orders ORDER BY 1 LIMIT 3",
		"SELECT count(*) FROM orders WHERE total > 10",
		"SELECT count(*) * 2 FROM orders",
		"SELECT o.id FROM orders o JOIN users u ON o.user_id = u.id WHERE u.id = 9",
		"SELECT * FROM restaurants WHERE id = 5",
		"INSERT INTO orders (id, user_id) VALUES (1, 42)",
		"INSERT INTO orders (id, user_id) VALUES (1, -42)",
		"INSERT INTO orders (id, user_id) VALUES (1, 1), (2, 2)",
		"INSERT INTO orders VALUES (1, 42)",
		"UPDATE orders SET status = 'x' WHERE user_id = 42",
		"UPDATE orders SET user_id = 3 WHERE user_id = 42",
		"DELETE FROM orders WHERE user_id IN (5, 6)",
		"SELECT * FROM events WHERE created_at >= '2025-02-01+00' AND created_at < '2025-03-01+00'",
		"SELECT * FROM events WHERE created_at BETWEEN '2025-02-01' AND '2025-08-01'",
		"SELECT * FROM events WHERE created_at = '2025-01-01'::date",
		"SELECT * FROM events WHERE created_at < '2024-06-01'::timestamptz",
		"INSERT INTO events (id, kind, created_at) VALUES (1, 'x', '2025-03-04 10:00:00+00')",
		"INSERT INTO carts (session_id, item) VALUES (42, 1)",
		"INSERT INTO carts (session_id, item) VALUES (1e3, 1)",
		"SELECT * FROM carts WHERE session_id = 42",
		"SELECT * FROM carts WHERE session_id = '42'",
		"SELECT * FROM orders WHERE user_id = 1e3",
		"SELECT 1",
	}
	checked := 0
	for _, sql := range corpus {
		key, consts, ok := parser.Strip(sql)
		if !ok {
			continue
		}
		tmpl, err := parser.Parse(key)
		if err != nil || len(tmpl) != 1 {
			continue
		}
		tp, terr := r.Route(tmpl[0], consts)
		if terr != nil || tp.SQL != nil {
			continue // the proxy takes the full path
		}
		checked++
		full, _ := parser.Parse(sql)
		fp, ferr := r.Route(full[0], nil)
		if ferr != nil {
			t.Errorf("%s: template accepted (%v) but the full parse refuses: %v", sql, tp.Shards, ferr)
			continue
		}
		if !isSuperset(tp.Shards, fp.Shards) && !fp.Any {
			t.Errorf("%s: template routes to %v, full parse to %v", sql, tp.Shards, fp.Shards)
		}
		if (tp.Merge == nil) != (fp.Merge == nil) {
			t.Errorf("%s: merge differs: %v vs %v", sql, tp.Merge, fp.Merge)
		}
	}
	if checked < 20 {
		t.Fatalf("only %d statements went through the template path", checked)
	}
}

func anyShard(p *Plan) bool {
	return p.Reason == "reference table read: any shard" || p.Reason == "no table: any shard"
}

func isSuperset(a, b []int) bool {
	for _, x := range b {
		found := false
		for _, y := range a {
			found = found || x == y
		}
		if !found {
			return false
		}
	}
	return true
}
