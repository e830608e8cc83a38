package router

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// MovingName names the shard a Mover places the moving buckets on.
const MovingName = "(moving)"

// Mover returns a router that routes like r except that buckets (and,
// when rangeTable is set, the interval [from, to) of that range table)
// are on a shard of their own, the returned index (one past r's shards).
// A resharding cutover holds only the writes whose plan under the mover
// names that shard: a write routed elsewhere by its keys touches no row
// of a moving bucket. A statement the mover cannot narrow by key (a
// scatter, a write without a key equality) goes to every serving shard,
// the moving one included. The mover shares r's tables and column order
// (as of the call); it is for classifying, never for running statements.
func (r *Router) Mover(buckets []int, rangeTable string, from, to time.Time) (*Router, int, error) {
	base := r.placing.Load().buckets
	if base == nil {
		return nil, 0, errors.New("moving buckets need a bucket map")
	}
	topo := *r.topo
	moving := len(topo.Shards)
	topo.Shards = append(slices.Clip(slices.Clone(r.topo.Shards)), ShardConfig{Name: MovingName})
	topo.index = maps.Clone(r.topo.index)
	topo.index[MovingName] = moving
	m := &BucketMap{Version: base.Version, Owner: slices.Clone(base.Owner), Ranges: maps.Clone(base.Ranges)}
	for _, b := range buckets {
		if b < 0 || b >= len(m.Owner) {
			return nil, 0, fmt.Errorf("moving bucket %d: not a bucket", b)
		}
		m.Owner[b] = moving
	}
	if rangeTable != "" {
		t := r.topo.Tables[rangeTable]
		if t == nil || t.Strategy != Range {
			return nil, 0, fmt.Errorf("moving range of %s: not a range table in the config", rangeTable)
		}
		ivs, _, err := SplitRange(r.rangesOf(t), from, to, moving)
		if err != nil {
			return nil, 0, fmt.Errorf("moving range of %s: %w", rangeTable, err)
		}
		if m.Ranges == nil {
			m.Ranges = map[string][]Interval{}
		}
		m.Ranges[t.Name] = ivs
	}
	topo.BucketMap = nil
	mr := New(&topo)
	if err := mr.SetBuckets(m); err != nil {
		return nil, 0, err
	}
	mr.keyPos.Store(r.keyPos.Load())
	return mr, moving, nil
}
