package proxy

import (
	"context"
	"time"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// functionCall relays a FunctionCall message (libpq's PQfn: the lo_*
// large-object calls, psql's \lo_import) to the default shard, where
// objects outside the config live, and relays the FunctionCallResponse and
// ReadyForQuery back. Inside a transaction it runs on the transaction's
// backend on that shard; a function call may write, so it counts as a
// write there. raw is the whole message.
func (s *session) functionCall(ctx context.Context, raw []byte) error {
	s.q.begin()
	s.rc.dirty = true // results.go: it may write (until_write ends)
	if s.status == 'E' {
		s.sendError(inFailedTx())
		return s.readyForQuery()
	}
	def := s.srv.router.Topology().Default
	var b *backend
	var err error
	if s.status != 'I' {
		if err = s.txWrites(&parser.Statement{Kind: parser.Select, Writes: true}, &router.Plan{Shards: []int{def}, Write: true}); err == nil {
			b, err = s.txOn(ctx, def)
		}
	} else {
		b, err = s.lease(ctx, def)
	}
	if err != nil {
		s.fail(err)
		return s.readyForQuery()
	}
	inTx := s.inTx(b)
	if _, werr := b.conn.Write(raw); werr != nil {
		b.broken = true
		s.fail(&shardError{shard: b.pool.name, err: werr})
	} else if err := s.relayToReady(b, inTx); err != nil {
		return err
	}
	if !inTx {
		s.release(b)
	}
	return s.readyForQuery()
}

// relayToReady relays b's replies as raw frames up to (not including)
// ReadyForQuery, keeping the transaction status.
func (s *session) relayToReady(b *backend, inTx bool) error {
	sent := time.Now()
	for {
		typ, body, raw, err := b.rd.next()
		if err != nil {
			b.broken = true
			s.fail(&shardError{shard: b.pool.name, err: err})
			if inTx {
				s.status = 'E'
			}
			return nil
		}
		switch typ {
		case 'Z':
			b.txStatus = body[0]
			if inTx {
				if body[0] == 'E' || b == s.tx {
					s.status = body[0]
				}
			}
			s.shardDone(b, sent)
			return nil
		case 'S':
			noteStatus(b, body)
		case 'E':
			s.q.shardFailed(body)
		}
		s.out = append(s.out, raw...)
		if len(s.out) >= flushAt {
			if err := s.flush(); err != nil {
				b.broken = true
				return err
			}
		}
	}
}
