package proxy

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgerrcode"

	"github.com/shardproxy/shardproxy/parser"
)

// SQL-level PREPARE of a query on a sharded table is supported inside a
// transaction when the router places the query on one shard: the statement
// is prepared on the transaction's backend there and lasts until the
// transaction ends (the backend is discarded clean when it goes back to
// the pool). A PREPARE of anything else (catalog queries, as pg_dump's,
// tables not in the config) is the session's, on the default shard's
// reserved backend (reserve.go).

// namesShardedTable reports whether q names a sharded (not reference)
// table that is not the client's temporary table.
func (s *session) namesShardedTable(q *parser.Statement) bool {
	topo := s.srv.router.Topology()
	for _, t := range q.Tables {
		if tb := topo.Lookup(t); tb != nil && tb.Strategy != "reference" {
			if _, temp, _ := s.routeTemp(q); !temp {
				return true
			}
		}
	}
	return false
}

// sqlPrepare runs PREPARE name AS query. A returned error means the client
// connection is unusable.
func (s *session) sqlPrepare(ctx context.Context, st *parser.Statement, name string, query *parser.Statement) error {
	if s.status == 'I' {
		s.fail(refused("SQL PREPARE outside a transaction block is not supported through shardproxy: transaction pooling gives each transaction another backend",
			"Use your driver's prepared statements (the extended protocol), or PREPARE inside BEGIN ... COMMIT, where it lasts until the transaction ends."))
		return nil
	}
	plan, err := s.route(query, nil)
	if err != nil {
		s.fail(err)
		return nil
	}
	if !plan.Single() || len(plan.KeyGuard) > 0 || plan.SQL != nil {
		s.fail(refused("SQL PREPARE of a query that runs on several shards is not supported",
			"Run the query itself (the proxy merges it), or prepare it with the driver's extended protocol."))
		return nil
	}
	if err := s.txWrites(query, plan); err != nil {
		s.fail(err)
		return nil
	}
	b, err := s.txOn(ctx, plan.Shards[0])
	if err != nil {
		s.fail(err)
		return nil
	}
	b.discard = true // the prepared statement must not outlive the lease
	if s.sqlPrepared == nil {
		s.sqlPrepared = map[string]*backend{}
	}
	s.sqlPrepared[name] = b
	return s.exec(b, st.SQL, true)
}

// sqlExecute runs EXECUTE name on the backend that prepared it.
func (s *session) sqlExecute(st *parser.Statement, name string) error {
	b := s.sqlPrepared[name]
	if b == nil || s.status == 'I' || !slices.Contains(s.txBackends(), b) {
		s.fail(&pgError{code: pgerrcode.InvalidSQLStatementName, msg: fmt.Sprintf("prepared statement \"%s\" does not exist", name)})
		return nil
	}
	return s.exec(b, st.SQL, true)
}
