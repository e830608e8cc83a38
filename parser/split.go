package parser

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/shardproxy/shardproxy/fanout"
)

// Split is a SELECT cut in two for a fan-out: the statement every shard
// runs, and what the proxy computes from the shards' rows to answer as one
// Postgres would. It is built once per statement (Statement.Split) and
// shared; the LIMIT/OFFSET values are read per execution.
//
// Two forms:
//   - Grouped: the shards return partial groups (GROUP BY, DISTINCT, or
//     aggregates without GROUP BY) and the proxy merges rows with equal
//     Keys, combines the partial aggregates into Cols, filters by Having,
//     sorts by Sort and cuts LIMIT/OFFSET.
//   - Not grouped: the shards return their rows in order with Hidden extra
//     sort columns at the end; the proxy merges them in order and strips
//     the hidden columns.
type Split struct {
	Grouped bool
	// Scalar is an aggregate without GROUP BY: one row, even from no rows.
	Scalar bool
	// Keys are the shard columns that form the group key.
	Keys []int
	// Cols is the final row: the first Visible are the client's columns,
	// the rest are hidden (aggregates only HAVING or ORDER BY use).
	Cols    []SplitCol
	Visible int
	// Hidden is the number of trailing shard columns of a non-grouped
	// split that only ORDER BY uses.
	Hidden int
	// Distinct dedupes the final visible rows (DISTINCT with GROUP BY).
	Distinct bool
	// Having filters final rows; nil: none.
	Having *Cond
	// Sort orders the final rows (grouped) or the shards' rows (not
	// grouped); Column indexes the final row or the shard row.
	Sort []SortKey
	// Same is true when the shard statement is the client's own (plain
	// aggregates): no rewrite is needed.
	Same bool
	// ShardSort, when set, says the shards return their groups in this
	// order (shard columns): the ORDER BY is on group keys only and
	// covers every one, so the merge streams (merge sort, then adjacent
	// equal keys combined) and no final sort is needed.
	ShardSort []SortKey
	// Dropped are the parameters (1-based) the shard statement no longer
	// uses, with the type Postgres gives them in the client's statement
	// when it can be told ("int8" for LIMIT and OFFSET).
	Dropped map[int]string

	sel     *pg.SelectStmt // the shard statement, without LIMIT/OFFSET
	version int32
	// limit, offset are the client's LIMIT and OFFSET nodes.
	limit, offset *pg.Node
	sql           string
}

// SplitCol is one column of the final row.
type SplitCol struct {
	// Agg is how shard values combine: "" takes the value of the first
	// row of the group (a group key, or an expression of it); count, sum,
	// min, max, avg, bool_and, bool_or combine partial aggregates; expr
	// computes Expr over other final columns after the merge.
	Agg string
	// Expr is an expression over aggregates (Agg expr).
	Expr *fanout.Expr
	// Typmod is an expr column's type modifier (numeric(p,s)), or -1.
	Typmod int32
	// Col is the shard column (for avg: the partial sum).
	Col int
	// Count is avg's partial count column.
	Count int
	// Name is the output column name when it differs from the shard's.
	Name string
}

// Cond is a HAVING condition over final columns, evaluated with SQL's
// three-valued logic.
type Cond struct {
	Op   string // and, or, not, cmp, null (IS NULL), notnull
	Args []*Cond
	// Col is the final column a cmp, null or notnull tests.
	Col int
	// Cmp is the comparison operator: = <> < <= > >=; Val the constant
	// compared with (a literal or a parameter).
	Cmp string
	Val Value
}

// SplitError is a SELECT that cannot be split exactly. An empty Hint
// means Postgres itself rejects the statement: the shards say so.
type SplitError struct{ Msg, Hint string }

func (e *SplitError) Error() string { return e.Msg }

func splitErr(hint, format string, args ...any) *SplitError {
	return &SplitError{Msg: fmt.Sprintf(format, args...), Hint: hint}
}

const splitHint = "Add a shard key predicate so the query runs on one shard, or group by the shard key (see docs/routing.md)."

// SplitOptions say what the caller knows of the tables.
type SplitOptions struct {
	// Grouped asks for a grouped split: the groups (or DISTINCT rows) may
	// span shards. Otherwise only hidden ORDER BY columns are added.
	Grouped bool
	// IsKey reports whether a column reference (as written: [col] or
	// [table, col]) is a shard key: count(DISTINCT key) and sum(DISTINCT
	// key) then add up across shards, since each value lives on one shard.
	IsKey func(ref []string) bool
}

// Split builds the split of a plain SELECT (no set operation).
func (s *Statement) Split(opt SplitOptions) (*Split, error) {
	sel := s.node.GetSelectStmt()
	if sel == nil || sel.Op != pg.SetOperation_SETOP_NONE {
		return nil, splitErr(splitHint, "only a plain SELECT can be merged across shards")
	}
	sel = proto.Clone(sel).(*pg.SelectStmt)
	sp := &Split{version: s.version, limit: sel.LimitCount, offset: sel.LimitOffset, Dropped: map[int]string{}}
	sel.LimitCount, sel.LimitOffset = nil, nil
	sel.LimitOption = pg.LimitOption_LIMIT_OPTION_DEFAULT
	var err error
	if opt.Grouped {
		err = sp.grouped(sel, opt)
	} else {
		err = sp.hidden(sel)
	}
	if err != nil {
		return nil, err
	}
	sp.sel = sel
	if sp.sql, err = sp.deparse(nil); err != nil {
		return nil, err
	}
	if orig, err := pg.Deparse(&pg.ParseResult{Version: s.version, Stmts: []*pg.RawStmt{{Stmt: s.node}}}); err == nil {
		sp.Same = orig == sp.sql
	}
	return sp, nil
}

// SQL returns the shard statement with LIMIT limit when limited (the
// caller adds OFFSET into it), and nothing else of the client's LIMIT and
// OFFSET. Without limit it is computed once.
func (sp *Split) SQL(limited bool, limit int64) (string, error) {
	if !limited {
		return sp.sql, nil
	}
	return sp.deparse(intConst(limit))
}

// SQLWithLimitExpr returns the shard statement with LIMIT (n + o) over the
// client's own LIMIT and OFFSET expressions (bind parameters, read by
// every shard as bigint), for statements whose values are not known when
// the plan is made.
func (sp *Split) SQLWithLimitExpr() (string, error) {
	if sp.limit == nil {
		return sp.sql, nil
	}
	if sp.offset == nil {
		return sp.deparse(sp.limit)
	}
	sum := &pg.Node{Node: &pg.Node_AExpr{AExpr: &pg.A_Expr{Kind: pg.A_Expr_Kind_AEXPR_OP,
		Name: []*pg.Node{pg.MakeStrNode("+")}, Lexpr: castInt8(sp.limit), Rexpr: castInt8(sp.offset), Location: -1}}}
	return sp.deparse(sum)
}

func castInt8(n *pg.Node) *pg.Node {
	return &pg.Node{Node: &pg.Node_TypeCast{TypeCast: &pg.TypeCast{Arg: n, Location: -1,
		TypeName: &pg.TypeName{Names: []*pg.Node{pg.MakeStrNode("pg_catalog"), pg.MakeStrNode("int8")}, Typemod: -1, Location: -1}}}}
}

func intConst(n int64) *pg.Node {
	if n > math.MaxInt32 || n < math.MinInt32 {
		return &pg.Node{Node: &pg.Node_AConst{AConst: &pg.A_Const{
			Val: &pg.A_Const_Fval{Fval: &pg.Float{Fval: strconv.FormatInt(n, 10)}}, Location: -1}}}
	}
	return pg.MakeAConstIntNode(n, -1)
}

func (sp *Split) deparse(limit *pg.Node) (string, error) {
	sel := sp.sel
	if limit != nil {
		sel = proto.Clone(sp.sel).(*pg.SelectStmt)
		sel.LimitCount = limit
		sel.LimitOption = pg.LimitOption_LIMIT_OPTION_COUNT
	}
	node := &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: sel}}
	sql, err := pg.Deparse(&pg.ParseResult{Version: sp.version, Stmts: []*pg.RawStmt{{Stmt: node}}})
	if err != nil {
		return "", fmt.Errorf("deparse: %w", err)
	}
	return sql, nil
}

// hidden adds the ORDER BY keys that are not output columns as extra
// output columns; the shards keep their ORDER BY and the merge uses the
// added columns.
func (sp *Split) hidden(sel *pg.SelectStmt) error {
	targets := sel.TargetList
	star := false
	for _, t := range targets {
		rt := t.GetResTarget()
		if rt == nil || rt.Val == nil || isStar(rt.Val) {
			star = true
		}
	}
	sp.Visible = len(targets)
	keys, ok := sortKeys(sel)
	for i, n := range sel.SortClause {
		sb := n.GetSortBy()
		if sb == nil || sb.SortbyDir == pg.SortByDir_SORTBY_USING {
			return splitErr(splitHint, "ORDER BY ... USING across shards is not supported")
		}
		k := sortKey(sb)
		if ok && (keys[i].Column >= 0 || keys[i].Name != "") {
			k = keys[i]
		} else if c := sb.Node.GetAConst(); c != nil && c.GetIval() != nil && star {
			// A position under SELECT *: a column of the result.
			if k.Column = int(c.GetIval().Ival) - 1; k.Column < 0 {
				return splitErr("", "ORDER BY position %d is not in select list", c.GetIval().Ival)
			}
		} else if c := matchTarget(targets, sb.Node); c >= 0 && !star {
			k.Column = c
		} else {
			if c := sb.Node.GetAConst(); c != nil {
				return splitErr("", "ORDER BY position is not in the select list")
			}
			if star {
				return splitErr("Select the columns by name.", "ORDER BY an expression with SELECT * across shards is not supported")
			}
			k.Column = len(sel.TargetList)
			sel.TargetList = append(sel.TargetList, resTarget(sb.Node, ""))
			sp.Hidden++
		}
		sp.Sort = append(sp.Sort, k)
	}
	return nil
}

func sortKey(sb *pg.SortBy) SortKey {
	k := SortKey{Desc: sb.SortbyDir == pg.SortByDir_SORTBY_DESC}
	switch sb.SortbyNulls {
	case pg.SortByNulls_SORTBY_NULLS_FIRST:
		k.NullsFirst = true
	case pg.SortByNulls_SORTBY_NULLS_LAST:
	default:
		k.NullsFirst = k.Desc // Postgres: NULLs sort as larger than any value
	}
	return k
}

func isStar(n *pg.Node) bool {
	c := n.GetColumnRef()
	if c == nil {
		return false
	}
	for _, f := range c.Fields {
		if f.GetAStar() != nil {
			return true
		}
	}
	return false
}

func resTarget(val *pg.Node, name string) *pg.Node {
	return &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: val, Name: name, Location: -1}}}
}

// matchTarget returns the index of the target whose expression is n (an
// output column name counts), or -1.
func matchTarget(targets []*pg.Node, n *pg.Node) int {
	if c := n.GetColumnRef(); c != nil && len(c.Fields) == 1 {
		// A single name is an output column name first (SQL92).
		name := strVal(c.Fields[0])
		for i, t := range targets {
			rt := t.GetResTarget()
			out := rt.Name
			if out == "" {
				out, _ = figureColname(rt.Val)
			}
			if out == name && name != "" {
				return i
			}
		}
	}
	for i, t := range targets {
		if sameExpr(t.GetResTarget().Val, n) {
			return i
		}
	}
	return -1
}

// sameExpr reports whether two expressions are written alike (locations
// aside).
func sameExpr(a, b *pg.Node) bool {
	if a == nil || b == nil {
		return a == b
	}
	return proto.Equal(withoutLocations(a), withoutLocations(b))
}

func withoutLocations(n *pg.Node) *pg.Node {
	c := proto.Clone(n).(*pg.Node)
	walk(c.ProtoReflect(), func(m protoreflect.Message) {
		if fd := m.Descriptor().Fields().ByName("location"); fd != nil {
			m.Clear(fd)
		}
	})
	return c
}

// grouped builds a grouped split. The shard statement selects, in order:
// the client's targets (each aggregate replaced by its partials), then
// group keys not selected, then aggregates only HAVING or ORDER BY use.
func (sp *Split) grouped(sel *pg.SelectStmt, opt SplitOptions) error {
	sp.Grouped = true
	for _, g := range sel.GroupClause {
		if g.GetGroupingSet() != nil {
			return splitErr(splitHint, "GROUPING SETS, ROLLUP and CUBE across shards are not supported")
		}
	}
	distinct := len(sel.DistinctClause) > 0
	if distinct && !(len(sel.DistinctClause) == 1 && sel.DistinctClause[0].Node == nil) {
		return splitErr("Group by the shard key, or add a shard key predicate.", "SELECT DISTINCT ON across shards is not supported")
	}
	if sel.WindowClause != nil {
		return splitErr(splitHint, "window functions across shards are not supported")
	}
	orig := sel.TargetList
	for _, t := range orig {
		rt := t.GetResTarget()
		if rt == nil || rt.Val == nil || isStar(rt.Val) {
			return splitErr("Select the columns by name.", "SELECT * with GROUP BY or DISTINCT across shards is not supported")
		}
	}
	// Group keys as expressions (an ordinal or an output name means the
	// target's expression).
	var keyExprs []*pg.Node
	for _, g := range sel.GroupClause {
		e, err := groupExpr(orig, g)
		if err != nil {
			return err
		}
		keyExprs = append(keyExprs, e)
	}
	plainDistinct := distinct && len(sel.GroupClause) == 0 && !hasAgg(orig) && sel.HavingClause == nil
	if plainDistinct {
		for _, t := range orig {
			keyExprs = append(keyExprs, t.GetResTarget().Val)
		}
	} else {
		sp.Distinct = distinct
	}
	b := &splitBuilder{sp: sp, opt: opt}
	// The client's targets; expressions over aggregates are computed
	// from hidden final columns, added once every target has its place.
	var exprs []int
	for i, t := range orig {
		rt := t.GetResTarget()
		if containsAgg(rt.Val) && (rt.Val.GetFuncCall() == nil || !isAggregate(rt.Val.GetFuncCall())) {
			name := rt.Name
			if name == "" {
				name, _ = figureColname(rt.Val)
			}
			sp.Cols = append(sp.Cols, SplitCol{Agg: "expr", Name: name, Typmod: -1})
			exprs = append(exprs, i)
			continue
		}
		if err := b.target(rt); err != nil {
			return err
		}
	}
	sp.Visible = len(sp.Cols)
	for _, i := range exprs {
		e, err := b.expr(orig[i].GetResTarget().Val)
		if err != nil {
			return err
		}
		sp.Cols[i].Expr = e
		if e.Op == "cast" && e.Cast == "numeric" && len(e.Typmod) > 0 {
			scale := 0
			if len(e.Typmod) > 1 {
				scale = e.Typmod[1]
			}
			sp.Cols[i].Typmod = int32(e.Typmod[0]<<16|scale) + 4
		}
	}
	// Group keys: shard columns, selected or hidden.
	for _, e := range keyExprs {
		sp.Keys = append(sp.Keys, b.keyColumn(e))
	}
	// Aggregates without GROUP BY: one row. (A non-aggregate target is
	// then a constant, the same from every shard.)
	sp.Scalar = len(sel.GroupClause) == 0 && !plainDistinct
	// HAVING over final columns.
	if sel.HavingClause != nil {
		c, err := b.cond(sel.HavingClause)
		if err != nil {
			return err
		}
		sp.Having = c
	}
	// ORDER BY over final columns.
	keys, keysOK := sortKeys(&pg.SelectStmt{TargetList: orig, SortClause: sel.SortClause})
	for i, n := range sel.SortClause {
		sb := n.GetSortBy()
		if sb == nil || sb.SortbyDir == pg.SortByDir_SORTBY_USING {
			return splitErr(splitHint, "ORDER BY ... USING across shards is not supported")
		}
		k := sortKey(sb)
		switch {
		case keysOK && keys[i].Column >= 0:
			k.Column = keys[i].Column
		default:
			if c := matchTarget(orig, sb.Node); c >= 0 {
				k.Column = c
				break
			}
			if c := sb.Node.GetAConst(); c != nil && c.GetIval() != nil {
				return splitErr("", "ORDER BY position %d is not in select list", c.GetIval().Ival)
			}
			if distinct {
				return splitErr("Order by the selected columns themselves (or their positions).",
					"for SELECT DISTINCT across shards, ORDER BY expressions must be selected columns")
			}
			c, err := b.final(sb.Node)
			if err != nil {
				return err
			}
			k.Column = c
		}
		sp.Sort = append(sp.Sort, k)
	}
	// The shard statement.
	sel.TargetList = b.targets
	sel.HavingClause = nil
	sel.SortClause = sp.sortedGroups(b.targets)
	if !plainDistinct {
		sel.DistinctClause = nil
		sel.GroupClause = nil
		for _, e := range keyExprs {
			sel.GroupClause = append(sel.GroupClause, e)
		}
		if b.distinctArg != nil {
			sel.GroupClause = append(sel.GroupClause, b.distinctArg)
		}
	}
	for _, v := range []*pg.Node{sp.limit, sp.offset} {
		if p := v.GetParamRef(); p != nil {
			sp.Dropped[int(p.Number)] = "int8"
		}
	}
	if sp.Having != nil {
		sp.dropParams(sp.Having)
	}
	return nil
}

// sortedGroups returns the shards' ORDER BY when the groups can be merged
// in order: the final ORDER BY names only group keys (selected or hidden
// key columns) and every group key, so equal keys are adjacent in each
// shard's answer and the merged order is the client's.
func (sp *Split) sortedGroups(targets []*pg.Node) []*pg.Node {
	if sp.Scalar || len(sp.Sort) == 0 || len(sp.Keys) == 0 {
		return nil
	}
	covered := map[int]bool{}
	var shard []SortKey
	for _, k := range sp.Sort {
		if k.Column < 0 || k.Column >= len(sp.Cols) || sp.Cols[k.Column].Agg != "" {
			return nil
		}
		col := sp.Cols[k.Column].Col
		isKey := false
		for _, key := range sp.Keys {
			isKey = isKey || key == col
		}
		if !isKey {
			return nil
		}
		covered[col] = true
		sk := k
		sk.Column = col
		shard = append(shard, sk)
	}
	for _, key := range sp.Keys {
		if !covered[key] {
			return nil
		}
	}
	var clause []*pg.Node
	for _, k := range shard {
		sb := &pg.SortBy{Node: targets[k.Column].GetResTarget().Val, Location: -1,
			SortbyDir: pg.SortByDir_SORTBY_ASC, SortbyNulls: pg.SortByNulls_SORTBY_NULLS_LAST}
		if k.Desc {
			sb.SortbyDir = pg.SortByDir_SORTBY_DESC
		}
		if k.NullsFirst {
			sb.SortbyNulls = pg.SortByNulls_SORTBY_NULLS_FIRST
		}
		clause = append(clause, &pg.Node{Node: &pg.Node_SortBy{SortBy: sb}})
	}
	sp.ShardSort = shard
	return clause
}

func (sp *Split) dropParams(c *Cond) {
	if c.Val.Kind == ParamVal {
		if _, ok := sp.Dropped[c.Val.Param]; !ok {
			sp.Dropped[c.Val.Param] = ""
		}
	}
	for _, a := range c.Args {
		sp.dropParams(a)
	}
}

func hasAgg(targets []*pg.Node) bool {
	for _, t := range targets {
		if containsAgg(t) {
			return true
		}
	}
	return false
}

func containsAgg(n *pg.Node) bool {
	return containsNode(n.ProtoReflect(), func(m protoreflect.Message) bool {
		f, ok := m.Interface().(*pg.FuncCall)
		return ok && isAggregate(f)
	})
}

// groupExpr resolves one GROUP BY item to an expression.
func groupExpr(targets []*pg.Node, g *pg.Node) (*pg.Node, error) {
	if c := g.GetAConst(); c != nil && c.GetIval() != nil {
		k := int(c.GetIval().Ival)
		if k < 1 || k > len(targets) {
			return nil, splitErr("", "GROUP BY position %d is not in select list", k)
		}
		return targets[k-1].GetResTarget().Val, nil
	}
	if c := g.GetColumnRef(); c != nil && len(c.Fields) == 1 {
		// Postgres takes an input column of that name first; an output
		// alias that is not the same column cannot be told apart here.
		name := strVal(c.Fields[0])
		for _, t := range targets {
			rt := t.GetResTarget()
			if rt.Name == name && !sameExpr(rt.Val, g) {
				return nil, splitErr("Group by the expression itself or by its position.",
					"GROUP BY %s is ambiguous across shards: an output column and maybe an input column have that name", name)
			}
		}
	}
	return g, nil
}

// splitBuilder collects the shard statement's targets and the final
// columns.
type splitBuilder struct {
	sp      *Split
	opt     SplitOptions
	targets []*pg.Node
	// distinctArg is the argument of count(DISTINCT x) over a non-key x:
	// the shards group by it too (shard column distinctCol).
	distinctArg *pg.Node
	distinctCol int
}

func aggName(name, fn string) string {
	if name != "" {
		return name
	}
	return fn
}

func (b *splitBuilder) add(val *pg.Node, name string) int {
	b.targets = append(b.targets, resTarget(val, name))
	return len(b.targets) - 1
}

// target adds one of the client's targets as a final column.
func (b *splitBuilder) target(rt *pg.ResTarget) error {
	if !containsAgg(rt.Val) {
		b.sp.Cols = append(b.sp.Cols, SplitCol{Col: b.add(rt.Val, rt.Name)})
		return nil
	}
	f := rt.Val.GetFuncCall()
	if f == nil || !isAggregate(f) {
		return splitErr("Select the aggregates themselves and compute the expression in the application.",
			"an expression over aggregates across shards is not supported yet")
	}
	col, err := b.aggregate(f, rt.Name)
	if err != nil {
		return err
	}
	b.sp.Cols = append(b.sp.Cols, col)
	return nil
}

// aggregate adds the partials of one aggregate call.
func (b *splitBuilder) aggregate(f *pg.FuncCall, name string) (SplitCol, error) {
	ns := names(f.Funcname)
	fn := ns[len(ns)-1]
	if len(ns) > 1 && ns[0] != "pg_catalog" {
		return SplitCol{}, splitErr(splitHint, "aggregate %s across shards is not supported", strings.Join(ns, "."))
	}
	if len(f.AggOrder) > 0 || f.AggWithinGroup {
		return SplitCol{}, splitErr("Aggregate on one shard (add a shard key predicate), or order in the application.",
			"ordered aggregate %s across shards is not supported: the shards' parts cannot be merged in order", fn)
	}
	if f.AggDistinct {
		switch {
		case fn == "min" || fn == "max":
		case (fn == "count" || fn == "sum" || fn == "avg") && len(f.Args) == 1 && b.isKey(f.Args[0]):
			// Each key value lives on one shard: the shards' distinct
			// sets are disjoint.
		case fn == "count" && len(f.Args) == 1 && f.AggFilter == nil:
			// The shards group by the argument too; the proxy counts the
			// distinct values of each merged group.
			arg := f.Args[0]
			if b.distinctArg == nil {
				b.distinctArg, b.distinctCol = arg, b.add(arg, "")
			} else if !sameExpr(b.distinctArg, arg) {
				return SplitCol{}, splitErr("Count distinct values of one expression per query, or add a shard key predicate.",
					"count(DISTINCT ...) over two different expressions across shards is not supported")
			}
			return SplitCol{Agg: "count_distinct", Col: b.distinctCol, Name: aggName(name, fn)}, nil
		default:
			return SplitCol{}, splitErr("Count distinct values (count(DISTINCT x) without FILTER), or add a shard key predicate.",
				"%s(DISTINCT ...) across shards is exact only over the shard key", fn)
		}
	}
	switch fn {
	case "count", "sum", "min", "max", "bool_and", "bool_or", "every", "bit_and", "bit_or":
		agg := fn
		switch fn {
		case "every":
			agg = "bool_and"
		}
		return SplitCol{Agg: agg, Col: b.add(&pg.Node{Node: &pg.Node_FuncCall{FuncCall: f}}, name)}, nil
	case "avg":
		if name == "" {
			name = "avg"
		}
		sum := proto.Clone(f).(*pg.FuncCall)
		sum.Funcname = []*pg.Node{pg.MakeStrNode("sum")}
		cnt := proto.Clone(f).(*pg.FuncCall)
		cnt.Funcname = []*pg.Node{pg.MakeStrNode("count")}
		s := b.add(&pg.Node{Node: &pg.Node_FuncCall{FuncCall: sum}}, name)
		c := b.add(&pg.Node{Node: &pg.Node_FuncCall{FuncCall: cnt}}, "")
		return SplitCol{Agg: "avg", Col: s, Count: c, Name: name}, nil
	}
	return SplitCol{}, splitErr("Aggregate on one shard (add a shard key predicate), or use count, sum, min, max, avg, bool_and, bool_or or every.",
		"aggregate %s across shards is not supported: its parts cannot be combined exactly", fn)
}

func (b *splitBuilder) isKey(n *pg.Node) bool {
	c := n.GetColumnRef()
	if c == nil || b.opt.IsKey == nil {
		return false
	}
	return b.opt.IsKey(names(c.Fields))
}

// keyColumn returns the shard column of a group key expression, adding a
// hidden one when no target is that expression.
func (b *splitBuilder) keyColumn(e *pg.Node) int {
	for i, t := range b.targets {
		if sameExpr(t.GetResTarget().Val, e) {
			return i
		}
	}
	return b.add(e, "")
}

// final returns the final column of an expression HAVING or ORDER BY uses:
// a selected one, an aggregate (added hidden), or a group key.
func (b *splitBuilder) final(e *pg.Node) (int, error) {
	for i, c := range b.sp.Cols {
		if c.Agg != "avg" && c.Agg != "expr" && sameExpr(b.targets[c.Col].GetResTarget().Val, e) {
			return i, nil
		}
	}
	if f := e.GetFuncCall(); f != nil && isAggregate(f) {
		col, err := b.aggregate(f, "")
		if err != nil {
			return 0, err
		}
		b.sp.Cols = append(b.sp.Cols, col)
		return len(b.sp.Cols) - 1, nil
	}
	if containsAgg(e) {
		return 0, splitErr("Use the aggregate itself in HAVING and ORDER BY.",
			"an expression over aggregates in HAVING or ORDER BY across shards is not supported yet")
	}
	// A group key (or an expression of one: the same on every row of a
	// group).
	b.sp.Cols = append(b.sp.Cols, SplitCol{Col: b.keyColumn(e)})
	return len(b.sp.Cols) - 1, nil
}

var cmpOps = map[string]string{"=": "=", "<>": "<>", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
var flipOps = map[string]string{"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

// cond translates a HAVING clause.
func (b *splitBuilder) cond(n *pg.Node) (*Cond, error) {
	unsupported := splitErr("Write HAVING as comparisons of aggregates or group keys with constants, joined by AND, OR and NOT.",
		"this HAVING condition across shards is not supported")
	switch x := n.Node.(type) {
	case *pg.Node_BoolExpr:
		op := map[pg.BoolExprType]string{pg.BoolExprType_AND_EXPR: "and", pg.BoolExprType_OR_EXPR: "or", pg.BoolExprType_NOT_EXPR: "not"}[x.BoolExpr.Boolop]
		if op == "" {
			return nil, unsupported
		}
		c := &Cond{Op: op}
		for _, a := range x.BoolExpr.Args {
			ac, err := b.cond(a)
			if err != nil {
				return nil, err
			}
			c.Args = append(c.Args, ac)
		}
		return c, nil
	case *pg.Node_FuncCall, *pg.Node_ColumnRef:
		// A boolean aggregate or group key: HAVING bool_or(paid).
		col, err := b.final(n)
		if err != nil {
			return nil, err
		}
		return &Cond{Op: "bool", Col: col}, nil
	case *pg.Node_NullTest:
		col, err := b.final(x.NullTest.Arg)
		if err != nil {
			return nil, err
		}
		op := "null"
		if x.NullTest.Nulltesttype == pg.NullTestType_IS_NOT_NULL {
			op = "notnull"
		}
		return &Cond{Op: op, Col: col}, nil
	case *pg.Node_AExpr:
		e := x.AExpr
		if e.Kind != pg.A_Expr_Kind_AEXPR_OP || len(e.Name) != 1 {
			return nil, unsupported
		}
		op, ok := cmpOps[strVal(e.Name[0])]
		if !ok {
			return nil, unsupported
		}
		l, r := e.Lexpr, e.Rexpr
		v, vok := valueOf(r)
		if !vok || v.Cast != "" && v.Kind != ParamVal {
			if v2, ok2 := valueOf(l); ok2 && (v2.Cast == "" || v2.Kind == ParamVal) {
				l, v, vok, op = r, v2, true, flipOps[op]
			}
		}
		if !vok || v.Array || (v.Cast != "" && v.Kind != ParamVal) {
			return nil, unsupported
		}
		col, err := b.final(l)
		if err != nil {
			return nil, err
		}
		return &Cond{Op: "cmp", Col: col, Cmp: op, Val: v}, nil
	}
	return nil, unsupported
}

// expr translates an expression over aggregates into one the proxy
// computes after the merge.
func (b *splitBuilder) expr(n *pg.Node) (*fanout.Expr, error) {
	unsupported := splitErr("Select the aggregates themselves and compute the expression in the application.",
		"this expression over aggregates across shards is not supported (+ - * /, round() and casts to integer, numeric and float8 types are)")
	switch x := n.Node.(type) {
	case *pg.Node_FuncCall:
		if !isAggregate(x.FuncCall) {
			return b.function(x.FuncCall, unsupported)
		}
		c, err := b.final(n)
		if err != nil {
			return nil, err
		}
		return &fanout.Expr{Op: "col", Col: c}, nil
	case *pg.Node_AConst:
		v, ok := valueOf(n)
		if !ok || v.Null || (v.Kind != IntLit && v.Kind != FloatLit) {
			return nil, unsupported
		}
		return &fanout.Expr{Op: "const", Text: v.Text}, nil
	case *pg.Node_AExpr:
		e := x.AExpr
		if e.Kind != pg.A_Expr_Kind_AEXPR_OP || len(e.Name) != 1 {
			return nil, unsupported
		}
		op := strVal(e.Name[0])
		if op != "+" && op != "-" && op != "*" && op != "/" {
			return nil, unsupported
		}
		r, err := b.expr(e.Rexpr)
		if err != nil {
			return nil, err
		}
		if e.Lexpr == nil {
			if op != "-" {
				return nil, unsupported
			}
			return &fanout.Expr{Op: "neg", Args: []*fanout.Expr{r}}, nil
		}
		l, err := b.expr(e.Lexpr)
		if err != nil {
			return nil, err
		}
		return &fanout.Expr{Op: op, Args: []*fanout.Expr{l, r}}, nil
	case *pg.Node_TypeCast:
		tn := x.TypeCast.TypeName
		if tn == nil || len(tn.ArrayBounds) > 0 || len(tn.Names) == 0 {
			return nil, unsupported
		}
		typ := strVal(tn.Names[len(tn.Names)-1])
		switch typ {
		case "int2", "int4", "int8", "numeric", "float8":
		default:
			return nil, unsupported
		}
		var mods []int
		for _, m := range tn.Typmods {
			c := m.GetAConst()
			if c == nil || c.GetIval() == nil {
				return nil, unsupported
			}
			mods = append(mods, int(c.GetIval().Ival))
		}
		if len(mods) > 0 && typ != "numeric" {
			return nil, unsupported
		}
		arg, err := b.expr(x.TypeCast.Arg)
		if err != nil {
			return nil, err
		}
		return &fanout.Expr{Op: "cast", Cast: typ, Typmod: mods, Args: []*fanout.Expr{arg}}, nil
	}
	if containsAgg(n) {
		return nil, unsupported
	}
	// A group key, or an expression of one.
	c, err := b.final(n)
	if err != nil {
		return nil, err
	}
	return &fanout.Expr{Op: "col", Col: c}, nil
}

// function translates round(x) and round(x, n) over numeric or float8.
func (b *splitBuilder) function(f *pg.FuncCall, unsupported error) (*fanout.Expr, error) {
	ns := names(f.Funcname)
	if ns[len(ns)-1] != "round" || (len(ns) == 2 && ns[0] != "pg_catalog") || len(ns) > 2 ||
		len(f.Args) < 1 || len(f.Args) > 2 || f.AggStar || f.AggDistinct || f.Over != nil {
		return nil, unsupported
	}
	arg, err := b.expr(f.Args[0])
	if err != nil {
		return nil, err
	}
	e := &fanout.Expr{Op: "round", Args: []*fanout.Expr{arg}}
	if len(f.Args) == 2 {
		v, ok := valueOf(f.Args[1])
		if !ok || v.Kind != IntLit || v.Cast != "" {
			return nil, unsupported
		}
		n, err := strconv.Atoi(v.Text)
		if err != nil {
			return nil, unsupported
		}
		e.Typmod = []int{n}
	}
	return e, nil
}

// figureColname names an output column as Postgres does when it has no
// alias (FigureColname): a column's or function's name, a cast's
// argument's name or else its type's, "?column?" otherwise. strength
// says how sure the name is (2: a name, 1: a type, 0: none).
func figureColname(n *pg.Node) (string, int) {
	switch x := n.Node.(type) {
	case *pg.Node_ColumnRef:
		ns := names(x.ColumnRef.Fields)
		if len(ns) > 0 && ns[len(ns)-1] != "" {
			return ns[len(ns)-1], 2
		}
	case *pg.Node_FuncCall:
		ns := names(x.FuncCall.Funcname)
		return ns[len(ns)-1], 2
	case *pg.Node_TypeCast:
		name, strength := figureColname(x.TypeCast.Arg)
		if strength <= 1 && x.TypeCast.TypeName != nil && len(x.TypeCast.TypeName.Names) > 0 {
			tn := x.TypeCast.TypeName.Names
			return strVal(tn[len(tn)-1]), 1
		}
		return name, strength
	case *pg.Node_CoalesceExpr:
		return "coalesce", 2
	case *pg.Node_CaseExpr:
		return "case", 1
	}
	return "?column?", 0
}

// HasCollate reports whether the statement names a collation other than
// C or POSIX (a COLLATE clause): its text may then order by other rules
// than byte order.
func (s *Statement) HasCollate() bool {
	if s.node == nil {
		return false
	}
	return containsAny(s.node.ProtoReflect(), func(m protoreflect.Message) bool {
		c, ok := m.Interface().(*pg.CollateClause)
		if !ok {
			return false
		}
		ns := names(c.Collname)
		name := ns[len(ns)-1]
		return name != "C" && name != "POSIX"
	})
}

// containsAny is containsNode that also looks inside subqueries.
func containsAny(n protoreflect.Message, pred func(protoreflect.Message) bool) bool {
	found := false
	walk(n, func(m protoreflect.Message) {
		if !found && pred(m) {
			found = true
		}
	})
	return found
}

// ColumnNames returns the names of the columns the statement refers to
// (the last part of every column reference, lower case as Postgres folds
// them), sorted and unique.
func (s *Statement) ColumnNames() []string {
	if s.node == nil {
		return nil
	}
	seen := map[string]bool{}
	walk(s.node.ProtoReflect(), func(m protoreflect.Message) {
		if c, ok := m.Interface().(*pg.ColumnRef); ok {
			ns := names(c.Fields)
			if len(ns) > 0 && ns[len(ns)-1] != "" {
				seen[ns[len(ns)-1]] = true
			}
		}
	})
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
