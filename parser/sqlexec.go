package parser

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Prepared is the query of a SQL PREPARE, as the session keeps it to run
// with an EXECUTE's arguments (Bind). It does not change once made.
type Prepared struct {
	Name string
	// Declared is the number of parameter types PREPARE listed.
	Declared int
	query    *pg.Node
	version  int32
	types    []*pg.TypeName // of $1, $2...: SetTypes
}

// SQLPrepared returns the query of a SQL PREPARE name [(types)] AS query.
func (s *Statement) SQLPrepared() (*Prepared, bool) {
	if s == nil || s.node == nil {
		return nil, false
	}
	p := s.node.GetPrepareStmt()
	if p == nil || p.Query == nil {
		return nil, false
	}
	return &Prepared{Name: p.Name, Declared: len(p.Argtypes), query: p.Query, version: s.version}, true
}

// Execution is a SQL EXECUTE name [(args)].
type Execution struct {
	Name    string
	args    []*pg.Node
	version int32
}

// SQLExecution returns the statement name and arguments of a SQL EXECUTE.
func (s *Statement) SQLExecution() (*Execution, bool) {
	if s == nil || s.node == nil {
		return nil, false
	}
	e := s.node.GetExecuteStmt()
	if e == nil {
		return nil, false
	}
	return &Execution{Name: e.Name, args: e.Params, version: s.version}, true
}

// Args is the number of arguments.
func (e *Execution) Args() int { return len(e.args) }

// ArgError is an EXECUTE argument Postgres rejects, with its SQLSTATE.
type ArgError struct {
	Code, Message string
}

func (e *ArgError) Error() string { return e.Message }

// checkArg refuses what Postgres refuses in an EXECUTE argument, which is
// evaluated on its own: column references (there is no table), subqueries,
// aggregate and window functions, parameters.
func checkArg(n *pg.Node) error {
	var err error
	walk(n.ProtoReflect(), func(m protoreflect.Message) {
		if err != nil {
			return
		}
		switch v := m.Interface().(type) {
		case *pg.ColumnRef:
			var parts []string
			for _, f := range v.Fields {
				if sv := f.GetString_(); sv != nil {
					parts = append(parts, sv.Sval)
				} else {
					parts = append(parts, "*")
				}
			}
			err = &ArgError{Code: "42703", Message: fmt.Sprintf("column \"%s\" does not exist", strings.Join(parts, "."))}
			if len(parts) > 1 {
				err = &ArgError{Code: "42P01", Message: fmt.Sprintf("missing FROM-clause entry for table \"%s\"", parts[0])}
			}
		case *pg.SubLink:
			err = &ArgError{Code: "0A000", Message: "cannot use subquery in EXECUTE parameter"}
		case *pg.ParamRef:
			err = &ArgError{Code: "42P02", Message: fmt.Sprintf("there is no parameter $%d", v.Number)}
		case *pg.FuncCall:
			name := ""
			if k := len(v.Funcname); k > 0 && v.Funcname[k-1].GetString_() != nil {
				name = v.Funcname[k-1].GetString_().Sval
			}
			switch {
			case v.Over != nil:
				err = &ArgError{Code: "42P20", Message: "window functions are not allowed in EXECUTE parameters"}
			case v.AggStar || v.AggDistinct || v.AggFilter != nil || len(v.AggOrder) > 0 || v.AggWithinGroup || aggregates[name]: // shape.go
				err = &ArgError{Code: "42803", Message: "aggregate functions are not allowed in EXECUTE parameters"}
			}
		}
	})
	return err
}

// ErrTypeName means a parameter type could not be read as a type name.
var ErrTypeName = errors.New("parameter type is not a type name")

// parseTypeName parses a type's name as Postgres prints it (regtype output:
// quoted and qualified where needed).
func parseTypeName(t string) (*pg.TypeName, error) {
	tree, err := pg.Parse("SELECT NULL::" + t)
	if err != nil || len(tree.Stmts) != 1 {
		return nil, fmt.Errorf("%w: %q", ErrTypeName, t)
	}
	sel := tree.Stmts[0].Stmt.GetSelectStmt()
	if sel == nil || len(sel.TargetList) != 1 {
		return nil, fmt.Errorf("%w: %q", ErrTypeName, t)
	}
	tc := sel.TargetList[0].GetResTarget().GetVal().GetTypeCast()
	if tc == nil || tc.TypeName == nil {
		return nil, fmt.Errorf("%w: %q", ErrTypeName, t)
	}
	return tc.TypeName, nil
}

// SetTypes records the parameters' types as Postgres resolved them at
// PREPARE (regtype output), for Bind.
func (p *Prepared) SetTypes(types []string) error {
	p.types = make([]*pg.TypeName, len(types))
	for i, t := range types {
		tn, err := parseTypeName(t)
		if err != nil {
			return err
		}
		p.types[i] = tn
	}
	return nil
}

// Params is the number of parameters (SetTypes).
func (p *Prepared) Params() int { return len(p.types) }

// Bind returns the text of the prepared query with each $n replaced by
// the n-th argument cast to the parameter's type (SetTypes):
// `(arg)::type`. The caller has checked that there are as many arguments
// as parameters. An argument Postgres would reject is an *ArgError.
func (p *Prepared) Bind(e *Execution) (string, error) {
	q, err := p.checkedBound(e)
	if err != nil {
		return "", err
	}
	sql, err := pg.Deparse(&pg.ParseResult{Version: p.version, Stmts: []*pg.RawStmt{{Stmt: q}}})
	if err != nil {
		return "", fmt.Errorf("deparse: %w", err)
	}
	return sql, nil
}

// bound is Bind's query as a node (a copy of the prepared one).
func (p *Prepared) bound(e *Execution) (*pg.Node, error) {
	types := p.types
	q := proto.Clone(p.query).(*pg.Node)
	var refs []*pg.Node
	walk(q.ProtoReflect(), func(m protoreflect.Message) {
		if n, ok := m.Interface().(*pg.Node); ok && n.GetParamRef() != nil {
			refs = append(refs, n)
		}
	})
	for _, n := range refs {
		k := int(n.GetParamRef().Number)
		if k < 1 || k > len(e.args) || k > len(types) {
			return nil, &ArgError{Code: "42P02", Message: fmt.Sprintf("there is no parameter $%d", k)}
		}
		arg := proto.Clone(e.args[k-1]).(*pg.Node)
		tn := proto.Clone(types[k-1]).(*pg.TypeName)
		n.Node = &pg.Node_TypeCast{TypeCast: &pg.TypeCast{Arg: arg, TypeName: tn, Location: -1}}
	}
	return q, nil
}

// EmbeddedExecution returns the SQL EXECUTE inside an EXPLAIN or a
// CREATE TABLE ... AS EXECUTE (or EXPLAIN of one): statements Postgres
// runs with the session's prepared statement of that name.
func (s *Statement) EmbeddedExecution() (*Execution, bool) {
	if s == nil || s.node == nil {
		return nil, false
	}
	if n := embeddedExecute(s.node); n != nil {
		e := n.GetExecuteStmt()
		return &Execution{Name: e.Name, args: e.Params, version: s.version}, true
	}
	return nil, false
}

// embeddedExecute finds the EXECUTE node inside EXPLAIN and CREATE TABLE
// AS (nil if there is none).
func embeddedExecute(n *pg.Node) *pg.Node {
	var q *pg.Node
	switch {
	case n.GetExplainStmt() != nil:
		q = n.GetExplainStmt().Query
	case n.GetCreateTableAsStmt() != nil:
		q = n.GetCreateTableAsStmt().Query
	default:
		return nil
	}
	if q == nil {
		return nil
	}
	if q.GetExecuteStmt() != nil {
		return q
	}
	return embeddedExecute(q)
}

// checkedBound is the prepared query bound to e's arguments (none when
// the statement has no parameters), each argument checked first.
func (p *Prepared) checkedBound(e *Execution) (*pg.Node, error) {
	if len(p.types) == 0 {
		e = &Execution{Name: e.Name}
	}
	for _, a := range e.args {
		if err := checkArg(a); err != nil {
			return nil, err
		}
	}
	return p.bound(e)
}

// BindInto returns the text of s (holding e: EmbeddedExecution) with
// the EXECUTE replaced by the prepared query bound to e's arguments, as
// Bind does: what the statement means, for routing it.
func (p *Prepared) BindInto(s *Statement, e *Execution) (string, error) {
	q, err := p.checkedBound(e)
	if err != nil {
		return "", err
	}
	c := proto.Clone(s.node).(*pg.Node)
	n := embeddedExecute(c)
	if n == nil {
		return "", errors.New("no EXECUTE in the statement")
	}
	n.Node = q.Node
	sql, err := pg.Deparse(&pg.ParseResult{Version: s.version, Stmts: []*pg.RawStmt{{Stmt: c}}})
	if err != nil {
		return "", fmt.Errorf("deparse: %w", err)
	}
	return sql, nil
}

// CheckSQL is the text that checks a PREPARE on a shard as Postgres
// would: the same statement under name, whose parameter types the caller
// then reads from pg_prepared_statements.
func (s *Statement) CheckSQL(name string) (string, error) {
	p := s.node.GetPrepareStmt()
	if p == nil {
		return "", errors.New("not a PREPARE")
	}
	c := proto.Clone(p).(*pg.PrepareStmt)
	c.Name = name
	sql, err := pg.Deparse(&pg.ParseResult{Version: s.version, Stmts: []*pg.RawStmt{{Stmt: &pg.Node{Node: &pg.Node_PrepareStmt{PrepareStmt: c}}}}})
	if err != nil {
		return "", fmt.Errorf("deparse: %w", err)
	}
	return sql, nil
}

// ArgPosition maps an error position in Bind's text (bound; 1-based, in
// characters, as Postgres reports them) to the EXECUTE's own text
// (client, where e's arguments are): inside an argument, to that place
// in the argument as the client wrote it; elsewhere 0, since an error in
// the prepared query itself has no position in Postgres's EXECUTE.
func (e *Execution) ArgPosition(bound, client string, pos int) int {
	if pos <= 0 {
		return 0
	}
	at := byteOffset(bound, pos)
	if at < 0 {
		return 0
	}
	for _, a := range e.args {
		loc := startLocation(a)
		if loc < 0 {
			continue
		}
		// loc is in the whole query string, which client may be the
		// start of (a statement of a multi-statement string).
		before := loc
		if loc <= len(client) {
			before = utf8.RuneCountInString(client[:loc])
		}
		text, err := pg.Deparse(&pg.ParseResult{Version: e.version, Stmts: []*pg.RawStmt{{Stmt: &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: &pg.SelectStmt{
			TargetList: []*pg.Node{pg.MakeResTargetNodeWithVal(a, -1)}}}}}}})
		if err != nil {
			continue
		}
		text = strings.TrimPrefix(text, "SELECT ")
		for from := 0; from < len(bound); {
			i := strings.Index(bound[from:], text)
			if i < 0 {
				break
			}
			start := from + i
			if start <= at && at < start+len(text) {
				return before + 1 + utf8.RuneCountInString(bound[start:at])
			}
			from = start + 1
		}
	}
	return 0
}

// startLocation is the first location (byte offset in the parsed text)
// in n's tree, -1 if none.
func startLocation(n *pg.Node) int {
	first := -1
	walk(n.ProtoReflect(), func(m protoreflect.Message) {
		fd := m.Descriptor().Fields().ByName("location")
		if fd == nil || fd.Kind() != protoreflect.Int32Kind {
			return
		}
		if l := int(m.Get(fd).Int()); l >= 0 && (first < 0 || l < first) {
			first = l
		}
	})
	return first
}

// QueryPosition maps an error position in Bind's text (bound; 1-based,
// in characters) outside the arguments to the same place in the
// PREPARE's own text (source, the query string PREPARE came in), where
// Postgres reports an error of the prepared query that EXECUTE meets: the
// node at that place in the bound statement is found again, by its path
// in the tree, in the prepared query. 0 if it cannot be found.
func (p *Prepared) QueryPosition(bound, source string, pos int) int {
	at := byteOffset(bound, pos)
	if at < 0 {
		return 0
	}
	tree, err := pg.Parse(bound)
	if err != nil || len(tree.Stmts) != 1 {
		return 0
	}
	path, ok := pathTo(tree.Stmts[0].Stmt.ProtoReflect(), int64(at), nil)
	if !ok {
		return 0
	}
	m := p.query.ProtoReflect()
	for _, st := range path {
		if !m.Has(st.fd) {
			return 0
		}
		v := m.Get(st.fd)
		if st.i >= 0 {
			if st.i >= v.List().Len() {
				return 0
			}
			m = v.List().Get(st.i).Message()
		} else {
			m = v.Message()
		}
	}
	fd := m.Descriptor().Fields().ByName("location")
	if fd == nil {
		return 0
	}
	loc := int(m.Get(fd).Int())
	switch {
	case loc < 0:
		return 0
	case loc <= len(source):
		return utf8.RuneCountInString(source[:loc]) + 1
	}
	return loc + 1
}

// byteOffset is the byte offset of character pos (1-based) in s, -1 if
// none.
func byteOffset(s string, pos int) int {
	n := 0
	for i := range s {
		n++
		if n == pos {
			return i
		}
	}
	return -1
}

type pathStep struct {
	fd protoreflect.FieldDescriptor
	i  int // list index, -1 for a single message
}

// pathTo finds the first message (in walk order) under m whose location
// is loc, and the path to it.
func pathTo(m protoreflect.Message, loc int64, path []pathStep) ([]pathStep, bool) {
	if !m.IsValid() {
		return nil, false
	}
	if fd := m.Descriptor().Fields().ByName("location"); fd != nil && fd.Kind() == protoreflect.Int32Kind && m.Get(fd).Int() == loc {
		return path, true
	}
	var found []pathStep
	ok := false
	rangeFields(m, func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && !ok; i++ {
				found, ok = pathTo(l.Get(i).Message(), loc, append(path[:len(path):len(path)], pathStep{fd, i}))
			}
		case fd.Message() != nil && !fd.IsMap():
			found, ok = pathTo(v.Message(), loc, append(path[:len(path):len(path)], pathStep{fd, -1}))
		}
		return !ok
	})
	return found, ok
}
