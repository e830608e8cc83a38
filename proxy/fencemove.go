package proxy

import (
	"slices"
	"time"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
	"github.com/shardproxy/shardproxy/topology"
)

// A resharding cutover's fence names the moving buckets (or the moving
// interval of a range table). A write to a source shard is held only when
// it may touch them; one whose keys place every row it writes in a bucket
// that stays runs through. What cannot be classified by key is held: see
// passFence.

// narrowFence gives wf the router that classifies writes by the moving
// buckets of f. Without them (an older tool, the reference-table copy),
// or when the mover cannot be built, wf holds every write to its shards.
func (s *Server) narrowFence(wf *writeFence, f *topology.Fence) {
	if !f.Narrow() {
		return
	}
	var table string
	var from, to time.Time
	if f.Range != nil {
		var err1, err2 error
		from, err1 = time.Parse(time.RFC3339Nano, f.Range.From)
		to, err2 = time.Parse(time.RFC3339Nano, f.Range.To)
		if err1 != nil || err2 != nil {
			s.log.Warn("cutover fence: unreadable range, holding every write to its shards", "fence", f.ID, "from", f.Range.From, "to", f.Range.To)
			return
		}
		table = f.Range.Table
	}
	m, moving, err := s.router.Mover(f.Buckets, table, from, to)
	if err != nil {
		s.log.Warn("cutover fence: holding every write to its shards", "fence", f.ID, "err", err)
		return
	}
	wf.mover, wf.moving = m, moving
}

// fenceWrites are the shards a session first wrote on while fence id was
// up: its transaction there is not drained by the cutover (the drain
// waits only for transactions that wrote before the fence), so a later
// write of it to a moving bucket is held like any other.
type fenceWrites struct {
	id     int64
	shards []int
}

func (s *session) wroteInFence(f *writeFence, sh int) bool {
	return s.fenceWrote.id == f.id && slices.Contains(s.fenceWrote.shards, sh)
}

// passFence reports whether a write to a fenced shard may run now: a
// plain INSERT, UPDATE or DELETE of sharded tables only, without hints
// or calls to functions that might write elsewhere, whose route with the
// moving buckets on a shard of their own is the same as its route now
// (so no key of it is in a moving bucket, and it is narrowed by key
// rather than sent to every shard) and moves no row to another shard.
// Everything else is held: COPY, DDL, writes to reference and unsharded
// tables, writable CTEs in a SELECT, multi-row INSERTs with a row in a
// moving bucket, UPDATE/DELETE without a key equality.
func (s *session) passFence(f *writeFence, st *parser.Statement, params router.Params, plan *router.Plan) bool {
	if f.mover == nil || s.shardHint != "" || len(st.Hints) > 0 || !st.Portable() || st.Session != parser.NoSessionUse {
		return false
	}
	switch st.Kind {
	case parser.Insert, parser.Update, parser.Delete:
	default:
		return false
	}
	topo := f.mover.Topology()
	for _, tb := range st.Tables {
		t := topo.Lookup(tb)
		if t == nil || (t.Strategy != router.Hash && t.Strategy != router.Range) {
			return false
		}
	}
	if plan.KeyGuard != nil || plan.KeyMove != nil {
		return false
	}
	mp, err := f.mover.Route(st, params)
	if err != nil || mp.KeyGuard != nil || mp.KeyMove != nil || !slices.Equal(mp.Shards, plan.Shards) || slices.Contains(mp.Shards, f.moving) {
		return false
	}
	if s.fenceWrote.id != f.id {
		s.fenceWrote = fenceWrites{id: f.id, shards: s.fenceWrote.shards[:0]}
	}
	for _, sh := range plan.Shards {
		if sh < len(f.shards) && f.shards[sh] && !slices.Contains(s.wrote, sh) && !slices.Contains(s.fenceWrote.shards, sh) {
			s.fenceWrote.shards = append(s.fenceWrote.shards, sh)
		}
	}
	return true
}

// holdCopy waits while a cutover fence is up before a COPY FROM starts:
// its rows are routed one by one as they come, so it may write any
// shard, and it is held whatever its rows (unless its transaction wrote
// on a fenced shard before the fence: the cutover waits for that one).
// Held longer than the fence's hold, it fails with 57014.
func (s *session) holdCopy() error {
	var waited time.Duration
	for {
		f := s.srv.placement.current()
		if f == nil {
			return nil
		}
		for sh, fenced := range f.shards {
			if fenced && slices.Contains(s.wrote, sh) && !s.wroteInFence(f, sh) {
				return nil
			}
		}
		if err := waitFence(f, &waited); err != nil {
			return err
		}
	}
}
