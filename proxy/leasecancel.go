package proxy

import (
	"context"
	"sync"
)

// A CancelRequest that arrives while the statement waits for a backend
// (an exhausted pool, a dial, a failover_buffer wait) has no backend to
// cancel yet: it ends the wait instead, and the statement fails with
// 57014 as Postgres's would. The wait runs under a context of the
// session's that Server.cancel cancels; it is made again once spent, so
// the hot path (a lease from the idle stack) allocates nothing.

// leaseWait is the session's part.
type leaseWait struct {
	mu      sync.Mutex
	waiting bool
	ctx     context.Context
	cancel  context.CancelFunc
}

// begin returns the context a lease waits under (derived from parent).
func (w *leaseWait) begin(parent context.Context) context.Context {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil || w.ctx.Err() != nil {
		// Not linked to parent (the server's): a child would stay in the
		// parent's list for the session's lifetime. Server shutdown ends
		// the wait through the pool (closed) and acquire_timeout.
		w.ctx, w.cancel = context.WithCancel(context.WithoutCancel(parent))
	}
	w.waiting = true
	return w.ctx
}

// end marks the lease done; canceled reports whether a CancelRequest ended
// it (or came just as it ended).
func (w *leaseWait) end() (canceled bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waiting = false
	return w.ctx.Err() != nil
}

// interrupt ends a lease wait in progress; it reports whether there was one.
func (w *leaseWait) interrupt() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.waiting {
		return false
	}
	w.cancel()
	return true
}

// acquireCancelable leases from p (waiting within failover_buffer for a
// replicated shard's primary) under the session's lease context.
func (s *session) acquireCancelable(ctx context.Context, p *pool) (*backend, error) {
	lctx := s.cw.lw.begin(ctx)
	b, err := p.acquire(lctx)
	if err != nil && p.replicated {
		b, err = p.awaitPrimary(lctx, err) // failoverdial.go
	}
	if s.cw.lw.end() {
		if err == nil {
			b.pool.release(b) // canceled as it arrived: the statement does not run
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, context.Canceled // 57014
	}
	return b, err
}
