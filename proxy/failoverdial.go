package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// A replicated shard's primary can die between two health checks: until
// enough checks fail to mark it down, a write that needs a new backend
// dials it and is refused at once, while a write a moment later (marked
// down) would wait within failover_buffer for the promotion. awaitPrimary
// makes the first case behave like the second: a failed dial of a
// replicated write pool asks the shard's servers for a probe now, and
// dials again (the promoted server once the pool is retargeted) until
// failover_buffer runs out. Other shards' pools are not involved. Only a
// client's statement waits (session.leaseFrom); the proxy's own background
// work (two-phase recovery, warm-up) fails at once as before.

// awaitPrimary retries a failed primary dial within failover_buffer; it
// returns err as it is when p is not a replicated write pool, has no
// buffer, or err is not a dial failure.
func (p *pool) awaitPrimary(ctx context.Context, err error) (*backend, error) {
	var ce *pgconn.ConnectError
	wait := time.Duration(p.buffer.Load())
	if !p.replicated || wait <= 0 || !errors.As(err, &ce) {
		return nil, err
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	retry := 50 * time.Millisecond
	for {
		if sv := p.srv.Load(); sv != nil && sv.set != nil {
			sv.set.probeNow() // a primary that is gone is marked down, a promoted one found
		}
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		t := time.NewTimer(retry)
		select {
		case <-ch: // retargeted, or back up
		case <-t.C:
		case <-deadline.C:
			t.Stop()
			if e := p.downErr.Load(); e != nil {
				return nil, e
			}
			return nil, err
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		t.Stop()
		retry = min(2*retry, time.Second)
		if p.downErr.Load() != nil {
			continue // marked down meanwhile: wait here for the failover (get would start a new buffer)
		}
		b, e := p.acquire(ctx)
		if e == nil {
			return b, nil
		}
		if !errors.As(e, &ce) {
			return nil, e
		}
		err = e
	}
}
