package fanout

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Expr is an expression over a final row's columns (aggregates and group
// keys), computed after the merge as Postgres computes it: integer,
// numeric and float arithmetic with Postgres's result types, scales,
// overflow and division-by-zero errors, and casts to integer, numeric
// (with precision and scale) and float8 types.
type Expr struct {
	// Op is col, const, neg, + - * /, cast, or round (Typmod holds its
	// digits when given).
	Op   string
	Col  int     // col: the final column
	Text string  // const: the literal as written
	Args []*Expr // operands (neg, cast: one)
	// Cast is the target type of a cast (int2, int4, int8, numeric,
	// float8); Typmod its precision and scale for numeric(p,s), if given.
	Cast   string
	Typmod []int
}

// String renders e over final columns out1, out2...
func (e *Expr) String() string {
	switch e.Op {
	case "col":
		return fmt.Sprintf("out%d", e.Col+1)
	case "const":
		return e.Text
	case "neg":
		return "-" + e.Args[0].String()
	case "round":
		if len(e.Typmod) > 0 {
			return fmt.Sprintf("round(%s, %d)", e.Args[0], e.Typmod[0])
		}
		return fmt.Sprintf("round(%s)", e.Args[0])
	case "cast":
		t := e.Cast
		if len(e.Typmod) > 0 {
			parts := make([]string, len(e.Typmod))
			for i, m := range e.Typmod {
				parts[i] = strconv.Itoa(m)
			}
			t += "(" + strings.Join(parts, ",") + ")"
		}
		return e.Args[0].String() + "::" + t
	}
	return "(" + e.Args[0].String() + " " + e.Op + " " + e.Args[1].String() + ")"
}

var (
	errFloatOverflow = &ErrNumericOverflow{Msg: "value out of range: overflow"}
	errUnderflow     = &ErrNumericOverflow{Msg: "value out of range: underflow"}
)

// ErrDivisionByZero is SQLSTATE 22012.
var ErrDivisionByZero = errors.New("division by zero")

// ErrNumericOverflow is a value out of range for its type (22003) other
// than bigint.
type ErrNumericOverflow struct{ Msg string }

func (e *ErrNumericOverflow) Error() string { return e.Msg }

// val is a typed value during evaluation; nil pointer is NULL.
type val struct {
	typ   uint32
	i     int64    // integer types
	r     *big.Rat // numeric
	scale int      // numeric display scale
	nan   bool     // numeric NaN
	f     float64  // float types
}

// Type returns the result type of e over columns of types cols.
func (e *Expr) Type(cols []uint32) (uint32, error) {
	switch e.Op {
	case "col":
		if e.Col >= len(cols) {
			return 0, fmt.Errorf("expression column %d out of range", e.Col)
		}
		t := cols[e.Col]
		switch t {
		case Int2OID, Int4OID, Int8OID, NumericOID, Float8OID:
			return t, nil
		}
		return 0, unsupportedf("arithmetic over type %d across shards", t)
	case "const":
		if _, err := strconv.ParseInt(e.Text, 10, 32); err == nil {
			return Int4OID, nil
		}
		if _, err := strconv.ParseInt(e.Text, 10, 64); err == nil {
			return Int8OID, nil
		}
		if _, ok := new(big.Rat).SetString(e.Text); ok {
			return NumericOID, nil
		}
		return 0, unsupportedf("constant %q in an expression across shards", e.Text)
	case "neg":
		return e.Args[0].Type(cols)
	case "round":
		t, err := e.Args[0].Type(cols)
		if err != nil {
			return 0, err
		}
		switch {
		case t == NumericOID, t == Float8OID && len(e.Typmod) == 0:
			return t, nil
		}
		return 0, unsupportedf("round over type %d after a merge across shards", t)
	case "cast":
		if _, err := e.Args[0].Type(cols); err != nil {
			return 0, err
		}
		switch e.Cast {
		case "int2":
			return Int2OID, nil
		case "int4":
			return Int4OID, nil
		case "int8":
			return Int8OID, nil
		case "numeric":
			return NumericOID, nil
		case "float8":
			return Float8OID, nil
		}
		return 0, unsupportedf("cast to %s after a merge across shards", e.Cast)
	case "+", "-", "*", "/":
		a, err := e.Args[0].Type(cols)
		if err != nil {
			return 0, err
		}
		b, err := e.Args[1].Type(cols)
		if err != nil {
			return 0, err
		}
		return arithType(a, b), nil
	}
	return 0, unsupportedf("operator %s after a merge across shards", e.Op)
}

// arithType is the result type of integer/numeric/float8 arithmetic.
func arithType(a, b uint32) uint32 {
	rank := func(t uint32) int {
		switch t {
		case Int2OID:
			return 1
		case Int4OID:
			return 2
		case Int8OID:
			return 3
		case NumericOID:
			return 4
		}
		return 5 // float8
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// Eval computes e over a row of text values of types cols; nil is NULL.
func (e *Expr) Eval(row [][]byte, cols []uint32) ([]byte, error) {
	v, err := e.eval(row, cols)
	if err != nil || v == nil {
		return nil, err
	}
	return v.text(), nil
}

func (e *Expr) eval(row [][]byte, cols []uint32) (*val, error) {
	switch e.Op {
	case "col":
		if row[e.Col] == nil {
			return nil, nil
		}
		return parseVal(cols[e.Col], string(row[e.Col]))
	case "const":
		t, err := e.Type(cols)
		if err != nil {
			return nil, err
		}
		return parseVal(t, e.Text)
	case "neg":
		v, err := e.Args[0].eval(row, cols)
		if err != nil || v == nil {
			return v, err
		}
		switch v.typ {
		case Float8OID:
			return &val{typ: v.typ, f: -v.f}, nil
		case NumericOID:
			if v.nan {
				return v, nil
			}
			return &val{typ: v.typ, r: new(big.Rat).Neg(v.r), scale: v.scale}, nil
		}
		return arith("-", &val{typ: v.typ}, v)
	case "round":
		if _, err := e.Type(cols); err != nil {
			return nil, err
		}
		v, err := e.Args[0].eval(row, cols)
		if err != nil || v == nil {
			return v, err
		}
		if v.typ == Float8OID {
			return &val{typ: Float8OID, f: math.RoundToEven(v.f)}, nil // rint
		}
		if v.nan {
			return v, nil
		}
		n := 0
		if len(e.Typmod) > 0 {
			n = e.Typmod[0]
		}
		return roundNumeric(v, n), nil
	case "cast":
		v, err := e.Args[0].eval(row, cols)
		if err != nil || v == nil {
			return v, err
		}
		t, err := e.Type(cols)
		if err != nil {
			return nil, err
		}
		return cast(v, t, e.Typmod)
	}
	a, err := e.Args[0].eval(row, cols)
	if err != nil {
		return nil, err
	}
	b, err := e.Args[1].eval(row, cols)
	if err != nil || a == nil || b == nil {
		return nil, err
	}
	return arith(e.Op, a, b)
}

func parseVal(t uint32, s string) (*val, error) {
	v := &val{typ: t}
	switch t {
	case Int2OID, Int4OID, Int8OID:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, err
		}
		v.i = n
	case NumericOID:
		if s == "NaN" {
			v.nan = true
			return v, nil
		}
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			return nil, unsupportedf("numeric %q in an expression across shards", s)
		}
		v.r = r
		v.scale = numericScale(s)
	case Float8OID:
		f, err := parseFloat(s)
		if err != nil {
			return nil, err
		}
		v.f = f
	default:
		return nil, unsupportedf("arithmetic over type %d across shards", t)
	}
	return v, nil
}

// numericScale is the display scale numeric_in gives a literal: its
// fraction digits less its exponent ("2e-3" has 3, "1.5e3" has 0).
func numericScale(s string) int {
	mant, exp, _ := strings.Cut(strings.ToLower(s), "e")
	frac := 0
	if i := strings.IndexByte(mant, '.'); i >= 0 {
		frac = len(mant) - i - 1
	}
	x, _ := strconv.Atoi(exp)
	return max(frac-x, 0)
}

// to converts v to type t for arithmetic (a widening: int to wider int,
// to numeric, to float8).
func (v *val) to(t uint32) (*val, error) {
	if v.typ == t {
		return v, nil
	}
	w := &val{typ: t}
	switch t {
	case Int2OID, Int4OID, Int8OID:
		w.i = v.i
	case NumericOID:
		w.r = new(big.Rat).SetInt64(v.i)
	case Float8OID:
		switch v.typ {
		case NumericOID:
			if v.nan {
				w.f = math.NaN()
			} else {
				w.f, _ = v.r.Float64()
				if math.IsInf(w.f, 0) {
					return nil, &ErrNumericOverflow{Msg: fmt.Sprintf("%q is out of range for type double precision", v.text())}
				}
			}
		default:
			w.f = float64(v.i)
		}
	}
	return w, nil
}

func intRange(t uint32) (lo, hi int64, name string) {
	switch t {
	case Int2OID:
		return math.MinInt16, math.MaxInt16, "smallint"
	case Int4OID:
		return math.MinInt32, math.MaxInt32, "integer"
	}
	return math.MinInt64, math.MaxInt64, "bigint"
}

func arith(op string, a, b *val) (*val, error) {
	t := arithType(a.typ, b.typ)
	a, err := a.to(t)
	if err != nil {
		return nil, err
	}
	if b, err = b.to(t); err != nil {
		return nil, err
	}
	out := &val{typ: t}
	switch t {
	case Int2OID, Int4OID, Int8OID:
		lo, hi, name := intRange(t)
		x, y := new(big.Int).SetInt64(a.i), new(big.Int).SetInt64(b.i)
		switch op {
		case "+":
			x.Add(x, y)
		case "-":
			x.Sub(x, y)
		case "*":
			x.Mul(x, y)
		case "/":
			if b.i == 0 {
				return nil, ErrDivisionByZero
			}
			x.Quo(x, y) // truncates toward zero, as Postgres
		}
		if !x.IsInt64() || x.Int64() < lo || x.Int64() > hi {
			if t == Int8OID {
				return nil, ErrOverflow
			}
			return nil, &ErrNumericOverflow{Msg: name + " out of range"}
		}
		out.i = x.Int64()
	case NumericOID:
		if a.nan || b.nan {
			out.nan = true
			return out, nil
		}
		out.r = new(big.Rat)
		switch op {
		case "+":
			out.r.Add(a.r, b.r)
			out.scale = max(a.scale, b.scale)
		case "-":
			out.r.Sub(a.r, b.r)
			out.scale = max(a.scale, b.scale)
		case "*":
			out.r.Mul(a.r, b.r)
			out.scale = a.scale + b.scale
		case "/":
			if b.r.Sign() == 0 {
				return nil, ErrDivisionByZero
			}
			s, scale := numericDiv(a.r, a.scale, b.r, b.scale)
			out.r, _ = new(big.Rat).SetString(s)
			out.scale = scale
		}
	default:
		// As float8pl/mi/mul/div: overflow and underflow are errors.
		switch op {
		case "+":
			out.f = a.f + b.f
		case "-":
			out.f = a.f - b.f
		case "*":
			out.f = a.f * b.f
			if out.f == 0 && a.f != 0 && b.f != 0 {
				return nil, errUnderflow
			}
		case "/":
			if b.f == 0 && !math.IsNaN(a.f) {
				return nil, ErrDivisionByZero
			}
			out.f = a.f / b.f
			if out.f == 0 && a.f != 0 && !math.IsInf(b.f, 0) {
				return nil, errUnderflow
			}
			if math.IsInf(out.f, 0) && !math.IsInf(a.f, 0) {
				return nil, errFloatOverflow
			}
			return out, nil
		}
		if math.IsInf(out.f, 0) && !math.IsInf(a.f, 0) && !math.IsInf(b.f, 0) {
			return nil, errFloatOverflow
		}
	}
	return out, nil
}

// cast converts v to type t (numeric typmod: precision, scale).
func cast(v *val, t uint32, typmod []int) (*val, error) {
	out := &val{typ: t}
	switch t {
	case Int2OID, Int4OID, Int8OID:
		lo, hi, name := intRange(t)
		var n *big.Int
		switch v.typ {
		case NumericOID:
			if v.nan {
				return nil, unsupportedf("cannot convert NaN to %s", name)
			}
			n = roundHalfAway(v.r)
		case Float8OID:
			if math.IsNaN(v.f) || math.IsInf(v.f, 0) {
				return nil, &ErrNumericOverflow{Msg: name + " out of range"}
			}
			n, _ = big.NewFloat(math.RoundToEven(v.f)).Int(nil)
		default:
			n = big.NewInt(v.i)
		}
		if !n.IsInt64() || n.Int64() < lo || n.Int64() > hi {
			if t == Int8OID {
				return nil, ErrOverflow
			}
			return nil, &ErrNumericOverflow{Msg: name + " out of range"}
		}
		out.i = n.Int64()
	case NumericOID:
		switch v.typ {
		case NumericOID:
			out.r, out.scale, out.nan = v.r, v.scale, v.nan
		case Float8OID:
			if math.IsNaN(v.f) {
				out.nan = true
				break
			}
			if math.IsInf(v.f, 0) {
				return nil, unsupportedf("infinite float to numeric across shards")
			}
			// float8 to numeric goes through 15 significant digits
			// (%.15g), the scale being the digits that are left after
			// the point.
			e := strconv.FormatFloat(v.f, 'e', 14, 64)
			mant, exp, _ := strings.Cut(e, "e")
			mant = strings.TrimRight(mant, "0")
			mant = strings.TrimSuffix(mant, ".")
			x, _ := strconv.Atoi(exp)
			frac := 0
			if i := strings.IndexByte(mant, '.'); i >= 0 {
				frac = len(mant) - i - 1
			}
			out.r, _ = new(big.Rat).SetString(mant + "e" + exp)
			out.scale = max(frac-x, 0)
		default:
			out.r = new(big.Rat).SetInt64(v.i)
		}
		if len(typmod) >= 1 && !out.nan {
			prec, scale := typmod[0], 0
			if len(typmod) >= 2 {
				scale = typmod[1]
			}
			// Round to scale digits (a negative scale rounds to tens,
			// hundreds...); the result must be below 10^(prec-scale).
			rounded := roundNumeric(out, scale)
			out.r, out.scale = rounded.r, rounded.scale
			limit := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(prec-scale))), nil))
			if prec < scale {
				limit.Inv(limit)
			}
			if new(big.Rat).Abs(out.r).Cmp(limit) >= 0 {
				return nil, &ErrNumericOverflow{Msg: "numeric field overflow"}
			}
		}
	case Float8OID:
		return v.to(Float8OID)
	}
	return out, nil
}

// roundNumeric is round(numeric, n): half away from zero to n fraction
// digits (n < 0: to tens, hundreds...), display scale max(n, 0).
func roundNumeric(v *val, n int) *val {
	if n >= 0 {
		r, _ := new(big.Rat).SetString(roundRat(v.r, n))
		return &val{typ: NumericOID, r: r, scale: n}
	}
	p := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(-n)), nil))
	q, _ := new(big.Rat).SetString(roundRat(new(big.Rat).Quo(v.r, p), 0))
	return &val{typ: NumericOID, r: q.Mul(q, p)}
}

// roundHalfAway rounds r to an integer, halves away from zero.
func roundHalfAway(r *big.Rat) *big.Int {
	n, _ := new(big.Int).SetString(roundRat(r, 0), 10)
	return n
}

func (v *val) text() []byte {
	switch v.typ {
	case Int2OID, Int4OID, Int8OID:
		return strconv.AppendInt(nil, v.i, 10)
	case NumericOID:
		if v.nan {
			return []byte("NaN")
		}
		return []byte(roundRat(v.r, v.scale))
	}
	return formatFloat(v.f, Float8OID)
}

// numericDiv is Postgres's numeric division: the result scale is
// select_div_scale's (at least 16 significant digits, at least either
// operand's scale), rounded half away from zero.
func numericDiv(num *big.Rat, numScale int, den *big.Rat, denScale int) (string, int) {
	w1, d1 := nbaseLead(num)
	w2, d2 := nbaseLead(den)
	qweight := w1 - w2
	if d1 <= d2 {
		qweight--
	}
	rscale := 16 - qweight*4
	rscale = max(rscale, numScale, denScale, 0)
	rscale = min(rscale, 1000)
	q := new(big.Rat).Quo(num, den)
	return roundRat(q, rscale), rscale
}

// Project computes expression columns of each row: exprs[i], when set,
// replaces column i. types are the row's column types.
func Project(src Source, exprs []*Expr, types []uint32) Source {
	return &project{src: src, exprs: exprs, types: types}
}

type project struct {
	src   Source
	exprs []*Expr
	types []uint32
	vals  [][]byte
	out   []byte
}

func (p *project) Next() ([]byte, error) {
	row, err := p.src.Next()
	if err != nil || row == nil {
		return row, err
	}
	if p.vals, err = DecodeRow(p.vals, row); err != nil {
		return nil, err
	}
	computed := make([][]byte, len(p.vals))
	copy(computed, p.vals)
	for i, e := range p.exprs {
		if e == nil || i >= len(computed) {
			continue
		}
		if computed[i], err = e.Eval(p.vals, p.types); err != nil {
			return nil, err
		}
	}
	p.out = EncodeRow(p.out[:0], computed)
	return p.out, nil
}
