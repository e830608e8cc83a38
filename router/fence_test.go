package router

import (
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestMoverSeparatesMovingBuckets: under the mover a write keyed in a
// moving bucket routes to the moving shard, one keyed elsewhere routes as
// before, and what is not narrowed by key reaches the moving shard too.
func TestMoverSeparatesMovingBuckets(t *testing.T) {
	topo, err := bucketTopology(t, 2, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := New(topo)
	moving := []int{2, 6} // both on s0 (b mod 2)
	m, ms, err := r.Mover(moving, "", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if ms != 2 {
		t.Fatalf("moving shard %d, want 2", ms)
	}
	var in, out int
	for k := int64(0); k < 200; k++ {
		b := BucketOf(HashInt(k), 8)
		sql := "UPDATE orders SET n = n + 1 WHERE user_id = " + strconv.FormatInt(k, 10)
		now, err := r.Route(mustParse(t, sql), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.Route(mustParse(t, sql), nil)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(moving, b) {
			in++
			if !slices.Equal(got.Shards, []int{ms}) {
				t.Fatalf("key %d (bucket %d, moving): mover routes to %v", k, b, got.Shards)
			}
		} else {
			out++
			if !slices.Equal(got.Shards, now.Shards) {
				t.Fatalf("key %d (bucket %d): mover routes to %v, router to %v", k, b, got.Shards, now.Shards)
			}
		}
	}
	if in == 0 || out == 0 {
		t.Fatalf("keys in moving buckets %d, elsewhere %d: the test covers nothing", in, out)
	}
	for _, sql := range []string{
		"UPDATE orders SET n = 0 WHERE n > 5",
		"DELETE FROM orders",
		"INSERT INTO orders (user_id, n) VALUES (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 7), (8, 8), (9, 9), (10, 10)",
	} {
		p, err := m.Route(mustParse(t, sql), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(p.Shards, ms) {
			t.Fatalf("%s: mover routes to %v, not the moving shard", sql, p.Shards)
		}
	}
	// The router itself is unchanged.
	if p, _ := r.Route(mustParse(t, "DELETE FROM orders"), nil); slices.Contains(p.Shards, ms) {
		t.Fatalf("router routes to the mover's shard: %v", p.Shards)
	}
	if _, _, err := r.Mover([]int{8}, "", time.Time{}, time.Time{}); err == nil {
		t.Fatal("a bucket past the map was accepted")
	}
}

// TestMoverSeparatesMovingRange: a moving interval of a range table is on
// the moving shard; the rest of its interval stays where it was.
func TestMoverSeparatesMovingRange(t *testing.T) {
	topo, err := NewTopology(&Config{
		Shards: []ShardConfig{{Name: "s0", DSN: "x"}, {Name: "s1", DSN: "x"}, {Name: "s2", DSN: "x"}},
		Tables: map[string]TableConfig{"events": {Strategy: Range, Key: "created_at", Ranges: []RangeConfig{
			{To: "2026-11-01", Shard: "s0"}, {From: "2026-11-01", Shard: "s1"}}}},
		Buckets: 6,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := New(topo)
	from, _ := ParseBound("2026-11-01")
	to, _ := ParseBound("2026-12-01")
	m, ms, err := r.Mover(nil, "events", from, to)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at   string
		want []int
	}{
		{"2026-10-15 00:00:00+00", []int{0}},
		{"2026-11-15 00:00:00+00", []int{ms}},
		{"2026-12-15 00:00:00+00", []int{1}},
	} {
		p, err := m.Route(mustParse(t, "INSERT INTO events (id, created_at) VALUES (1, '"+c.at+"')"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.Shards, c.want) {
			t.Errorf("insert at %s: mover routes to %v, want %v", c.at, p.Shards, c.want)
		}
	}
	p, err := m.Route(mustParse(t, "DELETE FROM events WHERE id = 1"), nil)
	if err != nil || !slices.Contains(p.Shards, ms) {
		t.Errorf("delete without the key: mover routes to %v (%v), want the moving shard among them", p, err)
	}
}
