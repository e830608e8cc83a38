package parser

import (
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// Copy describes a COPY statement: its table or query, direction, endpoint
// and format options, as Postgres would read them.
type Copy struct {
	// Table is the table copied; zero for COPY (query) TO.
	Table Table
	// Columns is the column list, nil when the statement has none.
	Columns []string
	// Query is the query of COPY (query) TO, analysed on its own.
	Query *Statement
	// QuerySQL is the query's text (deparsed), "" when there is none.
	QuerySQL string
	// From is true for COPY ... FROM.
	From bool
	// Stdio is true for FROM STDIN / TO STDOUT (not a server file or program).
	Stdio bool
	// Where is true when COPY FROM has a WHERE clause.
	Where bool
	// Options are the format options with Postgres's defaults filled in.
	Options CopyOptions
}

// CopyOptions are COPY's format options. Unknown or repeated options are
// left for the shards to refuse.
type CopyOptions struct {
	Format    string // "text", "csv" or "binary"
	Delimiter byte
	Null      string
	Quote     byte
	Escape    byte
	// Header is true for HEADER (or HEADER MATCH) on input.
	Header bool
	// ForceNull and ForceNotNull name columns (FORCE_NULL, FORCE_NOT_NULL);
	// the *All forms are FORCE_NULL *.
	ForceNull, ForceNotNull       []string
	ForceNullAll, ForceNotNullAll bool
	// Encoding is the ENCODING option, "" when absent.
	Encoding string
	// ForceQuote is set by FORCE_QUOTE (any columns).
	ForceQuote bool
	// Bad is set when an option's value is not one the proxy can read
	// (a multi-byte delimiter...): the shard will refuse the statement.
	Bad bool
}

// Copy returns the COPY statement's description; ok is false for any other
// statement. Such statements stay Kind Unsupported, so every path that does
// not handle COPY itself refuses it.
func (s *Statement) Copy() (*Copy, bool) {
	if s == nil || s.node == nil {
		return nil, false
	}
	x, ok := s.node.Node.(*pg.Node_CopyStmt)
	if !ok {
		return nil, false
	}
	cs := x.CopyStmt
	c := &Copy{From: cs.IsFrom, Stdio: cs.Filename == "" && !cs.IsProgram, Where: cs.WhereClause != nil}
	if cs.Relation != nil {
		c.Table = Table{Schema: cs.Relation.Schemaname, Name: cs.Relation.Relname}
	}
	if cs.Query != nil {
		c.Query = analyse(s.SQL, cs.Query)
		c.Query.version = s.version
		c.QuerySQL, _ = pg.Deparse(&pg.ParseResult{Version: s.version, Stmts: []*pg.RawStmt{{Stmt: cs.Query}}})
	}
	for _, a := range cs.Attlist {
		if str := a.GetString_(); str != nil {
			c.Columns = append(c.Columns, str.Sval)
		}
	}
	c.Options = copyOptions(cs.Options)
	return c, true
}

func copyOptions(opts []*pg.Node) CopyOptions {
	o := CopyOptions{Format: "text"}
	var delim, null, quote, escape *string
	for _, n := range opts {
		d := n.GetDefElem()
		if d == nil {
			continue
		}
		switch d.Defname {
		case "format":
			o.Format = strings.ToLower(defString(d.Arg))
		case "delimiter":
			v := defString(d.Arg)
			delim = &v
		case "null":
			v := defString(d.Arg)
			null = &v
		case "quote":
			v := defString(d.Arg)
			quote = &v
		case "escape":
			v := defString(d.Arg)
			escape = &v
		case "header":
			o.Header = defBool(d.Arg)
		case "force_null":
			o.ForceNull, o.ForceNullAll = defColumns(d.Arg)
		case "force_not_null":
			o.ForceNotNull, o.ForceNotNullAll = defColumns(d.Arg)
		case "encoding":
			o.Encoding = defString(d.Arg)
		case "force_quote":
			o.ForceQuote = true
		}
	}
	csv := o.Format == "csv"
	one := func(p *string, def byte) byte {
		if p == nil {
			return def
		}
		if len(*p) != 1 {
			o.Bad = true
			return def
		}
		return (*p)[0]
	}
	switch {
	case csv:
		o.Delimiter, o.Null, o.Quote = one(delim, ','), "", one(quote, '"')
		o.Escape = one(escape, o.Quote)
	default:
		o.Delimiter, o.Null = one(delim, '\t'), `\N`
	}
	if null != nil {
		o.Null = *null
	}
	switch o.Format {
	case "text", "csv", "binary":
	default:
		o.Bad = true
	}
	return o
}

// defString reads an option value written as a string, identifier or number.
func defString(n *pg.Node) string {
	switch {
	case n == nil:
		return ""
	case n.GetString_() != nil:
		return n.GetString_().Sval
	case n.GetInteger() != nil:
		return strconv.Itoa(int(n.GetInteger().Ival))
	case n.GetBoolean() != nil:
		return strconv.FormatBool(n.GetBoolean().Boolval)
	}
	return ""
}

// defBool reads a boolean option as Postgres's defGetBoolean does (no value
// means true); HEADER MATCH counts as true.
func defBool(n *pg.Node) bool {
	if n == nil {
		return true
	}
	switch strings.ToLower(defString(n)) {
	case "false", "off", "0", "no", "f", "n":
		return false
	}
	return true
}

func defColumns(n *pg.Node) (cols []string, all bool) {
	if n == nil {
		return nil, false
	}
	if n.GetAStar() != nil {
		return nil, true
	}
	if l := n.GetList(); l != nil {
		for _, it := range l.Items {
			if s := it.GetString_(); s != nil {
				cols = append(cols, s.Sval)
			}
		}
	}
	return cols, false
}
