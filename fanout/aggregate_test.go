package fanout

import (
	"errors"
	"testing"
)

func b(s string) []byte { return []byte(s) }

// aggregate runs a scalar Group over one row of partials per shard.
func aggregate(cols []AggCol, rows [][][]byte, textByteOrder bool) ([][]byte, error) {
	for i := range cols {
		cols[i].Col = i
	}
	bodies := make([][]byte, len(rows))
	for i, r := range rows {
		bodies[i] = EncodeRow(nil, r)
	}
	g, err := Group(NewRows(bodies), GroupSpec{Cols: cols, Scalar: true, TextByteOrder: textByteOrder}, nil)
	if err != nil {
		return nil, err
	}
	row, err := g.Next()
	if err != nil {
		return nil, err
	}
	return DecodeRow(nil, row)
}

func TestAggregate(t *testing.T) {
	cases := []struct {
		name string
		cols []AggCol
		rows [][][]byte
		want []string // "" means NULL
		err  error
	}{
		{"count sums", []AggCol{{Func: "count", Type: Int8OID}}, [][][]byte{{b("3")}, {b("0")}, {b("7")}}, []string{"10"}, nil},
		{"count of nothing", []AggCol{{Func: "count", Type: Int8OID}}, nil, []string{"0"}, nil},
		{"sum int8 result", []AggCol{{Func: "sum", Type: Int8OID}}, [][][]byte{{b("-5")}, {nil}, {b("12")}}, []string{"7"}, nil},
		{"sum all null", []AggCol{{Func: "sum", Type: Int8OID}}, [][][]byte{{nil}, {nil}}, []string{""}, nil},
		{"sum numeric keeps scale", []AggCol{{Func: "sum", Type: NumericOID}}, [][][]byte{{b("1.50")}, {b("2.255")}, {b("-0.005")}}, []string{"3.750"}, nil},
		{"sum numeric big", []AggCol{{Func: "sum", Type: NumericOID}}, [][][]byte{{b("9223372036854775807")}, {b("9223372036854775807")}}, []string{"18446744073709551614"}, nil},
		{"sum float8", []AggCol{{Func: "sum", Type: Float8OID}}, [][][]byte{{b("0.1")}, {b("0.2")}}, []string{"0.30000000000000004"}, nil},
		{"sum float8 large", []AggCol{{Func: "sum", Type: Float8OID}}, [][][]byte{{b("1e+20")}, {b("1e+20")}}, []string{"2e+20"}, nil},
		{"sum int overflow", []AggCol{{Func: "sum", Type: Int8OID}}, [][][]byte{{b("9223372036854775807")}, {b("1")}}, nil, ErrOverflow},
		{"min int", []AggCol{{Func: "min", Type: Int4OID}}, [][][]byte{{b("10")}, {b("-3")}, {nil}, {b("9")}}, []string{"-3"}, nil},
		{"max numeric", []AggCol{{Func: "max", Type: NumericOID}}, [][][]byte{{b("10.5")}, {b("9.75")}, {b("NaN")}}, []string{"NaN"}, nil},
		{"max float NaN highest", []AggCol{{Func: "max", Type: Float8OID}}, [][][]byte{{b("Infinity")}, {b("NaN")}}, []string{"NaN"}, nil},
		{"min timestamptz", []AggCol{{Func: "min", Type: TimestamptzOID}}, [][][]byte{{b("2025-03-01 10:00:00+00")}, {b("2025-03-01 09:59:59.5+00")}}, []string{"2025-03-01 09:59:59.5+00"}, nil},
		{"max date", []AggCol{{Func: "max", Type: DateOID}}, [][][]byte{{b("2024-12-31")}, {b("2025-01-01")}}, []string{"2025-01-01"}, nil},
		{"max text C", []AggCol{{Func: "max", Type: TextOID}}, [][][]byte{{b("Zed")}, {b("apple")}}, []string{"apple"}, nil},
		{"mixed", []AggCol{{Func: "count", Type: Int8OID}, {Func: "max", Type: Int8OID}}, [][][]byte{{b("1"), b("5")}, {b("2"), b("4")}}, []string{"3", "5"}, nil},
		{"sum interval refused", []AggCol{{Func: "sum", Type: 1186}}, [][][]byte{{b("1 day")}}, nil, ErrUnsupported},
		{"avg interval refused", []AggCol{{Func: "avg", Type: 1186}}, [][][]byte{{b("1 day")}}, nil, ErrUnsupported},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := aggregate(c.cols, c.rows, true)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, w := range c.want {
				if (w == "") != (got[i] == nil) || string(got[i]) != w {
					t.Fatalf("col %d = %q, want %q", i, got[i], w)
				}
			}
		})
	}
}

func TestTextMinMaxNeedsC(t *testing.T) {
	_, err := aggregate([]AggCol{{Func: "min", Type: TextOID}}, [][][]byte{{b("a")}, {b("B")}}, false)
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("err %v", err)
	}
}

func TestSumTags(t *testing.T) {
	cases := map[string][]string{
		"SELECT 7":     {"SELECT 3", "SELECT 4"},
		"INSERT 0 5":   {"INSERT 0 2", "INSERT 0 3"},
		"UPDATE 0":     {"UPDATE 0", "UPDATE 0"},
		"DELETE 9":     {"DELETE 4", "DELETE 5"},
		"CREATE TABLE": {"CREATE TABLE", "CREATE TABLE"},
	}
	for want, tags := range cases {
		if got := SumTags(tags); got != want {
			t.Errorf("SumTags(%v) = %q, want %q", tags, got, want)
		}
	}
}
