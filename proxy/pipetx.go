package proxy

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/parser"
)

// A pipeline's implicit transaction across shards.
//
// Postgres runs everything a client sends before Sync outside a
// transaction block as one implicit transaction: an error anywhere rolls
// back all of it, and a statement sees the writes of the earlier ones. A
// request that stays on one backend gets that from the backend itself. One
// that needs several (statements for different shards when any of them
// writes, a write across shards, a cross-shard read after a write) becomes a
// transaction of the proxy's: the backend already in use turns its implicit
// transaction into an explicit one (BEGIN, as Postgres does when a client
// sends BEGIN there), the other shards join it as in any transaction, and
// Sync commits it (two-phase across writing shards) or, after an error,
// rolls it all back; the client then reads ReadyForQuery 'I' as from
// Postgres. A BEGIN later in the same request makes it the client's own
// transaction, which Sync no longer ends.

// errSkipped ends a message that found the request failed (a backend's
// error read while switching backends): like Postgres, the proxy skips the
// rest until Sync, and the client gets nothing for it.
var errSkipped = errors.New("skipped after an error until Sync")

// pipelineTx starts the request's implicit transaction (s.status becomes
// 'T'). An error is for the client.
func (s *session) pipelineTx(ctx context.Context) error {
	x := s.x
	cur := x.cur
	if cur != nil && cur.pool.reads {
		// A replica's reads need no atomicity: they end here, and the
		// transaction starts on the primaries.
		if err := s.extRelease(); err != nil {
			return err
		}
		if x.errored {
			return errSkipped
		}
		cur = nil
	}
	if cur != nil {
		if err := s.extFlush(false); err != nil {
			return err
		}
		if x.errored {
			return errSkipped
		}
		if err := s.quiet(cur, "BEGIN"); err != nil {
			cur.broken = true
			return err
		}
	}
	s.beginTx("BEGIN")
	x.implicitTx = true
	if cur != nil {
		s.tx = cur
		if x.writes {
			s.markWrote(cur.pool.shard)
		}
	}
	return nil
}

// pipelineWantsTx reports whether the next statement of a request outside
// a transaction needs the request's implicit transaction: it runs on
// several shards and writes, or it runs elsewhere than what the request
// wrote so far.
func (s *session) pipelineWantsTx(st *parser.Statement, writes, scatter bool) bool {
	x := s.x
	if s.status != 'I' || x.errored || st.NoTransactionBlock() {
		return false
	}
	if scatter {
		return writes || (x.cur != nil && x.writes)
	}
	return x.cur != nil && (writes || x.writes) && !x.cur.pool.reads
}

// pipelineEnd ends the request's implicit transaction at Sync: committed,
// or rolled back when anything in the request failed. A failed commit is
// the client's error, before its ReadyForQuery.
func (s *session) pipelineEnd(ctx context.Context, failed bool) error {
	x := s.x
	if !x.implicitTx {
		return nil
	}
	x.implicitTx = false
	if failed && s.status == 'T' {
		s.status = 'E'
	}
	return s.txEnd(ctx, true, false)
}

// pipelineUndo rolls back what the current backend did in the request's
// implicit transaction when the proxy, not the backend, failed the
// request: at its Sync it would otherwise commit. (ROLLBACK inside an
// implicit transaction aborts it, with a warning the proxy drops.)
func (s *session) pipelineUndo() {
	x := s.x
	b := x.cur
	if b == nil || s.status != 'I' || !x.writes || s.inTx(b) {
		return
	}
	if err := s.quiet(b, "ROLLBACK"); err != nil {
		b.broken = true
	}
}

// beginInPipeline handles BEGIN (without transaction modes) in a request
// whose implicit transaction the proxy already opened: the transaction
// becomes the client's.
func (s *session) beginInPipeline(tag string) bool {
	x := s.x
	if !x.implicitTx {
		return false
	}
	x.implicitTx = false
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(tag)})
	return true
}
