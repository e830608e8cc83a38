package proxy

import (
	"context"
)

// The 25006 retry of a transaction's first statement. An explicit
// transaction opens on a shard's backend at its first routed statement
// (pin replays BEGIN, its SAVEPOINTs and SET LOCALs there). When that
// backend is a replicated shard's primary that has become read-only (a
// failover the health checks have not seen yet), a write gets 25006 and
// the transaction has done nothing anywhere else: the shard's servers are
// re-probed and, once writes have moved to the promoted primary (within
// failover_buffer), the transaction is opened again there and the
// statement runs once more, once. The backend of the old primary goes
// with its failed transaction. A transaction that is read-only by its own
// modes (or the session's defaults) keeps its 25006: that is the answer.
// The simple protocol's path is firstInTx; the extended protocol's is in
// relaySync (extretry.go), with txRetryable.

// firstInTx runs sql, the open transaction's first routed statement, on
// shard (a single-shard plan), retrying it on a new primary after a 25006.
func (s *session) firstInTx(ctx context.Context, shard int, sql string) error {
	b, err := s.txOn(ctx, shard)
	if err != nil {
		s.fail(err)
		return nil
	}
	rs := s.txRetryable(b)
	if rs == nil {
		return s.exec(b, sql, true)
	}
	before, flushes := len(s.out), s.rs.flushes
	if err := s.exec(b, sql, true); err != nil {
		return err
	}
	if s.q.sqlstate != "25006" || s.rs.flushes != flushes || len(s.out) < before || b.broken || b.txStatus != 'E' ||
		s.txReadOnly() {
		return nil
	}
	nb, ok := s.repin(ctx, rs, b)
	if !ok {
		return nil // the client keeps the 25006; its transaction failed
	}
	b.broken = true // its transaction failed; the pool closes it
	s.release(b)
	s.out = s.out[:before]
	s.q.sqlstate = ""
	s.srv.repl.retries.Inc()
	return s.exec(nb, sql, true)
}

// txReadOnly reports whether the open transaction is read-only by its
// modes (BEGIN READ ONLY, SET LOCAL transaction_read_only, the session's
// defaults). Asked only after a 25006: a SET TRANSACTION is the
// transaction's first statement on a shard, so what it said (reset by
// pin) never precedes a statement that txRetryable accepts.
func (s *session) txReadOnly() bool {
	return s.srv.sets != nil && s.txModeNow().ReadOnly > 0
}

// txRetryable returns the replica set whose write pool b is from when b
// holds the open transaction and nothing else of it (its first backend,
// no other shard joined, not a read-only transaction on replicas, no
// reserved backend): a 25006 there may be retried on a new primary once
// txReadOnly says the transaction is not read-only.
func (s *session) txRetryable(b *backend) *replicaSet {
	if s.srv.sets == nil || b == nil || b.pool.reads || s.rs.roTx || s.tx != b || len(s.txMore) > 0 ||
		s.status != 'T' || s.q.sqlstate != "" || s.reservedOn(b.pool.shard) != nil {
		return nil
	}
	if rs := s.srv.sets[b.pool.shard]; rs != nil && rs.write == b.pool {
		return rs
	}
	return nil
}

// repin re-probes rs after the transaction's first backend b met 25006
// and, when writes moved to a new primary, opens the transaction again
// there (its prelude replayed): the transaction's backend is the new one.
// The caller lets b go (or gives the transaction back with unpin). When
// it returns false nothing changed.
func (s *session) repin(ctx context.Context, rs *replicaSet, b *backend) (*backend, bool) {
	if !rs.reprobe(ctx, s.srv) {
		return nil, false
	}
	status := s.status
	s.tx, s.status = nil, 'T'
	nb, err := s.pin(ctx, b.pool.shard)
	if err != nil {
		s.tx, s.status = b, status
		return nil, false
	}
	return nb, true
}

// unpin undoes repin: the transaction is b's again, failed.
func (s *session) unpin(nb, b *backend) {
	nb.broken = true
	s.release(nb)
	s.tx, s.status = b, 'E'
}
