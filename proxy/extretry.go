package proxy

import (
	"context"
	"encoding/binary"

	"github.com/jackc/pgx/v5/pgproto3"
)

// The 25006 retry of the extended protocol. A request (up to Sync) that
// ran outside a transaction on a replicated shard's primary and got 25006
// (the "primary" is read-only now: a failover the health checks have not
// seen yet) is one implicit transaction that did nothing: when none of its
// reply has reached the client, the shard's servers are re-probed and,
// once writes have moved to the promoted primary (within failover_buffer),
// the request's messages are sent again there, once. The new backend gets
// the prepared statements the request uses first.

// relaySync sends the current backend's request up to Sync and relays the
// replies (extSync), retrying it on a new primary after a 25006: outside a
// transaction, or as the open transaction's first request on its first
// shard (txretry.go), where the transaction is opened again on the new
// primary first.
func (s *session) relaySync(ctx context.Context) error {
	x := s.x
	b := x.cur
	rs, inTx := s.retryableExt(b), false
	if rs == nil {
		if rs = s.txRetryableExt(b); rs == nil {
			return s.relayQueue()
		}
		inTx = true
	}
	// The request as sent (kept in buffers the session reuses).
	wbuf := append(s.rs.wbuf[:0], x.wbuf...)
	queue := append(s.rs.queue[:0], x.queue...)
	s.rs.wbuf, s.rs.queue = wbuf, queue
	before, flushes := len(s.out), s.rs.flushes
	if err := s.relayQueue(); err != nil {
		return err
	}
	if s.q.sqlstate != "25006" || s.rs.flushes != flushes || len(s.out) < before || b.broken {
		return nil
	}
	var nb *backend
	if inTx {
		if b.txStatus != 'E' || s.txReadOnly() {
			return nil
		}
		var ok bool
		if nb, ok = s.repin(ctx, rs, b); !ok {
			return nil // the client keeps the 25006; its transaction failed
		}
	} else {
		if b.txStatus != 'I' || s.status != 'I' || s.sessionReadOnly() || !rs.reprobe(ctx, s.srv) {
			return nil
		}
		var err error
		if nb, err = s.leaseFrom(ctx, rs.write); err != nil {
			return nil // the client keeps the 25006
		}
	}
	nw, nq, ok := s.replayFor(nb, wbuf, queue)
	if !ok {
		if inTx {
			s.unpin(nb, b)
		} else {
			s.release(nb)
		}
		return nil
	}
	for _, p := range x.portals {
		if p.where == b {
			p.where = nb
		}
	}
	if inTx {
		b.broken = true // its transaction failed; the pool closes it
	}
	s.release(b)
	s.out = s.out[:before]
	s.q.sqlstate = ""
	x.errored = false
	x.cur, x.wbuf, x.queue = nb, nw, nq
	s.srv.repl.retries.Inc()
	return s.relayQueue()
}

// txRetryableExt is txRetryable for the extended protocol: b holds the
// open transaction, pinned in this request, and none of its replies has
// been relayed yet.
func (s *session) txRetryableExt(b *backend) *replicaSet {
	if b == nil || s.x.errored || s.rs.leased != b || s.rs.relays != s.rs.relaysAtLease {
		return nil
	}
	return s.txRetryable(b)
}

// retryableExt returns the replica set whose write pool b is from when
// the request on b may be retried after a 25006: outside a transaction,
// nothing relayed from b yet in this request, no error so far.
func (s *session) retryableExt(b *backend) *replicaSet {
	if s.srv.sets == nil || b == nil || b.pool.reads || s.status != 'I' || s.tx != nil || s.x.errored ||
		s.q.sqlstate != "" || s.rs.leased != b || s.rs.relays != s.rs.relaysAtLease {
		return nil
	}
	if rs := s.srv.sets[b.pool.shard]; rs != nil && rs.write == b.pool {
		return rs
	}
	return nil
}

// replayFor rewrites a request's messages and their queued replies for
// another backend: the prepared statements it names are parsed there
// first when it lacks them (injected Parses of the old backend are kept
// only when the new one lacks the statement). ok is false when the request
// cannot be replayed (a statement no longer known, a simple Query).
func (s *session) replayFor(nb *backend, wbuf []byte, queue []reply) (nw []byte, nq []reply, ok bool) {
	if nb.stmts == nil {
		nb.stmts = map[string]bool{}
	}
	ensure := func(name string) bool {
		if name == "" || nb.stmts[name] {
			return true
		}
		for _, ps := range s.x.stmts {
			if ps.global == name {
				nb.stmts[name] = true
				nw = appendMsg(nw, &pgproto3.Parse{Name: ps.global, Query: ps.query, ParameterOIDs: ps.oids})
				nq = append(nq, reply{kind: rDrop, parsed: ps.global})
				return true
			}
		}
		return false
	}
	qi := 0
	next := func() (reply, bool) {
		for qi < len(queue) && queue[qi].kind == rSynth {
			nq = append(nq, queue[qi])
			qi++
		}
		if qi == len(queue) {
			return reply{}, false
		}
		qi++
		return queue[qi-1], true
	}
	for i := 0; i+5 <= len(wbuf); {
		typ := wbuf[i]
		n := int(binary.BigEndian.Uint32(wbuf[i+1 : i+5]))
		if i+1+n > len(wbuf) {
			return nil, nil, false
		}
		msg, body := wbuf[i:i+1+n], wbuf[i+5:i+1+n]
		i += 1 + n
		if typ == 'H' {
			nw = append(nw, msg...)
			continue
		}
		r, has := next()
		if !has {
			return nil, nil, false
		}
		switch typ {
		case 'Q':
			return nil, nil, false
		case 'P':
			var m pgproto3.Parse
			if m.Decode(body) != nil {
				return nil, nil, false
			}
			if nb.stmts[m.Name] {
				// The new backend has it: drop the Parse and its reply,
				// unless that reply was the client's (extskip.go).
				if r.kind == rPass {
					nq = append(nq, reply{kind: rSynth, msg: parseCompleteMsg, stmt: r.stmt})
				}
				continue
			}
			nb.stmts[m.Name] = true
		case 'B':
			var m pgproto3.Bind
			if m.Decode(body) != nil || !ensure(m.PreparedStatement) {
				return nil, nil, false
			}
		case 'D':
			var m pgproto3.Describe
			if m.Decode(body) != nil || (m.ObjectType == 'S' && !ensure(m.Name)) {
				return nil, nil, false
			}
		}
		nw = append(nw, msg...)
		nq = append(nq, r)
	}
	for ; qi < len(queue); qi++ {
		nq = append(nq, queue[qi])
	}
	return nw, nq, true
}
