package proxy

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
	"github.com/shardproxy/shardproxy/topology"
)

// placementState is the server's side of the versioned topology (package
// topology): the version it serves and the cutover fence it holds writes
// for. ApplyTopology is called by the watcher; session.route consults the
// fence.
type placementState struct {
	mu      sync.Mutex
	version int64
	fence   *writeFence // nil: no cutover in progress; read under mu or via current
}

// writeFence holds new writes to some shards while a cutover moves their
// buckets; done is closed when the fence ends (a new map or an abort).
type writeFence struct {
	id     int64
	shards []bool
	hold   time.Duration
	done   chan struct{}
	// mover routes with the moving buckets (or range) on shard moving
	// (fencemove.go); nil: every write to shards is held.
	mover  *router.Router
	moving int
}

func (p *placementState) current() *writeFence {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fence
}

// ApplyTopology installs st: a newer bucket map first, then the fence (or
// its end, which releases the held writes, now routed by the new map). It
// returns the version and fence id the server serves, for the heartbeat.
func (s *Server) ApplyTopology(st *topology.State) (int64, int64, error) {
	p := &s.placement
	p.mu.Lock()
	defer p.mu.Unlock()
	var err error
	// A new version, or the same one whose stale buckets changed (a
	// reshard's cleanup finished on a shard).
	if len(st.Owners) > 0 && (st.Version > p.version || (st.Version == p.version && (!sameStale(st.Stale, s.router.StaleBuckets()) || st.StaleRangeCount() != s.router.StaleRangeCount()))) {
		topo := s.router.Topology()
		m, merr := st.BucketMap(topo)
		if merr == nil {
			merr = s.router.SetBuckets(m)
		}
		if merr != nil {
			err = fmt.Errorf("topology version %d: %w", st.Version, merr)
		} else {
			p.version = st.Version
		}
	}
	f := st.Fence
	switch {
	case f != nil && f.Until > p.version:
		if p.fence != nil && p.fence.id == f.ID {
			break
		}
		wf := &writeFence{id: f.ID, shards: make([]bool, len(s.pools)), hold: f.Hold, done: make(chan struct{})}
		for _, name := range f.Shards {
			if i, ok := s.router.Topology().ShardIndex(name); ok {
				wf.shards[i] = true
			}
		}
		s.narrowFence(wf, f) // fencemove.go
		if p.fence != nil {
			close(p.fence.done)
		}
		p.fence = wf
	case p.fence != nil:
		close(p.fence.done)
		p.fence = nil
	}
	var fid int64
	if p.fence != nil {
		fid = p.fence.id
	}
	return p.version, fid, err
}

// TopologyVersion returns the bucket-map version the server routes by.
func (s *Server) TopologyVersion() int64 {
	s.placement.mu.Lock()
	defer s.placement.mu.Unlock()
	return s.placement.version
}

// holdWrite waits while a cutover fence covers a write's shards, then
// routes st again (the map may have changed). A transaction that already
// wrote on a fenced shard goes on: the cutover waits for it to end on the
// shard. A write held longer than the fence's hold fails with 57014.
func (s *session) holdWrite(st *parser.Statement, params router.Params, plan *router.Plan) (*router.Plan, error) {
	var waited time.Duration
	for {
		f := s.srv.placement.current()
		if f == nil || !plan.Write || !s.fenced(f, st, params, plan) {
			return plan, nil
		}
		if err := waitFence(f, &waited); err != nil {
			return nil, err
		}
		p, err := s.srv.router.RouteWith(st, params, router.RouteOptions{Shard: s.shardHint})
		if err != nil {
			return nil, err
		}
		plan = p
	}
}

// waitFence waits until fence f ends, adding the time to *waited; past
// the fence's hold in all, it fails with 57014.
func waitFence(f *writeFence, waited *time.Duration) error {
	start := time.Now()
	t := time.NewTimer(f.hold - *waited)
	defer t.Stop()
	select {
	case <-f.done:
	case <-t.C:
		return heldTooLong(f)
	}
	*waited += time.Since(start)
	return nil
}

func heldTooLong(f *writeFence) error {
	return &pgError{code: pgerrcode.QueryCanceled,
		msg:  fmt.Sprintf("write held %s for a resharding cutover, longer than its limit", f.hold),
		hint: "Retry the statement: the cutover either finished or was abandoned."}
}

func (s *session) fenced(f *writeFence, st *parser.Statement, params router.Params, plan *router.Plan) bool {
	hit := false
	for _, sh := range plan.Shards {
		if sh < len(f.shards) && f.shards[sh] {
			if slices.Contains(s.wrote, sh) && !s.wroteInFence(f, sh) {
				return false
			}
			hit = true
		}
	}
	return hit && !s.passFence(f, st, params, plan) // fencemove.go
}

func sameStale(a, b map[string][]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// StaleBuckets lists, by shard name, the buckets a reshard's source still
// holds rows of until cleanup: reads across shards hide them there.
func (s *Server) StaleBuckets() map[string][]int { return s.router.StaleBuckets() }

// StaleRangeCount is the number of range intervals a reshard's source
// still holds rows of until cleanup.
func (s *Server) StaleRangeCount() int { return s.router.StaleRangeCount() }

// Ranges returns the range map the server routes table by (nil: not a
// range table).
func (s *Server) Ranges(table string) []router.Interval {
	tb := s.router.Topology().Tables[table]
	if tb == nil {
		return nil
	}
	return s.router.RangesOf(tb)
}
