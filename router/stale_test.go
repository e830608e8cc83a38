package router

import (
	"errors"
	"strings"
	"testing"
)

// TestStaleHidden: with stale buckets on s0 (a reshard from s0,s1 to
// s0..s3 cut over, not cleaned up), a statement across shards reads s0
// through a filter hiding them, in every read shape; other shards and
// key-routed statements run as sent; the cached plans of the map without
// stale buckets are not reused.
func TestStaleHidden(t *testing.T) {
	topo, err := bucketTopology(t, 4, 8, []BucketRangeConfig{{Shard: "s0", Buckets: "0,2,4,6"}, {Shard: "s1", Buckets: "1,3,5,7"}})
	if err != nil {
		t.Fatal(err)
	}
	r := New(topo)
	count := mustParse(t, "SELECT count(*) FROM orders")
	if p, err := r.Route(count, nil); err != nil || p.SQL != nil || r.HashModN() {
		t.Fatalf("before: %v %v", p, err)
	}
	// Buckets 2 and 6 moved s0 -> s2, 3 and 7 s1 -> s3.
	m := &BucketMap{Version: 2, Owner: []int{0, 1, 2, 3, 0, 1, 2, 3}, Stale: map[int][]int{0: {2, 6}, 1: {3, 7}}}
	if err := r.SetBuckets(m); err != nil {
		t.Fatal(err)
	}
	if r.HashModN() {
		t.Error("HashModN with stale buckets")
	}
	for _, c := range []struct{ sql, s0 string }{
		{"SELECT count(*) FROM orders", "SELECT count(*) FROM (SELECT * FROM orders WHERE NOT (satisfies_hash_partition('shardproxy_meta.hash_int8'::regclass, 8, 2, user_id::bigint) OR satisfies_hash_partition('shardproxy_meta.hash_int8'::regclass, 8, 6, user_id::bigint))) orders"},
		{"SELECT a.id FROM orders a LEFT JOIN orders b ON a.user_id = b.user_id AND b.v > 1 ORDER BY 1", "LEFT JOIN (SELECT * FROM orders WHERE NOT"},
		{"UPDATE orders SET v = 1 WHERE v = 0", "WHERE v = 0 AND NOT (satisfies_hash_partition('shardproxy_meta.hash_int8'::regclass, 8, 2, orders.user_id::bigint)"},
		{"SELECT count(*) FROM carts", "'shardproxy_meta.hash_text'::regclass, 8, 2, session_id::text"},
	} {
		p, err := r.Route(mustParse(t, c.sql), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.sql, err)
		}
		if len(p.Shards) != 4 || p.SQL == nil {
			t.Fatalf("%s: %v", c.sql, p)
		}
		if !strings.Contains(p.SQL[0], c.s0) {
			t.Errorf("%s on s0: %s", c.sql, p.SQL[0])
		}
		if !strings.Contains(p.SQL[1], "8, 3,") || strings.Contains(p.SQL[1], "8, 2,") {
			t.Errorf("%s on s1: %s", c.sql, p.SQL[1])
		}
		if strings.Contains(p.SQL[2], "satisfies_hash_partition") || strings.Contains(p.SQL[3], "satisfies_hash_partition") {
			t.Errorf("%s: a shard without stale buckets is filtered: %v", c.sql, p.SQL)
		}
	}
	for _, sql := range []string{"SELECT * FROM orders WHERE user_id = 42", "SELECT count(*) FROM cities", "ALTER TABLE orders ADD COLUMN x int"} {
		p, err := r.Route(mustParse(t, sql), nil)
		if err != nil || p.SQL != nil {
			t.Errorf("%s: %v %v", sql, p, err)
		}
	}
	var u *Unsupported
	if _, err := r.Route(mustParse(t, "SELECT count(*) FROM orders TABLESAMPLE SYSTEM (50)"), nil); !errors.As(err, &u) {
		t.Errorf("TABLESAMPLE: %v, want a refusal", err)
	}
	if q, err := r.HideStale(0, "COPY orders TO STDOUT"); err != nil || !strings.HasPrefix(q, "COPY (SELECT * FROM (SELECT * FROM orders WHERE NOT") {
		t.Errorf("COPY: %s %v", q, err)
	}
	// Cleanup done: a map without stale buckets routes as sent again.
	if err := r.SetBuckets(&BucketMap{Version: 2, Owner: m.Owner}); err != nil {
		t.Fatal(err)
	}
	if p, err := r.Route(count, nil); err != nil || p.SQL != nil {
		t.Fatalf("after cleanup: %v %v", p, err)
	}
	if err := r.SetBuckets(&BucketMap{Version: 3, Owner: m.Owner, Stale: map[int][]int{2: {2}}}); err == nil {
		t.Error("a stale bucket the shard owns was accepted")
	}
}
