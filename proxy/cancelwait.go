package proxy

import "sync"

// A CancelRequest is delivered to a shard on a connection of its own, so
// it can land after the statement it was meant for has ended: on the next
// statement the backend runs (the session's next one, or another
// client's once the backend is back in the pool). Postgres drops a cancel
// that reaches a backend idle between statements, so a cancel is harmless
// once delivered before the backend's next statement is sent. Hence:
//   - a client's CancelRequest is answered (the connection closed) only
//     once every shard's CancelRequest has been delivered, as Postgres
//     closes it only after signalling its backend: a client that waits for
//     its cancel, then sends the next statement, never sees that cancelled;
//   - release waits for the cancels in flight to a backend before it can
//     go back to the pool (backend.cancels);
//   - readyForQuery waits for those to the backends the session keeps (a
//     transaction's), so the client's next statement cannot meet them.

// cancelLeased sends a CancelRequest to each backend running the session's
// request and returns a wait for their delivery.
func (s *session) cancelLeased() *sync.WaitGroup {
	var all sync.WaitGroup
	s.mu.Lock()
	bs := append([]*backend(nil), s.leased...)
	for _, b := range bs {
		b.cancels.Add(1) // under s.mu: release's Wait (after taking b out of leased) sees it
		s.cw.cancels.Add(1)
	}
	s.mu.Unlock()
	for _, b := range bs {
		all.Add(1)
		go func() {
			defer all.Done()
			b.cancel()
			s.cw.cancels.Add(-1)
			b.cancels.Done()
		}()
	}
	return &all
}

// awaitCancels waits until no CancelRequest sent for the session's
// backends is still in flight.
func (s *session) awaitCancels() {
	if s.cw.cancels.Load() == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.leased { // those released were awaited by release
		b.cancels.Wait()
	}
}
