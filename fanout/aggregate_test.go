package fanout

import (
	"errors"
	"testing"
)

func b(s string) []byte { return []byte(s) }

func TestAggregate(t *testing.T) {
	cases := []struct {
		name string
		cols []Column
		rows [][][]byte
		want []string // "" means NULL
		err  error
	}{
		{"count sums", []Column{{"count", Int8OID}}, [][][]byte{{b("3")}, {b("0")}, {b("7")}}, []string{"10"}, nil},
		{"count of nothing", []Column{{"count", Int8OID}}, nil, []string{"0"}, nil},
		{"sum int8 result", []Column{{"sum", Int8OID}}, [][][]byte{{b("-5")}, {nil}, {b("12")}}, []string{"7"}, nil},
		{"sum all null", []Column{{"sum", Int8OID}}, [][][]byte{{nil}, {nil}}, []string{""}, nil},
		{"sum numeric keeps scale", []Column{{"sum", NumericOID}}, [][][]byte{{b("1.50")}, {b("2.255")}, {b("-0.005")}}, []string{"3.750"}, nil},
		{"sum numeric big", []Column{{"sum", NumericOID}}, [][][]byte{{b("9223372036854775807")}, {b("9223372036854775807")}}, []string{"18446744073709551614"}, nil},
		{"sum float8", []Column{{"sum", Float8OID}}, [][][]byte{{b("0.1")}, {b("0.2")}}, []string{"0.30000000000000004"}, nil},
		{"sum float8 large", []Column{{"sum", Float8OID}}, [][][]byte{{b("1e+20")}, {b("1e+20")}}, []string{"2e+20"}, nil},
		{"sum int overflow", []Column{{"sum", Int8OID}}, [][][]byte{{b("9223372036854775807")}, {b("1")}}, nil, ErrOverflow},
		{"min int", []Column{{"min", Int4OID}}, [][][]byte{{b("10")}, {b("-3")}, {nil}, {b("9")}}, []string{"-3"}, nil},
		{"max numeric", []Column{{"max", NumericOID}}, [][][]byte{{b("10.5")}, {b("9.75")}, {b("NaN")}}, []string{"NaN"}, nil},
		{"max float NaN highest", []Column{{"max", Float8OID}}, [][][]byte{{b("Infinity")}, {b("NaN")}}, []string{"NaN"}, nil},
		{"min timestamptz", []Column{{"min", TimestamptzOID}}, [][][]byte{{b("2025-03-01 10:00:00+00")}, {b("2025-03-01 09:59:59.5+00")}}, []string{"2025-03-01 09:59:59.5+00"}, nil},
		{"max date", []Column{{"max", DateOID}}, [][][]byte{{b("2024-12-31")}, {b("2025-01-01")}}, []string{"2025-01-01"}, nil},
		{"max text C", []Column{{"max", TextOID}}, [][][]byte{{b("Zed")}, {b("apple")}}, []string{"apple"}, nil},
		{"mixed", []Column{{"count", Int8OID}, {"max", Int8OID}}, [][][]byte{{b("1"), b("5")}, {b("2"), b("4")}}, []string{"3", "5"}, nil},
		{"sum interval refused", []Column{{"sum", 1186}}, [][][]byte{{b("1 day")}}, nil, ErrUnsupported},
		{"avg refused", []Column{{"avg", NumericOID}}, [][][]byte{{b("1")}}, nil, ErrUnsupported},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Aggregate(c.cols, c.rows, true)
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
	_, err := Aggregate([]Column{{"min", TextOID}}, [][][]byte{{b("a")}, {b("B")}}, false)
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
