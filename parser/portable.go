package parser

import (
	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// portableFuncs are built-in functions whose result does not depend on
// which shard runs them: they read no table, sequence or catalog data that
// differs between shards (immutable and stable built-ins, and volatile ones
// like random() that touch no data). Everything else (user functions,
// nextval/currval/setval, functions reading catalogs or files) may read or
// write data, so a statement calling it runs on one fixed shard.
var portableFuncs = func() map[string]bool {
	m := map[string]bool{}
	for _, f := range []string{
		// math
		"abs", "ceil", "ceiling", "floor", "round", "trunc", "sign", "sqrt", "cbrt", "exp", "ln", "log", "log10",
		"power", "pow", "mod", "div", "pi", "degrees", "radians", "sin", "cos", "tan", "asin", "acos", "atan", "atan2",
		"greatest", "least", "random", "width_bucket", "gcd", "lcm", "factorial", "scale", "trim_scale",
		// text
		"lower", "upper", "initcap", "length", "char_length", "character_length", "octet_length", "bit_length",
		"substr", "substring", "replace", "translate", "trim", "btrim", "ltrim", "rtrim", "lpad", "rpad",
		"concat", "concat_ws", "left", "right", "repeat", "reverse", "position", "strpos", "split_part",
		"starts_with", "format", "quote_ident", "quote_literal", "quote_nullable", "md5", "sha224", "sha256",
		"sha384", "sha512", "encode", "decode", "chr", "ascii", "to_hex", "regexp_replace", "regexp_match",
		"regexp_matches", "regexp_split_to_array", "regexp_split_to_table", "string_to_array", "array_to_string",
		"overlay", "normalize", "unistr",
		// date and time
		"now", "statement_timestamp", "transaction_timestamp", "clock_timestamp", "timeofday", "date_trunc",
		"date_part", "extract", "date_bin", "age", "make_date", "make_time", "make_timestamp", "make_timestamptz",
		"make_interval", "to_char", "to_date", "to_timestamp", "to_number", "justify_days", "justify_hours",
		"justify_interval", "isfinite", "timezone",
		// arrays, json, misc
		"array_length", "array_lower", "array_upper", "array_ndims", "array_dims", "cardinality", "array_append",
		"array_prepend", "array_cat", "array_position", "array_positions", "array_remove", "array_replace",
		"unnest", "generate_series", "generate_subscripts", "to_json", "to_jsonb", "row_to_json", "json_build_object",
		"jsonb_build_object", "json_build_array", "jsonb_build_array", "json_object", "jsonb_object",
		"jsonb_set", "jsonb_insert", "jsonb_pretty", "json_typeof", "jsonb_typeof", "jsonb_strip_nulls",
		"json_array_length", "jsonb_array_length", "json_extract_path", "jsonb_extract_path",
		"json_extract_path_text", "jsonb_extract_path_text", "jsonb_path_query", "jsonb_path_exists",
		"gen_random_uuid", "uuid_generate_v4", "coalesce", "nullif", "num_nonnulls", "num_nulls",
		"current_setting", "version", "current_database", "current_schema", "current_user", "session_user",
		"pg_typeof", "format_type", "pg_sleep", "inet_client_addr", "inet_server_addr", "pg_backend_pid",
		"txid_current_if_assigned", "row_number", "rank", "dense_rank",
		// aggregates
		"count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every", "array_agg", "string_agg",
		"json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "stddev", "variance",
	} {
		m[f] = true
	}
	return m
}()

// portableCalls reports whether every function the statement calls is a
// portable built-in (unqualified or in pg_catalog).
func (s *Statement) portableCalls() bool {
	ok := true
	walk(s.node.ProtoReflect(), func(m protoreflect.Message) {
		if !ok {
			return
		}
		if f, isCall := m.Interface().(*pg.FuncCall); isCall {
			ns := names(f.Funcname)
			fn := ns[len(ns)-1]
			if !portableFuncs[fn] || (len(ns) > 1 && ns[0] != "pg_catalog") {
				ok = false
			}
		}
	})
	return ok
}

// Portable reports whether the statement gives the same answer on any
// shard as far as its function calls go: it calls only built-in functions
// that read and write no data (see portableFuncs). A statement naming no
// table that is not Portable (SELECT nextval('s'), SELECT my_func()) must
// run on one fixed shard.
func (s *Statement) Portable() bool { return !s.impure }
