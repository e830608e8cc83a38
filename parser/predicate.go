package parser

import (
	"errors"
	"fmt"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
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
	// ColCast is the lower-case type of an explicit cast on the column side
	// (`col::text = '42'`), "" when the column is compared bare.
	ColCast string
}

// Occurrence is one place a table is named.
type Occurrence struct {
	Table Table
	// Ref is the name columns use to qualify it: the alias, else the table name.
	Ref string
	// TopLevel is true for tables in the top-level FROM (and joins), or the
	// target of INSERT/UPDATE/DELETE; false inside subqueries and CTEs.
	TopLevel bool
	// Scope is the index of the query level naming the table (Analysis.Scopes).
	Scope int
	// Modify is Insert, Update or Delete when the occurrence is the target
	// of a data-modifying statement (at any level), 0 otherwise.
	Modify Kind
	// Nullable is true on the nullable side of an outer join: the level's
	// rows may hold NULLs in place of this table's columns.
	Nullable bool
	// Home is the level whose rows this table's rows make up: Scope, or
	// the enclosing level when Scope is a plain subquery in FROM (a filter
	// and projection of its tables, no LIMIT, grouping or aggregates),
	// whose rows are the enclosing level's as if written there.
	Home int
}

// Occurrences lists every place a table is named, CTE references left out
// (a CTE's name shadows a table only where Postgres says it does).
func (s *Statement) Occurrences() []Occurrence {
	return s.Analyse(nil).Occurrences
}

func opName(e *pg.A_Expr) string {
	if len(e.Name) == 0 {
		return ""
	}
	return strVal(e.Name[len(e.Name)-1])
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
			// Integers beyond int32 arrive as Fval: keep them integers.
			if f := c.GetFval().Fval; isDigits(f) {
				return Value{Kind: IntLit, Text: f}, true
			}
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

func isDigits(s string) bool {
	if strings.HasPrefix(s, "-") {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
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
	return insertValuesAt(ins, idx)
}

// InsertKeysAt is InsertKeys for an INSERT without a column list: the
// values at position idx of each VALUES row (the table's idx-th column).
func (s *Statement) InsertKeysAt(idx int) ([]Value, error) {
	ins := s.node.GetInsertStmt()
	if ins == nil {
		return nil, fmt.Errorf("not an INSERT")
	}
	if len(ins.Cols) > 0 {
		return nil, fmt.Errorf("the INSERT has a column list")
	}
	return insertValuesAt(ins, idx)
}

func insertValuesAt(ins *pg.InsertStmt, idx int) ([]Value, error) {
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
