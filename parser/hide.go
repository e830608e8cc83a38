package parser

import (
	"errors"
	"fmt"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// RowFilter gives the condition the visible rows of table t meet, as SQL
// over t's columns (unqualified); "" when every row of t is visible.
type RowFilter func(t Table) string

// ErrHideRows is returned by HideRows for a statement shape it cannot
// filter (the caller refuses the statement rather than answer wrongly).
var ErrHideRows = errors.New("rows of this statement cannot be filtered")

// HideRows rewrites sql so that it reads only the rows of each table that
// pass filter, whatever the statement's shape: every table in a FROM list
// or join (of a SELECT, a subquery, a CTE, UPDATE ... FROM, DELETE ...
// USING) becomes (SELECT * FROM t WHERE cond) under the same name, the
// target of UPDATE and DELETE gets AND cond, and COPY t TO becomes COPY
// (SELECT ... FROM t WHERE cond) TO; an INSERT's target is written, not
// read, and stays. It reports whether anything changed. Statements that
// read no rows (DDL, COPY FROM) are returned unchanged; a filtered table
// under TABLESAMPLE or as a MERGE target gives ErrHideRows.
func HideRows(sql string, filter RowFilter) (string, bool, error) {
	tree, err := pg.Parse(sql)
	if err != nil {
		return "", false, err
	}
	if len(tree.Stmts) != 1 {
		return "", false, fmt.Errorf("%w: %d statements", ErrHideRows, len(tree.Stmts))
	}
	h := &hider{filter: filter}
	root := tree.Stmts[0].Stmt
	switch {
	case root.GetSelectStmt() != nil, root.GetUpdateStmt() != nil, root.GetDeleteStmt() != nil, root.GetInsertStmt() != nil:
	case root.GetCopyStmt() != nil && !root.GetCopyStmt().IsFrom:
	case root.GetExplainStmt() != nil:
	default:
		// DDL, COPY FROM and the like read no rows: unchanged.
		return sql, false, nil
	}
	if err := h.walk(root.ProtoReflect()); err != nil {
		return "", false, err
	}
	if !h.changed {
		return sql, false, nil
	}
	out, err := pg.Deparse(tree)
	if err != nil {
		return "", false, fmt.Errorf("deparse: %w", err)
	}
	return out, true, nil
}

type hider struct {
	filter  RowFilter
	changed bool
}

func rangeTable(rv *pg.RangeVar) Table {
	return Table{Schema: rv.Schemaname, Name: rv.Relname}
}

// cond parses a filter condition into an expression node.
func (h *hider) cond(text string) (*pg.Node, error) {
	tree, err := pg.Parse("SELECT WHERE " + text)
	if err != nil {
		return nil, fmt.Errorf("row filter: %w", err)
	}
	return tree.Stmts[0].Stmt.GetSelectStmt().WhereClause, nil
}

// walk visits m's children first, then rewrites m's own FROM items: the
// subselects it creates are never visited again.
func (h *hider) walk(m protoreflect.Message) error {
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = h.walk(l.Get(i).Message())
			}
		case fd.Message() != nil && !fd.IsMap():
			err = h.walk(v.Message())
		}
		return err == nil
	})
	if err != nil {
		return err
	}
	switch n := m.Interface().(type) {
	case *pg.SelectStmt:
		return h.fromList(n.FromClause)
	case *pg.UpdateStmt:
		if err := h.fromList(n.FromClause); err != nil {
			return err
		}
		n.WhereClause, err = h.target(n.Relation, n.WhereClause)
		return err
	case *pg.DeleteStmt:
		if err := h.fromList(n.UsingClause); err != nil {
			return err
		}
		n.WhereClause, err = h.target(n.Relation, n.WhereClause)
		return err
	case *pg.JoinExpr:
		if err := h.fromItem(n.Larg); err != nil {
			return err
		}
		return h.fromItem(n.Rarg)
	case *pg.CopyStmt:
		if n.Relation == nil || n.IsFrom || h.filter(rangeTable(n.Relation)) == "" {
			return nil
		}
		sel := &pg.SelectStmt{FromClause: []*pg.Node{{Node: &pg.Node_RangeVar{RangeVar: n.Relation}}},
			LimitOption: pg.LimitOption_LIMIT_OPTION_DEFAULT, Op: pg.SetOperation_SETOP_NONE}
		if len(n.Attlist) == 0 {
			sel.TargetList = []*pg.Node{pg.MakeResTargetNodeWithVal(pg.MakeColumnRefNode([]*pg.Node{pg.MakeAStarNode()}, -1), -1)}
		}
		for _, a := range n.Attlist {
			sel.TargetList = append(sel.TargetList, pg.MakeResTargetNodeWithVal(pg.MakeColumnRefNode([]*pg.Node{pg.MakeStrNode(a.GetString_().GetSval())}, -1), -1))
		}
		if err := h.fromList(sel.FromClause); err != nil {
			return err
		}
		n.Relation, n.Attlist = nil, nil
		n.Query = &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: sel}}
		h.changed = true
	case *pg.RangeTableSample:
		if rv := n.Relation.GetRangeVar(); rv != nil && h.filter(rangeTable(rv)) != "" {
			return fmt.Errorf("%w: TABLESAMPLE of %s", ErrHideRows, rv.Relname)
		}
	case *pg.MergeStmt:
		// MERGE reads its target: refused rather than filtered.
		if rv := n.Relation; rv != nil && h.filter(rangeTable(rv)) != "" {
			return fmt.Errorf("%w: MERGE into %s", ErrHideRows, rv.Relname)
		}
	}
	return nil
}

func (h *hider) fromList(items []*pg.Node) error {
	for _, it := range items {
		if err := h.fromItem(it); err != nil {
			return err
		}
	}
	return nil
}

// fromItem replaces a filtered table in place by a subselect of its
// visible rows under the table's name (or alias, column aliases kept).
func (h *hider) fromItem(it *pg.Node) error {
	rv := it.GetRangeVar()
	if rv == nil {
		return nil
	}
	text := h.filter(rangeTable(rv))
	if text == "" {
		return nil
	}
	where, err := h.cond(text)
	if err != nil {
		return err
	}
	alias := rv.Alias
	if alias == nil {
		alias = &pg.Alias{Aliasname: rv.Relname}
	}
	inner := proto.Clone(rv).(*pg.RangeVar)
	inner.Alias = nil
	sel := &pg.SelectStmt{
		TargetList:  []*pg.Node{pg.MakeResTargetNodeWithVal(pg.MakeColumnRefNode([]*pg.Node{pg.MakeAStarNode()}, -1), -1)},
		FromClause:  []*pg.Node{{Node: &pg.Node_RangeVar{RangeVar: inner}}},
		WhereClause: where,
		LimitOption: pg.LimitOption_LIMIT_OPTION_DEFAULT,
		Op:          pg.SetOperation_SETOP_NONE,
	}
	it.Node = &pg.Node_RangeSubselect{RangeSubselect: &pg.RangeSubselect{
		Subquery: &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: sel}}, Alias: alias}}
	h.changed = true
	return nil
}

// target adds the filter to the WHERE of an UPDATE or DELETE of rv.
func (h *hider) target(rv *pg.RangeVar, where *pg.Node) (*pg.Node, error) {
	if rv == nil {
		return where, nil
	}
	qual := rv.Relname
	if rv.Alias != nil {
		qual = rv.Alias.Aliasname
	}
	text := h.filter(rangeTable(rv))
	if text == "" {
		return where, nil
	}
	c, err := h.cond(text)
	if err != nil {
		return nil, err
	}
	qualify(c.ProtoReflect(), qual)
	h.changed = true
	if where == nil {
		return c, nil
	}
	return pg.MakeBoolExprNode(pg.BoolExprType_AND_EXPR, []*pg.Node{where, c}, -1), nil
}

// qualify prefixes the unqualified column references under m with qual.
func qualify(m protoreflect.Message, qual string) {
	if cr, ok := m.Interface().(*pg.ColumnRef); ok {
		if len(cr.Fields) == 1 && cr.Fields[0].GetString_() != nil {
			cr.Fields = append([]*pg.Node{pg.MakeStrNode(qual)}, cr.Fields...)
		}
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				qualify(l.Get(i).Message(), qual)
			}
		case fd.Message() != nil && !fd.IsMap():
			qualify(v.Message(), qual)
		}
		return true
	})
}
