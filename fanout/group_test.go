package fanout

import (
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
)

func groupRows(t *testing.T, in Source, spec GroupSpec) []string {
	t.Helper()
	g, err := Group(in, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := drain(t, g)
	slices.Sort(out) // hash merge: group order is unspecified, as in Postgres
	return out
}

func TestGroupScalarNoRows(t *testing.T) {
	// SELECT count(x), sum(x), min(x), max(x), avg(x), bool_and(b),
	// bool_or(b), count(*) FROM t WHERE false: one row, count 0, the
	// others NULL.
	cols := []AggCol{
		{Func: "count", Col: 0, Type: Int8OID},
		{Func: "sum", Col: 1, Type: NumericOID},
		{Func: "sum", Col: 1, Type: Int8OID},
		{Func: "sum", Col: 1, Type: Float8OID},
		{Func: "min", Col: 1, Type: Int4OID},
		{Func: "max", Col: 1, Type: NumericOID},
		{Func: "avg", Col: 1, Count: 2, Type: NumericOID},
		{Func: "avg", Col: 1, Count: 2, Type: Float8OID},
		{Func: "bool_and", Col: 3, Type: BoolOID},
		{Func: "bool_or", Col: 3, Type: BoolOID},
		{Func: "", Col: 1},
		{Func: "expr"},
	}
	want := "0|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL"
	t.Run("no shards", func(t *testing.T) {
		wantRows(t, groupRows(t, Concat(), GroupSpec{Cols: cols, Scalar: true}), want)
	})
	t.Run("empty shards", func(t *testing.T) {
		wantRows(t, groupRows(t, Concat(rows(), rows(), rows()), GroupSpec{Cols: cols, Scalar: true}), want)
	})
	t.Run("shards with empty partials", func(t *testing.T) {
		// What each shard answers for no rows: count 0, the rest NULL.
		in := rows("0|NULL|0|NULL", "0|NULL|0|NULL")
		wantRows(t, groupRows(t, in, GroupSpec{Cols: cols, Scalar: true}), want)
	})
	t.Run("grouped no rows", func(t *testing.T) {
		wantRows(t, groupRows(t, rows(), GroupSpec{Keys: []int{0}, Cols: cols}))
	})
	t.Run("over partials", func(t *testing.T) {
		// Shards' partials "count|value|count(value)|bool", one shard
		// empty, one shard with no matching rows.
		cols := []AggCol{
			{Func: "count", Col: 0, Type: Int8OID},
			{Func: "sum", Col: 1, Type: NumericOID},
			{Func: "min", Col: 1, Type: NumericOID},
			{Func: "max", Col: 1, Type: NumericOID},
			{Func: "avg", Col: 1, Count: 2, Type: NumericOID},
			{Func: "bool_and", Col: 3, Type: BoolOID},
			{Func: "bool_or", Col: 3, Type: BoolOID},
			{Func: "", Col: 1},
			{Func: "expr"},
		}
		in := Concat(rows("3|5|3|t"), rows(), rows("0|NULL|0|NULL"), rows("4|-2.5|2|f"))
		got := groupRows(t, in, GroupSpec{Cols: cols, Scalar: true})
		wantRows(t, got, "7|2.5|-2.5|5|0.50000000000000000000|f|t|5|NULL")
	})
}

func TestGroupKeys(t *testing.T) {
	// Rows are partial groups "key|count|sum" from several shards.
	spec := GroupSpec{
		Keys: []int{0},
		Cols: []AggCol{{Col: 0}, {Func: "count", Col: 1, Type: Int8OID}, {Func: "sum", Col: 2, Type: NumericOID}},
	}
	cases := []struct {
		name  string
		kinds []KeyKind
		in    Source
		want  []string
	}{
		{"merge across shards", nil,
			Concat(rows("a|1|1.5", "b|2|2"), rows("b|3|0.25", "c|1|NULL"), rows("a|1|-1.5")),
			[]string{"a|2|0.0", "b|5|2.25", "c|1|NULL"}},
		{"NULL keys are one group", nil,
			Concat(rows("NULL|1|1", "x|1|1"), rows("NULL|2|2"), rows("NULL|3|3")),
			[]string{"NULL|6|6", "x|1|1"}},
		{"NULL is not the empty string", nil,
			Concat(rows("NULL|1|1", "|2|2"), rows("|3|3", "NULL|4|4")),
			[]string{"NULL|5|5", "|5|5"}},
		{"numeric keys by value", []KeyKind{KeyNumeric},
			Concat(rows("1.5|1|1"), rows("1.50|2|2"), rows("0.0|1|1", "0|1|1", "15|1|1")),
			[]string{"0.0|2|2", "1.5|3|3", "15|1|1"}},
		{"float keys by value", []KeyKind{KeyFloat},
			Concat(rows("-0|1|1"), rows("0|2|2", "NaN|1|1"), rows("NaN|1|1")),
			[]string{"-0|3|3", "NaN|2|2"}},
		{"one shard", nil, rows("a|1|1", "b|1|1"), []string{"a|1|1", "b|1|1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := spec
			s.KeyKinds = c.kinds
			wantRows(t, groupRows(t, c.in, s), c.want...)
		})
	}
	t.Run("two keys with NULLs", func(t *testing.T) {
		s := GroupSpec{Keys: []int{0, 1}, Cols: []AggCol{{Col: 0}, {Col: 1}, {Func: "count", Col: 2, Type: Int8OID}}}
		in := Concat(rows("NULL|NULL|1", "NULL|a|1", "a|NULL|1"), rows("NULL|NULL|1", "a|NULL|1", "NULLa||1"))
		wantRows(t, groupRows(t, in, s), "NULLa||1", "NULL|NULL|2", "NULL|a|1", "a|NULL|2")
	})
	t.Run("16 shards", func(t *testing.T) {
		var srcs []Source
		for s := range 16 {
			var specs []string
			for k := range s % 5 { // keys 0..s%5-1: key k is on the shards with s%5 > k
				specs = append(specs, string(rune('a'+k))+"|1|0.1")
			}
			srcs = append(srcs, rows(specs...))
		}
		// Shards with s%5 > k: k=0: 12 shards, k=1: 9, k=2: 6, k=3: 3.
		wantRows(t, groupRows(t, Concat(srcs...), spec), "a|12|1.2", "b|9|0.9", "c|6|0.6", "d|3|0.3")
	})
}

func TestGroupAggregates(t *testing.T) {
	cases := []struct {
		name string
		col  AggCol
		in   []string // partials, column 0 (avg: sum|count)
		want string
		err  error
	}{
		{"avg int8 sums", AggCol{Func: "avg", Col: 0, Count: 1, Type: Int8OID}, []string{"3|1", "7|2"}, "3.3333333333333333", nil},
		{"avg numeric keeps scale", AggCol{Func: "avg", Col: 0, Count: 1, Type: NumericOID}, []string{"1.000000000000000000001|1", "0|2"}, "0.333333333333333333334", nil},
		{"avg with NULL partial", AggCol{Func: "avg", Col: 0, Count: 1, Type: NumericOID}, []string{"NULL|0", "5|2"}, "2.5000000000000000", nil},
		{"avg NaN", AggCol{Func: "avg", Col: 0, Count: 1, Type: NumericOID}, []string{"NaN|1", "5|2"}, "NaN", nil},
		{"avg float8", AggCol{Func: "avg", Col: 0, Count: 1, Type: Float8OID}, []string{"1.5|1", "3|2"}, "1.5", nil},
		{"avg infinite numeric refused", AggCol{Func: "avg", Col: 0, Count: 1, Type: NumericOID}, []string{"Infinity|1"}, "", ErrUnsupported},
		{"avg bad count", AggCol{Func: "avg", Col: 0, Count: 1, Type: NumericOID}, []string{"1|x"}, "", errAny},
		{"bool_and", AggCol{Func: "bool_and", Col: 0, Type: BoolOID}, []string{"t", "NULL", "f", "t"}, "f", nil},
		{"bool_and all true", AggCol{Func: "bool_and", Col: 0, Type: BoolOID}, []string{"t", "NULL", "t"}, "t", nil},
		{"bool_or", AggCol{Func: "bool_or", Col: 0, Type: BoolOID}, []string{"f", "NULL", "t"}, "t", nil},
		{"bool_or all false", AggCol{Func: "bool_or", Col: 0, Type: BoolOID}, []string{"f", "f"}, "f", nil},
		{"bool_or all NULL", AggCol{Func: "bool_or", Col: 0, Type: BoolOID}, []string{"NULL", "NULL"}, "NULL", nil},
		{"first value", AggCol{Col: 0}, []string{"x", "y"}, "x", nil},
		{"min numeric", AggCol{Func: "min", Col: 0, Type: NumericOID}, []string{"1.50", "NaN", "-0.5", "NULL"}, "-0.5", nil},
		{"max float8", AggCol{Func: "max", Col: 0, Type: Float8OID}, []string{"-Infinity", "1e+300", "NULL"}, "1e+300", nil},
		{"min int bad value", AggCol{Func: "min", Col: 0, Type: Int8OID}, []string{"1", "one"}, "", errAny},
		{"sum float4", AggCol{Func: "sum", Col: 0, Type: Float4OID}, []string{"0.1", "0.2"}, "0.3", nil},
		{"sum int2 partials", AggCol{Func: "sum", Col: 0, Type: Int2OID}, []string{"30000", "30000"}, "60000", nil},
		{"sum int8 negative overflow", AggCol{Func: "sum", Col: 0, Type: Int8OID}, []string{"-9223372036854775808", "-1"}, "", ErrOverflow},
		{"sum numeric NaN", AggCol{Func: "sum", Col: 0, Type: NumericOID}, []string{"1", "NaN"}, "NaN", nil},
		{"count bad value", AggCol{Func: "count", Col: 0, Type: Int8OID}, []string{"1", "1.5"}, "", errAny},
		{"column beyond the row", AggCol{Func: "count", Col: 3, Type: Int8OID}, []string{"1"}, "", errAny},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, err := Group(rows(c.in...), GroupSpec{Cols: []AggCol{c.col}, Scalar: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			out, err := drainErr(g)
			if c.err != nil {
				if err == nil || (c.err != errAny && !errors.Is(err, c.err)) {
					t.Fatalf("err %v, rows %q; want %v", err, out, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantRows(t, out, c.want)
		})
	}
}

// errAny in a case means some error, of no particular kind.
var errAny = errors.New("any error")

func TestGroupRefuses(t *testing.T) {
	for _, c := range []AggCol{
		{Func: "string_agg", Type: TextOID},
		{Func: "sum", Type: TextOID},
		{Func: "avg", Type: Int4OID},
		{Func: "min", Type: 114}, // json
		{Func: "max", Type: TextOID},
	} {
		if _, err := Group(rows(), GroupSpec{Cols: []AggCol{c}}, nil); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%+v: err %v, want ErrUnsupported", c, err)
		}
	}
	if _, err := Group(rows(), GroupSpec{Cols: []AggCol{{Func: "max", Type: TextOID}}, TextByteOrder: true}, nil); err != nil {
		t.Errorf("max(text) under C: %v", err)
	}
	// A key beyond the shard's row is an error, not a panic.
	g, err := Group(rows("1"), GroupSpec{Keys: []int{2}, Cols: []AggCol{{Col: 0}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := drainErr(g); err == nil {
		t.Error("key beyond the row: no error")
	}
}

func TestAggColResultType(t *testing.T) {
	for _, c := range []struct {
		col  AggCol
		want uint32
	}{
		{AggCol{Func: "avg", Type: Int8OID}, NumericOID},
		{AggCol{Func: "avg", Type: NumericOID}, NumericOID},
		{AggCol{Func: "avg", Type: Float8OID}, Float8OID},
		{AggCol{Func: "sum", Type: NumericOID}, NumericOID},
		{AggCol{Func: "count", Type: Int8OID}, Int8OID},
	} {
		if got, err := c.col.ResultType(); err != nil || got != c.want {
			t.Errorf("%+v: %d, %v; want %d", c.col, got, err, c.want)
		}
	}
}

// TestNumericDiv holds avg's division (numeric_div of the sum by the
// count) on values checked against Postgres 15: SELECT s::numeric / n::bigint.
func TestNumericDiv(t *testing.T) {
	cases := []struct {
		sum   string
		count int64
		want  string
	}{
		{"10", 3, "3.3333333333333333"},
		{"1", 3, "0.33333333333333333333"},
		{"2", 3, "0.66666666666666666667"},
		{"-2", 3, "-0.66666666666666666667"},
		{"10", 4, "2.5000000000000000"},
		{"0", 7, "0.00000000000000000000"},
		{"0.00", 7, "0.00000000000000000000"},
		{"123456789012.345", 7, "17636684144.62071429"},
		{"0.000123", 9999999, "0.0000000000123000012300001230"},
		{"99999", 1, "99999.000000000000"},
		{"10000", 1, "10000.0000000000000000"},
		{"9999", 1, "9999.0000000000000000"},
		{"5", 10000000, "0.000000500000000000000000"},
		{"-0.0000001", 3, "-0.000000033333333333333333"},
		{"1.123456789012345678901", 1, "1.123456789012345678901"},
		{"1.5", 2, "0.75000000000000000000"},
		{"1.000000000000000000001", 3, "0.333333333333333333334"},
		{"2.5", 5, "0.50000000000000000000"},
		{"15", 2, "7.5000000000000000"},
		{"-1", 2, "-0.50000000000000000000"},
	}
	for _, c := range cases {
		r, ok := new(big.Rat).SetString(c.sum)
		if !ok {
			t.Fatal(c.sum)
		}
		_, frac, _ := strings.Cut(c.sum, ".")
		scale := len(frac)
		if got := NumericDiv(r, scale, c.count); got != c.want {
			t.Errorf("NumericDiv(%s, %d, %d) = %s, want %s", c.sum, scale, c.count, got, c.want)
		}
	}
}

// TestFilter checks HAVING's three-valued logic: a comparison with NULL
// is unknown, NOT unknown is unknown, unknown OR true is true, unknown
// AND false is false, and only true keeps the row.
func TestFilter(t *testing.T) {
	gt5 := &Cond{Op: "cmp", Col: 0, Cmp: ">", Val: "5"}
	tru := &Cond{Op: "cmp", Col: 1, Cmp: "=", Val: "1"}  // col1 is 1 in every row
	fls := &Cond{Op: "cmp", Col: 1, Cmp: "<>", Val: "1"} // false in every row
	unk := &Cond{Op: "cmp", Col: 1, Cmp: "=", Null: true}
	not := func(c *Cond) *Cond { return &Cond{Op: "not", Args: []*Cond{c}} }
	and := func(cs ...*Cond) *Cond { return &Cond{Op: "and", Args: cs} }
	or := func(cs ...*Cond) *Cond { return &Cond{Op: "or", Args: cs} }
	// Rows: col0 is 3, 7 or NULL; col1 is 1.
	in := []string{"3|1", "7|1", "NULL|1"}
	cases := []struct {
		name string
		cond *Cond
		want []string // rows kept
	}{
		{"x > 5", gt5, []string{"7|1"}},
		{"NOT x > 5", not(gt5), []string{"3|1"}},
		{"NOT NOT x > 5", not(not(gt5)), []string{"7|1"}},
		{"x = NULL", &Cond{Op: "cmp", Col: 0, Cmp: "=", Null: true}, nil},
		{"NOT x = NULL", not(&Cond{Op: "cmp", Col: 0, Cmp: "=", Null: true}), nil},
		{"x <> NULL", &Cond{Op: "cmp", Col: 0, Cmp: "<>", Null: true}, nil},
		{"x > 5 OR true", or(gt5, tru), []string{"3|1", "7|1", "NULL|1"}},
		{"true OR x > 5", or(tru, gt5), []string{"3|1", "7|1", "NULL|1"}},
		{"x > 5 OR false", or(gt5, fls), []string{"7|1"}},
		{"NOT (x > 5 OR false)", not(or(gt5, fls)), []string{"3|1"}},
		{"unknown OR unknown", or(unk, unk), nil},
		{"unknown OR true", or(unk, tru), []string{"3|1", "7|1", "NULL|1"}},
		{"x > 5 AND true", and(gt5, tru), []string{"7|1"}},
		{"NOT (x > 5 AND true)", not(and(gt5, tru)), []string{"3|1"}},
		{"x > 5 AND false", and(gt5, fls), nil},
		{"NOT (x > 5 AND false)", not(and(gt5, fls)), []string{"3|1", "7|1", "NULL|1"}},
		{"NOT (unknown AND false)", not(and(unk, fls)), []string{"3|1", "7|1", "NULL|1"}},
		{"NOT (unknown AND true)", not(and(unk, tru)), nil},
		{"x IS NULL", &Cond{Op: "null", Col: 0}, []string{"NULL|1"}},
		{"x IS NOT NULL", &Cond{Op: "notnull", Col: 0}, []string{"3|1", "7|1"}},
		{"NOT x IS NULL", not(&Cond{Op: "null", Col: 0}), []string{"3|1", "7|1"}},
		{"x IS NULL OR x > 5", or(&Cond{Op: "null", Col: 0}, gt5), []string{"7|1", "NULL|1"}},
		{"x >= 7", &Cond{Op: "cmp", Col: 0, Cmp: ">=", Val: "7"}, []string{"7|1"}},
		{"x <= 3", &Cond{Op: "cmp", Col: 0, Cmp: "<=", Val: "3"}, []string{"3|1"}},
		{"x < 7.5", &Cond{Op: "cmp", Col: 0, Cmp: "<", Val: "7.5"}, []string{"3|1", "7|1"}},
		{"x = 3", &Cond{Op: "cmp", Col: 0, Cmp: "=", Val: " 3 "}, []string{"3|1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := drain(t, Filter(rows(in...), c.cond, []uint32{Int8OID, Int4OID}, false))
			wantRows(t, got, c.want...)
		})
	}
}

func TestFilterTypes(t *testing.T) {
	cases := []struct {
		name string
		typ  uint32
		in   []string
		cond *Cond
		want []string
		err  error
	}{
		{"numeric by value", NumericOID, []string{"1.50", "2", "NaN"}, &Cond{Op: "cmp", Cmp: "=", Val: "1.5"}, []string{"1.50"}, nil},
		{"numeric NaN above all", NumericOID, []string{"1000000000", "NaN"}, &Cond{Op: "cmp", Cmp: ">", Val: "99999999999"}, []string{"NaN"}, nil},
		{"float -0 = 0", Float8OID, []string{"-0", "0", "1"}, &Cond{Op: "cmp", Cmp: "=", Val: "0"}, []string{"-0", "0"}, nil},
		{"float NaN = NaN", Float8OID, []string{"NaN", "1"}, &Cond{Op: "cmp", Cmp: "=", Val: "NaN"}, []string{"NaN"}, nil},
		{"bool spelling", BoolOID, []string{"t", "f"}, &Cond{Op: "cmp", Cmp: "=", Val: "yes"}, []string{"t"}, nil},
		{"text equality", TextOID, []string{"a", "b"}, &Cond{Op: "cmp", Cmp: "<>", Val: "a"}, []string{"b"}, nil},
		{"text order needs C", TextOID, []string{"a"}, &Cond{Op: "cmp", Cmp: "<", Val: "b"}, nil, ErrUnsupported},
		{"number against text", Int8OID, []string{"1"}, &Cond{Op: "cmp", Cmp: "=", Val: "abc"}, nil, ErrUnsupported},
		{"bad bool", BoolOID, []string{"t"}, &Cond{Op: "cmp", Cmp: "=", Val: "maybe"}, nil, ErrUnsupported},
		{"timestamptz refused", TimestamptzOID, []string{"2025-01-01 00:00:00+00"}, &Cond{Op: "cmp", Cmp: "=", Val: "2025-01-01"}, nil, ErrUnsupported},
		{"unknown op", Int8OID, []string{"1"}, &Cond{Op: "xor"}, nil, ErrUnsupported},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := drainErr(Filter(rows(c.in...), c.cond, []uint32{c.typ}, false))
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantRows(t, got, c.want...)
		})
	}
}

// TestGroupHaving is the shape the proxy builds for GROUP BY ... HAVING:
// Filter over Group, the NULL group's NULL aggregate dropped.
func TestGroupHaving(t *testing.T) {
	g, err := Group(Concat(rows("a|1|5", "NULL|2|NULL"), rows("a|1|2", "b|1|1", "NULL|1|NULL")),
		GroupSpec{Keys: []int{0}, Cols: []AggCol{{Col: 0}, {Func: "count", Col: 1, Type: Int8OID}, {Func: "max", Col: 2, Type: Int4OID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// HAVING count(*) > 1 AND NOT max(v) < 3
	cond := &Cond{Op: "and", Args: []*Cond{
		{Op: "cmp", Col: 1, Cmp: ">", Val: "1"},
		{Op: "not", Args: []*Cond{{Op: "cmp", Col: 2, Cmp: "<", Val: "3"}}},
	}}
	got := drain(t, Filter(g, cond, []uint32{TextOID, Int8OID, Int4OID}, true))
	wantRows(t, got, "a|2|5")
}
