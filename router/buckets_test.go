package router

import (
	"math/rand"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func bucketTopology(t *testing.T, shards int, buckets int, m []BucketRangeConfig) (*Topology, error) {
	t.Helper()
	cfg := &Config{Buckets: buckets, BucketMap: m, Tables: map[string]TableConfig{
		"orders": {Strategy: Hash, Key: "user_id"},
		"carts":  {Strategy: Hash, Key: "session_id", KeyType: "text"},
		"cities": {Strategy: Reference},
	}}
	for i := 0; i < shards; i++ {
		cfg.Shards = append(cfg.Shards, ShardConfig{Name: "s" + strconv.Itoa(i), DSN: "x"})
	}
	return NewTopology(cfg)
}

// TestBucketsKeepTodaysPlacement: with V a multiple of N and bucket b on
// shard b mod N, every key routes where hash mod N put it.
func TestBucketsKeepTodaysPlacement(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, n := range []int{1, 2, 3, 4} {
		for _, v := range []int{n, 4 * n, 64 * n, 1024 * n} {
			topo, err := bucketTopology(t, n, v, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := New(topo)
			for i := 0; i < 2000; i++ {
				k := rng.Int63() - rng.Int63()
				if got, want := r.shardOfHash(HashInt(k)), PartitionOf(HashInt(k), n); got != want {
					t.Fatalf("N=%d V=%d key %d: bucket routing %d, hash mod N %d", n, v, k, got, want)
				}
				// The identity behind it: (h mod V) mod N == h mod N when N | V.
				if BucketOf(HashInt(k), v)%n != PartitionOf(HashInt(k), n) {
					t.Fatalf("N=%d V=%d key %d: bucket mod N differs", n, v, k)
				}
				s := strconv.FormatInt(k, 36)
				if got, want := r.shardOfHash(HashText(s)), PartitionOf(HashText(s), n); got != want {
					t.Fatalf("N=%d V=%d text key %q: %d, want %d", n, v, s, got, want)
				}
			}
			p, err := r.Route(mustParse(t, "SELECT * FROM orders WHERE user_id = 42"), nil)
			if err != nil || !reflect.DeepEqual(p.Shards, []int{PartitionOf(HashInt(42), n)}) {
				t.Fatalf("N=%d V=%d: %v %v", n, v, p, err)
			}
		}
	}
}

func TestBucketConfigValidation(t *testing.T) {
	for _, c := range []struct {
		name    string
		shards  int
		buckets int
		m       []BucketRangeConfig
		err     string
	}{
		{"not a multiple", 3, 8, nil, "not a multiple"},
		{"negative", 2, -4, nil, "not positive"},
		{"map without buckets", 2, 0, []BucketRangeConfig{{Shard: "s0", Buckets: "0"}}, "needs buckets"},
		{"twice", 2, 4, []BucketRangeConfig{{Shard: "s0", Buckets: "0-2"}, {Shard: "s1", Buckets: "2-3"}}, "bucket 2 is mapped twice"},
		{"missing", 2, 8, []BucketRangeConfig{{Shard: "s0", Buckets: "0-2"}, {Shard: "s1", Buckets: "4,6"}}, "buckets 3,5,7 are not mapped"},
		{"outside", 2, 4, []BucketRangeConfig{{Shard: "s0", Buckets: "0-4"}}, "outside 0-3"},
		{"unknown shard", 2, 2, []BucketRangeConfig{{Shard: "s9", Buckets: "0-1"}}, "unknown shard"},
		{"garbage", 2, 2, []BucketRangeConfig{{Shard: "s0", Buckets: "a-b"}}, "not a number"},
		{"ok", 3, 6, []BucketRangeConfig{{Shard: "s0", Buckets: "0-1"}, {Shard: "s1", Buckets: "2, 3"}, {Shard: "s2", Buckets: "4-5"}}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := bucketTopology(t, c.shards, c.buckets, c.m)
			switch {
			case c.err == "" && err != nil:
				t.Fatal(err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("error %v, want %q", err, c.err)
			}
		})
	}
}

func TestBucketListRoundTrip(t *testing.T) {
	for _, s := range []string{"0", "0-3", "0-3,5,7-9", "1,3,5"} {
		bs, err := ParseBucketList(s, 16)
		if err != nil {
			t.Fatal(err)
		}
		if got := FormatBucketList(bs); got != s {
			t.Errorf("%s: round trip %s", s, got)
		}
	}
}

// TestSetBucketsSwitchesCachedPlans: a statement routed (and its plan
// memoised) under one map routes by the new map after SetBuckets, and
// scatters reach only shards that own buckets.
func TestSetBucketsSwitchesCachedPlans(t *testing.T) {
	topo, err := bucketTopology(t, 4, 8, []BucketRangeConfig{{Shard: "s0", Buckets: "0-3"}, {Shard: "s1", Buckets: "4-7"}})
	if err != nil {
		t.Fatal(err)
	}
	r := New(topo)
	key := int64(0)
	for BucketOf(HashInt(key), 8) != 2 {
		key++
	}
	st := mustParse(t, "SELECT * FROM orders WHERE user_id = "+strconv.FormatInt(key, 10))
	scatter := mustParse(t, "SELECT count(*) FROM orders")
	ref := mustParse(t, "SELECT * FROM cities")
	check := func(want, wantScatter []int) {
		t.Helper()
		p, err := r.Route(st, nil)
		if err != nil || !reflect.DeepEqual(p.Shards, want) {
			t.Fatalf("point: %v %v, want %v", p, err, want)
		}
		p, err = r.Route(scatter, nil)
		if err != nil || !reflect.DeepEqual(p.Shards, wantScatter) {
			t.Fatalf("scatter: %v %v, want %v", p, err, wantScatter)
		}
		for i := 0; i < 8; i++ {
			p, err = r.Route(ref, nil)
			if err != nil || len(p.Shards) != 1 || !containsShard(wantScatter, p.Shards[0]) {
				t.Fatalf("reference read: %v %v, want one of %v", p, err, wantScatter)
			}
		}
	}
	check([]int{0}, []int{0, 1})
	next := &BucketMap{Version: 2, Owner: []int{0, 0, 2, 0, 1, 1, 3, 1}}
	if err := r.SetBuckets(next); err != nil {
		t.Fatal(err)
	}
	check([]int{2}, []int{0, 1, 2, 3})
	if got := r.Buckets(); got != next {
		t.Fatalf("Buckets() = %v", got)
	}
	if err := r.SetBuckets(&BucketMap{Owner: []int{0, 0, 9, 0, 1, 1, 3, 1}}); err == nil {
		t.Fatal("a map naming shard 9 was accepted")
	}
	if err := r.SetBuckets(&BucketMap{Owner: []int{0}}); err == nil {
		t.Fatal("a map of the wrong size was accepted")
	}
	check([]int{2}, []int{0, 1, 2, 3})
	// NULL keys live in bucket 0 (remainder 0 under every modulus).
	if s := r.shardOfNull(); s != 0 {
		t.Fatalf("NULL key on shard %d", s)
	}
	if moves := DefaultBucketMap(8, 2).Moves(next); !reflect.DeepEqual(moves, []int{1, 2, 3, 4, 6}) {
		t.Fatalf("moves %v", moves)
	}
}

func containsShard(set []int, s int) bool {
	for _, x := range set {
		if x == s {
			return true
		}
	}
	return false
}
