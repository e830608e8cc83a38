package integration

import (
	"context"
	"testing"
)

// TestMergeMemoryCap: a cross-shard GROUP BY that needs more memory than
// merge_memory_mb fails with 54000 (never a partial answer), the session
// goes on, and the same query under the default limit is answered. The
// limit is reloadable.
func TestMergeMemoryCap(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	insertOrders(t, c, "orders", 700000, 300)
	const q = "SELECT repeat(id::text, 2000) AS k, count(*) FROM orders WHERE id BETWEEN 700000 AND 700299 GROUP BY 1"

	small := env.cfg
	small.MergeMemoryMB = 1
	if err := env.srv.Apply(small); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := env.srv.Apply(env.cfg); err != nil {
			t.Fatal(err)
		}
	}()
	if _, err := c.Exec(ctx, q); pgCode(err) != "54000" {
		t.Fatalf("GROUP BY over merge_memory_mb: %v, want SQLSTATE 54000", err)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM orders WHERE id BETWEEN 700000 AND 700299").Scan(&n); err != nil || n != 300 {
		t.Fatalf("session after 54000: %d, %v", n, err)
	}
	if err := env.srv.Apply(env.cfg); err != nil {
		t.Fatal(err)
	}
	rows, err := c.Query(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	groups := 0
	for rows.Next() {
		groups++
	}
	if rows.Err() != nil || groups != 300 {
		t.Fatalf("%d groups, %v; want 300", groups, rows.Err())
	}
}
