package fanout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// null stands for SQL NULL in the text rows of these tests.
const null = "\x00NULL"

// row encodes a DataRow body from text values (null is NULL).
func row(vals ...string) []byte {
	cols := make([][]byte, len(vals))
	for i, v := range vals {
		if v != null {
			cols[i] = []byte(v)
		}
	}
	return EncodeRow(nil, cols)
}

// rows returns a Source over rows, each given as "a|b|NULL".
func rows(specs ...string) Source {
	bodies := make([][]byte, len(specs))
	for i, s := range specs {
		vals := strings.Split(s, "|")
		for j, v := range vals {
			if v == "NULL" {
				vals[j] = null
			}
		}
		bodies[i] = row(vals...)
	}
	return NewRows(bodies)
}

// show renders a DataRow body as "a|b|NULL".
func show(body []byte) string {
	vals, err := DecodeRow(nil, body)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	parts := make([]string, len(vals))
	for i, v := range vals {
		if v == nil {
			parts[i] = "NULL"
		} else {
			parts[i] = string(v)
		}
	}
	return strings.Join(parts, "|")
}

// drainErr reads src to its end or first error.
func drainErr(src Source) ([]string, error) {
	var out []string
	for {
		r, err := src.Next()
		if err != nil {
			return out, err
		}
		if r == nil {
			return out, nil
		}
		out = append(out, show(r))
	}
}

func drain(t *testing.T, src Source) []string {
	t.Helper()
	out, err := drainErr(src)
	if err != nil {
		t.Fatalf("after %d rows: %v", len(out), err)
	}
	return out
}

func wantRows(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("rows\n got %q\nwant %q", got, want)
	}
}

// counting counts the calls to Next of the Source it wraps.
type counting struct {
	src   Source
	reads int
}

func (c *counting) Next() ([]byte, error) {
	c.reads++
	return c.src.Next()
}

// failing returns its rows, then err instead of the end.
type failing struct {
	rows [][]byte
	err  error
	i    int
}

var errShard = errors.New("shard lost mid-stream")

// failAfter returns a Source yielding the given rows, then errShard.
func failAfter(specs ...string) Source {
	f := &failing{err: errShard}
	r := rows(specs...).(*Rows)
	f.rows = r.rows
	return f
}

func (f *failing) Next() ([]byte, error) {
	if f.i < len(f.rows) {
		f.i++
		return f.rows[f.i-1], nil
	}
	return nil, f.err
}

func int8Cmp(t testing.TB) func(a, b []byte) (int, error) {
	cmp, err := Comparator(Int8OID, false)
	if err != nil {
		t.Fatal(err)
	}
	return cmp
}

func TestRowCodec(t *testing.T) {
	body := row("1", null, "", "héllo")
	vals, err := DecodeRow(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	if len(vals) != 4 || string(vals[0]) != "1" || vals[1] != nil || vals[2] == nil || len(vals[2]) != 0 || string(vals[3]) != "héllo" {
		t.Fatalf("decoded %q", vals)
	}
	for i, want := range []string{"1", null, "", "héllo", null} {
		v, isNull := Column(body, i)
		if isNull != (want == null) || (!isNull && string(v) != want) {
			t.Errorf("Column(%d) = %q, %v; want %q", i, v, isNull, want)
		}
	}
	if _, err := DecodeRow(nil, body[:len(body)-1]); err == nil {
		t.Error("truncated row decoded without error")
	}
	if _, err := DecodeRow(nil, []byte{0}); err == nil {
		t.Error("one-byte row decoded without error")
	}
	if got := show(row()); got != "" {
		t.Errorf("empty row = %q", got)
	}
}

func TestConcat(t *testing.T) {
	cases := []struct {
		name string
		srcs []Source
		want []string
	}{
		{"none", nil, nil},
		{"one", []Source{rows("1", "2")}, []string{"1", "2"}},
		{"empty shards", []Source{rows(), rows("1"), rows(), rows(), rows("2", "3"), rows()}, []string{"1", "2", "3"}},
		{"all empty", []Source{rows(), rows()}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantRows(t, drain(t, Concat(c.srcs...)), c.want...)
		})
	}
	t.Run("16 shards in order", func(t *testing.T) {
		var srcs []Source
		var want []string
		for s := range 16 {
			var specs []string
			for i := range s % 4 {
				specs = append(specs, fmt.Sprintf("%d|%d", s, i))
			}
			want = append(want, specs...)
			srcs = append(srcs, rows(specs...))
		}
		wantRows(t, drain(t, Concat(srcs...)), want...)
	})
}

// orderCase is a ORDER BY over column 0 (int8) of rows "key|tag".
var orderCases = []struct {
	name       string
	desc, nf   bool
	want       []string // keys in order
	defaultsPG string   // the Postgres spelling
}{
	{"asc nulls last", false, false, []string{"1", "2", "3", "NULL", "NULL"}, "ORDER BY k"},
	{"asc nulls first", false, true, []string{"NULL", "NULL", "1", "2", "3"}, "ORDER BY k NULLS FIRST"},
	{"desc nulls first", true, true, []string{"NULL", "NULL", "3", "2", "1"}, "ORDER BY k DESC"},
	{"desc nulls last", true, false, []string{"3", "2", "1", "NULL", "NULL"}, "ORDER BY k DESC NULLS LAST"},
}

func keysOf(rows []string) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i], _, _ = strings.Cut(r, "|")
	}
	return out
}

func TestSortNulls(t *testing.T) {
	for _, c := range orderCases {
		t.Run(c.name, func(t *testing.T) {
			ord := NewOrder([]OrderKey{{Col: 0, Desc: c.desc, NullsFirst: c.nf, Cmp: int8Cmp(t)}})
			got := drain(t, Sort(rows("2|a", "NULL|b", "3|c", "1|d", "NULL|e"), ord, nil))
			wantRows(t, keysOf(got), c.want...)
		})
	}
}

func TestMergeSortNulls(t *testing.T) {
	for _, c := range orderCases {
		t.Run(c.name, func(t *testing.T) {
			ord := NewOrder([]OrderKey{{Col: 0, Desc: c.desc, NullsFirst: c.nf, Cmp: int8Cmp(t)}})
			// Each shard is sorted by ord: split the wanted order.
			var a, b []string
			for i, k := range c.want {
				if i%2 == 0 {
					a = append(a, k+"|a")
				} else {
					b = append(b, k+"|b")
				}
			}
			got := drain(t, MergeSort(ord, rows(a...), rows(), rows(b...)))
			wantRows(t, keysOf(got), c.want...)
		})
	}
}

func TestSortStable(t *testing.T) {
	ord := NewOrder([]OrderKey{{Col: 0, Cmp: int8Cmp(t)}})
	in := []string{"2|a", "1|b", "2|c", "1|d", "NULL|e", "2|f", "NULL|g", "1|h"}
	got := drain(t, Sort(rows(in...), ord, nil))
	wantRows(t, got, "1|b", "1|d", "1|h", "2|a", "2|c", "2|f", "NULL|e", "NULL|g")
}

func TestSortMultiKey(t *testing.T) {
	// ORDER BY a, b DESC NULLS LAST
	ord := NewOrder([]OrderKey{{Col: 0, Cmp: int8Cmp(t)}, {Col: 1, Desc: true, Cmp: int8Cmp(t)}})
	got := drain(t, Sort(rows("1|1", "2|5", "1|NULL", "1|3", "2|NULL", "2|7"), ord, nil))
	wantRows(t, got, "1|3", "1|1", "1|NULL", "2|7", "2|5", "2|NULL")
}

func TestSortEmpty(t *testing.T) {
	ord := NewOrder([]OrderKey{{Col: 0, Cmp: int8Cmp(t)}})
	wantRows(t, drain(t, Sort(rows(), ord, nil)))
}

func TestMergeSortTiesEarlierSourceFirst(t *testing.T) {
	ord := NewOrder([]OrderKey{{Col: 0, Cmp: int8Cmp(t)}})
	got := drain(t, MergeSort(ord,
		rows("1|s0a", "2|s0b", "2|s0c", "3|s0d"),
		rows("1|s1a", "2|s1b"),
		rows("2|s2a", "2|s2b", "3|s2c"),
	))
	wantRows(t, got, "1|s0a", "1|s1a", "2|s0b", "2|s0c", "2|s1b", "2|s2a", "2|s2b", "3|s0d", "3|s2c")
}

func TestMergeSortShapes(t *testing.T) {
	ord := func(t *testing.T) *Order { return NewOrder([]OrderKey{{Col: 0, Cmp: int8Cmp(t)}}) }
	t.Run("no sources", func(t *testing.T) {
		wantRows(t, drain(t, MergeSort(ord(t))))
	})
	t.Run("one shard", func(t *testing.T) {
		wantRows(t, drain(t, MergeSort(ord(t), rows("1", "2", "2", "5"))), "1", "2", "2", "5")
	})
	t.Run("all empty", func(t *testing.T) {
		wantRows(t, drain(t, MergeSort(ord(t), rows(), rows(), rows())))
	})
	t.Run("empty after first", func(t *testing.T) {
		wantRows(t, drain(t, MergeSort(ord(t), rows("7"), rows(), rows("3", "9"))), "3", "7", "9")
	})
	t.Run("16 shards", func(t *testing.T) {
		// Shard s holds the keys k with k%16 == s, and shard 5 is empty:
		// the merge is 0..199 without those keys, each after equal keys
		// of earlier shards.
		var srcs []Source
		var want []string
		for s := range 16 {
			var specs []string
			if s != 5 {
				for k := s; k < 200; k += 16 {
					specs = append(specs, strconv.Itoa(k))
				}
			}
			srcs = append(srcs, rows(specs...))
		}
		for k := range 200 {
			if k%16 != 5 {
				want = append(want, strconv.Itoa(k))
			}
		}
		wantRows(t, drain(t, MergeSort(ord(t), srcs...)), want...)
	})
	t.Run("exhausted source is not chosen again", func(t *testing.T) {
		// Rows are valid until the next call: the merge must not hand
		// out a row of a source it already advanced past the end.
		got := drain(t, MergeSort(ord(t), rows("1"), rows("2", "3", "4")))
		wantRows(t, got, "1", "2", "3", "4")
	})
}

// TestMergeSortReadsOneAhead checks that the merge holds at most one row
// per source: at every step each source has been read at most once more
// than the rows of it that came out.
func TestMergeSortReadsOneAhead(t *testing.T) {
	const n = 8
	ord := NewOrder([]OrderKey{{Col: 0, Cmp: int8Cmp(t)}})
	var cs []*counting
	var srcs []Source
	for s := range n {
		var specs []string
		for k := s; k < 100; k += n - s%3 {
			specs = append(specs, fmt.Sprintf("%d|%d", k, s))
		}
		c := &counting{src: rows(specs...)}
		cs = append(cs, c)
		srcs = append(srcs, c)
	}
	m := MergeSort(ord, srcs...)
	emitted := make([]int, n)
	for {
		r, err := m.Next()
		if err != nil {
			t.Fatal(err)
		}
		if r == nil {
			break
		}
		tag, _ := Column(r, 1)
		s, _ := strconv.Atoi(string(tag))
		emitted[s]++
		for i, c := range cs {
			if c.reads > emitted[i]+1 {
				t.Fatalf("source %d read %d times after %d of its rows came out", i, c.reads, emitted[i])
			}
		}
	}
}

func TestLimit(t *testing.T) {
	hundred := func() *counting {
		specs := make([]string, 100)
		for i := range specs {
			specs[i] = strconv.Itoa(i)
		}
		return &counting{src: rows(specs...)}
	}
	cases := []struct {
		name          string
		offset, limit int64
		want          []string
		reads         int // calls to the input's Next
	}{
		{"limit", 0, 3, []string{"0", "1", "2"}, 3},
		{"offset and limit", 3, 4, []string{"3", "4", "5", "6"}, 7},
		{"limit 0", 0, 0, nil, 0},
		{"offset beyond end", 200, 5, nil, 101},
		{"offset at end", 100, 5, nil, 101},
		{"offset beyond end no limit", 150, -1, nil, 101},
		{"limit beyond end", 98, 10, []string{"98", "99"}, 101},
		{"no limit", 97, -1, []string{"97", "98", "99"}, 101},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := hundred()
			l := Limit(in, c.offset, c.limit)
			wantRows(t, drain(t, l), c.want...)
			if in.reads != c.reads {
				t.Fatalf("input read %d times, want %d", in.reads, c.reads)
			}
			if r, err := l.Next(); r != nil || err != nil {
				t.Fatalf("Next after the end = %q, %v", r, err)
			}
		})
	}
}

// TestLimitOverMergeSort is LIMIT 5 over a merge of 16 shards: the merge
// reads one row of each shard, then one more per row it returns, and
// nothing once Limit is satisfied.
func TestLimitOverMergeSort(t *testing.T) {
	ord := NewOrder([]OrderKey{{Col: 0, Cmp: int8Cmp(t)}})
	var cs []*counting
	var srcs []Source
	for s := range 16 {
		var specs []string
		for k := s; k < 1600; k += 16 {
			specs = append(specs, strconv.Itoa(k))
		}
		c := &counting{src: rows(specs...)}
		cs, srcs = append(cs, c), append(srcs, c)
	}
	l := Limit(MergeSort(ord, srcs...), 2, 5)
	wantRows(t, drain(t, l), "2", "3", "4", "5", "6")
	total := 0
	for _, c := range cs {
		total += c.reads
	}
	// 16 heads, then one per row after the first of offset+limit = 7.
	if total != 16+6 {
		t.Fatalf("shards read %d times, want %d", total, 16+6)
	}
	l.Next()
	l.Next()
	after := 0
	for _, c := range cs {
		after += c.reads
	}
	if after != total {
		t.Fatalf("Limit read on after it was satisfied: %d reads, then %d", total, after)
	}
}

func TestStrip(t *testing.T) {
	in := rows(
		"a|b|c|d",      // strip two hidden columns
		"a|b",          // exactly n columns: unchanged
		"a",            // fewer columns: unchanged
		"NULL|NULL|x",  // NULLs kept, hidden dropped
		"|b|NULL|NULL", // empty string is not NULL
	)
	got := drain(t, Strip(in, 2))
	wantRows(t, got, "a|b", "a|b", "a", "NULL|NULL", "|b")
	// Strip to no columns, and a row with none.
	got = drain(t, Strip(NewRows([][]byte{row("x", "y"), row()}), 0))
	wantRows(t, got, "", "")
	// A row whose kept columns are cut short is an error, not a panic.
	bad := row("abc", "def")
	bad = bad[:8]
	if _, err := drainErr(Strip(NewRows([][]byte{bad}), 1)); err == nil {
		t.Fatal("short row stripped without error")
	}
}

func TestDistinct(t *testing.T) {
	cases := []struct {
		name  string
		n     int
		kinds []KeyKind
		in    []string
		want  []string
	}{
		{"bytes", 1, []KeyKind{KeyBytes}, []string{"1", "2", "1", "3", "2"}, []string{"1", "2", "3"}},
		{"NULLs are one value", 1, nil, []string{"NULL", "a", "NULL", "", ""}, []string{"NULL", "a", ""}},
		{"first n columns only, first row kept", 1, nil, []string{"1|x", "1|y", "2|z"}, []string{"1|x", "2|z"}},
		{"two columns", 2, nil, []string{"1|x", "1|y", "1|x", "NULL|x", "NULL|x", "1|NULL"}, []string{"1|x", "1|y", "NULL|x", "1|NULL"}},
		{"text is not numeric", 1, []KeyKind{KeyBytes}, []string{"1.5", "1.50"}, []string{"1.5", "1.50"}},
		{"numeric scale", 1, []KeyKind{KeyNumeric}, []string{"1.5", "1.50", "1.500", "15", "1.05", "0.15"}, []string{"1.5", "15", "1.05", "0.15"}},
		{"numeric integers", 1, []KeyKind{KeyNumeric}, []string{"10", "10.0", "1", "1.00", "100", "100.000"}, []string{"10", "1", "100"}},
		{"numeric zeros", 1, []KeyKind{KeyNumeric}, []string{"0", "0.00", "-0.0", "0.000"}, []string{"0"}},
		{"numeric negative", 1, []KeyKind{KeyNumeric}, []string{"-1.50", "-1.5", "1.5"}, []string{"-1.50", "1.5"}},
		{"numeric NaN", 1, []KeyKind{KeyNumeric}, []string{"NaN", "NaN", "0"}, []string{"NaN", "0"}},
		{"float zeros", 1, []KeyKind{KeyFloat}, []string{"-0", "0", "-0"}, []string{"-0"}},
		{"float values", 1, []KeyKind{KeyFloat}, []string{"1.5", "NaN", "1.5", "NaN", "-1.5", "Infinity", "-Infinity"}, []string{"1.5", "NaN", "-1.5", "Infinity", "-Infinity"}},
		{"kinds per key column", 2, []KeyKind{KeyBytes, KeyNumeric}, []string{"1.0|1.0", "1.0|1", "1|1"}, []string{"1.0|1.0", "1|1"}},
		{"empty", 1, nil, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantRows(t, drain(t, Distinct(rows(c.in...), c.n, c.kinds, nil)), c.want...)
		})
	}
	t.Run("across shards", func(t *testing.T) {
		in := Concat(rows("1.5", "2"), rows(), rows("2.0", "1.50", "3"))
		wantRows(t, drain(t, Distinct(in, 1, []KeyKind{KeyNumeric}, nil)), "1.5", "2", "3")
	})
}

// numericBinary encodes a numeric's text as numeric_send does: int16
// ndigits, int16 weight, uint16 sign, uint16 dscale, then base-10000
// digits without leading or trailing zero digits. pad appends that many
// zero digits (a value not stripped, which Postgres may send from an
// unnormalised intermediate result).
func numericBinary(s string, pad int) []byte {
	if s == "NaN" {
		return []byte{0, 0, 0, 0, 0xC0, 0, 0, 0}
	}
	sign := uint16(0)
	if strings.HasPrefix(s, "-") {
		sign, s = 0x4000, s[1:]
	}
	ip, fp, _ := strings.Cut(s, ".")
	dscale := len(fp)
	// Align to base-10000 groups around the decimal point.
	ip = strings.Repeat("0", (4-len(ip)%4)%4) + ip
	fp += strings.Repeat("0", (4-len(fp)%4)%4)
	var digits []uint16
	for i := 0; i < len(ip); i += 4 {
		d, _ := strconv.Atoi(ip[i : i+4])
		digits = append(digits, uint16(d))
	}
	weight := len(digits) - 1
	for i := 0; i < len(fp); i += 4 {
		d, _ := strconv.Atoi(fp[i : i+4])
		digits = append(digits, uint16(d))
	}
	for len(digits) > 0 && digits[0] == 0 {
		digits, weight = digits[1:], weight-1
	}
	for len(digits) > 0 && digits[len(digits)-1] == 0 {
		digits = digits[:len(digits)-1]
	}
	if len(digits) == 0 {
		weight, sign = 0, 0
	}
	for range pad {
		digits = append(digits, 0)
	}
	out := binary.BigEndian.AppendUint16(nil, uint16(len(digits)))
	out = binary.BigEndian.AppendUint16(out, uint16(int16(weight)))
	out = binary.BigEndian.AppendUint16(out, sign)
	out = binary.BigEndian.AppendUint16(out, uint16(dscale))
	for _, d := range digits {
		out = binary.BigEndian.AppendUint16(out, d)
	}
	return out
}

func TestNumericBinaryHelper(t *testing.T) {
	// Bytes from Postgres 15: SELECT numeric_send(1.50), numeric_send(-0.000123),
	// numeric_send('NaN'), numeric_send(0.00).
	for s, want := range map[string]string{
		"1.50":      "000200000000000200011388",
		"-0.000123": "0002ffff40000006000108fc",
		"NaN":       "00000000c0000000",
		"0.00":      "0000000000000002",
	} {
		if got := fmt.Sprintf("%x", numericBinary(s, 0)); got != want {
			t.Errorf("numericBinary(%s) = %s, want %s", s, got, want)
		}
	}
}

func TestDistinctBinary(t *testing.T) {
	f8 := func(bits uint64) []byte { return binary.BigEndian.AppendUint64(nil, bits) }
	f4 := func(bits uint32) []byte { return binary.BigEndian.AppendUint32(nil, bits) }
	negZero := numericBinary("0", 0)
	binary.BigEndian.PutUint16(negZero[4:], 0x4000)
	cases := []struct {
		name string
		kind KeyKind
		in   [][]byte
		want []int // indexes of in that survive
	}{
		{"numeric scale", KeyNumericBinary, [][]byte{numericBinary("1.5", 0), numericBinary("1.50", 0), numericBinary("1.500", 1), numericBinary("15", 0)}, []int{0, 3}},
		{"numeric trailing zero digits", KeyNumericBinary, [][]byte{numericBinary("10000", 0), numericBinary("10000.0000", 2), numericBinary("1", 0)}, []int{0, 2}},
		{"numeric zeros", KeyNumericBinary, [][]byte{numericBinary("0", 0), numericBinary("0.00", 0), negZero, numericBinary("0.0", 3)}, []int{0}},
		{"numeric NaN is not zero", KeyNumericBinary, [][]byte{numericBinary("NaN", 0), numericBinary("0", 0), numericBinary("NaN", 0)}, []int{0, 1}},
		{"numeric sign", KeyNumericBinary, [][]byte{numericBinary("-0.000123", 0), numericBinary("0.000123", 0), numericBinary("-0.0001230", 0)}, []int{0, 1}},
		{"numeric binary kept as bytes", KeyBytes, [][]byte{numericBinary("1.5", 0), numericBinary("1.50", 0)}, []int{0, 1}},
		{"float8 zeros", KeyFloatBinary, [][]byte{f8(1 << 63), f8(0), f8(0x3FF8000000000000)}, []int{0, 2}},
		{"float4 zeros", KeyFloatBinary, [][]byte{f4(0), f4(1 << 31), f4(0x3FC00000)}, []int{0, 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bodies := make([][]byte, len(c.in))
			for i, v := range c.in {
				bodies[i] = EncodeRow(nil, [][]byte{v, []byte(strconv.Itoa(i))})
			}
			var got []int
			out := Distinct(NewRows(bodies), 1, []KeyKind{c.kind}, nil)
			for {
				r, err := out.Next()
				if err != nil {
					t.Fatal(err)
				}
				if r == nil {
					break
				}
				tag, _ := Column(r, 1)
				i, _ := strconv.Atoi(string(tag))
				got = append(got, i)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("kept rows %v, want %v", got, c.want)
			}
		})
	}
	if KeyNumeric.BinaryKind() != KeyNumericBinary || KeyFloat.BinaryKind() != KeyFloatBinary || KeyBytes.BinaryKind() != KeyBytes {
		t.Error("BinaryKind")
	}
}

func TestKeyKindOf(t *testing.T) {
	for typ, want := range map[uint32]KeyKind{Int4OID: KeyBytes, TextOID: KeyBytes, NumericOID: KeyNumeric, Float8OID: KeyFloat, Float4OID: KeyFloat} {
		if k, ok := KeyKindOf(typ); !ok || k != want {
			t.Errorf("KeyKindOf(%d) = %v, %v", typ, k, ok)
		}
	}
	for _, typ := range []uint32{114, 3802, 1007, 1186} { // json, jsonb, int4[], interval
		if _, ok := KeyKindOf(typ); ok {
			t.Errorf("KeyKindOf(%d) accepted", typ)
		}
	}
}

// TestComparatorErrors: a value a comparator cannot read stops the merge
// with an error through Order.Err, never a silently wrong order.
func TestComparatorErrors(t *testing.T) {
	mk := func(t *testing.T) *Order { return NewOrder([]OrderKey{{Col: 0, Cmp: int8Cmp(t)}}) }
	t.Run("merge sort", func(t *testing.T) {
		ord := mk(t)
		out, err := drainErr(MergeSort(ord, rows("1", "x"), rows("2")))
		if err == nil {
			t.Fatalf("no error, rows %q", out)
		}
		if ord.Err() == nil || !errors.Is(err, ord.Err()) {
			t.Fatalf("err %v, Order.Err %v", err, ord.Err())
		}
	})
	t.Run("merge sort first heads", func(t *testing.T) {
		ord := mk(t)
		if _, err := drainErr(MergeSort(ord, rows("1"), rows("one"))); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("sort", func(t *testing.T) {
		ord := mk(t)
		out, err := drainErr(Sort(rows("3", "1", "2.5", "0"), ord, nil))
		if err == nil {
			t.Fatalf("no error, rows %q", out)
		}
		if ord.Err() == nil {
			t.Fatal("Order.Err is nil")
		}
	})
	t.Run("time type unsupported", func(t *testing.T) {
		cmp, err := Comparator(TimestamptzOID, false)
		if err != nil {
			t.Fatal(err)
		}
		ord := NewOrder([]OrderKey{{Col: 0, Cmp: cmp}})
		_, err = drainErr(Sort(rows("2025-01-01 00:00:00+00", "infinity"), ord, nil))
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("err %v, want ErrUnsupported", err)
		}
	})
	t.Run("NULLs are not compared", func(t *testing.T) {
		// Only non-null values reach Cmp.
		ord := NewOrder([]OrderKey{{Col: 0, Cmp: func(a, b []byte) (int, error) {
			if a == nil || b == nil {
				return 0, errors.New("nil reached Cmp")
			}
			return strings.Compare(string(a), string(b)), nil
		}}})
		wantRows(t, drain(t, Sort(rows("b", "NULL", "a", "NULL"), ord, nil)), "a", "b", "NULL", "NULL")
	})
}

// TestErrorsMidStream: an input that fails after k rows makes every
// operator return that error (not a short, clean end).
func TestErrorsMidStream(t *testing.T) {
	ops := []struct {
		name string
		op   func(t *testing.T, in Source) Source
	}{
		{"Concat", func(t *testing.T, in Source) Source { return Concat(rows("0"), in, rows("1")) }},
		{"MergeSort", func(t *testing.T, in Source) Source {
			return MergeSort(NewOrder([]OrderKey{{Col: 0, Cmp: int8Cmp(t)}}), rows("0", "1", "5", "9"), in, rows("2"))
		}},
		{"Limit", func(t *testing.T, in Source) Source { return Limit(in, 0, 100) }},
		{"Limit offset", func(t *testing.T, in Source) Source { return Limit(in, 10, 1) }},
		{"Strip", func(t *testing.T, in Source) Source { return Strip(in, 1) }},
		{"Sort", func(t *testing.T, in Source) Source {
			return Sort(in, NewOrder([]OrderKey{{Col: 0, Cmp: int8Cmp(t)}}), &Budget{})
		}},
		{"Distinct", func(t *testing.T, in Source) Source { return Distinct(in, 1, nil, &Budget{}) }},
		{"Group", func(t *testing.T, in Source) Source {
			g, err := Group(in, GroupSpec{Keys: []int{0}, Cols: []AggCol{{Col: 0}, {Func: "count", Col: 1}}}, &Budget{})
			if err != nil {
				t.Fatal(err)
			}
			return g
		}},
		{"Group scalar", func(t *testing.T, in Source) Source {
			g, err := Group(in, GroupSpec{Scalar: true, Cols: []AggCol{{Func: "sum", Col: 1, Type: Int8OID}}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			return g
		}},
		{"Filter", func(t *testing.T, in Source) Source {
			return Filter(in, &Cond{Op: "cmp", Col: 0, Cmp: ">=", Val: "0"}, []uint32{Int8OID}, false)
		}},
		{"Project", func(t *testing.T, in Source) Source {
			return Project(in, []*Expr{nil, {Op: "+", Args: []*Expr{{Op: "col", Col: 1}, {Op: "const", Text: "1"}}}}, []uint32{Int8OID, Int8OID})
		}},
		{"Limit(MergeSort)", func(t *testing.T, in Source) Source {
			return Limit(MergeSort(NewOrder([]OrderKey{{Col: 0, Cmp: int8Cmp(t)}}), in, rows("100")), 0, 50)
		}},
	}
	for _, o := range ops {
		for _, k := range []int{0, 1, 3} {
			t.Run(fmt.Sprintf("%s/after %d", o.name, k), func(t *testing.T) {
				specs := make([]string, k)
				for i := range specs {
					specs[i] = fmt.Sprintf("%d|%d", 3+i, i)
				}
				out, err := drainErr(o.op(t, failAfter(specs...)))
				if !errors.Is(err, errShard) {
					t.Fatalf("err %v after rows %q, want %v", err, out, errShard)
				}
			})
		}
	}
}

// TestBudget: the buffering operators stop with ErrMemory past their
// budget, and stay within it otherwise.
func TestBudget(t *testing.T) {
	many := func() Source {
		specs := make([]string, 1000)
		for i := range specs {
			specs[i] = fmt.Sprintf("%d|%d|some padding to make the row larger", i, i%7)
		}
		return rows(specs...)
	}
	ops := []struct {
		name string
		op   func(t *testing.T, in Source, b *Budget) Source
	}{
		{"Sort", func(t *testing.T, in Source, b *Budget) Source {
			return Sort(in, NewOrder([]OrderKey{{Col: 1, Cmp: int8Cmp(t)}}), b)
		}},
		{"Distinct", func(t *testing.T, in Source, b *Budget) Source { return Distinct(in, 1, nil, b) }},
		{"Group", func(t *testing.T, in Source, b *Budget) Source {
			g, err := Group(in, GroupSpec{Keys: []int{0}, Cols: []AggCol{{Col: 0}, {Func: "max", Col: 2, Type: TextOID}}, TextByteOrder: true}, b)
			if err != nil {
				t.Fatal(err)
			}
			return g
		}},
	}
	for _, o := range ops {
		t.Run(o.name+"/exhausted", func(t *testing.T) {
			b := &Budget{Max: 10_000}
			out, err := drainErr(o.op(t, many(), b))
			if !errors.Is(err, ErrMemory) {
				t.Fatalf("err %v after %d rows, want ErrMemory", err, len(out))
			}
		})
		t.Run(o.name+"/within", func(t *testing.T) {
			b := &Budget{Max: 10 << 20}
			out := drain(t, o.op(t, many(), b))
			if len(out) != 1000 {
				t.Fatalf("%d rows", len(out))
			}
			if b.Used() <= 0 || b.Used() > b.Max {
				t.Fatalf("Used() = %d", b.Used())
			}
		})
		t.Run(o.name+"/unlimited", func(t *testing.T) {
			if out := drain(t, o.op(t, many(), &Budget{})); len(out) != 1000 {
				t.Fatalf("%d rows", len(out))
			}
			if out := drain(t, o.op(t, many(), nil)); len(out) != 1000 {
				t.Fatalf("%d rows", len(out))
			}
		})
	}
	t.Run("shared by one query", func(t *testing.T) {
		// Distinct then Sort of one query share a budget: together they
		// exceed what each alone fits in.
		alone := &Budget{}
		drain(t, Sort(many(), NewOrder([]OrderKey{{Col: 0, Cmp: int8Cmp(t)}}), alone))
		b := &Budget{Max: alone.Used() + 100}
		_, err := drainErr(Sort(Distinct(many(), 1, nil, b), NewOrder([]OrderKey{{Col: 0, Cmp: int8Cmp(t)}}), b))
		if !errors.Is(err, ErrMemory) {
			t.Fatalf("err %v, want ErrMemory", err)
		}
	})
	t.Run("Distinct counts only new keys", func(t *testing.T) {
		b := &Budget{Max: 200}
		specs := make([]string, 10_000)
		for i := range specs {
			specs[i] = strconv.Itoa(i % 2)
		}
		if out := drain(t, Distinct(rows(specs...), 1, nil, b)); len(out) != 2 {
			t.Fatalf("rows %q", out)
		}
	})
}
