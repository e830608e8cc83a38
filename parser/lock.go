package parser

import pg "github.com/pganalyze/pg_query_go/v6"

// Lock returns the tables of a LOCK [TABLE] statement, in the order named.
func (s *Statement) Lock() ([]Table, bool) {
	if s == nil || s.node == nil {
		return nil, false
	}
	x, ok := s.node.Node.(*pg.Node_LockStmt)
	if !ok {
		return nil, false
	}
	var tables []Table
	for _, n := range x.LockStmt.Relations {
		if rv := n.GetRangeVar(); rv != nil {
			tables = append(tables, Table{Schema: rv.Schemaname, Name: rv.Relname})
		}
	}
	return tables, true
}
