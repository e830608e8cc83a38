package fanout_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/fanout"
	"github.com/shardproxy/shardproxy/localpg"
)

// TestPostgresNumerics compares the numeric semantics the merge computes
// by itself (avg's division, expressions over aggregates, float8 output,
// numeric and float key equality) with one real Postgres, over a few
// hundred deterministic random cases each. It starts one cluster; it
// skips when Postgres cannot start, except in CI.
func TestPostgresNumerics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	set := localpg.StartT(t, localpg.Options{N: 1, Database: "fanout"})
	conn, err := pgconn.Connect(ctx, set.Clusters[0].DSN("fanout"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	pg := &oracle{ctx: ctx, conn: conn}
	// The defaults, stated: shortest-exact float output.
	if a := pg.query("SET extra_float_digits = 1"); a.code != "" {
		t.Fatal(a.msg)
	}

	t.Run("NumericDiv", func(t *testing.T) { testNumericDiv(t, pg) })
	t.Run("Expr", func(t *testing.T) { testExprs(t, pg) })
	t.Run("Float8Out", func(t *testing.T) { testFloat8Out(t, pg) })
	t.Run("Aggregates", func(t *testing.T) { testAggregates(t, pg) })
	t.Run("KeyEquality", func(t *testing.T) { testKeyEquality(t, pg) })
}

// oracle runs single statements on one Postgres.
type oracle struct {
	ctx  context.Context
	conn *pgconn.PgConn
}

// answer is the first row of a statement's result, or its error.
type answer struct {
	vals  [][]byte // nil element: NULL
	types []uint32
	code  string // SQLSTATE when the statement failed
	msg   string
}

func (o *oracle) query(sql string) answer {
	rr := o.conn.ExecParams(o.ctx, sql, nil, nil, nil, nil)
	var a answer
	for _, fd := range rr.FieldDescriptions() {
		a.types = append(a.types, fd.DataTypeOID)
	}
	if rr.NextRow() {
		for _, v := range rr.Values() {
			if v != nil {
				v = append([]byte{}, v...)
			}
			a.vals = append(a.vals, v)
		}
	}
	for rr.NextRow() {
	}
	if _, err := rr.Close(); err != nil {
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			panic(fmt.Sprintf("%s: %v", sql, err))
		}
		a.code, a.msg = pe.Code, pe.Message
	}
	return a
}

// sqlstate is the SQLSTATE the proxy answers a merge error with (as
// proxy's error table maps them).
func sqlstate(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, fanout.ErrUnsupported):
		return "0A000"
	case errors.Is(err, fanout.ErrDivisionByZero):
		return "22012"
	case errors.As(err, new(*fanout.ErrNumericOverflow)), errors.Is(err, fanout.ErrOverflow):
		return "22003"
	}
	return "XX000"
}

var typeName = map[uint32]string{
	fanout.Int2OID:    "int2",
	fanout.Int4OID:    "int4",
	fanout.Int8OID:    "int8",
	fanout.NumericOID: "numeric",
	fanout.Float8OID:  "float8",
}

// digits returns n random decimal digits, the first not zero when lead.
func digits(rng *rand.Rand, n int, lead bool) string {
	var b strings.Builder
	for i := range n {
		d := rng.Intn(10)
		if i == 0 && lead && d == 0 {
			d = 1 + rng.Intn(9)
		}
		b.WriteByte(byte('0' + d))
	}
	return b.String()
}

// genNumeric returns a numeric's text: tiny, large, zero with a scale,
// negative, and now and then NaN when nan.
func genNumeric(rng *rand.Rand, nan bool) string {
	if nan && rng.Intn(40) == 0 {
		return "NaN"
	}
	var s string
	switch rng.Intn(7) {
	case 0: // zero with a display scale
		s = "0"
		if k := rng.Intn(4); k > 0 {
			s += "." + strings.Repeat("0", k)
		}
		return s
	case 1: // tiny: 0.000123
		s = "0." + strings.Repeat("0", rng.Intn(8)) + digits(rng, 1+rng.Intn(4), true)
	case 2: // large: 123456789012.345
		s = digits(rng, 10+rng.Intn(6), true)
		if k := rng.Intn(4); k > 0 {
			s += "." + digits(rng, k, false)
		}
	case 3: // a value with trailing zeros in its scale: 2.500
		s = digits(rng, 1+rng.Intn(3), true) + "." + digits(rng, rng.Intn(2), false) + strings.Repeat("0", 1+rng.Intn(3))
	default:
		s = digits(rng, 1+rng.Intn(6), true)
		if k := rng.Intn(7); k > 0 {
			s += "." + digits(rng, k, false)
		}
	}
	if rng.Intn(5) < 2 {
		s = "-" + s
	}
	return s
}

func genInt(rng *rand.Rand, typ uint32) string {
	var lo, hi, root int64
	switch typ {
	case fanout.Int2OID:
		lo, hi, root = math.MinInt16, math.MaxInt16, 181
	case fanout.Int4OID:
		lo, hi, root = math.MinInt32, math.MaxInt32, 46341
	default:
		lo, hi, root = math.MinInt64, math.MaxInt64, 3037000500
	}
	var n int64
	switch rng.Intn(7) {
	case 0:
		n = []int64{lo, hi, lo + 1, hi - 1, 0, 1, -1, 2, -2}[rng.Intn(9)]
	case 1: // anywhere in range
		n = lo + int64(rng.Uint64()%uint64(hi-lo))
	case 2: // near the square root: products at the edge of the range
		n = root - 2 + rng.Int63n(4)
		if rng.Intn(2) == 0 {
			n = -n
		}
	case 3:
		n = int64(rng.Intn(7)) - 3
	default:
		n = rng.Int63n(min(hi, 100000)) - min(hi, 100000)/2
	}
	return strconv.FormatInt(n, 10)
}

func genFloat(rng *rand.Rand) string {
	var f float64
	switch rng.Intn(10) {
	case 0:
		f = 0
	case 1: // halves: rounding to integers
		f = float64(rng.Intn(20)) + 0.5
	case 2:
		f = float64(rng.Intn(1000000))
	case 3:
		if rng.Intn(4) == 0 {
			return "NaN"
		}
		f = float64(rng.Intn(100)) / 10
	default:
		f = rng.Float64() * math.Pow(10, float64(rng.Intn(31)-10))
	}
	if rng.Intn(3) == 0 {
		f = -f
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func genValue(rng *rand.Rand, typ uint32) string {
	switch typ {
	case fanout.NumericOID:
		return genNumeric(rng, true)
	case fanout.Float8OID:
		return genFloat(rng)
	}
	return genInt(rng, typ)
}

var exprTypes = []uint32{fanout.Int2OID, fanout.Int4OID, fanout.Int4OID, fanout.Int8OID, fanout.Int8OID,
	fanout.NumericOID, fanout.NumericOID, fanout.NumericOID, fanout.Float8OID, fanout.Float8OID}

// genConst returns a literal as a client writes one (in plain notation).
func genConst(rng *rand.Rand) string {
	switch rng.Intn(6) {
	case 0:
		return []string{"0", "1", "2", "3", "10", "100", "1000"}[rng.Intn(7)]
	case 1:
		return []string{"2147483648", "3000000000", "9223372036854775807", "9223372036854775808", "32768"}[rng.Intn(5)]
	case 2:
		return []string{"0.5", "2.50", "0.001", "100.00", "1.0", "0.0", "3.14159265358979"}[rng.Intn(7)]
	}
	return strconv.Itoa(rng.Intn(1000))
}

func genExpr(rng *rand.Rand, depth, ncols int) *fanout.Expr {
	if depth == 0 || rng.Intn(4) == 0 {
		if rng.Intn(4) == 0 {
			return &fanout.Expr{Op: "const", Text: genConst(rng)}
		}
		return &fanout.Expr{Op: "col", Col: rng.Intn(ncols)}
	}
	arg := func() *fanout.Expr { return genExpr(rng, depth-1, ncols) }
	switch r := rng.Intn(10); {
	case r < 6:
		return &fanout.Expr{Op: []string{"+", "-", "*", "/"}[rng.Intn(4)], Args: []*fanout.Expr{arg(), arg()}}
	case r < 7:
		return &fanout.Expr{Op: "neg", Args: []*fanout.Expr{arg()}}
	}
	e := &fanout.Expr{Op: "cast", Args: []*fanout.Expr{arg()}}
	switch rng.Intn(7) {
	case 0:
		e.Cast = "int2"
	case 1:
		e.Cast = "int4"
	case 2:
		e.Cast = "int8"
	case 3:
		e.Cast = "float8"
	case 4:
		e.Cast = "numeric"
	case 5: // numeric(p)
		e.Cast, e.Typmod = "numeric", []int{1 + rng.Intn(20)}
	default: // numeric(p,s), s up to p+2 (Postgres 15 allows s > p)
		p := 1 + rng.Intn(20)
		e.Cast, e.Typmod = "numeric", []int{p, rng.Intn(p + 3)}
	}
	return e
}

// exprSQL renders e with its columns as typed literals of row.
func exprSQL(e *fanout.Expr, row [][]byte, types []uint32) string {
	switch e.Op {
	case "col":
		if row[e.Col] == nil {
			return "NULL::" + typeName[types[e.Col]]
		}
		return "'" + string(row[e.Col]) + "'::" + typeName[types[e.Col]]
	case "const":
		return e.Text
	case "neg":
		return "(-" + exprSQL(e.Args[0], row, types) + ")"
	case "cast":
		t := e.Cast
		if len(e.Typmod) > 0 {
			parts := make([]string, len(e.Typmod))
			for i, m := range e.Typmod {
				parts[i] = strconv.Itoa(m)
			}
			t += "(" + strings.Join(parts, ",") + ")"
		}
		return "(" + exprSQL(e.Args[0], row, types) + ")::" + t
	}
	return "(" + exprSQL(e.Args[0], row, types) + " " + e.Op + " " + exprSQL(e.Args[1], row, types) + ")"
}

func testExprs(t *testing.T, pg *oracle) {
	rng := rand.New(rand.NewSource(20260521))
	outcomes := map[string]int{} // SQLSTATE ("" for a value) -> cases
	check := func(e *fanout.Expr, row [][]byte, types []uint32) {
		t.Helper()
		sql := "SELECT " + exprSQL(e, row, types)
		want := pg.query(sql)
		typ, err := e.Type(types)
		if err != nil {
			t.Errorf("%s: Type: %v", sql, err)
			return
		}
		got, err := e.Eval(row, types)
		code := sqlstate(err)
		outcomes[want.code]++
		if want.code == "" && typ != want.types[0] {
			t.Errorf("%s: type %d, Postgres %d", sql, typ, want.types[0])
		}
		if code == want.code && (code != "" || string(got) == string(want.vals[0]) && (got == nil) == (want.vals[0] == nil)) {
			return
		}
		if code != "" {
			t.Errorf("%s\n got error %s (%v)\nwant %s", sql, code, err, show(want))
		} else {
			t.Errorf("%s\n got %s\nwant %s", sql, showVal(got), show(want))
		}
	}

	// Fixed edge cases first, then random trees over two typed columns.
	f8, num, i4, i8 := uint32(fanout.Float8OID), uint32(fanout.NumericOID), uint32(fanout.Int4OID), uint32(fanout.Int8OID)
	col := func(i int) *fanout.Expr { return &fanout.Expr{Op: "col", Col: i} }
	binop := func(op string, a, b *fanout.Expr) *fanout.Expr {
		return &fanout.Expr{Op: op, Args: []*fanout.Expr{a, b}}
	}
	for _, c := range []struct {
		e     *fanout.Expr
		types []uint32
		row   []string
	}{
		{binop("*", col(0), col(1)), []uint32{f8, f8}, []string{"1e+308", "10"}},
		{binop("+", col(0), col(1)), []uint32{f8, f8}, []string{"1.7976931348623157e+308", "1.7976931348623157e+308"}},
		{binop("/", col(0), col(1)), []uint32{f8, f8}, []string{"1e+300", "1e-10"}},
		{binop("/", col(0), col(1)), []uint32{f8, num}, []string{"1", "0.000"}},
		{binop("+", col(0), col(1)), []uint32{f8, f8}, []string{"Infinity", "-Infinity"}},
		{binop("*", col(0), col(1)), []uint32{f8, f8}, []string{"Infinity", "0"}},
		{binop("/", col(0), col(1)), []uint32{num, i4}, []string{"NaN", "0"}},
		{binop("/", col(0), col(1)), []uint32{i8, i8}, []string{"-9223372036854775808", "-1"}},
		{binop("*", col(0), col(1)), []uint32{i8, i8}, []string{"-9223372036854775808", "-1"}},
		{binop("-", col(0), col(1)), []uint32{i4, i4}, []string{"-2147483648", "1"}},
		{binop("/", col(0), col(1)), []uint32{num, num}, []string{"1", "7"}},
		{binop("/", col(0), col(1)), []uint32{num, num}, []string{"123456789012345678901234567890", "0.000000001"}},
		{binop("/", col(0), col(1)), []uint32{num, num}, []string{"0.000000001", "123456789012345678901234567890"}},
		{binop("/", col(0), col(1)), []uint32{num, num}, []string{"9999.9999", "9999.9999"}},
		{binop("/", col(0), col(1)), []uint32{num, num}, []string{"1.00000000000000000000000000000000000001", "3"}},
		{&fanout.Expr{Op: "cast", Cast: "int4", Args: []*fanout.Expr{col(0)}}, []uint32{num}, []string{"NaN"}},
		{&fanout.Expr{Op: "cast", Cast: "int8", Args: []*fanout.Expr{col(0)}}, []uint32{f8}, []string{"-9.223372036854776e+18"}},
		{&fanout.Expr{Op: "cast", Cast: "int2", Args: []*fanout.Expr{col(0)}}, []uint32{f8}, []string{"32767.5"}},
		{&fanout.Expr{Op: "cast", Cast: "int2", Args: []*fanout.Expr{col(0)}}, []uint32{f8}, []string{"-32768.5"}},
		{&fanout.Expr{Op: "cast", Cast: "numeric", Args: []*fanout.Expr{col(0)}}, []uint32{f8}, []string{"1.2345678901234567e-05"}},
		{&fanout.Expr{Op: "cast", Cast: "numeric", Args: []*fanout.Expr{col(0)}}, []uint32{f8}, []string{"123456789012345680000"}},
		{&fanout.Expr{Op: "cast", Cast: "numeric", Typmod: []int{1000, 0}, Args: []*fanout.Expr{col(0)}}, []uint32{num}, []string{"-0.5"}},
		{&fanout.Expr{Op: "cast", Cast: "numeric", Typmod: []int{3, 3}, Args: []*fanout.Expr{col(0)}}, []uint32{num}, []string{"0.9995"}},
		{&fanout.Expr{Op: "cast", Cast: "float8", Args: []*fanout.Expr{col(0)}}, []uint32{num}, []string{"0.1000000000000000055511151231257827"}},
	} {
		row := make([][]byte, len(c.row))
		for i, v := range c.row {
			row[i] = []byte(v)
		}
		check(c.e, row, c.types)
	}

	for range 500 {
		types := []uint32{exprTypes[rng.Intn(len(exprTypes))], exprTypes[rng.Intn(len(exprTypes))]}
		row := make([][]byte, 2)
		for i, typ := range types {
			if rng.Intn(25) > 0 {
				row[i] = []byte(genValue(rng, typ))
			}
		}
		check(genExpr(rng, 1+rng.Intn(2), 2), row, types)
	}
	t.Logf("expressions compared, by Postgres's outcome: %v", outcomes)
}

func show(a answer) string {
	if a.code != "" {
		return "error " + a.code + " (" + a.msg + ")"
	}
	return showVal(a.vals[0])
}

func showVal(v []byte) string {
	if v == nil {
		return "NULL"
	}
	return strconv.Quote(string(v))
}

func testNumericDiv(t *testing.T, pg *oracle) {
	rng := rand.New(rand.NewSource(7))
	for range 300 {
		sum := genNumeric(rng, false)
		count := int64(math.Pow(10, rng.Float64()*7))
		if rng.Intn(10) == 0 {
			count = []int64{1, 2, 3, 7, 9999, 10000, 10001, 9999999, 10000000}[rng.Intn(9)]
		}
		r, ok := new(big.Rat).SetString(sum)
		if !ok {
			t.Fatal(sum)
		}
		_, frac, _ := strings.Cut(sum, ".")
		got := fanout.NumericDiv(r, len(frac), count)
		sql := fmt.Sprintf("SELECT '%s'::numeric / %d::bigint", sum, count)
		want := pg.query(sql)
		if want.code != "" || got != string(want.vals[0]) {
			t.Errorf("NumericDiv(%s, %d, %d) = %s; %s gives %s", sum, len(frac), count, got, sql, show(want))
		}
	}
}

// randFloats returns deterministic doubles: random bit patterns (every
// exponent, subnormals), decimals of every magnitude, and the edges of
// fixed notation.
func randFloats(rng *rand.Rand) []float64 {
	fs := []float64{1e15, 1e14, 999999999999999.9, 123456789012345.6, 0.0001, 0.00001, 0.00012345,
		1e-4 * (1 - 1e-16), 5e-324, math.MaxFloat64, math.SmallestNonzeroFloat64 * 3, 2.2250738585072014e-308,
		0.1, 1.0 / 3, 100, 1.5, -2.5, 123456789012345680, 9007199254740993, math.Pi * 1e20,
		math.NaN(), math.Inf(1), math.Inf(-1)}
	for len(fs) < 300 {
		switch rng.Intn(3) {
		case 0:
			f := math.Float64frombits(rng.Uint64())
			if math.IsNaN(f) || math.IsInf(f, 0) {
				continue
			}
			fs = append(fs, f)
		case 1:
			fs = append(fs, (rng.Float64()-0.5)*math.Pow(10, float64(rng.Intn(50)-20)))
		default:
			m, _ := strconv.ParseFloat(digits(rng, 1+rng.Intn(17), true)+"e"+strconv.Itoa(rng.Intn(40)-20), 64)
			fs = append(fs, m)
		}
	}
	return fs
}

func testFloat8Out(t *testing.T, pg *oracle) {
	rng := rand.New(rand.NewSource(8))
	cols := []uint32{fanout.Float8OID}
	for _, f := range randFloats(rng) {
		in := strconv.FormatFloat(f, 'g', -1, 64)
		if math.IsInf(f, 1) {
			in = "Infinity"
		} else if math.IsInf(f, -1) {
			in = "-Infinity"
		}
		want := pg.query("SELECT '" + in + "'::float8")
		if want.code != "" {
			t.Errorf("%s: %s", in, want.msg)
			continue
		}
		// Through Expr: the value read from Go's notation and printed.
		got, err := (&fanout.Expr{Op: "col", Col: 0}).Eval([][]byte{[]byte(in)}, cols)
		if err != nil || string(got) != string(want.vals[0]) {
			t.Errorf("float8 %s: Expr prints %q (%v), Postgres %q", in, got, err, want.vals[0])
		}
		// Through Group: sum over one shard's Postgres output.
		g, err := fanout.Group(fanout.NewRows([][]byte{fanout.EncodeRow(nil, want.vals[:1])}),
			fanout.GroupSpec{Scalar: true, Cols: []fanout.AggCol{{Func: "sum", Type: fanout.Float8OID}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		row, err := g.Next()
		v, _ := fanout.Column(row, 0)
		if err != nil || string(v) != string(want.vals[0]) {
			t.Errorf("float8 %s: sum prints %q (%v), Postgres %q", in, v, err, want.vals[0])
		}
	}
}

// testAggregates spreads random values over up to four shards, lets
// Postgres compute each shard's partial sum and count, merges them with
// Group, and compares avg, sum and count with Postgres over all values.
func testAggregates(t *testing.T, pg *oracle) {
	rng := rand.New(rand.NewSource(9))
	types := []uint32{fanout.Int4OID, fanout.Int8OID, fanout.NumericOID}
	for range 100 {
		typ := types[rng.Intn(len(types))]
		nshards := 1 + rng.Intn(4)
		parts := make([][]string, nshards)
		var all []string
		for range rng.Intn(13) {
			v := "NULL"
			if rng.Intn(8) > 0 {
				if typ == fanout.NumericOID {
					v = genNumeric(rng, false)
				} else {
					v = genInt(rng, typ)
				}
			}
			s := rng.Intn(nshards)
			parts[s] = append(parts[s], v)
			all = append(all, v)
		}
		arr := func(vals []string) string {
			return fmt.Sprintf("unnest('{%s}'::%s[])", strings.Join(vals, ","), typeName[typ])
		}
		var bodies [][]byte
		var sumType uint32
		for _, p := range parts {
			a := pg.query("SELECT sum(x), count(x) FROM " + arr(p) + " x")
			if a.code != "" {
				t.Fatalf("partial over %v: %s", p, a.msg)
			}
			sumType = a.types[0]
			bodies = append(bodies, fanout.EncodeRow(nil, a.vals))
		}
		want := pg.query("SELECT avg(x), sum(x), count(x) FROM " + arr(all) + " x")
		if want.code != "" {
			t.Fatalf("over %v: %s", all, want.msg)
		}
		g, err := fanout.Group(fanout.NewRows(bodies), fanout.GroupSpec{Scalar: true, Cols: []fanout.AggCol{
			{Func: "avg", Col: 0, Count: 1, Type: sumType},
			{Func: "sum", Col: 0, Type: sumType},
			{Func: "count", Col: 1, Type: fanout.Int8OID},
		}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		row, err := g.Next()
		if err != nil {
			t.Errorf("%s over shards %v: %v", typeName[typ], parts, err)
			continue
		}
		got, _ := fanout.DecodeRow(nil, row)
		for i, name := range []string{"avg", "sum", "count"} {
			if string(got[i]) != string(want.vals[i]) || (got[i] == nil) != (want.vals[i] == nil) {
				t.Errorf("%s(%s) over shards %v = %s, Postgres %s", name, typeName[typ], parts, showVal(got[i]), showVal(want.vals[i]))
			}
		}
	}
}

// testKeyEquality checks that Distinct dedupes two numeric or float
// values, in text and in binary (numeric_send, float8send), exactly when
// Postgres says they are equal.
func testKeyEquality(t *testing.T, pg *oracle) {
	rng := rand.New(rand.NewSource(10))
	type pair struct{ typ, a, b string }
	var pairs []pair
	for range 150 {
		a := genNumeric(rng, true)
		b := a
		switch k := rng.Intn(5); {
		case a == "NaN":
			b = []string{"NaN", "0"}[k%2]
		case k == 0: // more scale: 2.5 and 2.500
			if !strings.Contains(b, ".") {
				b += "."
			}
			b += strings.Repeat("0", 1+rng.Intn(5))
		case k == 1: // less scale: 2.500 and 2.5
			if strings.Contains(b, ".") {
				b = strings.TrimSuffix(strings.TrimRight(b, "0"), ".")
			}
		case k == 2: // the other sign: 0.00 and -0.00 are equal
			if strings.HasPrefix(b, "-") {
				b = b[1:]
			} else {
				b = "-" + b
			}
		case k == 3: // a little different: 2.5 and 2.51, 2 and 2.01
			if strings.Contains(b, ".") {
				b += "1"
			} else {
				b += ".01"
			}
		default:
			b = genNumeric(rng, true)
		}
		pairs = append(pairs, pair{"numeric", a, b})
	}
	for _, p := range [][2]string{{"-0", "0"}, {"0", "-0"}, {"NaN", "NaN"}, {"1.5", "1.50"}, {"1e-320", "1e-320"},
		{"0.1", "0.10000000000000001"}, {"1", "1.0000000000000002"}, {"Infinity", "Infinity"}, {"-Infinity", "Infinity"}} {
		pairs = append(pairs, pair{"float8", p[0], p[1]})
	}
	for _, p := range pairs {
		sql := fmt.Sprintf("SELECT a = b, a, b, %[1]s_send(a), %[1]s_send(b) FROM (SELECT '%[2]s'::%[1]s a, '%[3]s'::%[1]s b) s", p.typ, p.a, p.b)
		if p.typ == "float8" {
			sql = strings.ReplaceAll(sql, "float8_send", "float8send")
		}
		want := pg.query(sql)
		if want.code != "" {
			t.Fatalf("%s: %s", sql, want.msg)
		}
		equal := string(want.vals[0]) == "t"
		kind := fanout.KeyNumeric
		if p.typ == "float8" {
			kind = fanout.KeyFloat
		}
		bin := func(v []byte) []byte {
			b, err := hex.DecodeString(strings.TrimPrefix(string(v), `\x`))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		for _, c := range []struct {
			format string
			kind   fanout.KeyKind
			a, b   []byte
		}{
			{"text", kind, want.vals[1], want.vals[2]},
			{"binary", kind.BinaryKind(), bin(want.vals[3]), bin(want.vals[4])},
		} {
			d := fanout.Distinct(fanout.NewRows([][]byte{
				fanout.EncodeRow(nil, [][]byte{c.a}), fanout.EncodeRow(nil, [][]byte{c.b}),
			}), 1, []fanout.KeyKind{c.kind}, nil)
			n := 0
			for {
				row, err := d.Next()
				if err != nil {
					t.Fatal(err)
				}
				if row == nil {
					break
				}
				n++
			}
			if (n == 1) != equal {
				t.Errorf("%s %s: %q and %q: Distinct keeps %d rows, Postgres says equal=%v", p.typ, c.format, c.a, c.b, n, equal)
			}
		}
	}
}
