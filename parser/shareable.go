package parser

import (
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// stableFuncs are the functions whose result depends only on their
// arguments, the data read and the session's settings (Postgres's
// IMMUTABLE and STABLE functions that read no clock, sequence or random
// source). Any function not listed is treated as volatile.
var stableFuncs = map[string]bool{
	// aggregates
	"count": true, "sum": true, "avg": true, "min": true, "max": true, "array_agg": true, "string_agg": true,
	"json_agg": true, "jsonb_agg": true, "json_object_agg": true, "jsonb_object_agg": true, "bool_and": true,
	"bool_or": true, "every": true, "stddev": true, "stddev_pop": true, "stddev_samp": true, "variance": true,
	"var_pop": true, "var_samp": true, "bit_and": true, "bit_or": true,
	// window functions (deterministic given an ORDER BY; as deterministic as the plain query otherwise)
	"row_number": true, "rank": true, "dense_rank": true, "percent_rank": true, "cume_dist": true, "ntile": true,
	"lag": true, "lead": true, "first_value": true, "last_value": true, "nth_value": true,
	// numbers
	"abs": true, "ceil": true, "ceiling": true, "floor": true, "round": true, "trunc": true, "mod": true,
	"power": true, "sqrt": true, "sign": true, "div": true, "exp": true, "ln": true, "log": true,
	// text
	"lower": true, "upper": true, "length": true, "char_length": true, "character_length": true, "octet_length": true,
	"substr": true, "substring": true, "concat": true, "concat_ws": true, "trim": true, "btrim": true, "ltrim": true,
	"rtrim": true, "replace": true, "position": true, "strpos": true, "left": true, "right": true, "lpad": true,
	"rpad": true, "split_part": true, "initcap": true, "md5": true, "format": true, "starts_with": true,
	"regexp_replace": true, "regexp_match": true, "to_char": true, "to_number": true,
	// dates and times (their result depends on TimeZone/DateStyle, which are in the key)
	"date_trunc": true, "date_part": true, "extract": true, "to_date": true, "to_timestamp": true,
	"make_date": true, "make_timestamp": true, "make_interval": true,
	// json and arrays
	"json_build_object": true, "jsonb_build_object": true, "json_build_array": true, "jsonb_build_array": true,
	"to_json": true, "to_jsonb": true, "row_to_json": true, "jsonb_extract_path": true, "json_extract_path": true,
	"jsonb_extract_path_text": true, "json_extract_path_text": true, "array_length": true, "cardinality": true,
	"unnest": true, "array_position": true, "array_to_string": true, "coalesce": true, "nullif": true,
	"greatest": true, "least": true, "generate_series": true,
}

// Shareable reports whether the statement is a read whose answer two
// clients with the same settings may share: a SELECT that writes nothing,
// locks nothing (FOR UPDATE/SHARE), creates nothing (SELECT INTO), reads no
// catalog (pg_catalog, information_schema, pg_* relations), leaves no
// session state, and calls only functions known to be deterministic
// (stableFuncs: an unknown function counts as volatile, and so do
// CURRENT_TIMESTAMP and friends). The answer is computed once per parsed
// statement. A caller with the query text should also check
// TimeLiteral, which finds 'now' written as a string.
func (s *Statement) Shareable() bool {
	if s.memo != nil {
		switch s.memo.shared.Load() {
		case 1:
			return true
		case 2:
			return false
		}
	}
	ok := s.shareable()
	if s.memo != nil {
		v := uint32(2)
		if ok {
			v = 1
		}
		s.memo.shared.Store(v)
	}
	return ok
}

func (s *Statement) shareable() bool {
	if s.Kind != Select || s.Writes || s.Session != NoSessionUse || s.node == nil {
		return false
	}
	for _, t := range s.Tables {
		if Catalog(t) {
			return false
		}
	}
	ok := true
	walk(s.node.ProtoReflect(), func(m protoreflect.Message) {
		if !ok {
			return
		}
		switch v := m.Interface().(type) {
		case *pg.FuncCall:
			ns := names(v.Funcname)
			if len(ns) == 0 || len(ns) > 2 || (len(ns) == 2 && ns[0] != "pg_catalog") || !stableFuncs[ns[len(ns)-1]] {
				ok = false
			}
		case *pg.SQLValueFunction: // CURRENT_TIMESTAMP, CURRENT_USER, LOCALTIME...
			ok = false
		case *pg.SelectStmt:
			if len(v.LockingClause) > 0 || v.IntoClause != nil {
				ok = false
			}
		case *pg.RangeVar:
			if v.Relpersistence == "t" || v.Schemaname == "pg_temp" {
				ok = false
			}
		case *pg.A_Const:
			if sv := v.GetSval(); sv != nil && timeWord(sv.Sval) {
				ok = false
			}
		}
	})
	return ok
}

// Catalog reports whether t names a system catalog or view: its schema is
// pg_catalog, information_schema or a pg_ schema (pg_temp, pg_toast), or
// it is an unqualified pg_* relation.
func Catalog(t Table) bool {
	return t.Schema == "information_schema" || strings.HasPrefix(t.Schema, "pg_") ||
		(t.Schema == "" && strings.HasPrefix(t.Name, "pg_"))
}

// TimeLiteral reports whether sql holds a string literal that Postgres
// reads as the current time when cast to a date/time type ('now', 'today',
// 'tomorrow', 'yesterday', any case, with spaces around). Statements from
// the constant-stripping fast path have parameters where the text had
// literals, so Shareable cannot see them; the query text can.
func TimeLiteral(sql string) bool {
	// Every stretch between two consecutive quotes is checked, inside a
	// literal or not, so that a quote in a comment cannot hide one.
	i := strings.IndexByte(sql, '\'')
	for i >= 0 {
		j := strings.IndexByte(sql[i+1:], '\'')
		if j < 0 {
			return false
		}
		if timeWord(sql[i+1 : i+1+j]) {
			return true
		}
		i += j + 1
	}
	return false
}

func timeWord(s string) bool {
	s = strings.TrimSpace(s)
	if len(s) < 3 || len(s) > 9 {
		return false
	}
	switch strings.ToLower(s) {
	case "now", "today", "tomorrow", "yesterday":
		return true
	}
	return false
}

// TimeParam reports whether a text parameter value reads as the current
// time when cast to a date/time type (as TimeLiteral's literals).
func TimeParam(v []byte) bool { return timeWord(string(v)) }
