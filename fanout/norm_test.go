package fanout

import (
	"bytes"
	"encoding/binary"
	"math"
	"strconv"
	"testing"
)

// TestNormAgreesWithComparator: for every type with a Norm, comparing
// normalized bytes orders values exactly as the type's Comparator does
// (so a merge may use either), in text and binary format.
func TestNormAgreesWithComparator(t *testing.T) {
	cases := []struct {
		typ  uint32
		vals []string
	}{
		{Int8OID, []string{"-9223372036854775808", "-5", "-1", "0", "1", "7", "9223372036854775807"}},
		{Int4OID, []string{"-2147483648", "-3", "0", "12", "2147483647"}},
		{Float8OID, []string{"-Infinity", "-1e+300", "-2.5", "-0", "0", "1e-300", "3.25", "1e+300", "Infinity", "NaN"}},
		{DateOID, []string{"1999-12-31", "2000-01-01", "2024-02-29", "2025-01-01"}},
		{TimestampOID, []string{"1999-12-31 23:59:59.999999", "2000-01-01 00:00:00", "2025-03-01 10:00:00.5", "2025-03-01 10:00:01"}},
		{TimestamptzOID, []string{"2025-03-01 09:00:00+00", "2025-03-01 10:00:00+02", "2025-03-01 09:30:00+00", "2025-03-01 10:00:00+00"}},
		{BoolOID, []string{"f", "t"}},
		{UUIDOID, []string{"00000000-0000-0000-0000-000000000000", "0a5a1cec-9edd-2cc4-c7de-76d4d917af15", "f968c86b-7dbb-76d9-2d09-675785a0c1e2"}},
		{BPCharOID, []string{"a", "a  ", "a\t ", "ab", "b"}},
		{TextOID, []string{"", "A", "B", "a", "ab", "é"}},
	}
	for _, c := range cases {
		cmp, err := Comparator(c.typ, true)
		if err != nil {
			t.Fatal(err)
		}
		norm, ok := NormOf(c.typ, false, true)
		if !ok {
			t.Fatalf("type %d: no Norm", c.typ)
		}
		for _, a := range c.vals {
			for _, b := range c.vals {
				want, err := cmp([]byte(a), []byte(b))
				if err != nil {
					t.Fatal(err)
				}
				na, err1 := norm(nil, []byte(a))
				nb, err2 := norm(nil, []byte(b))
				if err1 != nil || err2 != nil {
					t.Fatal(err1, err2)
				}
				if got := bytes.Compare(na, nb); got != want {
					t.Errorf("type %d: %q vs %q: normalized %d, comparator %d", c.typ, a, b, got, want)
				}
			}
		}
	}
	// Binary formats order like their text.
	bin := NormOfMust(t, Int8OID, true)
	txt := NormOfMust(t, Int8OID, false)
	for _, n := range []int64{math.MinInt64, -1, 0, 1, math.MaxInt64} {
		b, _ := bin(nil, binary.BigEndian.AppendUint64(nil, uint64(n)))
		s, _ := txt(nil, []byte(strconv.FormatInt(n, 10)))
		if !bytes.Equal(b, s) {
			t.Errorf("int8 %d: binary %x, text %x", n, b, s)
		}
	}
	fb := NormOfMust(t, Float8OID, true)
	ft := NormOfMust(t, Float8OID, false)
	for _, f := range []float64{math.Inf(-1), -1.5, math.Copysign(0, -1), 0, 2.5, math.Inf(1), math.NaN()} {
		b, _ := fb(nil, binary.BigEndian.AppendUint64(nil, math.Float64bits(f)))
		s, _ := ft(nil, formatFloat(f, Float8OID))
		if !bytes.Equal(b, s) {
			t.Errorf("float8 %v: binary %x, text %x", f, b, s)
		}
	}
	if _, ok := NormOf(TextOID, false, false); ok {
		t.Error("text has a Norm without collation C")
	}
	if _, ok := NormOf(NumericOID, false, true); ok {
		t.Error("numeric has a Norm")
	}
}

func NormOfMust(t *testing.T, typ uint32, binaryFormat bool) Norm {
	n, ok := NormOf(typ, binaryFormat, true)
	if !ok {
		t.Fatalf("type %d: no Norm", typ)
	}
	return n
}
