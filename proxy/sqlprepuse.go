package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/parser"
)

// EXPLAIN EXECUTE and CREATE TABLE ... AS EXECUTE of the session's SQL
// prepared statements (sqlprepare.go).
//
// Postgres runs these with the prepared statement itself (its plan, its
// parameter types), which no backend has: the session's statements live
// in the proxy. The statement is routed as what it means (the EXECUTE
// replaced by the bound query, as EXECUTE itself is), and on the one
// shard it routes to the prepared statement is made for it, around the
// client's own text: PREPARE (the client's text), the statement, then
// DEALLOCATE, on the same backend. So EXPLAIN shows the plan Postgres
// makes for the prepared statement (generic or custom per
// plan_cache_mode, $n in a generic plan) and CREATE TABLE AS takes the
// column types the prepared query has. A statement that would run on
// several shards is refused with 0A000.

// around is SQL run quietly before and after each statement exec sends
// while it is set (one shard, one backend).
type around struct {
	before, after string
}

// sqlPreparedUse answers EXPLAIN EXECUTE and CREATE TABLE AS EXECUTE of
// a session statement. took says whether st was one.
func (s *session) sqlPreparedUse(ctx context.Context, st *parser.Statement) (took bool, err error) {
	e, ok := st.EmbeddedExecution()
	if !ok {
		return false, nil
	}
	ps, ok := s.sqlStmts[e.Name]
	if !ok {
		if _, reserved := s.rsv.prepared[e.Name]; reserved {
			return false, nil // on the reserved backend (reserve.go)
		}
		s.fail(&pgError{code: pgerrcode.InvalidSQLStatementName, msg: fmt.Sprintf("prepared statement \"%s\" does not exist", e.Name)})
		return true, nil
	}
	if n := ps.p.Params(); e.Args() != n && n > 0 {
		s.fail(&pgError{code: pgerrcode.SyntaxError, msg: fmt.Sprintf("wrong number of parameters for prepared statement \"%s\"", e.Name),
			detail: fmt.Sprintf("Expected %d parameters but got %d.", n, e.Args())})
		return true, nil
	}
	if strings.HasPrefix(e.Name, "sp_") {
		// The proxy's own statements on backends are named sp_N.
		s.fail(refused(fmt.Sprintf("EXPLAIN or CREATE TABLE AS of EXECUTE %s is not supported through shardproxy (the name is reserved on backends)", e.Name),
			"Prepare it under a name that does not start with sp_, or use the query itself."))
		return true, nil
	}
	sql, err := ps.p.BindInto(st, e)
	if err != nil {
		var ae *parser.ArgError
		if errors.As(err, &ae) {
			err = &pgError{code: ae.Code, msg: ae.Message}
		}
		s.fail(err)
		return true, nil
	}
	stmts, err := s.srv.cache.Parse(sql)
	if err != nil || len(stmts) != 1 {
		s.fail(fmt.Errorf("parse the bound statement: %w", err))
		return true, nil
	}
	eq := stmts[0]
	if err := s.sessionState(eq); err != nil {
		s.fail(err)
		return true, nil
	}
	plan, err := s.route(eq, nil)
	if err != nil {
		s.fail(err)
		return true, nil
	}
	if !plan.Single() || plan.SQL != nil || len(plan.KeyGuard) > 0 {
		s.fail(refused("EXPLAIN EXECUTE or CREATE TABLE AS EXECUTE of a statement on several shards is not supported",
			"EXPLAIN, or CREATE TABLE AS, the query itself."))
		return true, nil
	}
	s.q.plan = plan
	s.around = &around{before: ps.text, after: "DEALLOCATE " + quoteIdent(e.Name)}
	defer func() { s.around = nil }()
	return true, s.routed(ctx, eq, st.SQL, plan)
}

// execAround is exec with a.before run quietly first and a.after last on
// the same backend. A failed before is the statement's error; a failed
// after (an aborted transaction) leaves the backend to DISCARD ALL.
func (s *session) execAround(b *backend, sql string, inTx bool, a *around) error {
	// Every exec of the statement (a retry on a new primary too) is
	// wrapped, the inner one not.
	s.around = nil
	defer func() { s.around = a }()
	if err := s.quiet(b, a.before); err != nil {
		var se *shardError
		if errors.As(err, &se) {
			b.broken = true
		}
		if inTx || s.tx == b {
			s.status = b.txStatus
		}
		s.sendError(err)
		return nil
	}
	if err := s.exec(b, sql, inTx); err != nil || b.broken {
		return err
	}
	status := s.status
	if err := s.quiet(b, a.after); err != nil {
		b.discard = true
	}
	s.status = status
	return nil
}

// execPos moves the position of an error of an EXECUTE's bound statement
// (bound, its text) to the client's EXECUTE (client): into an argument
// where the error is in one, else none, as Postgres reports it.
type execPos struct {
	e             *parser.Execution
	ps            *sqlStmt
	bound, client string
}

// error moves the position of an ErrorResponse (raw, body) of the bound
// statement: into the client's EXECUTE where the error is in an
// argument, else to the PREPARE's text, as Postgres reports an error of
// the prepared query.
func (p *execPos) error(raw, body []byte) []byte {
	var e pgproto3.ErrorResponse
	if e.Decode(body) != nil || e.Position == 0 {
		return raw
	}
	pos := p.e.ArgPosition(p.bound, p.client, int(e.Position))
	if pos == 0 {
		pos = p.ps.p.QueryPosition(p.bound, p.ps.source, int(e.Position))
	}
	e.Position = int32(pos)
	return appendMsg(nil, &e)
}
