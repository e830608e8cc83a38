package fanout

import (
	"bytes"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// GroupSpec describes a grouped merge: rows with equal Keys are one group,
// and each output column is a value of the group's first row or a
// combination of the shards' partial aggregates.
type GroupSpec struct {
	Keys     []int     // input columns of the group key
	KeyKinds []KeyKind // aligned with Keys
	Cols     []AggCol  // output columns
	// Scalar is an aggregate without GROUP BY: one row even when no
	// input row arrives.
	Scalar bool
	// TextByteOrder says the shards order text in byte order (collation
	// C), which min/max over text need.
	TextByteOrder bool
}

// AggCol is one output column of a grouped merge.
type AggCol struct {
	// Func is "" (the value of the group's first row), count, sum, min,
	// max, avg, bool_and, bool_or, count_distinct (the distinct non-null
	// values of Col: the shards group by it) or expr (computed later).
	Func  string
	Col   int    // input column (avg: the partial sum)
	Count int    // avg: the input column of the partial count
	Type  uint32 // type of the input column Col
}

// ResultType is the type of an output column: avg's is numeric (over
// integer and numeric sums) or float8; the others keep their input's.
func (c AggCol) ResultType() (uint32, error) {
	if c.Func == "count_distinct" {
		return Int8OID, nil
	}
	if c.Func != "avg" {
		return c.Type, nil
	}
	switch c.Type {
	case Int8OID, NumericOID:
		return NumericOID, nil
	case Float8OID:
		return Float8OID, nil
	}
	return 0, unsupportedf("avg over type %d across shards", c.Type)
}

// Group merges src's partial groups. It reads all of src before its first
// row, holding one state per group under budget.
func Group(src Source, spec GroupSpec, budget *Budget) (Source, error) {
	for _, c := range spec.Cols {
		if err := checkAgg(c, spec.TextByteOrder); err != nil {
			return nil, err
		}
	}
	return &group{src: src, spec: spec, budget: budget, index: map[string]int{}}, nil
}

func checkAgg(c AggCol, textByteOrder bool) error {
	switch c.Func {
	case "", "count", "bool_and", "bool_or", "expr":
		return nil
	case "bit_and", "bit_or":
		switch c.Type {
		case Int2OID, Int4OID, Int8OID:
			return nil
		}
		return unsupportedf("%s over type %d across shards", c.Func, c.Type)
	case "sum":
		switch c.Type {
		case Int8OID, Int4OID, Int2OID, NumericOID, Float4OID, Float8OID:
			return nil
		}
		return unsupportedf("sum over type %d across shards", c.Type)
	case "avg":
		_, err := c.ResultType()
		return err
	case "min", "max":
		_, err := Comparator(c.Type, textByteOrder)
		return err
	case "count_distinct":
		if _, ok := KeyKindOf(c.Type); !ok {
			return unsupportedf("count(DISTINCT ...) over type %d across shards", c.Type)
		}
		return nil
	}
	return unsupportedf("aggregate %s across shards", c.Func)
}

// GroupSorted merges partial groups that arrive ordered by their keys
// (a MergeSort of the shards' ordered groups): rows with equal keys are
// adjacent, so each group is finished as soon as the next key shows, and
// memory holds one group.
func GroupSorted(src Source, spec GroupSpec, budget *Budget) (Source, error) {
	for _, c := range spec.Cols {
		if err := checkAgg(c, spec.TextByteOrder); err != nil {
			return nil, err
		}
	}
	// One group is held at a time: its own budget, renewed per group.
	own := &Budget{}
	if budget != nil {
		own.Max = budget.Max
	}
	return &sortedGroup{group: group{src: src, spec: spec, budget: own}}, nil
}

type sortedGroup struct {
	group
	cur    []aggState // the open group's state; nil before the first row
	curKey []byte
	eof    bool
}

func (g *sortedGroup) Next() ([]byte, error) {
	for !g.eof {
		row, err := g.src.Next()
		if err != nil {
			return nil, err
		}
		if row == nil {
			g.eof = true
			break
		}
		if g.vals, err = DecodeRow(g.vals, row); err != nil {
			return nil, err
		}
		if err := g.checkKeys(); err != nil {
			return nil, err
		}
		g.key = appendKey(g.key[:0], g.vals, g.spec.Keys, g.spec.KeyKinds)
		if g.cur != nil && bytes.Equal(g.key, g.curKey) {
			if err := g.addRow(g.cur, false); err != nil {
				return nil, err
			}
			continue
		}
		// A new key: the open group is complete.
		done := g.cur
		g.budget.used = 0
		g.cur = make([]aggState, len(g.spec.Cols))
		g.curKey = append(g.curKey[:0], g.key...)
		if err := g.addRow(g.cur, true); err != nil {
			return nil, err
		}
		if done != nil {
			return g.emit(done)
		}
	}
	if g.cur != nil {
		done := g.cur
		g.cur = nil
		return g.emit(done)
	}
	return nil, nil
}

// checkKeys checks that the decoded row g.vals holds the key columns.
func (g *group) checkKeys() error {
	for _, k := range g.spec.Keys {
		if k >= len(g.vals) {
			return fmt.Errorf("shard row has %d columns, want more than %d", len(g.vals), k)
		}
	}
	return nil
}

// addRow adds the decoded row g.vals to a group's state.
func (g *group) addRow(st []aggState, first bool) error {
	for c, col := range g.spec.Cols {
		if err := g.add(col, &st[c], first); err != nil {
			return err
		}
	}
	return nil
}

// emit renders a finished group.
func (g *group) emit(st []aggState) ([]byte, error) {
	vals := make([][]byte, len(g.spec.Cols))
	for c, col := range g.spec.Cols {
		v, err := final(col, &st[c])
		if err != nil {
			return nil, err
		}
		vals[c] = v
	}
	g.out = EncodeRow(g.out[:0], vals)
	return g.out, nil
}

type group struct {
	cmps   map[uint32]func(a, b []byte) (int, error) // min/max orderings by type
	src    Source
	spec   GroupSpec
	budget *Budget
	index  map[string]int
	states [][]aggState
	done   bool
	i      int
	out    []byte
	vals   [][]byte
	key    []byte
}

// aggState is one output column's state in one group.
type aggState struct {
	set  bool                // a non-null value was seen
	val  []byte              // first value, min/max best
	n    int64               // count, integer sum, avg's count
	rat  *big.Rat            // numeric sum, once it does not fit mant
	mant int64               // numeric sum in units of 10^-sc, while it fits
	sc   int                 // numeric sum's display scale
	f    float64             // float sum
	nan  bool                // numeric NaN seen
	bool bool                // bool_and/bool_or
	seen map[string]struct{} // count_distinct's values
}

func (g *group) Next() ([]byte, error) {
	if !g.done {
		if err := g.consume(); err != nil {
			return nil, err
		}
		g.done = true
		if len(g.states) == 0 && g.spec.Scalar {
			g.states = append(g.states, make([]aggState, len(g.spec.Cols)))
		}
	}
	if g.i >= len(g.states) {
		return nil, nil
	}
	st := g.states[g.i]
	g.states[g.i] = nil
	g.i++
	return g.emit(st)
}

func (g *group) consume() error {
	for {
		row, err := g.src.Next()
		if err != nil {
			return err
		}
		if row == nil {
			return nil
		}
		if g.vals, err = DecodeRow(g.vals, row); err != nil {
			return err
		}
		if err := g.checkKeys(); err != nil {
			return err
		}
		g.key = appendKey(g.key[:0], g.vals, g.spec.Keys, g.spec.KeyKinds)
		i, ok := g.index[string(g.key)]
		if !ok {
			if err := g.budget.take(len(g.key) + 64 + 80*len(g.spec.Cols)); err != nil {
				return err
			}
			i = len(g.states)
			g.index[string(g.key)] = i
			g.states = append(g.states, make([]aggState, len(g.spec.Cols)))
		}
		if err := g.addRow(g.states[i], !ok); err != nil {
			return err
		}
	}
}

func (g *group) add(c AggCol, s *aggState, first bool) error {
	if c.Col >= len(g.vals) || (c.Func == "avg" && c.Count >= len(g.vals)) {
		return fmt.Errorf("shard row has %d columns, want more than %d", len(g.vals), c.Col)
	}
	v := g.vals[c.Col]
	switch c.Func {
	case "expr":
		return nil // computed after the merge (Project)
	case "":
		if first && v != nil {
			s.val = bytes.Clone(v)
			return g.budget.take(len(v))
		}
		return nil
	case "avg":
		cnt := g.vals[c.Count]
		if cnt != nil {
			n, err := parseInt(cnt)
			if err != nil {
				return err
			}
			s.n += n
		}
		if v == nil {
			return nil
		}
		return addSum(c.Type, s, v, true)
	}
	if v == nil {
		return nil
	}
	switch c.Func {
	case "count":
		n, err := parseInt(v)
		if err != nil {
			return err
		}
		s.n += n
		s.set = true
	case "sum":
		return addSum(c.Type, s, v, false)
	case "min", "max":
		if !s.set {
			s.set, s.val = true, bytes.Clone(v)
			return g.budget.take(len(v))
		}
		cmp, err := g.comparator(c.Type)
		if err != nil {
			return err
		}
		d, err := cmp(v, s.val)
		if err != nil {
			return err
		}
		if (c.Func == "max" && d > 0) || (c.Func == "min" && d < 0) {
			if err := g.budget.take(len(v)); err != nil {
				return err
			}
			s.val = bytes.Clone(v)
		}
	case "count_distinct":
		kind, _ := KeyKindOf(c.Type)
		k := string(appendKey(nil, [][]byte{v}, []int{0}, []KeyKind{kind}))
		if _, dup := s.seen[k]; dup {
			return nil
		}
		if s.seen == nil {
			s.seen = map[string]struct{}{}
		}
		s.seen[k] = struct{}{}
		s.n++
		return g.budget.take(len(k) + 48)
	case "bit_and", "bit_or":
		n, err := parseInt(v)
		if err != nil {
			return err
		}
		switch {
		case !s.set:
			s.n = n
		case c.Func == "bit_and":
			s.n &= n
		default:
			s.n |= n
		}
		s.set = true
	case "bool_and", "bool_or":
		b := string(v) == "t"
		switch {
		case !s.set:
			s.bool = b
		case c.Func == "bool_and":
			s.bool = s.bool && b
		default:
			s.bool = s.bool || b
		}
		s.set = true
	}
	return nil
}

// addSum adds one shard's partial sum. For avg, integer sums (int8) are
// kept exactly as rationals, since avg divides them as numeric.
func addSum(typ uint32, s *aggState, v []byte, avg bool) error {
	switch typ {
	case Int2OID, Int4OID, Int8OID:
		if avg {
			return addNumeric(s, v)
		}
		n, err := parseInt(v)
		if err != nil {
			return err
		}
		t := s.n + n
		if (n > 0 && t < s.n) || (n < 0 && t > s.n) {
			return ErrOverflow
		}
		s.n, s.set = t, true
	case NumericOID:
		return addNumeric(s, v)
	case Float4OID, Float8OID:
		// As float4pl/float8pl combine partial sums: the first is the
		// state (keeping -0), and an infinite sum of finite parts is an
		// overflow.
		f, err := parseFloat(string(v))
		if err != nil {
			return err
		}
		if !s.set {
			s.f, s.set = f, true
			return nil
		}
		sum := s.f + f
		if typ == Float4OID {
			sum = float64(float32(s.f) + float32(f))
		}
		if math.IsInf(sum, 0) && !math.IsInf(s.f, 0) && !math.IsInf(f, 0) {
			return errFloatOverflow
		}
		s.f = sum
	default:
		return unsupportedf("sum over type %d across shards", typ)
	}
	return nil
}

func addNumeric(s *aggState, b []byte) error {
	s.set = true
	if string(b) == "NaN" {
		s.nan = true
		return nil
	}
	if s.rat == nil {
		// Fast path: the sum as an int64 count of 10^-sc units, while it
		// fits; then exact fractions.
		if m, sc, ok := parseDecimal(b); ok {
			if sm, ok := rescale(s.mant, s.sc, sc); ok {
				if m, ok := rescale(m, sc, s.sc); ok {
					if t := sm + m; (m >= 0) == (t >= sm) {
						s.mant, s.sc = t, max(s.sc, sc)
						return nil
					}
				}
			}
		}
		s.rat = new(big.Rat).SetFrac(big.NewInt(s.mant), pow10(s.sc))
	}
	v := string(b)
	if strings.Contains(v, "Infinity") {
		return unsupportedf("sum over infinite numeric across shards")
	}
	r, ok := new(big.Rat).SetString(v)
	if !ok {
		return fmt.Errorf("bad numeric %q", v)
	}
	s.rat.Add(s.rat, r)
	if i := strings.IndexByte(v, '.'); i >= 0 && len(v)-i-1 > s.sc {
		s.sc = len(v) - i - 1
	}
	return nil
}

// parseInt reads a decimal integer without allocating.
func parseInt(b []byte) (int64, error) {
	neg := len(b) > 0 && b[0] == '-'
	d := b
	if neg || (len(b) > 0 && b[0] == '+') {
		d = b[1:]
	}
	if len(d) == 0 || len(d) > 18 {
		return strconv.ParseInt(string(b), 10, 64) // long: the slow, checked way
	}
	var n int64
	for _, c := range d {
		if c < '0' || c > '9' {
			return strconv.ParseInt(string(b), 10, 64)
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, nil
}

// comparator returns (and keeps) the ordering of a min/max column's type.
func (g *group) comparator(typ uint32) (func(a, b []byte) (int, error), error) {
	if g.cmps == nil {
		g.cmps = map[uint32]func(a, b []byte) (int, error){}
	}
	if c, ok := g.cmps[typ]; ok {
		return c, nil
	}
	c, err := Comparator(typ, g.spec.TextByteOrder)
	if err != nil {
		return nil, err
	}
	g.cmps[typ] = c
	return c, nil
}

// sumRat is a numeric sum as a fraction.
func (s *aggState) sumRat() *big.Rat {
	if s.rat != nil {
		return s.rat
	}
	return new(big.Rat).SetFrac(big.NewInt(s.mant), pow10(s.sc))
}

func pow10(n int) *big.Int { return new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil) }

// parseDecimal reads a plain decimal ("-12.50") as m units of 10^-sc;
// ok is false for anything else or more than 18 digits.
func parseDecimal(v []byte) (m int64, sc int, ok bool) {
	neg := len(v) > 0 && v[0] == '-'
	if neg {
		v = v[1:]
	}
	digits, dot := 0, -1
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= '0' && c <= '9':
			m = m*10 + int64(c-'0')
			digits++
		case c == '.' && dot < 0:
			dot = i
		default:
			return 0, 0, false
		}
		if digits > 18 {
			return 0, 0, false
		}
	}
	if digits == 0 {
		return 0, 0, false
	}
	if dot >= 0 {
		sc = len(v) - dot - 1
	}
	if neg {
		m = -m
	}
	return m, sc, true
}

// rescale expresses m units of 10^-from in units of 10^-to (to >= from
// multiplies; to < from keeps m, the caller rescales the other side).
func rescale(m int64, from, to int) (int64, bool) {
	for ; from < to; from++ {
		if m > math.MaxInt64/10 || m < math.MinInt64/10 {
			return 0, false
		}
		m *= 10
	}
	return m, true
}

// final renders one output column of a group.
func final(c AggCol, s *aggState) ([]byte, error) {
	switch c.Func {
	case "expr":
		return nil, nil
	case "":
		return s.val, nil
	case "count", "count_distinct":
		return strconv.AppendInt(nil, s.n, 10), nil
	case "min", "max":
		if !s.set {
			return nil, nil
		}
		return s.val, nil
	case "bit_and", "bit_or":
		if !s.set {
			return nil, nil
		}
		return strconv.AppendInt(nil, s.n, 10), nil
	case "bool_and", "bool_or":
		if !s.set {
			return nil, nil
		}
		if s.bool {
			return []byte("t"), nil
		}
		return []byte("f"), nil
	case "sum":
		if !s.set {
			return nil, nil
		}
		switch c.Type {
		case Int2OID, Int4OID, Int8OID:
			return strconv.AppendInt(nil, s.n, 10), nil
		case NumericOID:
			if s.nan {
				return []byte("NaN"), nil
			}
			return []byte(s.sumRat().FloatString(s.sc)), nil
		default:
			return formatFloat(s.f, c.Type), nil
		}
	case "avg":
		if s.n == 0 || !s.set {
			return nil, nil
		}
		if c.Type == Float8OID {
			return formatFloat(s.f/float64(s.n), Float8OID), nil
		}
		if s.nan {
			return []byte("NaN"), nil
		}
		return []byte(NumericDiv(s.sumRat(), s.sc, s.n)), nil
	}
	return nil, unsupportedf("aggregate %s", c.Func)
}

// NumericDiv divides a numeric of display scale scale by a positive
// count as Postgres's numeric division does for avg: the result scale is
// select_div_scale's (at least 16 significant digits, at least the
// dividend's scale), rounded half away from zero.
func NumericDiv(num *big.Rat, scale int, den int64) string {
	s, _ := numericDiv(num, scale, new(big.Rat).SetInt64(den), 0)
	return s
}

// nbaseLead returns the weight and first digit of |r| in Postgres's
// base-10000 numeric representation (0, 0 for zero).
func nbaseLead(r *big.Rat) (weight, first int) {
	a := new(big.Rat).Abs(r)
	if a.Sign() == 0 {
		return 0, 0
	}
	// Decimal exponent e: 10^e <= a < 10^(e+1).
	ip := new(big.Int).Quo(a.Num(), a.Denom())
	var e int
	if ip.Sign() > 0 {
		e = len(ip.String()) - 1
	} else {
		e = -1
		x := new(big.Rat).Set(a)
		ten := big.NewRat(10, 1)
		for {
			x.Mul(x, ten)
			if x.Cmp(big.NewRat(1, 1)) >= 0 {
				break
			}
			e--
		}
	}
	weight = e / 4
	if e < 0 && e%4 != 0 {
		weight--
	}
	// first = floor(a / 10000^weight)
	p := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(4*abs(weight))), nil)
	x := new(big.Rat).Set(a)
	if weight >= 0 {
		x.Quo(x, new(big.Rat).SetInt(p))
	} else {
		x.Mul(x, new(big.Rat).SetInt(p))
	}
	f := new(big.Int).Quo(x.Num(), x.Denom())
	return weight, int(f.Int64())
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// roundRat renders r with exactly scale fraction digits, rounding half
// away from zero (as Postgres rounds numerics).
func roundRat(r *big.Rat, scale int) string {
	p := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)
	x := new(big.Rat).Mul(new(big.Rat).Abs(r), new(big.Rat).SetInt(p))
	// floor(x + 1/2)
	x.Add(x, big.NewRat(1, 2))
	n := new(big.Int).Quo(x.Num(), x.Denom())
	s := n.String()
	if scale > 0 {
		if len(s) <= scale {
			s = strings.Repeat("0", scale-len(s)+1) + s
		}
		s = s[:len(s)-scale] + "." + s[len(s)-scale:]
	}
	if r.Sign() < 0 && strings.Trim(s, "0.") != "" {
		s = "-" + s
	}
	return s
}

// Cond is a HAVING condition over a row's columns, with constants as text.
type Cond struct {
	Op   string // and, or, not, cmp, null, notnull, bool (the column is true)
	Args []*Cond
	Col  int
	Cmp  string // = <> < <= > >=
	Val  string
	Null bool // the constant is NULL
}

// Filter keeps the rows for which cond is true (SQL's three-valued logic:
// unknown drops the row). types are the row's column types.
func Filter(src Source, cond *Cond, types []uint32, textByteOrder bool) Source {
	return &filter{src: src, cond: cond, types: types, textByteOrder: textByteOrder}
}

type filter struct {
	src           Source
	cond          *Cond
	types         []uint32
	textByteOrder bool
}

const (
	tFalse = iota
	tTrue
	tUnknown
)

func (f *filter) Next() ([]byte, error) {
	for {
		row, err := f.src.Next()
		if err != nil || row == nil {
			return row, err
		}
		t, err := f.eval(f.cond, row)
		if err != nil {
			return nil, err
		}
		if t == tTrue {
			return row, nil
		}
	}
}

func (f *filter) eval(c *Cond, row []byte) (int, error) {
	switch c.Op {
	case "and", "or":
		res := tTrue
		if c.Op == "or" {
			res = tFalse
		}
		for _, a := range c.Args {
			t, err := f.eval(a, row)
			if err != nil {
				return 0, err
			}
			switch {
			case c.Op == "and" && t == tFalse, c.Op == "or" && t == tTrue:
				return t, nil
			case t == tUnknown:
				res = tUnknown
			}
		}
		return res, nil
	case "not":
		t, err := f.eval(c.Args[0], row)
		switch t {
		case tTrue:
			t = tFalse
		case tFalse:
			t = tTrue
		}
		return t, err
	case "bool":
		v, null := Column(row, c.Col)
		switch {
		case null:
			return tUnknown, nil
		case string(v) == "t":
			return tTrue, nil
		case string(v) == "f":
			return tFalse, nil
		}
		return 0, unsupportedf("HAVING over a non-boolean value across shards")
	case "null", "notnull":
		_, null := Column(row, c.Col)
		if null == (c.Op == "null") {
			return tTrue, nil
		}
		return tFalse, nil
	case "cmp":
		v, null := Column(row, c.Col)
		if null || c.Null {
			return tUnknown, nil
		}
		typ := uint32(0)
		if c.Col < len(f.types) {
			typ = f.types[c.Col]
		}
		d, err := compareConst(typ, v, c.Val, f.textByteOrder, c.Cmp)
		if err != nil {
			return 0, err
		}
		ok := false
		switch c.Cmp {
		case "=":
			ok = d == 0
		case "<>":
			ok = d != 0
		case "<":
			ok = d < 0
		case "<=":
			ok = d <= 0
		case ">":
			ok = d > 0
		case ">=":
			ok = d >= 0
		}
		if ok {
			return tTrue, nil
		}
		return tFalse, nil
	}
	return 0, unsupportedf("condition %s", c.Op)
}

// compareConst compares a value of type typ with a constant's text.
func compareConst(typ uint32, v []byte, k string, textByteOrder bool, op string) (int, error) {
	switch typ {
	case Int2OID, Int4OID, Int8OID, OIDOID, NumericOID:
		if _, ok := new(big.Rat).SetString(strings.TrimSpace(k)); !ok && k != "NaN" {
			return 0, unsupportedf("comparing a number with %q in HAVING across shards", k)
		}
		return cmpNumeric(string(v), strings.TrimSpace(k))
	case Float4OID, Float8OID:
		cmp, _ := Comparator(typ, false)
		d, err := cmp(v, []byte(strings.TrimSpace(k)))
		if err != nil {
			return 0, unsupportedf("comparing a float with %q in HAVING across shards", k)
		}
		return d, nil
	case TextOID, VarcharOID:
		if op == "=" || op == "<>" {
			return bytes.Compare(v, []byte(k)), nil
		}
	case BoolOID:
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "t", "true", "yes", "y", "on", "1":
			k = "t"
		case "f", "false", "no", "n", "off", "0":
			k = "f"
		default:
			return 0, unsupportedf("comparing a bool with %q in HAVING across shards", k)
		}
	case TimestamptzOID:
		return 0, unsupportedf("comparing a timestamptz with a constant in HAVING across shards")
	}
	cmp, err := Comparator(typ, textByteOrder)
	if err != nil {
		return 0, err
	}
	return cmp(v, []byte(k))
}
