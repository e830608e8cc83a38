package topology_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/router"
	"github.com/shardproxy/shardproxy/topology"
)

// recorder is a Target that remembers what it was given.
type recorder struct {
	mu     sync.Mutex
	states []*topology.State
}

func (r *recorder) ApplyTopology(s *topology.State) (int64, int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, s)
	var f int64
	if s.Fence != nil {
		f = s.Fence.ID
	}
	return s.Version, f, nil
}

func (r *recorder) last() *topology.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.states[len(r.states)-1]
}

func TestStoreWatchHeartbeat(t *testing.T) {
	set := localpg.StartT(t, localpg.Options{N: 1, Database: "meta"})
	dsn := set.Clusters[0].DSN("meta")
	topo, err := router.NewTopology(&router.Config{Buckets: 4,
		Shards: []router.ShardConfig{{Name: "a", DSN: dsn}, {Name: "b", DSN: dsn}},
		Tables: map[string]router.TableConfig{"events": {Strategy: router.Range, Key: "created_at",
			Ranges: []router.RangeConfig{{To: "2026-11-01", Shard: "a"}, {From: "2026-11-01", Shard: "b"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	store, err := topology.Start(ctx, topology.Config{Poll: 5 * time.Second, ProxyID: "p1"}, dsn, topo, rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.last(); got.Version != 1 || strings.Join(got.Owners, ",") != "a,b,a,b" {
		t.Fatalf("seeded state %+v", got)
	}
	// A second Init does not reseed.
	if err := store.Init(ctx, []string{"b", "b", "b", "b"}); err != nil {
		t.Fatal(err)
	}
	wait := func(what string, ok func(*topology.State) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !ok(rec.last()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: last state %+v", what, rec.last())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Notifications, not the 5 s poll, bring the changes.
	id, err := store.SetFence(ctx, []string{"a"}, 2, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wait("fence", func(s *topology.State) bool { return s.Fence != nil && s.Fence.ID == id && s.Fence.Until == 2 })
	if _, err := store.Publish(ctx, []string{"a", "b", "b", "b"}, 7, "x"); err == nil {
		t.Fatal("publish over a stale version succeeded")
	}
	v, err := store.Publish(ctx, []string{"a", "b", "b", "b"}, 1, "test")
	if err != nil || v != 2 {
		t.Fatalf("publish: %d %v", v, err)
	}
	wait("version 2", func(s *topology.State) bool { return s.Version == 2 && s.Fence == nil })
	m, err := rec.last().BucketMap(topo)
	if err != nil || m.Owner[2] != 1 {
		t.Fatalf("bucket map %v %v", m, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ps, err := store.Proxies(ctx, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) == 1 && ps[0].ID == "p1" && ps[0].Version == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("heartbeats %+v", ps)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A map naming an unknown shard is refused by BucketMap.
	bad := &topology.State{Version: 3, Owners: []string{"a", "z", "a", "b"}}
	if _, err := bad.BucketMap(topo); err == nil {
		t.Fatal("unknown shard accepted")
	}
	// A moved range: the new range map and the stale interval arrive
	// together, a later version carries the map over, ClearStale ends
	// the stale interval.
	moved := []router.RangeConfig{{To: "2026-11-01", Shard: "a"}, {From: "2026-11-01", To: "2026-12-01", Shard: "a"}, {From: "2026-12-01", Shard: "b"}}
	if v, err := store.PublishRange(ctx, 2, "range", "events", moved, "b", []topology.StaleRange{{Table: "events", From: "2026-11-01", To: "2026-12-01"}}); err != nil || v != 3 {
		t.Fatalf("publish range: %d %v", v, err)
	}
	wait("version 3", func(s *topology.State) bool { return s.Version == 3 })
	if st := rec.last(); len(st.Ranges["events"]) != 3 || st.Ranges["events"][1] != moved[1] || st.StaleRangeCount() != 1 || strings.Join(st.Owners, ",") != "a,b,b,b" {
		t.Fatalf("version 3: %+v", st)
	}
	if m, err := rec.last().BucketMap(topo); err != nil || m.Ranges["events"][1].Shard != 0 || len(m.StaleRanges[1]["events"]) != 1 {
		t.Fatalf("version 3 map: %+v %v", m, err)
	}
	if _, err := store.Publish(ctx, []string{"a", "b", "a", "b"}, 3, "buckets"); err != nil {
		t.Fatal(err)
	}
	wait("version 4", func(s *topology.State) bool { return s.Version == 4 })
	if st := rec.last(); len(st.Ranges["events"]) != 3 || st.Ranges["events"][1] != moved[1] {
		t.Fatalf("version 4 lost the range map: %+v", st)
	}
	if err := store.ClearStale(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	wait("stale range cleared", func(s *topology.State) bool { return s.StaleRangeCount() == 0 })
	cancel()
	// Stopping removes the heartbeat.
	deadline = time.Now().Add(10 * time.Second)
	for {
		ps, err := store.Proxies(context.Background(), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("heartbeat left after stop: %+v", ps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
