package parser

import pg "github.com/pganalyze/pg_query_go/v6"

// SQLPrepare returns the name and the analysed query of an SQL-level
// PREPARE name AS query.
func (s *Statement) SQLPrepare() (name string, query *Statement, ok bool) {
	if s == nil || s.node == nil {
		return "", nil, false
	}
	x, ok := s.node.Node.(*pg.Node_PrepareStmt)
	if !ok || x.PrepareStmt.Query == nil {
		return "", nil, false
	}
	q := analyse(s.SQL, x.PrepareStmt.Query)
	q.version = s.version
	return x.PrepareStmt.Name, q, true
}

// SQLExecute returns the statement name of an SQL-level EXECUTE.
func (s *Statement) SQLExecute() (name string, ok bool) {
	if s == nil || s.node == nil {
		return "", false
	}
	x, ok := s.node.Node.(*pg.Node_ExecuteStmt)
	if !ok {
		return "", false
	}
	return x.ExecuteStmt.Name, true
}
