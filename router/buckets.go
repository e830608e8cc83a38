package router

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// BucketRangeConfig assigns buckets to a shard in the config's bucket_map.
type BucketRangeConfig struct {
	Shard string `yaml:"shard"`
	// Buckets lists bucket numbers and inclusive ranges: "0-15, 32, 40-47".
	Buckets string `yaml:"buckets"`
}

// BucketOf returns the bucket of a key hash among v buckets: the remainder
// r for which satisfies_hash_partition(parent, v, r, key) is true.
func BucketOf(h uint64, v int) int { return PartitionOf(h, v) }

// BucketMap assigns every bucket to a shard index. A BucketMap is immutable
// once given to a Router.
type BucketMap struct {
	// Version numbers the map; a newer map has a larger version.
	Version int64
	// Owner[b] is the index of the shard that holds bucket b.
	Owner []int
	// Stale lists, by shard index, buckets the shard does not own but
	// still holds rows of: a reshard's sources between its cutover and
	// its cleanup. Reads across shards hide them there (stale.go).
	Stale map[int][]int
	// Ranges, by range table name, replaces the config's range map of
	// the tables a reshard moved an interval of (ranges.go).
	Ranges map[string][]Interval
	// StaleRanges lists, by shard index and range table name, intervals
	// the shard gave away and still holds rows of until the cleanup.
	StaleRanges map[int]map[string][]Interval
}

// DefaultBucketMap places bucket b on shard b mod shards: with buckets a
// multiple of shards this is exactly today's hash mod shards placement.
func DefaultBucketMap(buckets, shards int) *BucketMap {
	m := &BucketMap{Owner: make([]int, buckets)}
	for b := range m.Owner {
		m.Owner[b] = b % shards
	}
	return m
}

// Moves lists the buckets whose owner differs between m and next.
func (m *BucketMap) Moves(next *BucketMap) []int {
	var out []int
	for b, o := range m.Owner {
		if b < len(next.Owner) && next.Owner[b] != o {
			out = append(out, b)
		}
	}
	return out
}

// OfShard lists the buckets on shard i, in order.
func (m *BucketMap) OfShard(i int) []int {
	var out []int
	for b, o := range m.Owner {
		if o == i {
			out = append(out, b)
		}
	}
	return out
}

// ParseBucketList reads "0-15, 32, 40-47" into bucket numbers below v.
func ParseBucketList(s string, v int) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		if err != nil {
			return nil, fmt.Errorf("bucket %q is not a number", part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil {
				return nil, fmt.Errorf("bucket range %q is not two numbers", part)
			}
		}
		if a < 0 || b >= v || a > b {
			return nil, fmt.Errorf("bucket range %q is outside 0-%d", part, v-1)
		}
		for x := a; x <= b; x++ {
			out = append(out, x)
		}
	}
	return out, nil
}

// FormatBucketList writes buckets (sorted) as "0-15,32": the inverse of
// ParseBucketList.
func FormatBucketList(bs []int) string {
	var sb strings.Builder
	for i := 0; i < len(bs); {
		j := i
		for j+1 < len(bs) && bs[j+1] == bs[j]+1 {
			j++
		}
		if sb.Len() > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.Itoa(bs[i]))
		if j > i {
			sb.WriteByte('-')
			sb.WriteString(strconv.Itoa(bs[j]))
		}
		i = j + 1
	}
	return sb.String()
}

// resolveBuckets builds the configured bucket map: bucket_map if given,
// else b mod N (which needs V a multiple of N to keep today's placement).
func resolveBuckets(c *Config, index map[string]int) (*BucketMap, error) {
	v, n := c.Buckets, len(c.Shards)
	switch {
	case v == 0 && len(c.BucketMap) == 0:
		return nil, nil
	case v < 0:
		return nil, fmt.Errorf("buckets: %d is not positive", v)
	case v == 0:
		return nil, errors.New("bucket_map: needs buckets (the number of buckets)")
	case n == 0:
		return nil, nil // reported elsewhere
	}
	if len(c.BucketMap) == 0 {
		if v%n != 0 {
			return nil, fmt.Errorf("buckets: %d is not a multiple of the %d shards: give a bucket_map, or buckets a multiple of the shard count so that rows stay where hash mod %d put them", v, n, n)
		}
		return DefaultBucketMap(v, n), nil
	}
	m := &BucketMap{Owner: make([]int, v)}
	for b := range m.Owner {
		m.Owner[b] = -1
	}
	var errs []error
	for i, e := range c.BucketMap {
		s, ok := index[e.Shard]
		if !ok {
			errs = append(errs, fmt.Errorf("bucket_map[%d]: unknown shard %q", i, e.Shard))
			continue
		}
		bs, err := ParseBucketList(e.Buckets, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("bucket_map[%d]: %w", i, err))
			continue
		}
		for _, b := range bs {
			if m.Owner[b] >= 0 {
				errs = append(errs, fmt.Errorf("bucket_map: bucket %d is mapped twice", b))
			}
			m.Owner[b] = s
		}
	}
	var missing []int
	for b, o := range m.Owner {
		if o < 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("bucket_map: buckets %s are not mapped to a shard", FormatBucketList(missing)))
	}
	return m, errors.Join(errs...)
}

// CheckBucketMap reports whether m fits topo: as many buckets as
// configured, and every owner a configured shard.
func (t *Topology) CheckBucketMap(m *BucketMap) error {
	if t.Buckets == 0 {
		return errors.New("the topology has no buckets")
	}
	if len(m.Owner) != t.Buckets {
		return fmt.Errorf("bucket map has %d buckets, the config %d", len(m.Owner), t.Buckets)
	}
	for b, o := range m.Owner {
		if o < 0 || o >= len(t.Shards) {
			return fmt.Errorf("bucket %d: shard index %d is not configured", b, o)
		}
	}
	if err := t.checkRanges(m); err != nil {
		return err
	}
	for sh, bs := range m.Stale {
		if sh < 0 || sh >= len(t.Shards) {
			return fmt.Errorf("stale buckets on shard index %d, which is not configured", sh)
		}
		for _, b := range bs {
			if b < 0 || b >= len(m.Owner) || m.Owner[b] == sh {
				return fmt.Errorf("stale bucket %d on shard %s: not a bucket it gave away", b, t.Shards[sh].Name)
			}
		}
	}
	return nil
}

// placement is the router's current bucket map with the sets derived from
// it. It is swapped whole (Router.SetBuckets), and compiled plans are
// memoised per placement, so a new map never meets a plan made for the old.
type placement struct {
	buckets *BucketMap // nil: hash mod number of shards
	// serving are the shards that hold rows of some table: bucket owners,
	// range targets and the default shard (every shard without buckets).
	// Scatters and reference-table reads go to these only, so a shard that
	// is being filled by a reshard is not read before its cutover.
	serving []int
	// hider hides stale buckets on their old shards; nil: none.
	hider *staleHider
}

func (r *Router) newPlacement(m *BucketMap) *placement {
	p := &placement{buckets: m, hider: r.newHider(m)}
	if m == nil {
		p.serving = r.all
		return p
	}
	used := make([]bool, len(r.topo.Shards))
	for _, o := range m.Owner {
		used[o] = true
	}
	used[r.topo.Default] = true
	for _, t := range r.topo.Tables {
		ivs := t.Ranges
		if mv, ok := m.Ranges[t.Name]; ok {
			ivs = mv
		}
		for _, iv := range ivs {
			used[iv.Shard] = true
		}
	}
	for i, u := range used {
		if u {
			p.serving = append(p.serving, i)
		}
	}
	if len(p.serving) == len(r.all) {
		p.serving = r.all
	}
	return p
}

// SetBuckets switches routing to m atomically: statements routed after it
// returns use m. It fails, changing nothing, if m does not fit the
// topology (CheckBucketMap).
func (r *Router) SetBuckets(m *BucketMap) error {
	if err := r.topo.CheckBucketMap(m); err != nil {
		return err
	}
	r.placing.Store(r.newPlacement(m))
	return nil
}

// Buckets returns the bucket map routing uses now (nil without buckets).
func (r *Router) Buckets() *BucketMap { return r.placing.Load().buckets }

// shardOfHash places a key hash.
func (r *Router) shardOfHash(h uint64) int {
	if m := r.placing.Load().buckets; m != nil {
		return m.Owner[BucketOf(h, len(m.Owner))]
	}
	return PartitionOf(h, len(r.topo.Shards))
}

// serving returns the shards that hold rows now.
func (r *Router) serving() []int { return r.placing.Load().serving }

// shardOfNull places a NULL key: Postgres hash partitioning puts it in
// remainder 0 under every modulus, so in bucket 0.
func (r *Router) shardOfNull() int {
	if m := r.placing.Load().buckets; m != nil {
		return m.Owner[0]
	}
	return 0
}
