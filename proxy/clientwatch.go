package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// A client that goes away while its statement runs must not leave shards
// working for nobody. The session's goroutine reads the client only between
// requests (it drives each request to completion itself), and Postgres
// notices a dead client only when it writes to it, so a pg_sleep(30) or a
// long scatter read would keep running, and its backends stay leased, until
// it ends. PgBouncer closes the server connection; Postgres 14+ offers
// client_connection_check_interval. Here one goroutine per server looks,
// every clientCheckInterval, at the sessions whose statement has been
// running since the previous look, and polls their client sockets (without
// reading them) for a hang-up. A hung-up client's running backends get a
// CancelRequest each, and the session marks every backend it releases from
// then on broken, so none goes back to the pool (a cancel that lands late
// can never hit another client's statement). The statement then ends with
// 57014 on the shards, the session's write to the client or its next read
// fails, and cleanup rolls back and closes what it held.
//
// The hot path pays nothing: no timer, no syscall per query; only a
// statement still running at two consecutive looks costs one poll(2).

// clientCheckInterval is how often running statements' clients are checked.
const clientCheckInterval = 500 * time.Millisecond

// clientWatch is a session's part in the watch.
type clientWatch struct {
	// gone is set once the client's socket hung up mid-statement.
	gone atomic.Bool
	// cancels counts CancelRequests in flight to the session's backends
	// (cancelwait.go).
	cancels atomic.Int32
	// seen is the watcher's own note (only its goroutine touches it): the
	// session's statement count plus one when its statement was running at
	// the last look, else 0.
	seen uint64
	// lw is the session's wait for a backend, which a CancelRequest ends
	// (leasecancel.go).
	lw leaseWait
}

// watchClients runs the checks until ctx ends.
func (s *Server) watchClients(ctx context.Context) {
	t := time.NewTicker(clientCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.sessions.Range(func(_, v any) bool {
			v.(*session).checkClient()
			return true
		})
	}
}

// checkClient cancels the session's running statement when its client has
// hung up. Called by the watcher goroutine only.
func (s *session) checkClient() {
	if s.q.state.Load() != clientActive {
		s.cw.seen = 0
		return
	}
	n := s.q.queries.Load() + 1
	if s.cw.seen != n {
		s.cw.seen = n // running since this look: check at the next one
		return
	}
	s.mu.Lock()
	busy := len(s.leased) > 0
	s.mu.Unlock()
	if !busy || !hungUp(s.conn) {
		return
	}
	if !s.cw.gone.Swap(true) {
		s.srv.log.Info("client gone mid-statement: canceling its shard queries", "user", s.user, "client", s.q.addr)
	}
	s.cancelRunning()
}

// hungUp reports whether the peer of c closed its end (or the connection
// broke), without reading from it: bytes the client sent before it left
// stay for the session.
func hungUp(c net.Conn) bool {
	for {
		switch t := c.(type) {
		case *tls.Conn:
			c = t.NetConn()
			continue
		case prefixConn:
			c = t.Conn
			continue
		}
		break
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	rc.Control(func(fd uintptr) { gone = peerClosed(fd) })
	return gone
}
