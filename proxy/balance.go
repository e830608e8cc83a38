package proxy

import (
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// balance is how reads are spread over a shard's eligible servers.
type balance uint8

const (
	balanceRoundRobin balance = iota + 1
	balanceLeastConnections
	balanceWeighted
	balanceFastest
)

func balanceOf(s string) balance {
	switch s {
	case "round_robin":
		return balanceRoundRobin
	case "least_connections":
		return balanceLeastConnections
	case "weighted":
		return balanceWeighted
	case "fastest_response":
		return balanceFastest
	}
	return 0
}

func (b balance) String() string {
	switch b {
	case balanceRoundRobin:
		return "round_robin"
	case balanceLeastConnections:
		return "least_connections"
	case balanceWeighted:
		return "weighted"
	case balanceFastest:
		return "fastest_response"
	}
	return ""
}

// ewmaAlpha is the weight of the newest sample in a pool's latency average.
const ewmaAlpha = 0.2

// poolLoad is what the choosers read from a pool; every field is atomic.
type poolLoad struct {
	busy   atomic.Int64  // backends leased now (in flight)
	routed atomic.Uint64 // leases served
	ewma   atomic.Uint64 // float64 bits: moving average of query latency, seconds
}

// observe adds one latency sample (a statement's round trip, or a health
// probe's) to the pool's moving average.
func (p *pool) observe(d time.Duration) {
	p = p.root() // a backend role's pool: its base's figures
	x := d.Seconds()
	for {
		old := p.load.ewma.Load()
		v := x
		if old != 0 {
			v = ewmaAlpha*x + (1-ewmaAlpha)*math.Float64frombits(old)
		}
		if p.load.ewma.CompareAndSwap(old, math.Float64bits(v)) {
			return
		}
	}
}

// latency is the pool's moving average latency (0: no sample yet).
func (p *pool) latency() float64 { return math.Float64frombits(p.load.ewma.Load()) }

// pick chooses the pool for one read under strategy b: a replica in
// rotation, or the write pool as well when withPrimary (read_from: any).
// With no replica in rotation it returns the write pool. A replica is
// a candidate only once it has replayed need (read-your-writes by LSN; 0:
// any). It allocates nothing: the few candidates are walked in place.
func (rs *replicaSet) pick(b balance, withPrimary bool, need uint64) *pool {
	primaryOK := withPrimary && rs.write.downErr.Load() == nil
	n, total := 0, 0
	for i := -1; i < len(rs.servers); i++ {
		if _, w, ok := rs.candidate(i, primaryOK, need); ok {
			n++
			total += w
		}
	}
	if n == 0 {
		return rs.write
	}
	switch b {
	case balanceWeighted:
		r := rand.IntN(total)
		for i := -1; i < len(rs.servers); i++ {
			if p, w, ok := rs.candidate(i, primaryOK, need); ok {
				if r -= w; r < 0 {
					return p
				}
			}
		}
		return rs.write
	case balanceLeastConnections, balanceFastest:
		// The least loaded (fastest) candidate, scanning from a rotating
		// start so that ties take turns. A server with no latency sample
		// yet counts as fastest, so it gets one.
		start := int(rs.rr.Add(1) % uint32(n))
		var best *pool
		bestV := math.Inf(1)
		for j := 0; j < n; j++ {
			p := rs.nth((start+j)%n, primaryOK, need)
			v := float64(p.load.busy.Load())
			if b == balanceFastest {
				v = p.latency()
			}
			if v < bestV {
				best, bestV = p, v
			}
		}
		return best
	default:
		return rs.nth(int(rs.rr.Add(1)%uint32(n)), primaryOK, need)
	}
}

// candidate is the i-th possible read target: -1 is the write pool (when
// primaryOK), i >= 0 the i-th server's read pool when it is in rotation
// and has replayed need.
func (rs *replicaSet) candidate(i int, primaryOK bool, need uint64) (*pool, int, bool) {
	if i < 0 {
		return rs.write, rs.servers[rs.primary.Load()].weight, primaryOK
	}
	sv := rs.servers[i]
	return sv.read, sv.weight, sv.inRotation() && (need == 0 || sv.lsn.Load() >= need)
}

// nth is the k-th candidate (from 0).
func (rs *replicaSet) nth(k int, primaryOK bool, need uint64) *pool {
	for i := -1; i < len(rs.servers); i++ {
		if p, _, ok := rs.candidate(i, primaryOK, need); ok {
			if k == 0 {
				return p
			}
			k--
		}
	}
	return rs.write
}
