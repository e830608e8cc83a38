package router

import (
	"strings"
	"testing"
	"time"
)

func rangeTopology(t *testing.T) *Topology {
	t.Helper()
	cfg := &Config{Buckets: 4, BucketMap: []BucketRangeConfig{{Shard: "s0", Buckets: "0,2"}, {Shard: "s1", Buckets: "1,3"}},
		Tables: map[string]TableConfig{
			"events": {Strategy: Range, Key: "created_at", Ranges: []RangeConfig{{To: "2026-11-01", Shard: "s0"}, {From: "2026-11-01", Shard: "s1"}}},
			"kinds":  {Strategy: Reference},
		},
		Shards: []ShardConfig{{Name: "s0", DSN: "x"}, {Name: "s1", DSN: "x"}, {Name: "s2", DSN: "x"}}}
	topo, err := NewTopology(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

// TestSplitRange: a moved interval splits the one interval holding it;
// one across two intervals, on its own shard or empty is refused.
func TestSplitRange(t *testing.T) {
	topo := rangeTopology(t)
	ivs := topo.Tables["events"].Ranges
	d := func(s string) time.Time { v, _ := ParseBound(s); return v }
	got, src, err := SplitRange(ivs, d("2026-11-01"), d("2026-12-01"), 2)
	if err != nil || src != 1 || len(got) != 3 {
		t.Fatalf("%v %d %v", got, src, err)
	}
	want := []RangeConfig{{To: "2026-11-01T00:00:00Z", Shard: "s0"}, {From: "2026-11-01T00:00:00Z", To: "2026-12-01T00:00:00Z", Shard: "s2"}, {From: "2026-12-01T00:00:00Z", Shard: "s1"}}
	for i, rc := range topo.RangeConfigs(got) {
		if rc != want[i] {
			t.Errorf("interval %d: %+v, want %+v", i, rc, want[i])
		}
	}
	if back, err := topo.ResolveRanges("events", topo.RangeConfigs(got)); err != nil || len(back) != 3 {
		t.Errorf("resolve the split map: %v %v", back, err)
	}
	got, _, err = SplitRange(ivs, d("2026-10-01"), d("2026-10-15"), 1)
	if err != nil || len(got) != 4 || got[0].Shard != 0 || got[1].Shard != 1 || got[2].Shard != 0 || got[3].Shard != 1 {
		t.Errorf("middle of an unbounded interval: %v %v", got, err)
	}
	for _, c := range []struct {
		from, to string
		shard    int
	}{{"2026-10-15", "2026-11-15", 2}, {"2026-11-01", "2026-12-01", 1}, {"2026-12-01", "2026-11-01", 2}} {
		if _, _, err := SplitRange(ivs, d(c.from), d(c.to), c.shard); err == nil {
			t.Errorf("%s..%s to %d: not refused", c.from, c.to, c.shard)
		}
	}
}

// TestMovedRangeRouting: with a published range map the router places
// keys by it, serves the new shard, and hides the stale interval on the
// old one in reads across shards (not in reads of the moved interval).
func TestMovedRangeRouting(t *testing.T) {
	topo := rangeTopology(t)
	r := New(topo)
	ins := mustParse(t, "INSERT INTO events (id, created_at) VALUES (1, '2026-11-15 10:00:00+00')")
	if p, err := r.Route(ins, nil); err != nil || len(p.Shards) != 1 || p.Shards[0] != 1 {
		t.Fatalf("before: %v %v", p, err)
	}
	d := func(s string) time.Time { v, _ := ParseBound(s); return v }
	moved, _, err := SplitRange(topo.Tables["events"].Ranges, d("2026-11-01"), d("2026-12-01"), 2)
	if err != nil {
		t.Fatal(err)
	}
	m := &BucketMap{Version: 2, Owner: []int{0, 1, 0, 1}, Ranges: map[string][]Interval{"events": moved},
		StaleRanges: map[int]map[string][]Interval{1: {"events": {{From: d("2026-11-01"), To: d("2026-12-01"), Shard: 1}}}}}
	if err := r.SetBuckets(m); err != nil {
		t.Fatal(err)
	}
	if r.HashModN() || r.StaleRangeCount() != 1 {
		t.Errorf("HashModN %v, stale ranges %d", r.HashModN(), r.StaleRangeCount())
	}
	if p, err := r.Route(ins, nil); err != nil || len(p.Shards) != 1 || p.Shards[0] != 2 {
		t.Fatalf("after: %v %v", p, err)
	}
	if s := r.Serving(); len(s) != 3 {
		t.Errorf("serving %v, want all three shards", s)
	}
	p, err := r.Route(mustParse(t, "SELECT count(*) FROM events"), nil)
	if err != nil || len(p.Shards) != 3 || p.SQL == nil {
		t.Fatalf("scatter: %v %v", p, err)
	}
	if !strings.Contains(p.SQL[1], `(SELECT * FROM events WHERE NOT COALESCE(created_at >= '2026-11-01 00:00:00+00'::timestamptz AND created_at < '2026-12-01 00:00:00+00'::timestamptz, false)) events`) {
		t.Errorf("s1 not filtered: %s", p.SQL[1])
	}
	if p.SQL[0] != "SELECT count(*) FROM events" || p.SQL[2] != "SELECT count(*) FROM events" {
		t.Errorf("other shards filtered: %v", p.SQL)
	}
	p, err = r.Route(mustParse(t, "SELECT count(*) FROM events WHERE created_at >= '2026-11-02+00' AND created_at < '2026-11-03+00'"), nil)
	if err != nil || len(p.Shards) != 1 || p.Shards[0] != 2 || p.SQL != nil {
		t.Errorf("read of the moved interval: %v %v", p, err)
	}
	// A map naming a table that is not a range table is refused.
	bad := &BucketMap{Version: 3, Owner: []int{0, 1, 0, 1}, Ranges: map[string][]Interval{"kinds": moved}}
	if err := r.SetBuckets(bad); err == nil {
		t.Error("a range map for a reference table was accepted")
	}
}
