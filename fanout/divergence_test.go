package fanout

import (
	"encoding/binary"
	"strings"
	"testing"
)

// Regressions: each case is an input on which the merge once answered
// differently from one Postgres 15; the wanted answer is Postgres's, with
// the statement that gives it.

// TestBugExprDivergences: expressions over aggregates computed after the
// merge (Expr), against Postgres's float8 and numeric semantics.
func TestDivergenceExprDivergences(t *testing.T) {
	i8, num, f8 := uint32(Int8OID), uint32(NumericOID), uint32(Float8OID)
	huge := "1" + strings.Repeat("0", 400)
	cases := []struct {
		name  string
		pg    string // the Postgres statement and its answer
		e     *Expr
		types []uint32
		row   []string
		want  string // value, or errOverflowClass's "22003"
	}{
		{"negated float8 zero", "SELECT -(0::float8) -- -0",
			neg(col(0)), []uint32{f8}, []string{"0"}, "-0"},
		{"float8 NaN / 0", "SELECT 'NaN'::float8 / 0::float8 -- NaN (float8_div raises 22012 only for a non-NaN dividend)",
			bin("/", col(0), col(1)), []uint32{f8, f8}, []string{"NaN", "0"}, "NaN"},
		{"float8 underflow in *", "SELECT 1e-300::float8 * 1e-300::float8 -- ERROR 22003 value out of range: underflow",
			bin("*", col(0), col(1)), []uint32{f8, f8}, []string{"1e-300", "1e-300"}, "22003"},
		{"float8 underflow in /", "SELECT 1e-300::float8 / 1e300::float8 -- ERROR 22003 value out of range: underflow",
			bin("/", col(0), col(1)), []uint32{f8, f8}, []string{"1e-300", "1e+300"}, "22003"},
		{"numeric constant 2e-3", "SELECT 10::int8 * 2e-3 -- 0.020",
			bin("*", col(0), lit("2e-3")), []uint32{i8}, []string{"10"}, "0.020"},
		{"numeric constant 1.5e3", "SELECT 10 * 1.5e3 -- 15000",
			bin("*", col(0), lit("1.5e3")), []uint32{i8}, []string{"10"}, "15000"},
		{"numeric constant 1.50E2", "SELECT 1.50E2 + 0 -- 150",
			bin("+", lit("1.50E2"), col(0)), []uint32{i8}, []string{"0"}, "150"},
		{"numeric(3,-1)", "SELECT 1234.5::numeric(3,-1) -- 1230",
			castTo("numeric", col(0), 3, -1), []uint32{num}, []string{"1234.5"}, "1230"},
		{"numeric(2,-3)", "SELECT 98765::numeric(2,-3) -- 99000",
			castTo("numeric", col(0), 2, -3), []uint32{num}, []string{"98765"}, "99000"},
		{"numeric beyond float8 to float8", "SELECT ('1e400'::numeric)::float8 -- ERROR 22003 ... is out of range for type double precision",
			castTo("float8", col(0)), []uint32{num}, []string{huge}, "22003"},
		{"numeric beyond float8 + float8", "SELECT '1e400'::numeric + 1::float8 -- ERROR 22003",
			bin("+", col(0), col(1)), []uint32{num, f8}, []string{huge, "1"}, "22003"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := make([][]byte, len(c.row))
			for i, v := range c.row {
				in[i] = []byte(v)
			}
			got, err := c.e.Eval(in, c.types)
			if c.want == "22003" {
				if !isOverflow(err) {
					t.Fatalf("%s = %q, %v\nPostgres: %s", c.e, got, err, c.pg)
				}
				return
			}
			if err != nil || string(got) != c.want {
				t.Fatalf("%s = %q, %v; want %q\nPostgres: %s", c.e, got, err, c.want, c.pg)
			}
		})
	}
}

// TestBugGroupFloatDivergences: float sums merged from the shards'
// partial sums. Postgres's float8pl/float4pl (sum) and float8_accum
// (avg) raise 22003 when finite inputs overflow, and sum's first value
// is the state as it is (so -0 stays -0).
func TestDivergenceGroupFloatDivergences(t *testing.T) {
	cases := []struct {
		name string
		pg   string
		col  AggCol
		in   []string
		want string // value, or "22003"
	}{
		{"sum float8 of -0", "SELECT sum(x) FROM (VALUES ('-0'::float8), ('-0'::float8)) v(x) -- -0",
			AggCol{Func: "sum", Type: Float8OID}, []string{"-0", "-0"}, "-0"},
		{"sum float8 overflow", "SELECT sum(x) FROM (VALUES (1e308::float8), (1e308::float8)) v(x) -- ERROR 22003 value out of range: overflow",
			AggCol{Func: "sum", Type: Float8OID}, []string{"1e+308", "1e+308"}, "22003"},
		{"sum float4 overflow", "SELECT sum(x) FROM (VALUES (3e38::float4), (3e38::float4)) v(x) -- ERROR 22003 value out of range: overflow",
			AggCol{Func: "sum", Type: Float4OID}, []string{"3e+38", "3e+38"}, "22003"},
		{"avg float8 overflow", "SELECT avg(x) FROM (VALUES (1e308::float8), (1e308::float8)) v(x) -- ERROR 22003 value out of range: overflow",
			AggCol{Func: "avg", Col: 0, Count: 1, Type: Float8OID}, []string{"1e+308|1", "1e+308|1"}, "22003"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, err := Group(rows(c.in...), GroupSpec{Cols: []AggCol{c.col}, Scalar: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			out, err := drainErr(g)
			if c.want == "22003" {
				if !isOverflow(err) {
					t.Fatalf("got %q, %v; want an out of range error\nPostgres: %s", out, err, c.pg)
				}
				return
			}
			if err != nil || len(out) != 1 || out[0] != c.want {
				t.Fatalf("got %q, %v; want %q\nPostgres: %s", out, err, c.want, c.pg)
			}
		})
	}
}

// TestBugFloatBinaryNaNKeys: Postgres's float8 equality makes every NaN
// equal, whatever its bits, but float8send sends the bits as they are:
//
//	SELECT float8send('Infinity'::float8 * 0), float8send('NaN'::float8)
//	-- \xfff8000000000000 | \x7ff8000000000000
//	SELECT x FROM (VALUES ('Infinity'::float8 * 0), ('NaN'::float8)) v(x) GROUP BY x
//	-- one row: NaN
//
// so DISTINCT and GROUP BY over binary float8 keys must give one row.
func TestDivergenceFloatBinaryNaNKeys(t *testing.T) {
	in := NewRows([][]byte{
		EncodeRow(nil, [][]byte{binary.BigEndian.AppendUint64(nil, 0xFFF8000000000000)}),
		EncodeRow(nil, [][]byte{binary.BigEndian.AppendUint64(nil, 0x7FF8000000000000)}),
	})
	out, err := drainErr(Distinct(in, 1, []KeyKind{KeyFloatBinary}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 {
		t.Fatalf("Distinct kept %d rows, want 1 (NaN = NaN)", len(out))
	}
}
