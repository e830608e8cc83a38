package router

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Moved ranges: a reshard can move one interval of a range table to
// another shard. The range map then lives in the versioned topology
// (BucketMap.Ranges, by table) and replaces the config's ranges of that
// table; until the reshard's cleanup the old shard still holds the rows of
// the interval (BucketMap.StaleRanges), which reads across shards hide
// there like stale buckets (stale.go).

// ResolveRanges validates a range map of table (as the config writes it)
// against the topology: the table is a range table, the intervals tile a
// contiguous span, every shard is configured.
func (t *Topology) ResolveRanges(table string, rs []RangeConfig) ([]Interval, error) {
	tb := t.Tables[table]
	if tb == nil || tb.Strategy != Range {
		return nil, fmt.Errorf("table %s is not a range table in the config", table)
	}
	return resolveRanges(table, rs, t.index)
}

// RangeConfigs writes intervals back in the config's form (bounds in UTC,
// RFC 3339), the inverse of ResolveRanges.
func (t *Topology) RangeConfigs(ivs []Interval) []RangeConfig {
	out := make([]RangeConfig, 0, len(ivs))
	for _, iv := range ivs {
		rc := RangeConfig{Shard: t.Shards[iv.Shard].Name}
		if !iv.From.IsZero() {
			rc.From = iv.From.UTC().Format(time.RFC3339Nano)
		}
		if !iv.To.IsZero() {
			rc.To = iv.To.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, rc)
	}
	return out
}

// checkRanges is CheckBucketMap's part for moved ranges.
func (t *Topology) checkRanges(m *BucketMap) error {
	for name, ivs := range m.Ranges {
		tb := t.Tables[name]
		if tb == nil || tb.Strategy != Range {
			return fmt.Errorf("range map of %s: not a range table in the config", name)
		}
		if len(ivs) == 0 {
			return fmt.Errorf("range map of %s is empty", name)
		}
		for _, iv := range ivs {
			if iv.Shard < 0 || iv.Shard >= len(t.Shards) {
				return fmt.Errorf("range map of %s: shard index %d is not configured", name, iv.Shard)
			}
		}
	}
	for sh, tabs := range m.StaleRanges {
		if sh < 0 || sh >= len(t.Shards) {
			return fmt.Errorf("stale ranges on shard index %d, which is not configured", sh)
		}
		for name := range tabs {
			if tb := t.Tables[name]; tb == nil || tb.Strategy != Range {
				return fmt.Errorf("stale ranges of %s: not a range table in the config", name)
			}
		}
	}
	return nil
}

// rangesOf returns the range map routing uses for t now: the topology's
// version when a reshard moved a range of t, else the config's.
func (r *Router) rangesOf(t *Table) []Interval {
	if m := r.placing.Load().buckets; m != nil {
		if ivs, ok := m.Ranges[t.Name]; ok {
			return ivs
		}
	}
	return t.Ranges
}

// RangesOf is rangesOf for callers outside the router (the reshard tool,
// tests).
func (r *Router) RangesOf(t *Table) []Interval { return r.rangesOf(t) }

// StaleRangeCount is the number of intervals some shard gave away and
// still holds rows of (0 when no range move awaits its cleanup).
func (r *Router) StaleRangeCount() int {
	m := r.placing.Load().buckets
	if m == nil {
		return 0
	}
	n := 0
	for _, tabs := range m.StaleRanges {
		for _, ivs := range tabs {
			n += len(ivs)
		}
	}
	return n
}

// FormatBound writes tm as an SQL literal of t's key type (with its cast):
// a date, a timestamp, or a timestamptz in UTC.
func FormatBound(t *Table, tm time.Time) string {
	switch {
	case t.KeyDate:
		return "'" + tm.UTC().Format("2006-01-02") + "'::date"
	case t.KeyLocal:
		return "'" + tm.UTC().Format("2006-01-02 15:04:05.999999") + "'::timestamp"
	}
	return "'" + tm.UTC().Format("2006-01-02 15:04:05.999999") + "+00'::timestamptz"
}

// RangeCondition is the SQL condition "the row's key is in one of ivs"
// ([From, To) each; a zero bound is unbounded).
func RangeCondition(t *Table, ivs []Interval) string {
	col := quoteIdent(t.Key)
	ors := make([]string, 0, len(ivs))
	for _, iv := range ivs {
		var and []string
		if !iv.From.IsZero() {
			and = append(and, col+" >= "+FormatBound(t, iv.From))
		}
		if !iv.To.IsZero() {
			and = append(and, col+" < "+FormatBound(t, iv.To))
		}
		if len(and) == 0 {
			and = append(and, col+" IS NOT NULL")
		}
		ors = append(ors, "("+strings.Join(and, " AND ")+")")
	}
	return "(" + strings.Join(ors, " OR ") + ")"
}

// SplitRange moves [from, to) of a table's range map ivs to shard: the
// interval must lie inside one interval owned by another shard, which is
// split around it; ivs is in order (as resolved) and so is the result.
// Adjacent intervals of one shard are not merged (the
// map stays as the operator wrote it, plus the split).
func SplitRange(ivs []Interval, from, to time.Time, shard int) ([]Interval, int, error) {
	if from.IsZero() || to.IsZero() || !from.Before(to) {
		return nil, 0, errors.New("a moved range needs a from before its to")
	}
	in := func(iv Interval, x time.Time, end bool) bool {
		lo := iv.From.IsZero() || !x.Before(iv.From)
		hi := iv.To.IsZero() || x.Before(iv.To) || (end && x.Equal(iv.To))
		if end {
			lo = iv.From.IsZero() || x.After(iv.From)
		}
		return lo && hi
	}
	for i, iv := range ivs {
		if !in(iv, from, false) {
			continue
		}
		if !in(iv, to, true) {
			return nil, 0, fmt.Errorf("the range %s to %s spans more than one interval of the map: move one at a time",
				from.Format(time.RFC3339), to.Format(time.RFC3339))
		}
		if iv.Shard == shard {
			return nil, 0, errors.New("the range is already on that shard")
		}
		out := slices.Clone(ivs[:i])
		if !iv.From.Equal(from) {
			out = append(out, Interval{From: iv.From, To: from, Shard: iv.Shard})
		}
		out = append(out, Interval{From: from, To: to, Shard: shard})
		if !iv.To.Equal(to) {
			out = append(out, Interval{From: to, To: iv.To, Shard: iv.Shard})
		}
		out = append(out, ivs[i+1:]...)
		return out, iv.Shard, nil
	}
	return nil, 0, fmt.Errorf("no interval of the map holds %s", from.Format(time.RFC3339))
}
