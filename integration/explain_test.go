package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestExplainMultiShard: EXPLAIN of a multi-shard read shows the proxy's
// plan with every shard's plan beneath (issue #17, item 3); EXPLAIN ANALYZE
// runs on every shard and reports the rows they returned in all; a
// single-shard EXPLAIN is the shard's own.
func TestExplainMultiShard(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	for i := 0; i < 12; i++ {
		if _, err := c.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES ($1, $2, 1, 5, 'explain')", 1_900_000+i, 1_900_000+i); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { c.Exec(context.Background(), "DELETE FROM orders WHERE status = 'explain'") })
	explain := func(sql string) []string {
		t.Helper()
		rows, err := c.Query(ctx, sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return lines
	}
	shardSections := func(lines []string) int {
		n := 0
		for _, l := range lines {
			if strings.HasPrefix(l, "  ->  Shard s") {
				n++
			}
		}
		return n
	}

	lines := explain("EXPLAIN SELECT count(*) FROM orders")
	if !strings.HasPrefix(lines[0], "shardproxy: Proxy") || !strings.Contains(lines[0], fmt.Sprintf("%d shards", nShards)) || shardSections(lines) != nShards {
		t.Errorf("EXPLAIN of a fan-out:\n%s", strings.Join(lines, "\n"))
	}
	// A statement rewritten per shard (LIMIT pushed down): each shard's
	// SQL and plan.
	lines = explain("EXPLAIN SELECT id FROM orders ORDER BY created_at DESC LIMIT 3")
	if all := strings.Join(lines, "\n"); !strings.Contains(lines[0], "Proxy Merge") || shardSections(lines) != nShards || !strings.Contains(all, "LIMIT 3") || !strings.Contains(all, "Limit") {
		t.Errorf("EXPLAIN of a merge-sorted LIMIT:\n%s", all)
	}
	// EXPLAIN ANALYZE: every shard runs it; the total is the real one.
	var want int64
	if err := c.QueryRow(ctx, "SELECT count(*) FROM orders WHERE status = 'explain'").Scan(&want); err != nil {
		t.Fatal(err)
	}
	lines = explain("EXPLAIN ANALYZE SELECT id FROM orders WHERE status = 'explain'")
	if last := lines[len(lines)-1]; last != fmt.Sprintf("  Rows from the shards (actual): %d", want) || shardSections(lines) != nShards {
		t.Errorf("EXPLAIN ANALYZE, want %d rows in all:\n%s", want, strings.Join(lines, "\n"))
	}
	// One shard: the shard's own plan, as before.
	lines = explain("EXPLAIN SELECT * FROM orders WHERE user_id = 1900001")
	if strings.HasPrefix(lines[0], "shardproxy:") {
		t.Errorf("a single-shard EXPLAIN got the proxy's plan:\n%s", strings.Join(lines, "\n"))
	}
	// Other formats keep the shards' answer (no text lines mixed in).
	if _, err := c.Exec(ctx, "EXPLAIN (FORMAT JSON) SELECT count(*) FROM orders"); err != nil {
		t.Errorf("EXPLAIN (FORMAT JSON): %v", err)
	}
}
