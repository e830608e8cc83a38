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

// SQL PREPARE / EXECUTE / DEALLOCATE (simple protocol).
//
// A SQL prepared statement is the session's, not a backend's: the session
// keeps its name, its parsed query and the type of each parameter, so it
// survives transaction pooling and holds no backend. The types are
// Postgres's own: PREPARE is checked on the default shard by preparing the
// same statement there (a missing table gives 42P01 then, as in Postgres),
// reading the parameter types Postgres resolved (declared or inferred)
// from pg_prepared_statements, and deallocating it.
//
// EXECUTE name(args) substitutes each argument expression for its $n in
// the parsed query, cast to the parameter's type (`(arg)::type`), deparses
// the result and runs it exactly as if the client had sent it: the router
// places it by its now-constant shard key (one shard, or a merge across
// shards), writes join the transaction (2PC across shards) like any
// statement, and the tags are the inner statement's, as EXECUTE's are in
// Postgres. Because every parameter carries the type Postgres gave it,
// the substituted statement means what the prepared one means. What
// differs: an argument is evaluated where each $n appears (a volatile
// argument used twice is evaluated twice), Postgres's plan cache is not
// used, and pg_prepared_statements does not list these statements.
//
// Statements prepared through the extended protocol's Parse/Bind of a
// PREPARE text stay on the default shard's reserved backend (reserve.go);
// EXECUTE and DEALLOCATE find either kind.

// sqlStmt is one SQL prepared statement of the session.
type sqlStmt struct {
	p *parser.Prepared // with its parameters' types (SetTypes)
	// text is the client's PREPARE, to make the statement on a backend
	// for EXPLAIN EXECUTE and CREATE TABLE AS EXECUTE (sqlprepuse.go).
	text string
	// source is the query string PREPARE came in, where Postgres's
	// error positions for the prepared query point (sqlprepuse.go).
	source string
}

// sqlPrepareStmt answers SQL PREPARE and EXECUTE of the session's
// statements (DEALLOCATE: session.go's deallocate). took says whether st was one of them.
func (s *session) sqlPrepareStmt(ctx context.Context, st *parser.Statement) (took bool, err error) {
	if p, ok := st.SQLPrepared(); ok {
		return true, s.sqlPrepare(ctx, st, p)
	}
	if e, ok := st.SQLExecution(); ok {
		if _, known := s.sqlStmts[e.Name]; !known {
			if _, reserved := s.rsv.prepared[e.Name]; reserved {
				return false, nil // reserve.go's
			}
		}
		return true, s.sqlExecute(ctx, e, st.SQL)
	}
	return false, nil
}

// hasSQLPrepared reports whether a statement is a SQL PREPARE, EXECUTE or
// DEALLOCATE (which a multi-statement string runs statement by statement).
func hasSQLPrepared(st *parser.Statement) bool {
	_, p := st.SQLPrepared()
	_, e := st.SQLExecution()
	_, _, d := st.Deallocate()
	_, u := st.EmbeddedExecution() // sqlprepuse.go
	return p || e || d || u
}

// sqlPrepare checks PREPARE on the default shard and keeps the statement.
func (s *session) sqlPrepare(ctx context.Context, st *parser.Statement, p *parser.Prepared) error {
	_, dupSQL := s.sqlStmts[p.Name]
	_, dupRsv := s.rsv.prepared[p.Name]
	_, dupExt := s.ext().stmts[p.Name]
	if dupSQL || dupRsv || (dupExt && p.Name != "") {
		s.fail(&pgError{code: pgerrcode.DuplicatePreparedStatement, msg: fmt.Sprintf("prepared statement \"%s\" already exists", p.Name)})
		return nil
	}
	// The client's own text, so that an error's position is Postgres's;
	// under another name where it could meet the proxy's statement names
	// on the backend (sp_n).
	name, text := p.Name, strings.TrimRight(strings.TrimSpace(st.SQL), ";")
	own := text
	if strings.HasPrefix(name, "sp_") {
		name = "shardproxy_check"
		var err error
		if text, err = st.CheckSQL(name); err != nil {
			s.fail(err)
			return nil
		}
	}
	check := text + "\n;SELECT t::text FROM pg_catalog.pg_prepared_statements, unnest(parameter_types) WITH ORDINALITY u(t, i) WHERE name = " +
		quoteLiteral(name) + " ORDER BY i;DEALLOCATE " + quoteIdent(name)
	shard := s.srv.router.Topology().Default
	var b *backend
	var err error
	if s.status != 'I' {
		b, err = s.txOn(ctx, shard)
	} else {
		b, err = s.lease(ctx, shard)
	}
	if err != nil {
		s.fail(err)
		return nil
	}
	types, failed, err := s.prepareCheck(b, check)
	if !s.inTx(b) {
		s.release(b)
	}
	if err != nil {
		s.fail(err)
		return nil
	}
	if failed {
		if s.status == 'T' {
			s.status = 'E'
		}
		return nil
	}
	if err := p.SetTypes(types); err != nil {
		s.fail(err)
		return nil
	}
	if s.sqlStmts == nil {
		s.sqlStmts = map[string]*sqlStmt{}
	}
	s.sqlStmts[p.Name] = &sqlStmt{p: p, text: own, source: st.SQL}
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("PREPARE")})
	return nil
}

// prepareCheck runs check on b: the parameter types it lists, or its
// ErrorResponse relayed to the client (failed). err is a backend failure.
func (s *session) prepareCheck(b *backend, check string) (types []string, failed bool, err error) {
	if err := b.sendQuery(check); err != nil {
		return nil, false, err
	}
	for {
		typ, body, raw, err := b.rd.next()
		if err != nil {
			b.broken = true
			return nil, false, &shardError{shard: b.pool.name, err: err}
		}
		switch typ {
		case 'D':
			var d pgproto3.DataRow
			if err := d.Decode(body); err != nil || len(d.Values) != 1 {
				b.broken = true
				return nil, false, &shardError{shard: b.pool.name, err: errors.New("malformed DataRow")}
			}
			types = append(types, string(d.Values[0]))
		case 'E':
			if !failed {
				s.out = append(s.out, raw...)
			}
			failed = true
		case 'N':
			s.out = append(s.out, raw...)
		case 'S':
			noteStatus(b, body)
		case 'Z':
			b.txStatus = body[0]
			return types, failed, nil
		}
	}
}

// sqlExecute runs EXECUTE: the prepared query with the arguments in place
// of its parameters, routed and run as the client's own statement.
func (s *session) sqlExecute(ctx context.Context, e *parser.Execution, client string) error {
	ps, ok := s.sqlStmts[e.Name]
	if !ok {
		s.fail(&pgError{code: pgerrcode.InvalidSQLStatementName, msg: fmt.Sprintf("prepared statement \"%s\" does not exist", e.Name)})
		return nil
	}
	// Postgres ignores the arguments of a statement without parameters.
	if n := ps.p.Params(); e.Args() != n && n > 0 {
		s.fail(&pgError{code: pgerrcode.SyntaxError, msg: fmt.Sprintf("wrong number of parameters for prepared statement \"%s\"", e.Name),
			detail: fmt.Sprintf("Expected %d parameters but got %d.", ps.p.Params(), e.Args())})
		return nil
	}
	sql, err := ps.p.Bind(e)
	if err != nil {
		var ae *parser.ArgError
		if errors.As(err, &ae) {
			err = &pgError{code: ae.Code, msg: ae.Message}
		}
		s.fail(err)
		return nil
	}
	// Errors' positions are in the bound text: moved to the client's
	// (sqlprepuse.go).
	s.execPos = &execPos{e: e, ps: ps, bound: sql, client: client}
	defer func() { s.execPos = nil }()
	// The simple query's own path: statements of one shape share a parsed
	// template whatever their constants (simpleQuery).
	if st, lits, ok := s.srv.cache.Template(sql); ok && st.Session == parser.NoSessionUse {
		if plan, err := s.route(st, lits); err == nil && plan.SQL == nil {
			s.q.st, s.q.plan = st, plan
			return s.routed(ctx, st, sql, plan)
		}
	}
	stmts, err := s.srv.cache.Parse(sql)
	if err != nil || len(stmts) != 1 {
		s.fail(fmt.Errorf("parse the bound statement: %w", err))
		return nil
	}
	return s.statement(ctx, stmts[0])
}
