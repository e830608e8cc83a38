package parser

import (
	"errors"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// ExplainAround returns the EXPLAIN statement s (Kind Explain) with the same
// options around another query, given as SQL text (one shard's rewritten
// statement): EXPLAIN (ANALYZE) <query>. It also reports whether the
// options ask for a format other than text.
func (s *Statement) ExplainAround(query string) (sql string, structured bool, err error) {
	if s.Kind != Explain || s.node == nil {
		return "", false, errors.New("not an EXPLAIN")
	}
	ex := s.node.GetExplainStmt()
	if ex == nil {
		return "", false, errors.New("not an EXPLAIN")
	}
	for _, o := range ex.Options {
		if d := o.GetDefElem(); d != nil && d.Defname == "format" {
			if v := d.Arg.GetString_(); v != nil && !strings.EqualFold(v.Sval, "text") {
				structured = true
			}
		}
	}
	inner, err := pg.Parse(query)
	if err != nil {
		return "", false, err
	}
	if len(inner.Stmts) != 1 {
		return "", false, errors.New("want one statement")
	}
	node := &pg.Node{Node: &pg.Node_ExplainStmt{ExplainStmt: &pg.ExplainStmt{Query: inner.Stmts[0].Stmt, Options: ex.Options}}}
	sql, err = pg.Deparse(&pg.ParseResult{Version: s.version, Stmts: []*pg.RawStmt{{Stmt: node}}})
	return sql, structured, err
}

// ExplainsCursor reports whether s is EXPLAIN DECLARE ... CURSOR FOR q (its
// Inner is q).
func (s *Statement) ExplainsCursor() bool {
	if s.Kind != Explain || s.node == nil {
		return false
	}
	ex := s.node.GetExplainStmt()
	return ex != nil && ex.Query.GetDeclareCursorStmt() != nil
}
