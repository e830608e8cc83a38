package proxy

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/parser"
)

// lockTables runs LOCK [TABLE] ... IN ... MODE inside the client's
// transaction on every shard that holds the tables: all shards for sharded
// and reference tables, the default shard for tables not in the config.
// The shards join the transaction (a lock is not a write: no two-phase
// commit for a lock alone). Outside a transaction it fails with 25P01 as
// in Postgres. A returned error means the client connection is unusable.
func (s *session) lockTables(ctx context.Context, st *parser.Statement, tables []parser.Table) error {
	if s.status == 'I' {
		s.fail(&pgError{code: pgerrcode.NoActiveSQLTransaction, msg: "LOCK TABLE can only be used in transaction blocks"})
		return nil
	}
	shards, err := s.lockShards(tables)
	if err != nil {
		s.fail(err)
		return nil
	}
	bs := make([]*backend, 0, len(shards))
	for _, sh := range shards {
		b, err := s.txOn(ctx, sh)
		if err != nil {
			s.fail(err)
			return nil
		}
		bs = append(bs, b)
	}
	var firstErr []byte
	for _, b := range bs {
		if err := b.sendQuery(st.SQL); err != nil {
			s.fail(err)
			return nil
		}
		for {
			typ, body, raw, err := b.rd.next()
			if err != nil {
				b.broken = true
				s.fail(&shardError{shard: b.pool.name, err: err})
				return nil
			}
			if typ == 'Z' {
				b.txStatus = body[0]
				break
			}
			switch typ {
			case 'E':
				s.q.shardFailed(body)
				if firstErr == nil {
					firstErr = append([]byte(nil), raw...)
				}
			case 'N':
				s.out = append(s.out, raw...)
			}
		}
		if firstErr != nil {
			break // the transaction is aborted: the other shards need not wait for their locks
		}
	}
	if firstErr != nil {
		s.out = append(s.out, firstErr...)
		s.status = 'E'
		return nil
	}
	tag := &pgproto3.CommandComplete{CommandTag: []byte("LOCK TABLE")}
	s.q.tag(append(tag.CommandTag, 0))
	s.out = appendMsg(s.out, tag)
	return nil
}

// lockShards returns the shards a LOCK of tables runs on. Every shard must
// hold every table it locks: a statement naming tables on different sets
// of shards is refused (lock them in separate statements).
func (s *session) lockShards(tables []parser.Table) ([]int, error) {
	topo := s.srv.router.Topology()
	var shards []int
	for i, t := range tables {
		var these []int
		if tb := topo.Lookup(t); tb == nil {
			these = []int{topo.Default}
		} else {
			for sh := range topo.Shards {
				these = append(these, sh)
			}
		}
		if i > 0 && !slices.Equal(these, shards) {
			return nil, refused(fmt.Sprintf("LOCK of tables that live on different shards (%s and %s) in one statement is not supported", tables[0].Name, t.Name),
				"Lock tables in the config and tables not in it in separate LOCK statements.")
		}
		shards = these
	}
	return shards, nil
}
