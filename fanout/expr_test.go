package fanout

import (
	"errors"
	"testing"
)

func col(i int) *Expr                 { return &Expr{Op: "col", Col: i} }
func lit(s string) *Expr              { return &Expr{Op: "const", Text: s} }
func neg(a *Expr) *Expr               { return &Expr{Op: "neg", Args: []*Expr{a}} }
func bin(op string, a, b *Expr) *Expr { return &Expr{Op: op, Args: []*Expr{a, b}} }
func castTo(typ string, a *Expr, typmod ...int) *Expr {
	return &Expr{Op: "cast", Cast: typ, Typmod: typmod, Args: []*Expr{a}}
}

// errOverflowClass stands for SQLSTATE 22003 in expression cases: bigint's
// ErrOverflow or an *ErrNumericOverflow.
var errOverflowClass = errors.New("22003")

func isOverflow(err error) bool {
	var no *ErrNumericOverflow
	return errors.Is(err, ErrOverflow) || errors.As(err, &no)
}

// TestExpr holds expressions over final columns with Postgres 15's
// answers (SELECT of the same expression over typed literals).
func TestExpr(t *testing.T) {
	i2, i4, i8, num, f8 := uint32(Int2OID), uint32(Int4OID), uint32(Int8OID), uint32(NumericOID), uint32(Float8OID)
	cases := []struct {
		name  string
		e     *Expr
		types []uint32
		row   []string // null for NULL
		typ   uint32
		want  string // null for NULL
		err   error
	}{
		{"int4 + int4", bin("+", col(0), col(1)), []uint32{i4, i4}, []string{"2", "3"}, i4, "5", nil},
		{"int4 + int8", bin("+", col(0), col(1)), []uint32{i4, i8}, []string{"2", "3"}, i8, "5", nil},
		{"int2 * int2", bin("*", col(0), col(1)), []uint32{i2, i2}, []string{"200", "200"}, i2, "", errOverflowClass},
		{"int2 * int4", bin("*", col(0), col(1)), []uint32{i2, i4}, []string{"200", "100"}, i4, "20000", nil},
		{"int4 overflow", bin("+", col(0), lit("1")), []uint32{i4}, []string{"2147483647"}, i4, "", errOverflowClass},
		{"int8 overflow", bin("*", col(0), lit("2")), []uint32{i8}, []string{"4611686018427387904"}, i8, "", ErrOverflow},
		{"int division truncates", bin("/", col(0), lit("2")), []uint32{i4}, []string{"-7"}, i4, "-3", nil},
		{"int division by zero", bin("/", col(0), col(1)), []uint32{i8, i8}, []string{"1", "0"}, i8, "", ErrDivisionByZero},
		{"int4 min / -1", bin("/", col(0), lit("-1")), []uint32{i4}, []string{"-2147483648"}, i4, "", errOverflowClass},
		{"int2 min / -1", bin("/", col(0), col(1)), []uint32{i2, i2}, []string{"-32768", "-1"}, i2, "", errOverflowClass},
		{"int8 min / -1", bin("/", col(0), lit("-1")), []uint32{i8}, []string{"-9223372036854775808"}, i8, "", ErrOverflow},
		{"neg int2 min", neg(col(0)), []uint32{i2}, []string{"-32768"}, i2, "", errOverflowClass},
		{"neg int8 min", neg(col(0)), []uint32{i8}, []string{"-9223372036854775808"}, i8, "", ErrOverflow},
		{"neg numeric zero", neg(col(0)), []uint32{num}, []string{"0.00"}, num, "0.00", nil},
		{"neg numeric", neg(col(0)), []uint32{num}, []string{"1.50"}, num, "-1.50", nil},
		{"numeric + keeps the larger scale", bin("+", col(0), col(1)), []uint32{num, num}, []string{"1.5", "2.25"}, num, "3.75", nil},
		{"numeric - to zero keeps scale", bin("-", col(0), col(1)), []uint32{num, num}, []string{"1.50", "1.5"}, num, "0.00", nil},
		{"numeric * adds scales", bin("*", col(0), col(1)), []uint32{num, num}, []string{"1.50", "2.0"}, num, "3.000", nil},
		{"numeric / int", bin("/", col(0), lit("3")), []uint32{num}, []string{"1"}, num, "0.33333333333333333333", nil},
		{"int / numeric", bin("/", lit("10"), col(0)), []uint32{num}, []string{"4"}, num, "2.5000000000000000", nil},
		{"numeric / numeric scale", bin("/", col(0), col(1)), []uint32{num, num}, []string{"1.000000000000000000001", "3"}, num, "0.333333333333333333334", nil},
		{"numeric / 0", bin("/", col(0), col(1)), []uint32{num, num}, []string{"1", "0.00"}, num, "", ErrDivisionByZero},
		{"numeric NaN / 0", bin("/", col(0), col(1)), []uint32{num, num}, []string{"NaN", "0"}, num, "NaN", nil},
		{"numeric NaN + 1", bin("+", col(0), lit("1")), []uint32{num}, []string{"NaN"}, num, "NaN", nil},
		{"int + numeric const", bin("+", col(0), lit("0.50")), []uint32{i8}, []string{"2"}, num, "2.50", nil},
		{"big int const is numeric", bin("+", col(0), lit("9223372036854775808")), []uint32{i4}, []string{"1"}, num, "9223372036854775809", nil},
		{"int8 const", bin("+", col(0), lit("2147483648")), []uint32{i4}, []string{"1"}, i8, "2147483649", nil},
		{"float8 + int", bin("+", col(0), col(1)), []uint32{f8, i4}, []string{"0.1", "1"}, f8, "1.1", nil},
		{"float8 + numeric", bin("+", col(0), col(1)), []uint32{f8, num}, []string{"0.1", "0.2"}, f8, "0.30000000000000004", nil},
		{"float8 / 0", bin("/", col(0), col(1)), []uint32{f8, f8}, []string{"1", "0"}, f8, "", ErrDivisionByZero},
		{"float8 overflow", bin("*", col(0), lit("10")), []uint32{f8}, []string{"1e+308"}, f8, "", errOverflowClass},
		{"float8 infinity stays", bin("+", col(0), lit("1")), []uint32{f8}, []string{"Infinity"}, f8, "Infinity", nil},
		{"float8 NaN", bin("*", col(0), lit("0")), []uint32{f8}, []string{"NaN"}, f8, "NaN", nil},
		{"float8 large", bin("*", col(0), col(0)), []uint32{f8}, []string{"1e+10"}, f8, "1e+20", nil},
		{"float8 small", bin("/", col(0), lit("100000")), []uint32{f8}, []string{"1"}, f8, "1e-05", nil},
		{"NULL operand", bin("+", col(0), col(1)), []uint32{i4, num}, []string{"1", null}, num, null, nil},
		{"NULL under neg and cast", castTo("int4", neg(col(0))), []uint32{num}, []string{null}, i4, null, nil},
		{"NULL / 0 is NULL", bin("/", col(0), lit("0")), []uint32{i4}, []string{null}, i4, null, nil},
		{"cast numeric to int4 rounds half away", castTo("int4", col(0)), []uint32{num}, []string{"2.5"}, i4, "3", nil},
		{"cast negative numeric to int4", castTo("int4", col(0)), []uint32{num}, []string{"-2.5"}, i4, "-3", nil},
		{"cast float8 to int4 rounds half even", castTo("int4", col(0)), []uint32{f8}, []string{"2.5"}, i4, "2", nil},
		{"cast float8 3.5 to int8", castTo("int8", col(0)), []uint32{f8}, []string{"3.5"}, i8, "4", nil},
		{"cast float8 NaN to int4", castTo("int4", col(0)), []uint32{f8}, []string{"NaN"}, i4, "", errOverflowClass},
		{"cast float8 2^63 to int8", castTo("int8", col(0)), []uint32{f8}, []string{"9.223372036854776e+18"}, i8, "", ErrOverflow},
		{"cast numeric NaN to int8", castTo("int8", col(0)), []uint32{num}, []string{"NaN"}, i8, "", ErrUnsupported},
		{"cast int8 to int4 overflow", castTo("int4", col(0)), []uint32{i8}, []string{"2147483648"}, i4, "", errOverflowClass},
		{"cast int4 to int2", castTo("int2", col(0)), []uint32{i4}, []string{"-32768"}, i2, "-32768", nil},
		{"cast int4 to int2 overflow", castTo("int2", col(0)), []uint32{i4}, []string{"32768"}, i2, "", errOverflowClass},
		{"cast numeric(5,2) rounds", castTo("numeric", col(0), 5, 2), []uint32{num}, []string{"1.005"}, num, "1.01", nil},
		{"cast numeric(5,2) pads", castTo("numeric", col(0), 5, 2), []uint32{i4}, []string{"7"}, num, "7.00", nil},
		{"cast numeric(5,2) overflow", castTo("numeric", col(0), 5, 2), []uint32{num}, []string{"1000"}, num, "", errOverflowClass},
		{"cast numeric(5,2) rounds up into overflow", castTo("numeric", col(0), 5, 2), []uint32{num}, []string{"999.995"}, num, "", errOverflowClass},
		{"cast numeric(3) rounds to three digits", castTo("numeric", col(0), 3), []uint32{num}, []string{"-123.5"}, num, "-124", nil},
		{"cast numeric(3) rounds up into overflow", castTo("numeric", col(0), 3), []uint32{num}, []string{"999.5"}, num, "", errOverflowClass},
		{"cast numeric(3) rounds", castTo("numeric", col(0), 3), []uint32{num}, []string{"-12.5"}, num, "-13", nil},
		{"cast numeric(2,5)", castTo("numeric", col(0), 2, 5), []uint32{num}, []string{"0.00012"}, num, "0.00012", nil},
		{"cast numeric(2,5) overflow", castTo("numeric", col(0), 2, 5), []uint32{num}, []string{"0.001"}, num, "", errOverflowClass},
		{"cast numeric(4,2) zero", castTo("numeric", col(0), 4, 2), []uint32{num}, []string{"-0.001"}, num, "0.00", nil},
		{"cast NaN to numeric(4,2)", castTo("numeric", col(0), 4, 2), []uint32{num}, []string{"NaN"}, num, "NaN", nil},
		{"cast float8 to numeric", castTo("numeric", col(0)), []uint32{f8}, []string{"0.1"}, num, "0.1", nil},
		{"cast float8 1/3 to numeric", castTo("numeric", bin("/", lit("1"), col(0))), []uint32{f8}, []string{"3"}, num, "0.333333333333333", nil},
		{"cast float8 1.5e-07 to numeric", castTo("numeric", col(0)), []uint32{f8}, []string{"1.5e-07"}, num, "0.00000015", nil},
		{"cast float8 1e+20 to numeric", castTo("numeric", col(0)), []uint32{f8}, []string{"1e+20"}, num, "100000000000000000000", nil},
		{"cast float8 NaN to numeric", castTo("numeric", col(0)), []uint32{f8}, []string{"NaN"}, num, "NaN", nil},
		{"cast float8 Infinity to numeric refused", castTo("numeric", col(0)), []uint32{f8}, []string{"Infinity"}, num, "", ErrUnsupported},
		{"cast numeric to float8", castTo("float8", col(0)), []uint32{num}, []string{"123456789012345678.9"}, f8, "1.2345678901234568e+17", nil},
		{"cast int8 to float8", castTo("float8", col(0)), []uint32{i8}, []string{"9223372036854775807"}, f8, "9.223372036854776e+18", nil},
		{"cast to text refused", castTo("text", col(0)), []uint32{i4}, []string{"1"}, 0, "", ErrUnsupported},
		{"avg-like", castTo("numeric", bin("/", col(0), castTo("numeric", col(1))), 10, 2), []uint32{i8, i8}, []string{"10", "3"}, num, "3.33", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			typ, err := c.e.Type(c.types)
			if c.typ == 0 {
				if !errors.Is(err, c.err) {
					t.Fatalf("Type: err %v, want %v", err, c.err)
				}
				return
			}
			if err != nil || typ != c.typ {
				t.Fatalf("Type = %d, %v; want %d", typ, err, c.typ)
			}
			in := make([][]byte, len(c.row))
			for i, v := range c.row {
				if v != null {
					in[i] = []byte(v)
				}
			}
			got, err := c.e.Eval(in, c.types)
			switch {
			case c.err == errOverflowClass:
				if !isOverflow(err) {
					t.Fatalf("%s = %q, %v; want an out of range error", c.e, got, err)
				}
			case c.err != nil:
				if !errors.Is(err, c.err) {
					t.Fatalf("%s = %q, %v; want %v", c.e, got, err, c.err)
				}
			case err != nil:
				t.Fatalf("%s: %v", c.e, err)
			case c.want == null:
				if got != nil {
					t.Fatalf("%s = %q, want NULL", c.e, got)
				}
			case got == nil || string(got) != c.want:
				t.Fatalf("%s = %q, want %q", c.e, got, c.want)
			}
		})
	}
}

func TestExprString(t *testing.T) {
	e := castTo("numeric", bin("/", neg(col(0)), bin("+", col(1), lit("2.5"))), 10, 2)
	if got, want := e.String(), "(-out1 / (out2 + 2.5))::numeric(10,2)"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}

func TestExprTypeErrors(t *testing.T) {
	for _, c := range []struct {
		e     *Expr
		types []uint32
	}{
		{col(0), []uint32{TextOID}},
		{lit("'abc'"), nil},
		{&Expr{Op: "%", Args: []*Expr{col(0), col(0)}}, []uint32{Int4OID}},
		{bin("+", col(0), col(1)), []uint32{Int4OID, DateOID}},
	} {
		if _, err := c.e.Type(c.types); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s over %v: err %v, want ErrUnsupported", c.e, c.types, err)
		}
	}
	if _, err := col(3).Type([]uint32{Int4OID}); err == nil {
		t.Error("column out of range: no error")
	}
}

func TestProject(t *testing.T) {
	// SELECT k, sum(x) / count(x), count(x) + 1 over final rows
	// "k|sum|count": column 1 and 2 are computed, column 0 kept.
	types := []uint32{TextOID, NumericOID, Int8OID}
	exprs := []*Expr{nil, bin("/", col(1), col(2)), bin("+", col(2), lit("1"))}
	got := drain(t, Project(rows("a|10|4", "b|NULL|0", "c|1.5|3"), exprs, types))
	wantRows(t, got, "a|2.5000000000000000|5", "b|NULL|1", "c|0.50000000000000000000|4")

	// Division by zero stops the stream with 22012, as Postgres stops.
	_, err := drainErr(Project(rows("a|1|1", "b|1|0"), []*Expr{nil, bin("/", col(1), col(2))}, types))
	if !errors.Is(err, ErrDivisionByZero) {
		t.Fatalf("err %v, want ErrDivisionByZero", err)
	}
	// Expressions beyond the row's columns are ignored; nil exprs keep.
	wantRows(t, drain(t, Project(rows("a|1"), []*Expr{nil, nil, lit("1")}, types)), "a|1")
}
