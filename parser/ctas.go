package parser

import (
	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// EmptyCopy returns, for CREATE TABLE ... AS and SELECT ... INTO (with
// data), the statement that creates the same table with no rows:
// CREATE TABLE t AS SELECT * FROM (query) AS q LIMIT 0, which evaluates
// none of the query's rows (LIMIT 0 reads nothing) and answers "SELECT 0".
// The router runs it on the shards other than the one that holds the new
// table's rows, so that the table exists on every shard like any other
// DDL; target is the new table. ok is false for other statements.
func (s *Statement) EmptyCopy() (sql string, target Table, ok bool) {
	var (
		query       *pg.SelectStmt
		into        *pg.IntoClause
		ifNotExists bool
	)
	switch {
	case s.node.GetCreateTableAsStmt() != nil:
		c := s.node.GetCreateTableAsStmt()
		if c.Objtype != pg.ObjectType_OBJECT_TABLE || c.Into == nil || c.Into.SkipData || c.Query.GetSelectStmt() == nil {
			return "", Table{}, false
		}
		query, into, ifNotExists = proto.Clone(c.Query.GetSelectStmt()).(*pg.SelectStmt), proto.Clone(c.Into).(*pg.IntoClause), c.IfNotExists
	case s.node.GetSelectStmt() != nil:
		has := false
		for x := s.node.GetSelectStmt(); x != nil && !has; x = x.Larg {
			has = x.IntoClause != nil
		}
		if !has {
			return "", Table{}, false
		}
		query = proto.Clone(s.node.GetSelectStmt()).(*pg.SelectStmt)
		// INTO sits on the leftmost SELECT of a set operation.
		for x := query; x != nil; x = x.Larg {
			if x.IntoClause != nil {
				into, x.IntoClause = x.IntoClause, nil
				break
			}
		}
		if into == nil {
			return "", Table{}, false
		}
	default:
		return "", Table{}, false
	}
	if into.Rel == nil || into.Rel.Relpersistence == "t" {
		return "", Table{}, false // temporary tables are the session's business
	}
	wrapped := &pg.SelectStmt{
		TargetList: []*pg.Node{pg.MakeResTargetNodeWithVal(pg.MakeColumnRefNode([]*pg.Node{pg.MakeAStarNode()}, -1), -1)},
		FromClause: []*pg.Node{{Node: &pg.Node_RangeSubselect{RangeSubselect: &pg.RangeSubselect{
			Subquery: &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: query}},
			Alias:    &pg.Alias{Aliasname: "q"},
		}}}},
		LimitCount:  pg.MakeAConstIntNode(0, -1),
		LimitOption: pg.LimitOption_LIMIT_OPTION_COUNT,
	}
	stmt := &pg.CreateTableAsStmt{
		Query:       &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: wrapped}},
		Into:        into,
		Objtype:     pg.ObjectType_OBJECT_TABLE,
		IfNotExists: ifNotExists,
	}
	out, err := pg.Deparse(&pg.ParseResult{Version: s.version, Stmts: []*pg.RawStmt{{Stmt: &pg.Node{Node: &pg.Node_CreateTableAsStmt{CreateTableAsStmt: stmt}}}}})
	if err != nil {
		return "", Table{}, false
	}
	return out, Table{Schema: into.Rel.Schemaname, Name: into.Rel.Relname}, true
}
