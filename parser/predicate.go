package parser

import (
	"errors"
	"fmt"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ValueKind is the syntactic kind of a literal.
type ValueKind uint8

const (
	IntLit ValueKind = iota + 1
	FloatLit
	StringLit
	BoolLit
	ParamVal
)

// Value is a constant or a bind parameter compared with a column.
type Value struct {
	Kind ValueKind
	// Param is the 1-based parameter number for ParamVal.
	Param int
	// Text is the literal as Postgres reads it (numbers as written, strings
	// without quotes).
	Text string
	Null bool
	// Cast is the lower-case type name of an explicit cast, if any
	// ("int8", "timestamptz", "date", "text"...).
	Cast string
	// Array is true for `= ANY(value)`: the value is an array of keys.
	Array bool
}

// PredOp is the operator of a Pred node.
type PredOp uint8

const (
	// Any means the predicate says nothing usable about the column: it may
	// hold any value.
	Any PredOp = iota
	And
	Or
	// Cmp compares the column with Values: Cmp "=" with several values is IN.
	Cmp
)

// Pred is what a WHERE clause says about one column, as a tree. Parts that
// do not constrain the column, and everything under NOT, are Any.
type Pred struct {
	Op     PredOp
	Kids   []Pred
	Cmp    string // "=", "<", "<=", ">", ">=" for Op Cmp
	Values []Value
}

// Occurrence is one place a table is named.
type Occurrence struct {
	Table Table
	// Ref is the name columns use to qualify it: the alias, else the table name.
	Ref string
	// TopLevel is true for tables in the top-level FROM (and joins), or the
	// target of INSERT/UPDATE/DELETE; false inside subqueries and CTEs.
	TopLevel bool
}

// ColumnRef is a column as written: Ref is "" when unqualified.
type ColumnRef struct {
	Ref    string
	Column string
}

// Occurrences lists every place a table is named.
func (s *Statement) Occurrences() []Occurrence {
	n := s.node
	if s.Kind == Explain {
		return s.Inner.Occurrences()
	}
	top := map[*pg.RangeVar]bool{}
	for _, rv := range topRangeVars(n) {
		top[rv] = true
	}
	ctes := map[string]bool{}
	var out []Occurrence
	walk(n.ProtoReflect(), func(m protoreflect.Message) {
		switch v := m.Interface().(type) {
		case *pg.CommonTableExpr:
			ctes[v.Ctename] = true
		case *pg.RangeVar:
			ref := v.Relname
			if v.Alias != nil && v.Alias.Aliasname != "" {
				ref = v.Alias.Aliasname
			}
			out = append(out, Occurrence{Table: Table{v.Schemaname, v.Relname}, Ref: ref, TopLevel: top[v]})
		}
	})
	kept := out[:0]
	for _, o := range out {
		if o.Table.Schema == "" && ctes[o.Table.Name] {
			continue
		}
		kept = append(kept, o)
	}
	return kept
}

func topRangeVars(n *pg.Node) []*pg.RangeVar {
	var out []*pg.RangeVar
	var from func(ns []*pg.Node)
	from = func(ns []*pg.Node) {
		for _, f := range ns {
			switch x := f.Node.(type) {
			case *pg.Node_RangeVar:
				out = append(out, x.RangeVar)
			case *pg.Node_JoinExpr:
				from([]*pg.Node{x.JoinExpr.Larg, x.JoinExpr.Rarg})
			}
		}
	}
	switch x := n.Node.(type) {
	case *pg.Node_SelectStmt:
		from(x.SelectStmt.FromClause)
	case *pg.Node_InsertStmt:
		out = append(out, x.InsertStmt.Relation)
	case *pg.Node_UpdateStmt:
		out = append(out, x.UpdateStmt.Relation)
		from(x.UpdateStmt.FromClause)
	case *pg.Node_DeleteStmt:
		out = append(out, x.DeleteStmt.Relation)
		from(x.DeleteStmt.UsingClause)
	}
	return out
}

// conjuncts returns the top-level AND terms that filter the statement's
// rows: WHERE plus the ON clauses of inner joins.
func (s *Statement) conjuncts() []*pg.Node {
	var terms []*pg.Node
	var add func(n *pg.Node)
	add = func(n *pg.Node) {
		if n == nil {
			return
		}
		if b := n.GetBoolExpr(); b != nil && b.Boolop == pg.BoolExprType_AND_EXPR {
			for _, a := range b.Args {
				add(a)
			}
			return
		}
		terms = append(terms, n)
	}
	var joins func(ns []*pg.Node)
	joins = func(ns []*pg.Node) {
		for _, f := range ns {
			if j := f.GetJoinExpr(); j != nil {
				if j.Jointype == pg.JoinType_JOIN_INNER {
					add(j.Quals)
				}
				joins([]*pg.Node{j.Larg, j.Rarg})
			}
		}
	}
	switch x := s.node.Node.(type) {
	case *pg.Node_SelectStmt:
		add(x.SelectStmt.WhereClause)
		joins(x.SelectStmt.FromClause)
	case *pg.Node_UpdateStmt:
		add(x.UpdateStmt.WhereClause)
		joins(x.UpdateStmt.FromClause)
	case *pg.Node_DeleteStmt:
		add(x.DeleteStmt.WhereClause)
		joins(x.DeleteStmt.UsingClause)
	}
	return terms
}

// ColumnEqualities returns the `a.x = b.y` terms among the top-level
// conjuncts (and inner-join conditions, and JOIN ... USING columns).
func (s *Statement) ColumnEqualities() [][2]ColumnRef {
	if s.Kind == Explain {
		return s.Inner.ColumnEqualities()
	}
	var out [][2]ColumnRef
	for _, t := range s.conjuncts() {
		e := t.GetAExpr()
		if e == nil || e.Kind != pg.A_Expr_Kind_AEXPR_OP || opName(e) != "=" {
			continue
		}
		l, lok := columnRef(e.Lexpr)
		r, rok := columnRef(e.Rexpr)
		if lok && rok {
			out = append(out, [2]ColumnRef{l, r})
		}
	}
	return out
}

func columnRef(n *pg.Node) (ColumnRef, bool) {
	if n == nil {
		return ColumnRef{}, false
	}
	if tc := n.GetTypeCast(); tc != nil {
		n = tc.Arg
	}
	c := n.GetColumnRef()
	if c == nil {
		return ColumnRef{}, false
	}
	f := names(c.Fields)
	switch len(f) {
	case 1:
		return ColumnRef{Column: f[0]}, f[0] != ""
	case 2:
		return ColumnRef{Ref: f[0], Column: f[1]}, f[1] != ""
	case 3:
		return ColumnRef{Ref: f[1], Column: f[2]}, f[2] != ""
	}
	return ColumnRef{}, false
}

func opName(e *pg.A_Expr) string {
	if len(e.Name) == 0 {
		return ""
	}
	return strVal(e.Name[len(e.Name)-1])
}

// KeyPredicate returns what the statement's top-level filter says about
// column of the table occurrence named ref. Unqualified column references
// count when unqualified is true (the caller knows no other table in scope
// has a shard key of that name).
func (s *Statement) KeyPredicate(ref, column string, unqualified bool) Pred {
	if s.Kind == Explain {
		return s.Inner.KeyPredicate(ref, column, unqualified)
	}
	match := func(n *pg.Node) bool {
		c, ok := columnRef(n)
		return ok && c.Column == column && (c.Ref == ref || (c.Ref == "" && unqualified))
	}
	terms := s.conjuncts()
	if len(terms) == 0 {
		return Pred{}
	}
	kids := make([]Pred, 0, len(terms))
	for _, t := range terms {
		kids = append(kids, pred(t, match))
	}
	return simplify(Pred{Op: And, Kids: kids})
}

func pred(n *pg.Node, match func(*pg.Node) bool) Pred {
	switch x := n.Node.(type) {
	case *pg.Node_BoolExpr:
		b := x.BoolExpr
		switch b.Boolop {
		case pg.BoolExprType_AND_EXPR, pg.BoolExprType_OR_EXPR:
			op := And
			if b.Boolop == pg.BoolExprType_OR_EXPR {
				op = Or
			}
			p := Pred{Op: op}
			for _, a := range b.Args {
				p.Kids = append(p.Kids, pred(a, match))
			}
			return simplify(p)
		}
		return Pred{} // NOT: no restriction
	case *pg.Node_AExpr:
		return exprPred(x.AExpr, match)
	}
	return Pred{}
}

var flip = map[string]string{"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

func exprPred(e *pg.A_Expr, match func(*pg.Node) bool) Pred {
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_OP:
		op := opName(e)
		if _, ok := flip[op]; !ok {
			return Pred{}
		}
		if match(e.Lexpr) {
			if v, ok := valueOf(e.Rexpr); ok {
				return Pred{Op: Cmp, Cmp: op, Values: []Value{v}}
			}
		} else if match(e.Rexpr) {
			if v, ok := valueOf(e.Lexpr); ok {
				return Pred{Op: Cmp, Cmp: flip[op], Values: []Value{v}}
			}
		}
	case pg.A_Expr_Kind_AEXPR_IN:
		if opName(e) != "=" || !match(e.Lexpr) {
			return Pred{}
		}
		l := e.Rexpr.GetList()
		if l == nil {
			return Pred{}
		}
		vals := make([]Value, 0, len(l.Items))
		for _, it := range l.Items {
			v, ok := valueOf(it)
			if !ok {
				return Pred{}
			}
			vals = append(vals, v)
		}
		return Pred{Op: Cmp, Cmp: "=", Values: vals}
	case pg.A_Expr_Kind_AEXPR_OP_ANY:
		if opName(e) != "=" || !match(e.Lexpr) {
			return Pred{}
		}
		if arr := e.Rexpr.GetAArrayExpr(); arr != nil {
			vals := make([]Value, 0, len(arr.Elements))
			for _, it := range arr.Elements {
				v, ok := valueOf(it)
				if !ok {
					return Pred{}
				}
				vals = append(vals, v)
			}
			return Pred{Op: Cmp, Cmp: "=", Values: vals}
		}
		if v, ok := valueOf(e.Rexpr); ok {
			v.Array = true
			return Pred{Op: Cmp, Cmp: "=", Values: []Value{v}}
		}
	case pg.A_Expr_Kind_AEXPR_BETWEEN:
		if !match(e.Lexpr) {
			return Pred{}
		}
		l := e.Rexpr.GetList()
		if l == nil || len(l.Items) != 2 {
			return Pred{}
		}
		lo, ok1 := valueOf(l.Items[0])
		hi, ok2 := valueOf(l.Items[1])
		if !ok1 || !ok2 {
			return Pred{}
		}
		return Pred{Op: And, Kids: []Pred{{Op: Cmp, Cmp: ">=", Values: []Value{lo}}, {Op: Cmp, Cmp: "<=", Values: []Value{hi}}}}
	}
	return Pred{}
}

// simplify folds Any through And/Or: Any AND p = p; Any OR p = Any.
func simplify(p Pred) Pred {
	switch p.Op {
	case And:
		kids := p.Kids[:0:0]
		for _, k := range p.Kids {
			if k.Op != Any {
				kids = append(kids, k)
			}
		}
		switch len(kids) {
		case 0:
			return Pred{}
		case 1:
			return kids[0]
		}
		return Pred{Op: And, Kids: kids}
	case Or:
		for _, k := range p.Kids {
			if k.Op == Any {
				return Pred{}
			}
		}
	}
	return p
}

// valueOf reads a literal or parameter, possibly under casts.
func valueOf(n *pg.Node) (Value, bool) {
	if n == nil {
		return Value{}, false
	}
	switch x := n.Node.(type) {
	case *pg.Node_TypeCast:
		v, ok := valueOf(x.TypeCast.Arg)
		if !ok {
			return v, false
		}
		tn := typeName(x.TypeCast.TypeName)
		if x.TypeCast.TypeName != nil && len(x.TypeCast.TypeName.ArrayBounds) > 0 {
			tn += "[]"
		}
		if v.Cast == "" {
			v.Cast = tn
		} else if v.Cast != tn {
			// A chain of casts (x::text::int8) changes the value's meaning
			// in ways we do not evaluate.
			return v, false
		}
		return v, true
	case *pg.Node_ParamRef:
		return Value{Kind: ParamVal, Param: int(x.ParamRef.Number)}, true
	case *pg.Node_AConst:
		c := x.AConst
		if c.Isnull {
			return Value{Null: true}, true
		}
		switch {
		case c.GetIval() != nil:
			return Value{Kind: IntLit, Text: itoa(int(c.GetIval().Ival))}, true
		case c.GetFval() != nil:
			return Value{Kind: FloatLit, Text: c.GetFval().Fval}, true
		case c.GetSval() != nil:
			return Value{Kind: StringLit, Text: c.GetSval().Sval}, true
		case c.GetBoolval() != nil:
			if c.GetBoolval().Boolval {
				return Value{Kind: BoolLit, Text: "true"}, true
			}
			return Value{Kind: BoolLit, Text: "false"}, true
		}
	}
	return Value{}, false
}

// typeName returns a type's canonical lower-case name (pg_catalog dropped).
func typeName(t *pg.TypeName) string {
	if t == nil {
		return ""
	}
	ns := names(t.Names)
	if len(ns) == 2 && ns[0] == "pg_catalog" {
		ns = ns[1:]
	}
	n := strings.Join(ns, ".")
	switch n {
	case "bigint":
		return "int8"
	case "integer", "int":
		return "int4"
	case "smallint":
		return "int2"
	case "timestamp with time zone":
		return "timestamptz"
	case "character varying":
		return "varchar"
	}
	return n
}

// UpdatesColumn reports whether an UPDATE sets column.
func (s *Statement) UpdatesColumn(column string) bool {
	u := s.node.GetUpdateStmt()
	if u == nil {
		return false
	}
	for _, t := range u.TargetList {
		if rt := t.GetResTarget(); rt != nil && rt.Name == column {
			return true
		}
	}
	return false
}

// Insert errors.
var (
	ErrNoColumnList = errors.New("INSERT without a column list")
	ErrNotValues    = errors.New("INSERT ... SELECT")
)

// InsertKeys returns, for each row of an INSERT ... VALUES, the value given
// for column. A row whose value is not a literal or parameter gets ok=false
// in its slot (Kind 0).
func (s *Statement) InsertKeys(column string) ([]Value, error) {
	ins := s.node.GetInsertStmt()
	if ins == nil {
		return nil, fmt.Errorf("not an INSERT")
	}
	if len(ins.Cols) == 0 {
		return nil, ErrNoColumnList
	}
	idx := -1
	for i, c := range ins.Cols {
		if rt := c.GetResTarget(); rt != nil && rt.Name == column && len(rt.Indirection) == 0 {
			idx = i
		}
	}
	sel := ins.SelectStmt.GetSelectStmt()
	if sel == nil || len(sel.ValuesLists) == 0 || sel.Op != pg.SetOperation_SETOP_NONE {
		return nil, ErrNotValues
	}
	out := make([]Value, len(sel.ValuesLists))
	if idx < 0 {
		return out, nil // the column is absent: every slot unknown
	}
	for i, row := range sel.ValuesLists {
		l := row.GetList()
		if l == nil || idx >= len(l.Items) {
			continue
		}
		if v, ok := valueOf(l.Items[idx]); ok {
			out[i] = v
		}
	}
	return out, nil
}

// SplitInsert rewrites a multi-row INSERT ... VALUES into one statement per
// group of row indexes, by editing the AST and deparsing it.
func (s *Statement) SplitInsert(groups [][]int) ([]string, error) {
	ins := s.node.GetInsertStmt()
	if ins == nil || ins.SelectStmt.GetSelectStmt() == nil {
		return nil, fmt.Errorf("not an INSERT ... VALUES")
	}
	// Statements are shared through the parse cache: edit a copy.
	node := proto.Clone(s.node).(*pg.Node)
	sel := node.GetInsertStmt().SelectStmt.GetSelectStmt()
	all := sel.ValuesLists
	out := make([]string, len(groups))
	for i, g := range groups {
		rows := make([]*pg.Node, len(g))
		for j, r := range g {
			rows[j] = all[r]
		}
		sel.ValuesLists = rows
		sql, err := pg.Deparse(&pg.ParseResult{Version: s.version, Stmts: []*pg.RawStmt{{Stmt: node}}})
		if err != nil {
			return nil, fmt.Errorf("deparse split insert: %w", err)
		}
		out[i] = sql
	}
	return out, nil
}
