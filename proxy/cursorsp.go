package proxy

import "context"

// Cursors and savepoints.
//
// Postgres drops a cursor (and a protocol portal) opened inside a
// subtransaction when that subtransaction is rolled back: after
// ROLLBACK TO SAVEPOINT a, a cursor declared after SAVEPOINT a no longer
// exists (FETCH: 34000) and its name is free again. Cursors opened before
// the savepoint stay, at the position they reached. The shards drop their
// part themselves (the savepoint is rolled back on every shard of the
// transaction); the proxy forgets what it keeps of them: merged cursors
// and the names of one-shard cursors. Each remembers how many savepoints
// were open when it was declared; RELEASE hands it to the enclosing level.

// cursorsRolledBack forgets the cursors opened while more than depth
// savepoints were open (ROLLBACK TO the savepoint at index depth-1).
func (s *session) cursorsRolledBack(depth int) {
	for i := 0; i < len(s.mc.open); {
		if c := s.mc.open[i]; c.sp >= depth {
			s.endCursor(c, false) // removes it from s.mc.open
			continue
		}
		i++
	}
	for name, ci := range s.rsv.cursors {
		if ci.sp >= depth {
			delete(s.rsv.cursors, name)
		}
	}
}

// cursorsReleased moves cursors opened inside released savepoints to the
// enclosing level (depth savepoints remain open).
func (s *session) cursorsReleased(depth int) {
	for _, c := range s.mc.open {
		c.sp = min(c.sp, depth)
	}
	for name, ci := range s.rsv.cursors {
		if ci.sp > depth {
			ci.sp = depth
			s.rsv.cursors[name] = ci
		}
	}
}

// unknownCursor runs FETCH, MOVE or CLOSE of a cursor the client did not
// declare through the proxy. Inside a transaction a function may have
// opened it (a SQL function's DECLARE, a PL/pgSQL refcursor), on the
// default shard where a statement naming no table runs: the statement goes
// there, and the shard answers (34000 when it has no such cursor either).
// Outside a transaction no such cursor can exist on a pooled backend.
func (s *session) unknownCursor(ctx context.Context, name, sql string) error {
	if s.status == 'I' {
		s.fail(noCursor(name))
		return nil
	}
	return s.onShard(ctx, s.srv.router.Topology().Default, sql)
}
