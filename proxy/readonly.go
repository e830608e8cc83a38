package proxy

import (
	"context"

	"github.com/shardproxy/shardproxy/parser"
)

// Read-only transactions on replicas. A transaction that is read-only
// from its start (BEGIN READ ONLY, START TRANSACTION READ ONLY, BEGIN;
// SET TRANSACTION READ ONLY, or a session whose default is read-only:
// SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY,
// default_transaction_read_only) runs, on each replicated shard it
// touches, on one replica chosen by the balance strategy when the
// session's read_from allows replicas: pin leases through leaseTx, so
// every statement of the transaction on that shard runs on that replica.
// A write in it gets 25006 from the replica, as Postgres gives it in a
// read-only transaction. A serializable transaction stays on the primary:
// a hot standby refuses SERIALIZABLE (0A000).

// leaseTx leases the open transaction's backend on shard (pin): a
// replica's when the transaction is read-only and may use one. At the
// transaction's first lease it decides whether it is read-only.
func (s *session) leaseTx(ctx context.Context, shard int) (*backend, error) {
	if s.srv.sets == nil {
		return s.lease(ctx, shard)
	}
	if s.tx == nil {
		m := s.txModeNow()
		s.rs.roTx = m.ReadOnly > 0 && m.Serializable <= 0
		s.rs.txMode = parser.TxMode{}
	}
	if s.rs.roTx && s.srv.sets[shard] != nil {
		if b := s.leaseRead(ctx, shard); b != nil {
			return b, nil
		}
	}
	return s.lease(ctx, shard)
}

// noteTxMode remembers what SET TRANSACTION says when it is the
// statement that opens the transaction on its first shard (set runs it
// there at once).
func (s *session) noteTxMode(st *parser.Statement) {
	if s.srv.sets == nil || s.tx != nil {
		return
	}
	if m, scope := st.TxMode(); scope == parser.ScopeTransaction {
		s.rs.txMode = overlayTxMode(s.rs.txMode, m)
	}
}

// txModeNow is the open transaction's characteristics before its first
// statement: the session's defaults, then BEGIN's modes and the SETs of
// its prelude, then a SET TRANSACTION being run.
func (s *session) txModeNow() parser.TxMode {
	m := s.sessionTxMode()
	for _, q := range s.txPrelude {
		sts, err := s.srv.cache.Parse(q)
		if err != nil || len(sts) != 1 {
			continue
		}
		if t, scope := sts[0].TxMode(); scope == parser.ScopeTransaction {
			m = overlayTxMode(m, t)
		}
	}
	return overlayTxMode(m, s.rs.txMode)
}

// sessionTxMode is the session's default transaction characteristics, as
// its remembered SETs say.
func (s *session) sessionTxMode() parser.TxMode {
	var m parser.TxMode
	for _, x := range s.sets {
		switch x.name {
		case "default_transaction_read_only", "default_transaction_isolation", "session characteristics":
		default:
			continue
		}
		sts, err := s.srv.cache.Parse(x.sql)
		if err != nil || len(sts) != 1 {
			continue
		}
		if t, scope := sts[0].TxMode(); scope == parser.ScopeSession {
			m = overlayTxMode(m, t)
		}
	}
	return m
}

// sessionReadOnly reports whether the session's transactions are
// read-only by default.
func (s *session) sessionReadOnly() bool {
	return len(s.sets) > 0 && s.sessionTxMode().ReadOnly > 0
}

// overlayTxMode is m with what t sets.
func overlayTxMode(m, t parser.TxMode) parser.TxMode {
	if t.ReadOnly != 0 {
		m.ReadOnly = t.ReadOnly
	}
	if t.Serializable != 0 {
		m.Serializable = t.Serializable
	}
	return m
}
