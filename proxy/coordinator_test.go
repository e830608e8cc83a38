package proxy

import (
	"testing"

	"github.com/shardproxy/shardproxy/parser"
)

// TestCoordinatorRead: only reads (and their EXPLAIN) may go to the
// coordinator; writes, locking reads, SELECT INTO and hinted statements
// never do.
func TestCoordinatorRead(t *testing.T) {
	for sql, want := range map[string]bool{
		"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders": true,
		"VALUES (1), (2)": true,
		"EXPLAIN SELECT id, rank() OVER (ORDER BY total) FROM orders":                           true,
		"EXPLAIN ANALYZE SELECT count(*) FROM orders o JOIN users u ON u.name = o.status":       true,
		"SELECT * FROM orders FOR UPDATE":                                                       false,
		"SELECT * INTO t2 FROM orders":                                                          false,
		"UPDATE orders SET total = 0 FROM users u WHERE u.name = orders.status":                 false,
		"EXPLAIN ANALYZE UPDATE orders SET total = 0":                                           false,
		"WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d":                     false,
		"/* shard: s1 */ SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders": false,
		"CREATE TABLE x (a int)":                                                                false,
	} {
		stmts, err := parser.Parse(sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if got := coordinatorRead(stmts[0]); got != want {
			t.Errorf("coordinatorRead(%s) = %v, want %v", sql, got, want)
		}
	}
}
