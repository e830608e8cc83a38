package reshard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/router"
	"github.com/shardproxy/shardproxy/topology"
)

// RangeMove is a reshard that moves one interval of a range table to
// another shard (PlanRange) instead of buckets.
type RangeMove struct {
	Table string
	// From and To bound the moved interval [From, To) (RFC 3339, UTC).
	From, To string
	// Map is the table's range map after the move.
	Map []router.RangeConfig
}

// rangesNow is the range map of tb that the current version serves.
func (t *Tool) rangesNow(cur *topology.State, tb *router.Table) ([]router.Interval, error) {
	if rcs, ok := cur.Ranges[tb.Name]; ok {
		return t.Topo.ResolveRanges(tb.Name, rcs)
	}
	return tb.Ranges, nil
}

// PlanRange records a reshard that moves the rows of table whose key is
// in [from, to) to shard to. The interval must lie inside one interval of
// the table's current range map, on another shard; that interval is split
// around it.
func (t *Tool) PlanRange(ctx context.Context, table, from, to, shard string) (*State, error) {
	cur, err := t.planCheck(ctx)
	if err != nil {
		return nil, err
	}
	tb := t.Topo.Tables[strings.ToLower(table)]
	if tb == nil || tb.Strategy != router.Range {
		return nil, fmt.Errorf("table %s is not a range table in the config", table)
	}
	target, ok := t.Topo.ShardIndex(shard)
	if !ok {
		return nil, fmt.Errorf("shard %q is not in the config", shard)
	}
	lo, err := router.ParseBound(from)
	if err != nil {
		return nil, fmt.Errorf("range from: %w", err)
	}
	hi, err := router.ParseBound(to)
	if err != nil {
		return nil, fmt.Errorf("range to: %w", err)
	}
	ivs, err := t.rangesNow(cur, tb)
	if err != nil {
		return nil, err
	}
	next, src, err := router.SplitRange(ivs, lo, hi, target)
	if err != nil {
		return nil, fmt.Errorf("table %s: %w", tb.Name, err)
	}
	st := &State{Phase: Planned, FromVersion: cur.Version, Buckets: len(cur.Owners), Owners: cur.Owners, Started: time.Now().UTC(),
		Moves:  []Move{{From: t.Topo.Shards[src].Name, To: shard}},
		Tables: []Table{{Name: tb.Name, Key: tb.Key}},
		Range: &RangeMove{Table: tb.Name, From: lo.Format(time.RFC3339Nano), To: hi.Format(time.RFC3339Nano),
			Map: t.Topo.RangeConfigs(next)}}
	if err := t.save(ctx, st); err != nil {
		return nil, err
	}
	t.printPlan(st)
	return st, nil
}

// planCheck is what every plan needs: no reshard under way, a published
// version, no fence.
func (t *Tool) planCheck(ctx context.Context) (*topology.State, error) {
	if old, err := t.Load(ctx); err != nil {
		return nil, err
	} else if old != nil && old.Phase != Cleaned && old.Phase != Aborted {
		return nil, fmt.Errorf("a reshard is already %s: finish it (cutover, cleanup) or abort it", old.Phase)
	}
	cur, err := t.current(ctx)
	if err != nil {
		return nil, err
	}
	if cur.Version == 0 {
		return nil, errors.New("no topology version in the metadata schema: start a proxy with a metadata section first")
	}
	if cur.Fence != nil {
		return nil, fmt.Errorf("a cutover fence (%d) is active: run reshard abort", cur.Fence.ID)
	}
	return cur, nil
}

// moved is the SQL condition selecting the moving rows of tb: its keys in
// the move's buckets, or in the moved range.
func (t *Tool) moved(st *State, tb Table, buckets []int) (string, error) {
	if st.Range == nil {
		return bucketFilter(tb, st.Buckets, buckets), nil
	}
	rt := t.Topo.Tables[st.Range.Table]
	if rt == nil {
		return "", fmt.Errorf("table %s is no longer a range table in the config", st.Range.Table)
	}
	ivs, err := t.movedRange(st)
	if err != nil {
		return "", err
	}
	return router.RangeCondition(rt, ivs), nil
}

func (t *Tool) movedRange(st *State) ([]router.Interval, error) {
	lo, err := router.ParseBound(st.Range.From)
	if err != nil {
		return nil, err
	}
	hi, err := router.ParseBound(st.Range.To)
	if err != nil {
		return nil, err
	}
	return []router.Interval{{From: lo, To: hi}}, nil
}

// published reports whether cur is the map the reshard plans (a cutover
// published it).
func (st *State) published(cur *topology.State) bool {
	if cur.Version <= st.FromVersion {
		return false
	}
	if st.Range == nil {
		return slices.Equal(cur.Owners, st.Owners)
	}
	return slices.Equal(cur.Ranges[st.Range.Table], st.Range.Map)
}

// publishMap publishes the reshard's map as the version after cur, with
// the rows the sources keep until cleanup marked stale.
func (t *Tool) publishMap(ctx context.Context, meta *pgx.Conn, st *State, cur int64) (int64, error) {
	if st.Range != nil {
		stale := []topology.StaleRange{{Table: st.Range.Table, From: st.Range.From, To: st.Range.To}}
		return t.Store.PublishRangeOn(ctx, meta, cur, "reshard range", st.Range.Table, st.Range.Map, st.Moves[0].From, stale)
	}
	stale := map[string][]int{}
	for _, m := range st.Moves {
		stale[m.From] = append(stale[m.From], m.Buckets...)
	}
	for _, bs := range stale {
		sort.Ints(bs)
	}
	return t.Store.PublishStaleOn(ctx, meta, st.Owners, cur, "reshard", stale)
}
