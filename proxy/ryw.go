package proxy

import (
	"context"
	"math"
	"slices"
	"time"
)

// Read-your-writes: after a session writes, its reads must see the write
// even when they go to a replica. Two modes besides off:
//
//   - window: for read_your_writes_window after the write, the session's
//     reads go to the primary.
//   - lsn: when a request that wrote ends outside a transaction (an
//     autocommit write, or the COMMIT of a transaction that wrote), the
//     session asks each replicated shard's primary it used for its WAL
//     insert position (one round trip per such shard and write, not per
//     statement). A read may then go to a replica of that shard only once
//     the replica's replay position is at least that far: as the health
//     checks last saw it, or, when they saw it behind, as the replica
//     says on lease (pg_last_wal_replay_lsn()). Otherwise it goes to the
//     primary. The position only grows, so it is kept per shard until the
//     session's next write there.

// rywMode is the read-your-writes mode.
type rywMode uint8

const (
	rywOff rywMode = iota + 1
	rywWindow
	rywLSN
)

func rywModeOf(s string) rywMode {
	switch s {
	case "off":
		return rywOff
	case "window":
		return rywWindow
	case "lsn":
		return rywLSN
	}
	return 0
}

// withRYWDefaults fills the read-your-writes defaults and reads the older
// form, a duration (the window; negative: off).
func (c ReplicasConfig) withRYWDefaults() ReplicasConfig {
	if d, err := time.ParseDuration(c.ReadYourWrites); err == nil {
		c.ReadYourWrites = "window"
		switch {
		case d < 0:
			c.ReadYourWrites = "off"
		case d > 0 && c.ReadYourWritesWindow == 0:
			c.ReadYourWritesWindow = d
		}
	}
	if c.ReadYourWrites == "" {
		c.ReadYourWrites = "window"
	}
	if c.ReadYourWritesWindow == 0 {
		c.ReadYourWritesWindow = 2 * time.Second
	}
	return c
}

// touchedPrimary notes that the request leased a backend of shard's write
// pool (or a role's pool of it).
func (s *session) touchedPrimary(shard int) {
	if s.srv.sets[shard] != nil && !slices.Contains(s.rs.touched, shard) {
		s.rs.touched = append(s.rs.touched, shard)
	}
}

// settleWrites runs as a request ends. Outside a transaction, when the
// session wrote since the last time, it records the WAL position of each
// replicated shard's primary it used (lsn mode).
func (s *session) settleWrites() {
	if s.status != 'I' || (!s.rs.wrote && len(s.rs.touched) == 0) {
		return
	}
	if s.rs.wrote && s.srv.readPolicy.Load().ryw == rywLSN {
		for _, sh := range s.rs.touched {
			s.rememberLSN(sh)
		}
	}
	s.rs.wrote = false
	s.rs.touched = s.rs.touched[:0]
}

// primaryLSNSQL reads a primary's WAL position: at least the end of every
// transaction committed before it runs.
const primaryLSNSQL = "SELECT pg_current_wal_insert_lsn()::text"

// rememberLSN records shard's primary WAL position as what the session's
// reads there must see. When it cannot be read (the primary is going
// away), the session's reads of shard stay on the primary until its next
// write there.
func (s *session) rememberLSN(shard int) {
	rs := s.srv.sets[shard]
	if len(s.rs.need) < len(s.srv.sets) {
		s.rs.need = append(s.rs.need, make([]uint64, len(s.srv.sets)-len(s.rs.need))...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.health.cfg.Load().Timeout)
	defer cancel()
	lsn := uint64(math.MaxUint64)
	if b, err := rs.write.acquire(ctx); err == nil {
		v, err := simpleValue(b, primaryLSNSQL)
		if err != nil {
			b.broken = b.broken || b.txStatus != 'I'
		} else if l, err := parseLSN(v); err == nil {
			lsn = l
		}
		rs.write.release(b)
	}
	s.rs.need[shard] = lsn
	s.srv.repl.lsnReads.Inc()
}

// replayLSNSQL reads a replica's replay position.
const replayLSNSQL = "SELECT pg_last_wal_replay_lsn()::text"

// leaseRead leases a replica backend for a read on shard when the
// session's policy allows one and a replica can serve it (with
// read-your-writes by LSN, one that has replayed the session's writes,
// checked on lease when the health checks saw it behind). It returns nil
// when the read must go to the primary.
func (s *session) leaseRead(ctx context.Context, shard int) *backend {
	p, check, need := s.replicaPool(shard)
	if p != nil {
		b, err := s.leaseFrom(ctx, p)
		if err != nil {
			return nil // unreachable: the primary answers
		}
		return b
	}
	if check == nil {
		return nil
	}
	b, err := s.leaseFrom(ctx, check)
	if err != nil {
		return nil
	}
	v, err := simpleValue(b, replayLSNSQL)
	if err == nil {
		if l, perr := parseLSN(v); perr == nil {
			if sv := check.srv.Load(); sv != nil {
				for old := sv.lsn.Load(); l > old && !sv.lsn.CompareAndSwap(old, l); old = sv.lsn.Load() {
				}
			}
			s.srv.repl.lsnChecks.Inc()
			if l >= need {
				return b
			}
		}
	}
	s.release(b)
	return nil
}
