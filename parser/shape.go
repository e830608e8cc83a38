package parser

import (
	"fmt"
	"math"
	"strconv"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Shape describes what a SELECT asks of its rows beyond filtering: what a
// fan-out must merge to answer like one Postgres would.
type Shape struct {
	Union    bool // UNION, INTERSECT or EXCEPT that removes duplicates
	UnionAll bool
	// Intersect is INTERSECT or EXCEPT (with or without ALL).
	Intersect bool
	// BranchLimit is a LIMIT or OFFSET inside a set operation's branch.
	BranchLimit bool
	Distinct    bool
	GroupBy     bool
	Having      bool
	Window      bool
	OrderBy     bool
	Limit       bool
	Offset      bool
	Aggregate   bool // an aggregate call appears in the target list
	// Aggs has one entry per target when every target is exactly one
	// aggregate call (count(*), sum(x)...), nil otherwise.
	Aggs []Agg
	// Subquery is true when a target or the filter holds a subquery.
	Subquery bool
	// Sort is the ORDER BY of a plain (not set-operation) SELECT, each key
	// resolved to an output column; SortOK is false when some key is not
	// an output column (an expression, a column not selected, SELECT *).
	Sort   []SortKey
	SortOK bool
	// LimitCount is the LIMIT's value (a literal or a parameter); nil for
	// no LIMIT or LIMIT ALL. OffsetCount likewise for OFFSET.
	LimitCount  *Value
	OffsetCount *Value
}

// SortKey is one ORDER BY key: an output column and its direction.
type SortKey struct {
	Column     int // 0-based index in the result's columns; -1: by Name
	Desc       bool
	NullsFirst bool
	// Name is the column's name when the select list has * and the key
	// names a column: the result's columns, known only at run time, must
	// hold exactly one column of that name.
	Name string
}

// Agg is one aggregate target.
type Agg struct {
	Func     string // lower case: count, sum, min, max...
	Distinct bool
	Ordered  bool // ORDER BY inside the call, or WITHIN GROUP
	Filter   bool
}

// aggregates are the built-in aggregate functions recognised by name.
var aggregates = map[string]bool{
	"count": true, "sum": true, "min": true, "max": true, "avg": true,
	"bool_and": true, "bool_or": true, "every": true, "bit_and": true, "bit_or": true, "bit_xor": true,
	"string_agg": true, "array_agg": true, "json_agg": true, "jsonb_agg": true,
	"json_object_agg": true, "jsonb_object_agg": true, "xmlagg": true,
	"stddev": true, "stddev_pop": true, "stddev_samp": true, "variance": true, "var_pop": true, "var_samp": true,
	"corr": true, "covar_pop": true, "covar_samp": true, "regr_avgx": true, "regr_avgy": true, "regr_count": true,
	"regr_intercept": true, "regr_r2": true, "regr_slope": true, "regr_sxx": true, "regr_sxy": true, "regr_syy": true,
	"percentile_cont": true, "percentile_disc": true, "mode": true, "rank": true, "dense_rank": true,
	"percent_rank": true, "cume_dist": true, "range_agg": true, "range_intersect_agg": true,
}

func isAggregate(f *pg.FuncCall) bool {
	ns := names(f.Funcname)
	name := ns[len(ns)-1]
	return f.Over == nil && (aggregates[name] || f.AggStar || f.AggDistinct || f.AggWithinGroup || len(f.AggOrder) > 0 || f.AggFilter != nil)
}

// Shape returns the SELECT's shape; ok is false for other statements.
func (s *Statement) Shape() (Shape, bool) {
	if s.Kind == Explain {
		return s.Inner.Shape()
	}
	sel := s.node.GetSelectStmt()
	if sel == nil {
		return Shape{}, false
	}
	var sh Shape
	if sel.Op != pg.SetOperation_SETOP_NONE {
		if sel.Op == pg.SetOperation_SETOP_UNION && sel.All {
			sh.UnionAll = true
		} else {
			sh.Union = true
		}
		if sel.Op != pg.SetOperation_SETOP_UNION {
			sh.Intersect = true
		}
		// A set operation's own ORDER BY/LIMIT apply to the whole result;
		// its branches are checked as SELECTs of their own.
		for _, b := range []*pg.SelectStmt{sel.Larg, sel.Rarg} {
			bs := (&Statement{Kind: Select, node: &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: b}}})
			inner, _ := bs.Shape()
			if inner.Limit || inner.Offset || inner.BranchLimit {
				sh.BranchLimit = true
			}
			sh.Intersect = sh.Intersect || inner.Intersect
			mergeShape(&sh, inner)
		}
	}
	sh.Distinct = sh.Distinct || len(sel.DistinctClause) > 0
	sh.GroupBy = sh.GroupBy || len(sel.GroupClause) > 0
	sh.Having = sh.Having || sel.HavingClause != nil
	sh.Window = sh.Window || len(sel.WindowClause) > 0
	sh.OrderBy = sh.OrderBy || len(sel.SortClause) > 0
	sh.Limit = sh.Limit || sel.LimitCount != nil
	sh.Offset = sh.Offset || sel.LimitOffset != nil
	if sel.WhereClause != nil && containsNode(sel.WhereClause.ProtoReflect(), isSubLink) {
		sh.Subquery = true
	}
	aggs := make([]Agg, 0, len(sel.TargetList))
	allAggs := len(sel.TargetList) > 0
	for _, t := range sel.TargetList {
		rt := t.GetResTarget()
		if rt == nil || rt.Val == nil {
			allAggs = false
			continue
		}
		m := rt.Val.ProtoReflect()
		if containsNode(m, isSubLink) {
			sh.Subquery = true
		}
		if containsNode(m, func(m protoreflect.Message) bool {
			f, ok := m.Interface().(*pg.FuncCall)
			return ok && f.Over != nil
		}) {
			sh.Window = true
		}
		hasAgg := containsNode(m, func(m protoreflect.Message) bool {
			f, ok := m.Interface().(*pg.FuncCall)
			return ok && isAggregate(f)
		})
		sh.Aggregate = sh.Aggregate || hasAgg
		f := rt.Val.GetFuncCall()
		if f == nil || !isAggregate(f) {
			allAggs = false
			continue
		}
		// The aggregate's own arguments must not hold another aggregate.
		ns := names(f.Funcname)
		aggs = append(aggs, Agg{
			Func:     ns[len(ns)-1],
			Distinct: f.AggDistinct,
			Ordered:  len(f.AggOrder) > 0 || f.AggWithinGroup,
			Filter:   f.AggFilter != nil,
		})
	}
	if allAggs {
		sh.Aggs = aggs
	}
	if sel.Op == pg.SetOperation_SETOP_NONE {
		sh.Sort, sh.SortOK = sortKeys(sel)
	} else {
		sh.Sort, sh.SortOK = setOpSortKeys(sel)
	}
	sh.LimitCount = countValue(sel.LimitCount)
	sh.OffsetCount = countValue(sel.LimitOffset)
	return sh, true
}

// sortKeys resolves ORDER BY keys to output columns the way Postgres
// does: an ordinal, an output column name (alias or column name), or the
// same column reference as a select-list entry.
func sortKeys(sel *pg.SelectStmt) ([]SortKey, bool) {
	if len(sel.SortClause) == 0 {
		return nil, true
	}
	var outs []string   // output column names
	var refs [][]string // select-list column references, as written
	star := false       // the select list has * (or t.*)
	for _, t := range sel.TargetList {
		rt := t.GetResTarget()
		if rt == nil || rt.Val == nil {
			return nil, false
		}
		var ref []string
		if c := rt.Val.GetColumnRef(); c != nil {
			for _, f := range c.Fields {
				if f.GetAStar() != nil {
					star = true // output columns known only at run time
				}
			}
			ref = names(c.Fields)
		}
		name := rt.Name
		if name == "" {
			name, _ = figureColname(rt.Val)
		}
		outs = append(outs, name)
		refs = append(refs, ref)
	}
	keys := make([]SortKey, 0, len(sel.SortClause))
	for _, n := range sel.SortClause {
		sb := n.GetSortBy()
		if sb == nil || sb.SortbyDir == pg.SortByDir_SORTBY_USING {
			return nil, false
		}
		col := -1
		switch {
		case sb.Node.GetAConst() != nil && sb.Node.GetAConst().GetIval() != nil:
			k := int(sb.Node.GetAConst().GetIval().Ival)
			if star || k < 1 || k > len(outs) {
				return nil, false
			}
			col = k - 1
		case sb.Node.GetColumnRef() != nil:
			col = targetOf(sel.TargetList, outs, refs, names(sb.Node.GetColumnRef().Fields))
			if col == -2 {
				return nil, false // ambiguous: let one Postgres say so
			}
		}
		name := ""
		if col < 0 {
			ref := []string(nil)
			if c := sb.Node.GetColumnRef(); c != nil {
				ref = names(c.Fields)
			}
			if !star || len(ref) == 0 || ref[len(ref)-1] == "" {
				return nil, false
			}
			name = ref[len(ref)-1]
		}
		k := sortKey(sb)
		k.Column, k.Name = col, name
		keys = append(keys, k)
	}
	return keys, true
}

// targetOf resolves an ORDER BY column reference to a select-list entry
// as Postgres does: a single name is first an output column name (SQL92;
// two different entries of that name are ambiguous: -2), then the same
// column reference as an entry's (the first one). -1: none.
func targetOf(targets []*pg.Node, outs []string, refs [][]string, ref []string) int {
	col := -1
	if len(ref) == 1 {
		for i := range outs {
			if outs[i] != ref[0] {
				continue
			}
			if col >= 0 && !sameExpr(targets[col].GetResTarget().Val, targets[i].GetResTarget().Val) {
				return -2
			}
			if col < 0 {
				col = i
			}
		}
		if col >= 0 {
			return col
		}
	}
	for i := range refs {
		if equalStrings(refs[i], ref) {
			return i
		}
	}
	return -1
}

// setOpSortKeys resolves a set operation's ORDER BY: a position, or the
// name of an output column (matched against the result's columns at run
// time).
func setOpSortKeys(sel *pg.SelectStmt) ([]SortKey, bool) {
	keys := make([]SortKey, 0, len(sel.SortClause))
	for _, n := range sel.SortClause {
		sb := n.GetSortBy()
		if sb == nil || sb.SortbyDir == pg.SortByDir_SORTBY_USING {
			return nil, false
		}
		k := sortKey(sb)
		k.Column = -1
		switch {
		case sb.Node.GetAConst() != nil && sb.Node.GetAConst().GetIval() != nil:
			k.Column = int(sb.Node.GetAConst().GetIval().Ival) - 1
			if k.Column < 0 {
				return nil, false
			}
		case sb.Node.GetColumnRef() != nil && len(sb.Node.GetColumnRef().Fields) == 1:
			k.Name = strVal(sb.Node.GetColumnRef().Fields[0])
			if k.Name == "" {
				return nil, false
			}
		default:
			return nil, false
		}
		keys = append(keys, k)
	}
	return keys, true
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func mergeShape(dst *Shape, src Shape) {
	dst.Union = dst.Union || src.Union
	dst.Distinct = dst.Distinct || src.Distinct
	dst.GroupBy = dst.GroupBy || src.GroupBy
	dst.Having = dst.Having || src.Having
	dst.Window = dst.Window || src.Window
	dst.OrderBy = dst.OrderBy || src.OrderBy
	dst.Limit = dst.Limit || src.Limit
	dst.Offset = dst.Offset || src.Offset
	dst.Aggregate = dst.Aggregate || src.Aggregate
	dst.Subquery = dst.Subquery || src.Subquery
}

func isSubLink(m protoreflect.Message) bool {
	_, ok := m.Interface().(*pg.SubLink)
	return ok
}

// countValue reads a LIMIT or OFFSET count: nil when absent or NULL (ALL),
// a zero Value for an expression the proxy does not evaluate.
func countValue(n *pg.Node) *Value {
	if n == nil {
		return nil
	}
	v, ok := valueOf(n)
	switch {
	case !ok:
		return &Value{}
	case v.Null:
		return nil
	}
	return &v
}

// WithoutOffset rewrites a SELECT ... [LIMIT n] OFFSET o for a shard of a
// merge: no OFFSET, and LIMIT limit when limited (n+o, computed by the
// caller). The AST is edited on a copy and deparsed.
func (s *Statement) WithoutOffset(limited bool, limit int64) (string, error) {
	node := proto.Clone(s.node).(*pg.Node)
	sel := node.GetSelectStmt()
	if sel == nil {
		return "", fmt.Errorf("not a SELECT")
	}
	sel.LimitOffset = nil
	sel.LimitCount = nil
	if limited {
		sel.LimitCount = pg.MakeAConstIntNode(limit, -1)
		if limit > math.MaxInt32 || limit < math.MinInt32 {
			// As the grammar does for integers beyond int32: a Float node.
			sel.LimitCount = &pg.Node{Node: &pg.Node_AConst{AConst: &pg.A_Const{
				Val: &pg.A_Const_Fval{Fval: &pg.Float{Fval: strconv.FormatInt(limit, 10)}}, Location: -1}}}
		}
		sel.LimitOption = pg.LimitOption_LIMIT_OPTION_COUNT
	}
	sql, err := pg.Deparse(&pg.ParseResult{Version: s.version, Stmts: []*pg.RawStmt{{Stmt: node}}})
	if err != nil {
		return "", fmt.Errorf("deparse: %w", err)
	}
	return sql, nil
}
