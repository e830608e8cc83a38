package router

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shardproxy/shardproxy/parser"
)

// shardSet is a sorted set of shard indexes; nil means every shard (no
// usable restriction) and an empty non-nil set means no row can match.
// Sets may share storage (Router.singles): never modify one in place.
type shardSet []int

// restrict evaluates what a predicate on t's key says about the shards
// holding the matching rows.
func (r *Router) restrict(t *Table, p parser.Pred, params Params) shardSet {
	if t.Strategy == Range {
		return r.rangeShards(t, r.intervals(t, p, params))
	}
	return r.hashPred(t, p, params)
}

// castOK reports whether a cast on the key column keeps its values: a
// cast that can map two keys to one value (`name::int8` for a text key,
// `created_at::date`) turns the comparison into a function of the key.
func castOK(t *Table, cast string) bool {
	switch cast {
	case "":
		return true
	case "int8":
		return t.Strategy == Hash && !t.KeyText
	case "text", "varchar":
		return t.Strategy == Hash && t.KeyText
	case "timestamptz":
		return t.Strategy == Range && !t.KeyLocal
	}
	return false
}

func (r *Router) hashPred(t *Table, p parser.Pred, params Params) shardSet {
	switch p.Op {
	case parser.Cmp:
		if p.Cmp != "=" || !castOK(t, p.ColCast) {
			return nil
		}
		if len(p.Values) == 1 && !p.Values[0].Array {
			v := p.Values[0]
			if _, null, ok := valueText(v, params); !ok {
				return nil
			} else if null {
				return shardSet{}
			}
			s, ok := r.valueShards(t, v, params)
			if !ok {
				return nil
			}
			return s
		}
		out := shardSet{}
		for _, v := range p.Values {
			if !v.Array {
				_, null, ok := valueText(v, params)
				if !ok {
					return nil
				}
				if null {
					continue // key = NULL is never true
				}
			}
			s, ok := r.valueShards(t, v, params)
			if !ok {
				return nil
			}
			out = union(out, s)
		}
		return out
	case parser.And:
		var acc shardSet
		for _, k := range p.Kids {
			s := r.hashPred(t, k, params)
			switch {
			case s == nil:
			case acc == nil:
				acc = s
			default:
				acc = intersect(acc, s)
			}
		}
		return acc
	case parser.Or:
		out := shardSet{}
		for _, k := range p.Kids {
			s := r.hashPred(t, k, params)
			if s == nil {
				return nil
			}
			out = union(out, s)
		}
		return out
	}
	return nil
}

// literalSource is implemented by parameters that stand for the literals
// of a query's text (parser.Literals, the simple-protocol template fast
// path): each parameter is evaluated as the literal it replaced, with the
// literal's kind, so routing is exactly what the full parse gives.
type literalSource interface {
	Literal(n int) (parser.Value, bool)
}

// literal replaces a parameter that stands for a literal by that literal.
func literal(v parser.Value, params Params) parser.Value {
	if v.Kind != parser.ParamVal {
		return v
	}
	if ls, ok := params.(literalSource); ok {
		if lit, ok := ls.Literal(v.Param); ok {
			lit.Cast, lit.Array = v.Cast, v.Array
			return lit
		}
	}
	return v
}

// valueText returns a value's text, reading parameters; ok is false when a
// parameter is not bound.
func valueText(v parser.Value, params Params) (text string, null, ok bool) {
	if v.Kind != parser.ParamVal {
		return v.Text, v.Null, true
	}
	if params == nil {
		return "", false, false
	}
	return params.Text(v.Param)
}

// valueShards returns the shards a key value (or array of values) maps to;
// ok is false when the value cannot be evaluated.
func (r *Router) valueShards(t *Table, v parser.Value, params Params) (shardSet, bool) {
	v = literal(v, params)
	text, null, ok := valueText(v, params)
	if !ok {
		return nil, false
	}
	if v.Array {
		if null {
			return shardSet{}, true // = ANY(NULL) matches nothing
		}
		if v.Cast != "" && !strings.HasSuffix(v.Cast, "[]") {
			return nil, false
		}
		elems, ok := parseArray(text)
		if !ok {
			return nil, false
		}
		elemCast := strings.TrimSuffix(v.Cast, "[]")
		out := shardSet{}
		for _, e := range elems {
			if e.null {
				continue // NULL = x is never true
			}
			s, ok := r.valueShards(t, parser.Value{Kind: parser.StringLit, Text: e.text, Cast: elemCast}, nil)
			if !ok {
				return nil, false
			}
			out = union(out, s)
		}
		return out, true
	}
	if null {
		// `key = NULL` matches nothing; an INSERTed NULL key goes where
		// Postgres hash partitioning puts it: remainder 0.
		if t.Strategy == Hash {
			return r.singles[r.shardOfNull()], true
		}
		return nil, false
	}
	if t.Strategy == Range {
		iv, ok := timeValue(t, v, text)
		if !ok {
			return nil, false
		}
		return r.rangeShards(t, []interval{iv}), true
	}
	if t.KeyText {
		switch v.Kind {
		case parser.StringLit, parser.ParamVal:
			switch v.Cast {
			case "", "text", "varchar":
				return r.singles[r.shardOfHash(HashText(text))], true
			}
		}
		return nil, false
	}
	switch v.Cast {
	case "", "int2", "int4", "int8", "text", "varchar":
	default:
		return nil, false
	}
	switch v.Kind {
	case parser.IntLit, parser.StringLit, parser.ParamVal:
		// int8in accepts surrounding whitespace and a sign; anything else
		// it might accept (0x.., 1_000) fails here and widens the route.
		i, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
		if err != nil {
			return nil, false
		}
		return r.singles[r.shardOfHash(HashInt(i))], true
	}
	return nil, false
}

type arrayElem struct {
	text string
	null bool
}

// parseArray reads a one-dimensional array literal: {1, 2, "x y", NULL}.
// Nested arrays, explicit bounds ([1:2]={...}) and anything malformed
// return ok=false.
func parseArray(s string) ([]arrayElem, bool) {
	s = strings.TrimSpace(s)
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, false
	}
	body := s[1 : len(s)-1]
	if strings.TrimSpace(body) == "" {
		return nil, true
	}
	var out []arrayElem
	i := 0
	for {
		for i < len(body) && isArraySpace(body[i]) {
			i++
		}
		if i >= len(body) {
			return nil, false // trailing comma
		}
		var e arrayElem
		if body[i] == '"' {
			var b strings.Builder
			i++
			for {
				if i >= len(body) {
					return nil, false
				}
				c := body[i]
				if c == '\\' {
					if i+1 >= len(body) {
						return nil, false
					}
					b.WriteByte(body[i+1])
					i += 2
					continue
				}
				i++
				if c == '"' {
					break
				}
				b.WriteByte(c)
			}
			e.text = b.String()
			for i < len(body) && isArraySpace(body[i]) {
				i++
			}
		} else {
			start := i
			for i < len(body) && body[i] != ',' {
				switch body[i] {
				case '"', '{', '}', '\\':
					return nil, false
				}
				i++
			}
			e.text = strings.TrimRightFunc(body[start:i], func(r rune) bool { return r < 128 && isArraySpace(byte(r)) })
			if e.text == "" {
				return nil, false
			}
			e.null = strings.EqualFold(e.text, "null")
		}
		out = append(out, e)
		if i >= len(body) {
			return out, true
		}
		if body[i] != ',' {
			return nil, false
		}
		i++
	}
}

func isArraySpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// interval is a set of instants between lo and hi; a zero end is
// unbounded, and an open end excludes its instant.
type interval struct {
	lo, hi         time.Time
	loOpen, hiOpen bool
}

func (iv interval) unbounded() bool { return iv.lo.IsZero() && iv.hi.IsZero() }

// zoneSlack widens a time written without an offset: the session TimeZone
// decides its instant, and Postgres accepts no UTC offset of 16 hours or
// more (its limit is ±15:59:59).
const zoneSlack = 16 * time.Hour

// localSlack widens every literal compared with a date or timestamp
// (zoneless) range key: the comparison happens in the session's zone, and a
// date truncates up to a day.
const localSlack = zoneSlack + 24*time.Hour

var (
	withZone = []string{"2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07", "2006-01-02 15:04:05.999999999Z0700",
		"2006-01-02T15:04:05.999999999Z07:00", "2006-01-02T15:04:05.999999999Z07", "2006-01-02T15:04:05.999999999Z0700",
		"2006-01-02 15:04:05.999999999 Z07:00", "2006-01-02 15:04:05.999999999 Z07",
		"2006-01-02 15:04Z07:00", "2006-01-02 15:04Z07", "2006-01-02T15:04Z07:00", "2006-01-02T15:04Z07",
		"2006-01-02Z07:00", "2006-01-02Z07"}
	noZone = []string{"2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999",
		"2006-01-02 15:04", "2006-01-02T15:04", "2006-01-02"}
)

// timeValue reads a date/timestamp literal as the closed interval of
// instants it can denote in any session time zone.
func timeValue(t *Table, v parser.Value, text string) (interval, bool) {
	if v.Kind != parser.StringLit && v.Kind != parser.ParamVal {
		return interval{}, false
	}
	switch v.Cast {
	case "", "timestamptz", "timestamp", "date", "text", "varchar":
	default:
		return interval{}, false
	}
	s := strings.TrimSpace(text)
	// A date compared with a date key is that date in every time zone: an
	// untyped literal is read as a date, and date = date has no zone.
	if t.KeyDate && (v.Cast == "" || v.Cast == "date") {
		if d, err := time.ParseInLocation("2006-01-02", s, time.UTC); err == nil {
			return interval{lo: d, hi: d}, true
		}
	}
	if strings.HasSuffix(s, " UTC") || strings.HasSuffix(s, " GMT") {
		s = s[:len(s)-4] + "+00"
	}
	// A typed TIMESTAMP or DATE literal drops any offset it carries.
	if v.Cast != "timestamp" && v.Cast != "date" {
		for _, l := range withZone {
			if ts, err := time.Parse(l, s); err == nil {
				return widen(t, exact(ts, s), ts), true
			}
		}
	}
	for _, l := range noZone {
		if ts, err := time.ParseInLocation(l, s, time.UTC); err == nil {
			iv := exact(ts, s)
			iv.lo, iv.hi = iv.lo.Add(-zoneSlack), iv.hi.Add(zoneSlack)
			return widen(t, iv, ts), true
		}
	}
	return interval{}, false
}

// exact is the instant ts, or the microsecond around it when the text has
// more fractional digits than Postgres keeps (it rounds them).
func exact(ts time.Time, text string) interval {
	if dot := strings.IndexByte(text, '.'); dot >= 0 {
		n := 0
		for _, c := range text[dot+1:] {
			if c < '0' || c > '9' {
				break
			}
			n++
		}
		if n > 6 {
			lo := ts.Truncate(time.Microsecond)
			return interval{lo: lo, hi: lo.Add(time.Microsecond)}
		}
	}
	return interval{lo: ts, hi: ts}
}

// widen makes room for a zoneless (date, timestamp) key column, which
// compares in the session zone: the wall-clock reading counts too.
func widen(t *Table, iv interval, ts time.Time) interval {
	if !t.KeyLocal {
		return iv
	}
	_, off := ts.Zone()
	wall := ts.Add(time.Duration(off) * time.Second)
	lo, hi := iv.lo, iv.hi
	if wall.Before(lo) {
		lo = wall
	}
	if wall.After(hi) {
		hi = wall
	}
	return interval{lo: lo.Add(-localSlack), hi: hi.Add(localSlack)}
}

// intervals turns a predicate on a range key into the union of intervals
// it allows; a single unbounded interval means unrestricted.
func (r *Router) intervals(t *Table, p parser.Pred, params Params) []interval {
	all := []interval{{}}
	switch p.Op {
	case parser.Cmp:
		if !castOK(t, p.ColCast) {
			return all
		}
		out := []interval{}
		for _, v := range p.Values {
			if v.Array {
				s, ok := r.valueShards(t, v, params)
				if !ok {
					return all
				}
				for _, sh := range s {
					for _, rg := range r.rangesOf(t) {
						if rg.Shard == sh {
							out = append(out, interval{lo: rg.From, hi: rg.To, hiOpen: true})
						}
					}
				}
				continue
			}
			v := literal(v, params)
			text, null, ok := valueText(v, params)
			if !ok {
				return all
			}
			if null {
				continue // a comparison with NULL matches nothing
			}
			iv, ok := timeValue(t, v, text)
			if !ok {
				return all
			}
			switch p.Cmp {
			case "=":
				out = append(out, iv)
			case ">":
				out = append(out, interval{lo: iv.lo, loOpen: true})
			case ">=":
				out = append(out, interval{lo: iv.lo, loOpen: iv.loOpen})
			case "<":
				out = append(out, interval{hi: iv.hi, hiOpen: true})
			case "<=":
				out = append(out, interval{hi: iv.hi, hiOpen: iv.hiOpen})
			default:
				return all
			}
		}
		return out
	case parser.And:
		acc := all
		for _, k := range p.Kids {
			acc = intersectIntervals(acc, r.intervals(t, k, params))
		}
		return acc
	case parser.Or:
		out := []interval{}
		for _, k := range p.Kids {
			ivs := r.intervals(t, k, params)
			if len(ivs) == 1 && ivs[0].unbounded() {
				return all
			}
			out = append(out, ivs...)
		}
		return out
	}
	return all
}

func intersectIntervals(a, b []interval) []interval {
	out := []interval{}
	for _, x := range a {
		for _, y := range b {
			iv := x
			if iv.lo.IsZero() || (!y.lo.IsZero() && !y.lo.Before(iv.lo)) {
				if !iv.lo.IsZero() && y.lo.Equal(iv.lo) {
					iv.loOpen = iv.loOpen || y.loOpen
				} else {
					iv.lo, iv.loOpen = y.lo, y.loOpen
				}
			}
			if iv.hi.IsZero() || (!y.hi.IsZero() && !y.hi.After(iv.hi)) {
				if !iv.hi.IsZero() && y.hi.Equal(iv.hi) {
					iv.hiOpen = iv.hiOpen || y.hiOpen
				} else {
					iv.hi, iv.hiOpen = y.hi, y.hiOpen
				}
			}
			if !iv.lo.IsZero() && !iv.hi.IsZero() {
				if iv.lo.After(iv.hi) || (iv.lo.Equal(iv.hi) && (iv.loOpen || iv.hiOpen)) {
					continue
				}
			}
			out = append(out, iv)
		}
	}
	return out
}

// rangeShards returns the shards whose ranges overlap any interval; nil
// for an unbounded interval. An interval outside every range selects no
// shard (no row can be there).
func (r *Router) rangeShards(t *Table, ivs []interval) shardSet {
	for _, iv := range ivs {
		if iv.unbounded() {
			return nil
		}
	}
	out := shardSet{}
	for _, iv := range ivs {
		for _, rg := range r.rangesOf(t) {
			// rg is [From, To).
			below := !rg.To.IsZero() && !iv.lo.IsZero() && !iv.lo.Before(rg.To)
			above := !rg.From.IsZero() && !iv.hi.IsZero() &&
				(iv.hi.Before(rg.From) || (iv.hi.Equal(rg.From) && iv.hiOpen))
			if !below && !above {
				out = union(out, shardSet{rg.Shard})
			}
		}
	}
	return out
}

func union(a, b shardSet) shardSet {
	out := append(shardSet{}, a...)
	for _, x := range b {
		i := sort.SearchInts(out, x)
		if i == len(out) || out[i] != x {
			out = append(out, 0)
			copy(out[i+1:], out[i:])
			out[i] = x
		}
	}
	return out
}

func intersect(a, b shardSet) shardSet {
	out := shardSet{}
	for _, x := range a {
		if i := sort.SearchInts(b, x); i < len(b) && b[i] == x {
			out = append(out, x)
		}
	}
	return out
}
