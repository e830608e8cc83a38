package parser

import (
	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ScopeKind says where a query level sits in its statement.
type ScopeKind uint8

const (
	TopScope          ScopeKind = iota // the statement itself
	BranchScope                        // a branch of a set operation (UNION, INTERSECT, EXCEPT)
	SubLinkScope                       // a subquery inside an expression: IN, EXISTS, scalar
	DerivedScope                       // a subquery in FROM (LATERAL or not)
	CTEScope                           // the body of a WITH query
	InsertSourceScope                  // the SELECT or VALUES that feeds an INSERT
)

// Scope is one query level. Column references are resolved against the
// FROM items of their own level, then of the enclosing levels, as Postgres
// does.
type Scope struct {
	Kind ScopeKind
	// Parent is the enclosing scope's index, -1 for the statement's scope.
	Parent int
	// Result is true when this level's rows are the statement's result:
	// the statement's own level, or a branch of its set operation.
	Result bool
	// SetOp is true for a set operation: its rows come from its branches.
	SetOp bool
	// Limit is true when LIMIT, OFFSET or FETCH cut the level's rows.
	Limit bool
	// Grouped is true for GROUP BY, HAVING or DISTINCT ON.
	Grouped bool
	// Occs are the table occurrences directly in this level's FROM (and the
	// target of INSERT/UPDATE/DELETE), as indexes into Analysis.Occurrences.
	Occs []int
	// GroupBy are the bare columns of a plain GROUP BY (no grouping sets,
	// ROLLUP or CUBE; GroupingSets is then true).
	GroupBy      []ColumnKey
	GroupingSets bool
	// Distinct are the bare columns of the target list of SELECT DISTINCT
	// (not DISTINCT ON).
	Distinct []ColumnKey
	// Windows are the bare PARTITION BY columns of each window the level
	// uses (an empty entry: a window over all rows, or one not resolved).
	Windows [][]ColumnKey
}

// ColumnKey is a column of one table occurrence.
type ColumnKey struct {
	Occ    int
	Column string
}

// Link is an equality between two occurrences' columns that every row
// taking part in the statement satisfies: a top-level AND term of a WHERE
// or JOIN ... ON, a JOIN ... USING column, a correlation (a subquery's
// `inner.c = outer.c`), or a positive `a IN (SELECT b ...)` (Semi).
type Link struct {
	A, B ColumnKey
	// Semi marks `A IN (SELECT B ...)`: B's level has no LIMIT, OFFSET or
	// grouping, and the IN is a top-level AND term of a WHERE.
	Semi bool
}

// Analysis is a statement's tables, scopes and filters, resolved against
// the shard keys the caller named. It is immutable.
type Analysis struct {
	Occurrences []Occurrence
	Scopes      []Scope
	Links       []Link
	// Assigned are the columns written by UPDATE ... SET and INSERT ... ON
	// CONFLICT DO UPDATE SET, on their target occurrence.
	Assigned []ColumnKey
	// Into is true for SELECT ... INTO (a table created from the result).
	Into bool
	// Opaque names a construct the analysis cannot see into (e.g. MERGE
	// inside WITH); "" when there is none.
	Opaque string

	filters [][]cond
	targets []colref
	// pulledInto is, per scope, the scope a plain subquery or CTE body was
	// pulled up into (-1: none); its filters apply to the pulled tables.
	pulledInto []int
	// insertCols/insertSrc describe INSERT ... SELECT at the top level:
	// the column list and the source's target expressions.
	insertCols []string
	insertSrc  []insertExpr
}

type insertExpr struct {
	val   Value
	isVal bool
	col   colref
}

// InsertSelectKey returns what a top-level INSERT ... SELECT puts in
// column: a constant or parameter (isVal), or the column of the source's
// table occurrences it copies. ok is false when the column is absent or
// its expression is anything else.
func (a *Analysis) InsertSelectKey(column string) (v Value, isVal bool, src []ColumnKey, ok bool) {
	for i, c := range a.insertCols {
		if c != column || i >= len(a.insertSrc) {
			continue
		}
		e := a.insertSrc[i]
		if e.isVal {
			return e.val, true, nil, true
		}
		for _, o := range e.col.occs {
			src = append(src, ColumnKey{o, e.col.col})
		}
		return Value{}, false, src, len(src) > 0
	}
	return Value{}, false, nil, false
}

// colref is a column reference resolved to the occurrences it may name:
// several for a JOIN ... USING column, none when unresolved.
type colref struct {
	occs []int
	col  string
}

// cond is a filter term over resolved columns.
type cond struct {
	op   PredOp
	kids []cond
	col  colref
	cmp  string
	vals []Value
	// sub is the scope of `col IN (SELECT ...)`, with op Cmp and no vals.
	sub int
	// cast is the type of an explicit cast on the column side, if any.
	cast string
}

// Restriction returns what the filter of occ's level (its WHERE and the
// ON conditions of inner joins whose rows reach the result) says about
// column of occurrence occ. Rows outside the restriction cannot take part
// in the statement through this occurrence.
func (a *Analysis) Restriction(occ int, column string) Pred {
	o := a.Occurrences[occ]
	k := ColumnKey{occ, column}
	p := a.project(a.filters[o.Scope], k, 0)
	// Filters of the levels a plain subquery or CTE is pulled into apply too.
	for s := a.pulledInto[o.Scope]; s >= 0; s = a.pulledInto[s] {
		p = simplify(Pred{Op: And, Kids: []Pred{p, a.project(a.filters[s], k, 0)}})
	}
	return p
}

func (a *Analysis) project(terms []cond, k ColumnKey, depth int) Pred {
	if len(terms) == 0 {
		return Pred{}
	}
	kids := make([]Pred, 0, len(terms))
	for i := range terms {
		kids = append(kids, a.projectOne(&terms[i], k, depth))
	}
	return simplify(Pred{Op: And, Kids: kids})
}

func (a *Analysis) projectOne(c *cond, k ColumnKey, depth int) Pred {
	switch c.op {
	case And, Or:
		p := Pred{Op: c.op, Kids: make([]Pred, 0, len(c.kids))}
		for i := range c.kids {
			p.Kids = append(p.Kids, a.projectOne(&c.kids[i], k, depth))
		}
		return simplify(p)
	case Cmp:
		if !c.col.names(k) {
			return Pred{}
		}
		if c.sub == 0 {
			return Pred{Op: Cmp, Cmp: c.cmp, Values: c.vals, ColCast: c.cast}
		}
		// k IN (SELECT t FROM ... WHERE p): k takes only values of t that
		// satisfy p. Guard the recursion: subqueries nest finitely, but
		// stay cheap on pathological input.
		t := a.targets[c.sub]
		if depth > 8 || len(t.occs) == 0 || c.cast != "" {
			return Pred{}
		}
		kids := make([]Pred, 0, len(t.occs))
		for _, o := range t.occs {
			kids = append(kids, a.project(a.filters[c.sub], ColumnKey{o, t.col}, depth+1))
		}
		return simplify(Pred{Op: And, Kids: kids})
	}
	return Pred{}
}

func (r colref) names(k ColumnKey) bool {
	if r.col != k.Column {
		return false
	}
	for _, o := range r.occs {
		if o == k.Occ {
			return true
		}
	}
	return false
}

// Analyse resolves the statement's tables and filters. keyOf returns the
// shard key column of a table ("" when it has none): unqualified column
// names resolve only to key columns, the one kind of column the analysis
// knows a table has. Analyse walks the AST; callers that route the same
// statement often keep the result (see Memo).
func (s *Statement) Analyse(keyOf func(Table) string) *Analysis {
	if s.Kind == Explain {
		return s.Inner.Analyse(keyOf)
	}
	if keyOf == nil {
		keyOf = func(Table) string { return "" }
	}
	b := &builder{a: &Analysis{}, keyOf: keyOf, sublinks: map[*pg.SubLink]int{}, visScope: -1, bodies: map[int]*pg.SelectStmt{}}
	switch s.node.Node.(type) {
	case *pg.Node_SelectStmt, *pg.Node_InsertStmt, *pg.Node_UpdateStmt, *pg.Node_DeleteStmt:
		b.refs = map[string]int{}
		visit(s.node.ProtoReflect(), func(m protoreflect.Message) bool {
			if rv, ok := m.Interface().(*pg.RangeVar); ok && rv.Schemaname == "" {
				b.refs[rv.Relname]++
			}
			return true
		})
		b.query(s.node, -1, TopScope, true)
		// A safety net: every table reference in the tree must have been
		// seen as a table or a CTE reference, or routing could miss it.
		if n := countRangeVars(s.node); n != b.rangeVars && b.a.Opaque == "" {
			b.a.Opaque = "a table reference in this position"
		}
	default:
		b.newScope(TopScope, -1, true)
	}
	return b.a
}

// countRangeVars counts table references, leaving out the names that are
// not reads: SELECT INTO's new table and FOR UPDATE OF's aliases.
func countRangeVars(n *pg.Node) int {
	count := 0
	visit(n.ProtoReflect(), func(m protoreflect.Message) bool {
		switch m.Interface().(type) {
		case *pg.IntoClause:
			return false
		case *pg.LockingClause:
			return false
		case *pg.RangeVar:
			count++
		}
		return true
	})
	return count
}

type builder struct {
	a     *Analysis
	keyOf func(Table) string
	// visible, when not nil, are the occurrences an unqualified name may
	// name: inside JOIN ... ON only the join's own inputs are in scope.
	visible  []int
	visScope int
	// using are the JOIN ... USING column names per scope: a name merged
	// by USING may stand for several occurrences' columns.
	using    []map[string]bool
	names    []map[string]int // per scope: FROM item name -> occurrence, -1 for items that are not tables
	ctes     []map[string]int // per scope: CTE name -> body scope when it can be pulled up, else -1
	sublinks map[*pg.SubLink]int
	// rangeVars counts the RangeVars taken as tables or CTE references.
	rangeVars int
	// exports per scope: for a plain subquery in FROM, its alias -> output
	// column name -> the columns it copies (nil entry: ambiguous name).
	exports []map[string]map[string][]int
	// refs counts the unqualified table names of the statement, to find
	// CTEs named once.
	refs map[string]int
	// bodies are the SELECTs of CTEs that can be pulled up, by body scope.
	bodies map[int]*pg.SelectStmt
}

func (b *builder) newScope(kind ScopeKind, parent int, result bool) int {
	b.a.Scopes = append(b.a.Scopes, Scope{Kind: kind, Parent: parent, Result: result})
	b.a.filters = append(b.a.filters, nil)
	b.a.targets = append(b.a.targets, colref{})
	b.a.pulledInto = append(b.a.pulledInto, -1)
	b.names = append(b.names, map[string]int{})
	b.ctes = append(b.ctes, nil)
	b.using = append(b.using, nil)
	b.exports = append(b.exports, nil)
	return len(b.a.Scopes) - 1
}

func (b *builder) query(n *pg.Node, parent int, kind ScopeKind, result bool) int {
	switch x := n.Node.(type) {
	case *pg.Node_SelectStmt:
		return b.selectStmt(x.SelectStmt, parent, kind, result)
	case *pg.Node_InsertStmt:
		return b.insertStmt(x.InsertStmt, parent, kind, result)
	case *pg.Node_UpdateStmt:
		return b.updateStmt(x.UpdateStmt, parent, kind, result)
	case *pg.Node_DeleteStmt:
		return b.deleteStmt(x.DeleteStmt, parent, kind, result)
	case *pg.Node_MergeStmt:
		b.a.Opaque = "MERGE"
	default:
		b.a.Opaque = "a statement inside WITH"
	}
	return b.newScope(kind, parent, result)
}

func (b *builder) with(w *pg.WithClause, s int) {
	if w == nil {
		return
	}
	b.ctes[s] = map[string]int{}
	if w.Recursive {
		for _, c := range w.Ctes {
			b.ctes[s][c.GetCommonTableExpr().GetCtename()] = -1
		}
	}
	for _, c := range w.Ctes {
		cte := c.GetCommonTableExpr()
		if cte == nil {
			continue
		}
		body := -1
		if cte.Ctequery != nil {
			body = b.query(cte.Ctequery, s, CTEScope, false)
		}
		// A plain SELECT named once in the statement is the same as a
		// subquery written where it is used: it is pulled up there.
		if w.Recursive || len(cte.Aliascolnames) > 0 || !plainSelect(cte.Ctequery.GetSelectStmt()) || b.refs[cte.Ctename] != 1 {
			body = -1
		} else {
			b.bodies[body] = cte.Ctequery.GetSelectStmt()
		}
		b.ctes[s][cte.Ctename] = body
	}
}

func (b *builder) selectStmt(sel *pg.SelectStmt, parent int, kind ScopeKind, result bool) int {
	if sel == nil {
		return b.newScope(kind, parent, false)
	}
	s := b.newScope(kind, parent, result)
	b.with(sel.WithClause, s)
	sc := func() *Scope { return &b.a.Scopes[s] }
	if sel.Op != pg.SetOperation_SETOP_NONE {
		sc().SetOp, sc().Result = true, false
		b.selectStmt(sel.Larg, s, BranchScope, result)
		b.selectStmt(sel.Rarg, s, BranchScope, result)
		b.exprList(s, sel.SortClause)
		b.exprs(s, sel.LimitCount, sel.LimitOffset)
		sc().Limit = sel.LimitCount != nil || sel.LimitOffset != nil
		return s
	}
	for _, row := range sel.ValuesLists {
		b.exprs(s, row)
	}
	for _, f := range sel.FromClause {
		b.fromItem(f, s, true)
	}
	b.where(s, sel.WhereClause)
	b.exprList(s, sel.TargetList)
	b.exprList(s, sel.GroupClause)
	b.exprs(s, sel.HavingClause)
	b.exprList(s, sel.WindowClause)
	b.exprList(s, sel.SortClause)
	b.exprList(s, sel.DistinctClause)
	b.exprs(s, sel.LimitCount, sel.LimitOffset)
	sc().Limit = sel.LimitCount != nil || sel.LimitOffset != nil
	distinctOn := len(sel.DistinctClause) > 0 && sel.DistinctClause[0] != nil && sel.DistinctClause[0].Node != nil
	sc().Grouped = len(sel.GroupClause) > 0 || sel.HavingClause != nil || distinctOn
	for _, g := range sel.GroupClause {
		if g.GetGroupingSet() != nil {
			sc().GroupingSets = true
		}
		for _, o := range b.resolve(g, s).occs {
			sc().GroupBy = append(sc().GroupBy, ColumnKey{o, b.resolve(g, s).col})
		}
	}
	b.windows(s, sel)
	if distinctOn {
		// DISTINCT ON groups rows by its expressions, as GROUP BY does.
		for _, d := range sel.DistinctClause {
			r := b.resolve(d, s)
			for _, o := range r.occs {
				sc().GroupBy = append(sc().GroupBy, ColumnKey{o, r.col})
			}
		}
	}
	if len(sel.DistinctClause) > 0 && !distinctOn {
		for _, t := range sel.TargetList {
			if rt := t.GetResTarget(); rt != nil && rt.Val != nil {
				r := b.resolve(rt.Val, s)
				for _, o := range r.occs {
					sc().Distinct = append(sc().Distinct, ColumnKey{o, r.col})
				}
			}
		}
	}
	if sel.IntoClause != nil {
		b.a.Into = true
	}
	if len(sel.TargetList) == 1 {
		if rt := sel.TargetList[0].GetResTarget(); rt != nil && rt.Val != nil && rt.Val.GetColumnRef() != nil {
			b.a.targets[s] = b.resolve(rt.Val, s)
		}
	}
	return s
}

func (b *builder) insertStmt(ins *pg.InsertStmt, parent int, kind ScopeKind, result bool) int {
	s := b.newScope(kind, parent, result)
	b.with(ins.WithClause, s)
	occ := b.table(ins.Relation, s, Insert)
	if ins.SelectStmt != nil {
		src := b.query(ins.SelectStmt, s, InsertSourceScope, false)
		sel := ins.SelectStmt.GetSelectStmt()
		if s == 0 && sel != nil && len(sel.ValuesLists) == 0 && sel.Op == pg.SetOperation_SETOP_NONE {
			for _, c := range ins.Cols {
				rt := c.GetResTarget()
				if rt == nil || len(rt.Indirection) > 0 {
					b.a.insertCols = append(b.a.insertCols, "")
					continue
				}
				b.a.insertCols = append(b.a.insertCols, rt.Name)
			}
			for _, t := range sel.TargetList {
				rt := t.GetResTarget()
				var e insertExpr
				if rt != nil && rt.Val != nil {
					if v, ok := valueOf(rt.Val); ok {
						e = insertExpr{val: v, isVal: true}
					} else {
						e.col = b.resolve(rt.Val, src)
					}
				}
				b.a.insertSrc = append(b.a.insertSrc, e)
			}
		}
	}
	if oc := ins.OnConflictClause; oc != nil {
		b.names[s]["excluded"] = -1
		if oc.Infer != nil {
			b.exprList(s, oc.Infer.IndexElems)
			b.exprs(s, oc.Infer.WhereClause)
		}
		b.assignments(s, occ, oc.TargetList)
		b.exprs(s, oc.WhereClause)
	}
	b.exprList(s, ins.ReturningList)
	return s
}

func (b *builder) updateStmt(u *pg.UpdateStmt, parent int, kind ScopeKind, result bool) int {
	s := b.newScope(kind, parent, result)
	b.with(u.WithClause, s)
	occ := b.table(u.Relation, s, Update)
	for _, f := range u.FromClause {
		b.fromItem(f, s, true)
	}
	b.where(s, u.WhereClause)
	b.assignments(s, occ, u.TargetList)
	b.exprList(s, u.ReturningList)
	return s
}

func (b *builder) deleteStmt(d *pg.DeleteStmt, parent int, kind ScopeKind, result bool) int {
	s := b.newScope(kind, parent, result)
	b.with(d.WithClause, s)
	b.table(d.Relation, s, Delete)
	for _, f := range d.UsingClause {
		b.fromItem(f, s, true)
	}
	b.where(s, d.WhereClause)
	b.exprList(s, d.ReturningList)
	return s
}

func (b *builder) assignments(s, occ int, targets []*pg.Node) {
	for _, t := range targets {
		rt := t.GetResTarget()
		if rt == nil {
			continue
		}
		if occ >= 0 {
			b.a.Assigned = append(b.a.Assigned, ColumnKey{occ, rt.Name})
		}
		b.exprs(s, rt.Val)
		b.exprList(s, rt.Indirection)
	}
}

// table adds a table occurrence (or a CTE reference) to scope s and
// returns the occurrence index, -1 for a CTE.
func (b *builder) table(rv *pg.RangeVar, s int, modify Kind) int {
	return b.tableIn(rv, s, modify, false)
}

func (b *builder) tableIn(rv *pg.RangeVar, s int, modify Kind, nullable bool) int {
	if rv == nil {
		return -1
	}
	b.rangeVars++
	ref := rv.Relname
	if rv.Alias != nil && rv.Alias.Aliasname != "" {
		ref = rv.Alias.Aliasname
	}
	if rv.Schemaname == "" && b.isCTE(s, rv.Relname) {
		b.names[s][ref] = -1
		return -1
	}
	b.a.Occurrences = append(b.a.Occurrences, Occurrence{
		Table: Table{rv.Schemaname, rv.Relname}, Ref: ref,
		TopLevel: s == 0, Scope: s, Modify: modify, Nullable: nullable, Home: s,
	})
	i := len(b.a.Occurrences) - 1
	b.a.Scopes[s].Occs = append(b.a.Scopes[s].Occs, i)
	b.names[s][ref] = i
	return i
}

// cte reports whether name is a CTE visible from scope s, and its body
// scope when the CTE can be pulled up (-1 otherwise).
func (b *builder) cte(s int, name string) (int, bool) {
	for ; s >= 0; s = b.a.Scopes[s].Parent {
		if body, ok := b.ctes[s][name]; ok {
			return body, true
		}
	}
	return -1, false
}

func (b *builder) isCTE(s int, name string) bool {
	_, ok := b.cte(s, name)
	return ok
}

// fromItem adds a FROM item to scope s and returns the occurrences under
// it. filtering is false under the nullable side of an outer join, whose
// ON conditions do not restrict the result rows.
func (b *builder) fromItem(n *pg.Node, s int, filtering bool) []int {
	switch x := n.Node.(type) {
	case *pg.Node_RangeVar:
		if rv := x.RangeVar; rv.Schemaname == "" {
			if body, ok := b.cte(s, rv.Relname); ok && body >= 0 && b.a.pulledInto[body] < 0 {
				b.rangeVars++
				ref := rv.Relname
				if rv.Alias != nil && rv.Alias.Aliasname != "" {
					ref = rv.Alias.Aliasname
				}
				b.names[s][ref] = -1
				renamed := rv.Alias != nil && len(rv.Alias.Colnames) > 0
				return b.pullUp(body, s, ref, renamed, b.bodies[body], filtering)
			}
		}
		if i := b.tableIn(x.RangeVar, s, 0, !filtering); i >= 0 {
			return []int{i}
		}
	case *pg.Node_RangeSubselect:
		rs := x.RangeSubselect
		child := -1
		if rs.Subquery != nil {
			child = b.query(rs.Subquery, s, DerivedScope, false)
		}
		if rs.Alias != nil {
			b.names[s][rs.Alias.Aliasname] = -1
		}
		if child >= 0 && rs.Alias != nil && (plainSelect(rs.Subquery.GetSelectStmt()) || b.groupedByKeys(child, rs.Subquery.GetSelectStmt())) {
			return b.pullUp(child, s, rs.Alias.Aliasname, len(rs.Alias.Colnames) > 0, rs.Subquery.GetSelectStmt(), filtering)
		}
	case *pg.Node_RangeFunction:
		b.exprList(s, x.RangeFunction.Functions)
		if a := x.RangeFunction.Alias; a != nil {
			b.names[s][a.Aliasname] = -1
		}
		for _, f := range x.RangeFunction.Functions {
			// Without an alias a function's columns are named after it.
			if l := f.GetList(); l != nil && len(l.Items) > 0 {
				if fc := l.Items[0].GetFuncCall(); fc != nil && len(fc.Funcname) > 0 {
					if nm := strVal(fc.Funcname[len(fc.Funcname)-1]); nm != "" {
						if _, taken := b.names[s][nm]; !taken {
							b.names[s][nm] = -1
						}
					}
				}
			}
		}
	case *pg.Node_RangeTableSample:
		b.exprList(s, x.RangeTableSample.Args)
		b.exprs(s, x.RangeTableSample.Repeatable)
		if x.RangeTableSample.Relation != nil {
			return b.fromItem(x.RangeTableSample.Relation, s, filtering)
		}
	case *pg.Node_JoinExpr:
		j := x.JoinExpr
		lf := filtering && (j.Jointype == pg.JoinType_JOIN_INNER || j.Jointype == pg.JoinType_JOIN_LEFT)
		rf := filtering && (j.Jointype == pg.JoinType_JOIN_INNER || j.Jointype == pg.JoinType_JOIN_RIGHT)
		var lo, ro []int
		if j.Larg != nil {
			lo = b.fromItem(j.Larg, s, lf)
		}
		if j.Rarg != nil {
			ro = b.fromItem(j.Rarg, s, rf)
		}
		for _, u := range names(j.UsingClause) {
			if b.using[s] == nil {
				b.using[s] = map[string]bool{}
			}
			b.using[s][u] = true
			for _, l := range lo {
				for _, r := range ro {
					if b.keyOf(b.a.Occurrences[l].Table) == u && b.keyOf(b.a.Occurrences[r].Table) == u {
						b.a.Links = append(b.a.Links, Link{A: ColumnKey{l, u}, B: ColumnKey{r, u}})
					}
				}
			}
		}
		if j.Quals != nil {
			saved, savedScope := b.visible, b.visScope
			b.visible, b.visScope = append(append([]int{}, lo...), ro...), s
			b.exprs(s, j.Quals)
			for _, t := range andTerms(j.Quals, nil) {
				b.link(t, s)
				if filtering && j.Jointype == pg.JoinType_JOIN_INNER {
					b.a.filters[s] = append(b.a.filters[s], b.cond(t, s))
				}
			}
			b.visible, b.visScope = saved, savedScope
		}
		if j.Alias != nil {
			b.names[s][j.Alias.Aliasname] = -1
		}
		return append(lo, ro...)
	default:
		b.exprs(s, n)
	}
	return nil
}

// plainSelect reports whether a subquery's rows are a filter and
// projection of its FROM: no set operation, LIMIT, grouping, DISTINCT,
// aggregates, window functions or locking.
func plainSelect(sel *pg.SelectStmt) bool {
	if sel == nil || sel.Op != pg.SetOperation_SETOP_NONE || len(sel.ValuesLists) > 0 || sel.WithClause != nil ||
		sel.LimitCount != nil || sel.LimitOffset != nil || len(sel.GroupClause) > 0 || sel.HavingClause != nil ||
		len(sel.DistinctClause) > 0 || len(sel.WindowClause) > 0 || len(sel.LockingClause) > 0 || sel.IntoClause != nil ||
		len(sel.FromClause) == 0 {
		return false
	}
	for _, t := range sel.TargetList {
		if containsNode(t.ProtoReflect(), func(m protoreflect.Message) bool {
			f, ok := m.Interface().(*pg.FuncCall)
			return ok && (f.Over != nil || isAggregate(f))
		}) {
			return false
		}
	}
	return true
}

// groupedByKeys reports whether a FROM subquery groups (GROUP BY, DISTINCT
// or DISTINCT ON) by the shard key of every sharded table in it, with no
// LIMIT, OFFSET, window function, set operation or locking: then each
// group lives on one shard, the subquery's rows are the union of what
// each shard computes for its own rows, and it routes like its tables
// pulled up into the enclosing level (a fan-out of the whole statement,
// merged there as over a table).
func (b *builder) groupedByKeys(child int, sel *pg.SelectStmt) bool {
	if sel == nil || sel.Op != pg.SetOperation_SETOP_NONE || len(sel.ValuesLists) > 0 || sel.WithClause != nil ||
		sel.LimitCount != nil || sel.LimitOffset != nil || len(sel.WindowClause) > 0 || len(sel.LockingClause) > 0 ||
		sel.IntoClause != nil || len(sel.FromClause) == 0 {
		return false
	}
	sc := b.a.Scopes[child]
	if sc.GroupingSets {
		return false
	}
	distinct := len(sel.DistinctClause) > 0 && !sc.Grouped // plain DISTINCT
	if !sc.Grouped && !distinct {
		return false
	}
	for _, t := range sel.TargetList {
		if containsNode(t.ProtoReflect(), func(m protoreflect.Message) bool {
			f, ok := m.Interface().(*pg.FuncCall)
			return ok && f.Over != nil
		}) {
			return false
		}
	}
	has := func(keys []ColumnKey, k ColumnKey) bool {
		for _, x := range keys {
			if x == k {
				return true
			}
		}
		return false
	}
	sharded := 0
	for i, o := range b.a.Occurrences {
		if o.Home != child {
			continue
		}
		key := b.keyOf(o.Table)
		if key == "" {
			continue
		}
		sharded++
		k := ColumnKey{i, key}
		if sc.Grouped && !has(sc.GroupBy, k) || distinct && !has(sc.Distinct, k) {
			return false
		}
	}
	return sharded > 0
}

// pullUp makes a plain FROM subquery's tables part of scope s: their Home
// becomes s's home, and the subquery's output columns that copy a table's
// shard key resolve to that table's column in s.
func (b *builder) pullUp(child, s int, alias string, renamed bool, sel *pg.SelectStmt, filtering bool) []int {
	home := s
	b.a.pulledInto[child] = s
	var occs []int
	for i := range b.a.Occurrences {
		o := &b.a.Occurrences[i]
		if o.Home == child {
			o.Home = home
			o.Nullable = o.Nullable || !filtering
			occs = append(occs, i)
		}
	}
	if renamed {
		return occs // renamed columns: no exports, references stay unresolved
	}
	out := map[string][]int{}
	add := func(name string, os []int) {
		if _, dup := out[name]; dup || os == nil {
			out[name] = nil // Postgres: ambiguous, or not a key column
			return
		}
		out[name] = os
	}
	merge := func(ex map[string][]int) {
		for name, os := range ex {
			add(name, os)
		}
	}
	for _, t := range sel.TargetList {
		rt := t.GetResTarget()
		if rt == nil || rt.Val == nil {
			continue
		}
		if c := rt.Val.GetColumnRef(); c != nil && len(c.Fields) > 0 && c.Fields[len(c.Fields)-1].GetAStar() != nil {
			// * or t.*: each table's columns under their own names (the
			// key is the one we know), and nested subqueries' outputs.
			if len(c.Fields) == 1 {
				for _, o := range b.a.Scopes[child].Occs {
					if k := b.keyOf(b.a.Occurrences[o].Table); k != "" {
						add(k, []int{o})
					}
				}
				for _, ex := range b.exports[child] {
					merge(ex)
				}
			} else {
				ref := strVal(c.Fields[len(c.Fields)-2])
				if o, ok := b.names[child][ref]; ok && o >= 0 {
					if k := b.keyOf(b.a.Occurrences[o].Table); k != "" {
						add(k, []int{o})
					}
				} else if ex, ok := b.exports[child][ref]; ok {
					merge(ex)
				}
			}
			continue
		}
		name := rt.Name
		if name == "" {
			name = figureName(rt.Val)
		}
		if rt.Val.GetColumnRef() != nil {
			if r := b.resolve(rt.Val, child); len(r.occs) > 0 && name == r.col {
				add(name, r.occs)
				continue
			}
		}
		if name != "" {
			add(name, nil) // an output of that name that is not a key column
		}
	}
	if b.exports[s] == nil {
		b.exports[s] = map[string]map[string][]int{}
	}
	b.exports[s][alias] = out
	return occs
}

func (b *builder) where(s int, w *pg.Node) {
	if w == nil {
		return
	}
	b.exprs(s, w)
	for _, t := range andTerms(w, nil) {
		b.link(t, s)
		b.semiLink(t, s)
		b.a.filters[s] = append(b.a.filters[s], b.cond(t, s))
	}
}

func andTerms(n *pg.Node, out []*pg.Node) []*pg.Node {
	if bx := n.GetBoolExpr(); bx != nil && bx.Boolop == pg.BoolExprType_AND_EXPR {
		for _, a := range bx.Args {
			out = andTerms(a, out)
		}
		return out
	}
	return append(out, n)
}

// link records `a.x = b.y` between columns of two occurrences.
func (b *builder) link(t *pg.Node, s int) {
	e := t.GetAExpr()
	if e == nil || e.Kind != pg.A_Expr_Kind_AEXPR_OP || opName(e) != "=" {
		return
	}
	l, r := b.resolve(e.Lexpr, s), b.resolve(e.Rexpr, s)
	for _, x := range l.occs {
		for _, y := range r.occs {
			if x != y {
				b.a.Links = append(b.a.Links, Link{A: ColumnKey{x, l.col}, B: ColumnKey{y, r.col}})
			}
		}
	}
}

// semiLink records `a.x IN (SELECT b.y ...)` when the subquery returns
// exactly the b.y values of its filtered rows.
func (b *builder) semiLink(t *pg.Node, s int) {
	sl := t.GetSubLink()
	if sl == nil || sl.SubLinkType != pg.SubLinkType_ANY_SUBLINK || !isEqOp(sl.OperName) {
		return
	}
	sub, ok := b.sublinks[sl]
	if !ok {
		return
	}
	sc := b.a.Scopes[sub]
	if sc.SetOp || sc.Limit || sc.Grouped {
		return
	}
	l, r := b.resolve(sl.Testexpr, s), b.a.targets[sub]
	for _, x := range l.occs {
		for _, y := range r.occs {
			b.a.Links = append(b.a.Links, Link{A: ColumnKey{x, l.col}, B: ColumnKey{y, r.col}, Semi: true})
		}
	}
}

func isEqOp(ns []*pg.Node) bool {
	return len(ns) == 0 || (len(ns) == 1 && strVal(ns[0]) == "=") ||
		(len(ns) == 2 && strVal(ns[0]) == "pg_catalog" && strVal(ns[1]) == "=")
}

// figureName is the output column name Postgres gives an unnamed target
// (FigureColname), for the shapes that can carry a column's name.
func figureName(n *pg.Node) string {
	switch x := n.Node.(type) {
	case *pg.Node_ColumnRef:
		if f := x.ColumnRef.Fields; len(f) > 0 {
			return strVal(f[len(f)-1])
		}
	case *pg.Node_TypeCast:
		if name := figureName(x.TypeCast.Arg); name != "" {
			return name
		}
		if t := x.TypeCast.TypeName; t != nil && len(t.Names) > 0 {
			return strVal(t.Names[len(t.Names)-1])
		}
	case *pg.Node_FuncCall:
		if f := x.FuncCall.Funcname; len(f) > 0 {
			return strVal(f[len(f)-1])
		}
	case *pg.Node_CollateClause:
		return figureName(x.CollateClause.Arg)
	}
	return ""
}

func containsAll(set, xs []int) bool {
	for _, x := range xs {
		found := false
		for _, y := range set {
			found = found || x == y
		}
		if !found {
			return false
		}
	}
	return true
}

// windows records the PARTITION BY columns of every window function of
// the level (in its targets and ORDER BY; subqueries have their own).
func (b *builder) windows(s int, sel *pg.SelectStmt) {
	named := map[string]*pg.WindowDef{}
	for _, w := range sel.WindowClause {
		if d := w.GetWindowDef(); d != nil && d.Name != "" {
			named[d.Name] = d
		}
	}
	var defs []*pg.WindowDef
	for _, list := range [][]*pg.Node{sel.TargetList, sel.SortClause} {
		for _, n := range list {
			visit(n.ProtoReflect(), func(m protoreflect.Message) bool {
				if f, ok := m.Interface().(*pg.FuncCall); ok && f.Over != nil {
					defs = append(defs, f.Over)
				}
				return !isSubLink(m)
			})
		}
	}
	for _, d := range defs {
		for d.Refname != "" && len(d.PartitionClause) == 0 && named[d.Refname] != nil && named[d.Refname] != d {
			d = named[d.Refname]
		}
		if d.Name != "" && d.Refname == "" && len(d.PartitionClause) == 0 && named[d.Name] != nil {
			d = named[d.Name] // OVER w
		}
		var cols []ColumnKey
		for _, p := range d.PartitionClause {
			r := b.resolve(p, s)
			for _, o := range r.occs {
				cols = append(cols, ColumnKey{o, r.col})
			}
		}
		b.a.Scopes[s].Windows = append(b.a.Scopes[s].Windows, cols)
	}
}

// resolve names the occurrence(s) a bare column reference points to.
// Qualified names resolve to the nearest level with a FROM item of that
// name; unqualified names only to shard key columns of the same level
// (any other table there might have a column of that name).
func (b *builder) resolve(n *pg.Node, s int) colref {
	if n == nil {
		return colref{}
	}
	c := n.GetColumnRef()
	if c == nil {
		return colref{}
	}
	f := names(c.Fields)
	for _, x := range f {
		if x == "" { // a * or an unsupported field
			return colref{}
		}
	}
	switch len(f) {
	case 1:
		cands := b.a.Scopes[s].Occs
		if b.visScope == s {
			cands = b.visible
		}
		var occs []int
		for _, o := range cands {
			if b.keyOf(b.a.Occurrences[o].Table) == f[0] && b.a.Occurrences[o].Scope == s {
				occs = append(occs, o)
			}
		}
		// Output columns of plain subqueries in FROM.
		for _, ex := range b.exports[s] {
			if os, ok := ex[f[0]]; ok {
				if os == nil {
					return colref{}
				}
				if b.visScope == s && !containsAll(b.visible, os) {
					continue
				}
				occs = append(occs, os...)
			}
		}
		if len(occs) > 1 && !b.using[s][f[0]] {
			// Postgres calls this ambiguous unless USING merged the columns.
			return colref{}
		}
		return colref{occs: occs, col: f[0]}
	case 2, 3:
		ref, col := f[len(f)-2], f[len(f)-1]
		for sc := s; sc >= 0; sc = b.a.Scopes[sc].Parent {
			if o, ok := b.names[sc][ref]; ok {
				if o < 0 {
					if ex, ok := b.exports[sc][ref]; ok && len(f) == 2 && len(ex[col]) > 0 {
						return colref{occs: ex[col], col: col}
					}
					return colref{}
				}
				if len(f) == 3 && b.a.Occurrences[o].Table.Schema != f[0] {
					// schema.table.col must name the table itself.
					if b.a.Occurrences[o].Table.Schema != "" || b.a.Occurrences[o].Ref != b.a.Occurrences[o].Table.Name {
						return colref{}
					}
				}
				return colref{occs: []int{o}, col: col}
			}
		}
	}
	return colref{}
}

// cond reads a filter term over resolved columns. Anything it does not
// understand, and everything under NOT, is Any.
func (b *builder) cond(n *pg.Node, s int) cond {
	switch x := n.Node.(type) {
	case *pg.Node_BoolExpr:
		bx := x.BoolExpr
		if bx.Boolop == pg.BoolExprType_NOT_EXPR {
			return cond{}
		}
		c := cond{op: And}
		if bx.Boolop == pg.BoolExprType_OR_EXPR {
			c.op = Or
		}
		for _, a := range bx.Args {
			c.kids = append(c.kids, b.cond(a, s))
		}
		return c
	case *pg.Node_AExpr:
		return b.exprCond(x.AExpr, s)
	case *pg.Node_SubLink:
		sl := x.SubLink
		if sl.SubLinkType != pg.SubLinkType_ANY_SUBLINK || !isEqOp(sl.OperName) {
			return cond{}
		}
		sub, ok := b.sublinks[sl]
		if !ok || b.a.Scopes[sub].SetOp {
			return cond{}
		}
		col, cast := b.keyColumn(sl.Testexpr, s)
		if len(col.occs) == 0 {
			return cond{}
		}
		return cond{op: Cmp, col: col, cmp: "=", sub: sub, cast: cast}
	}
	return cond{}
}

// keyColumn resolves a column reference, under at most one cast.
func (b *builder) keyColumn(n *pg.Node, s int) (colref, string) {
	if n == nil {
		return colref{}, ""
	}
	if tc := n.GetTypeCast(); tc != nil {
		if tc.TypeName != nil && len(tc.TypeName.ArrayBounds) > 0 {
			return colref{}, ""
		}
		return b.resolve(tc.Arg, s), typeName(tc.TypeName)
	}
	return b.resolve(n, s), ""
}

var flip = map[string]string{"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

func (b *builder) exprCond(e *pg.A_Expr, s int) cond {
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_OP:
		op := opName(e)
		if _, ok := flip[op]; !ok || len(e.Name) != 1 {
			return cond{}
		}
		if col, cast := b.keyColumn(e.Lexpr, s); len(col.occs) > 0 {
			if v, ok := valueOf(e.Rexpr); ok {
				return cond{op: Cmp, col: col, cast: cast, cmp: op, vals: []Value{v}}
			}
		} else if col, cast := b.keyColumn(e.Rexpr, s); len(col.occs) > 0 {
			if v, ok := valueOf(e.Lexpr); ok {
				return cond{op: Cmp, col: col, cast: cast, cmp: flip[op], vals: []Value{v}}
			}
		}
	case pg.A_Expr_Kind_AEXPR_IN:
		if opName(e) != "=" {
			return cond{}
		}
		col, cast := b.keyColumn(e.Lexpr, s)
		l := e.Rexpr.GetList()
		if len(col.occs) == 0 || l == nil {
			return cond{}
		}
		vals, ok := values(l.Items)
		if !ok {
			return cond{}
		}
		return cond{op: Cmp, col: col, cast: cast, cmp: "=", vals: vals}
	case pg.A_Expr_Kind_AEXPR_OP_ANY:
		if opName(e) != "=" || len(e.Name) != 1 {
			return cond{}
		}
		col, cast := b.keyColumn(e.Lexpr, s)
		if len(col.occs) == 0 {
			return cond{}
		}
		if arr := e.Rexpr.GetAArrayExpr(); arr != nil {
			vals, ok := values(arr.Elements)
			if !ok {
				return cond{}
			}
			return cond{op: Cmp, col: col, cast: cast, cmp: "=", vals: vals}
		}
		if v, ok := valueOf(e.Rexpr); ok {
			v.Array = true
			return cond{op: Cmp, col: col, cast: cast, cmp: "=", vals: []Value{v}}
		}
	case pg.A_Expr_Kind_AEXPR_BETWEEN:
		// BETWEEN SYMMETRIC, NOT BETWEEN are other kinds: Any.
		col, cast := b.keyColumn(e.Lexpr, s)
		l := e.Rexpr.GetList()
		if len(col.occs) == 0 || l == nil || len(l.Items) != 2 {
			return cond{}
		}
		lo, ok1 := valueOf(l.Items[0])
		hi, ok2 := valueOf(l.Items[1])
		if !ok1 || !ok2 {
			return cond{}
		}
		return cond{op: And, kids: []cond{
			{op: Cmp, col: col, cast: cast, cmp: ">=", vals: []Value{lo}},
			{op: Cmp, col: col, cast: cast, cmp: "<=", vals: []Value{hi}},
		}}
	}
	return cond{}
}

func values(items []*pg.Node) ([]Value, bool) {
	vals := make([]Value, 0, len(items))
	for _, it := range items {
		v, ok := valueOf(it)
		if !ok {
			return nil, false
		}
		vals = append(vals, v)
	}
	return vals, true
}

func (b *builder) exprList(s int, ns []*pg.Node) {
	for _, n := range ns {
		b.exprs(s, n)
	}
}

// exprs finds the subqueries inside expressions and analyses each as a
// scope under s.
func (b *builder) exprs(s int, ns ...*pg.Node) {
	for _, n := range ns {
		if n == nil {
			continue
		}
		visit(n.ProtoReflect(), func(m protoreflect.Message) bool {
			switch v := m.Interface().(type) {
			case *pg.SubLink:
				if v.Testexpr != nil {
					b.exprs(s, v.Testexpr)
				}
				if v.Subselect != nil {
					b.sublinks[v] = b.query(v.Subselect, s, SubLinkScope, false)
				}
				return false
			case *pg.SelectStmt:
				b.selectStmt(v, s, SubLinkScope, false)
				return false
			case *pg.InsertStmt:
				b.insertStmt(v, s, SubLinkScope, false)
				return false
			case *pg.UpdateStmt:
				b.updateStmt(v, s, SubLinkScope, false)
				return false
			case *pg.DeleteStmt:
				b.deleteStmt(v, s, SubLinkScope, false)
				return false
			}
			return true
		})
	}
}

// visit calls fn on m and, while fn returns true, on the messages below.
func visit(m protoreflect.Message, fn func(protoreflect.Message) bool) {
	if !m.IsValid() || !fn(m) {
		return
	}
	rangeFields(m, func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				visit(l.Get(i).Message(), fn)
			}
		case fd.Message() != nil && !fd.IsMap():
			visit(v.Message(), fn)
		}
		return true
	})
}

// CreatesFromQuery reports whether a DDL statement stores the result of a
// query: CREATE VIEW, CREATE MATERIALIZED VIEW, CREATE TABLE AS.
func (s *Statement) CreatesFromQuery() bool {
	switch s.node.Node.(type) {
	case *pg.Node_ViewStmt, *pg.Node_CreateTableAsStmt:
		return true
	}
	return false
}
