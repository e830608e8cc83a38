package fanout

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// Type OIDs of the built-in types the combiner understands.
const (
	BoolOID        = 16
	Int8OID        = 20
	Int2OID        = 21
	Int4OID        = 23
	TextOID        = 25
	OIDOID         = 26
	Float4OID      = 700
	Float8OID      = 701
	BPCharOID      = 1042
	VarcharOID     = 1043
	DateOID        = 1082
	TimestampOID   = 1114
	TimestamptzOID = 1184
	NumericOID     = 1700
	UUIDOID        = 2950
)

// ErrUnsupported marks a combination the proxy cannot compute exactly;
// the proxy answers it with SQLSTATE 0A000.
var ErrUnsupported = errors.New("unsupported")

// ErrOverflow is a result out of range for its type (SQLSTATE 22003).
var ErrOverflow = errors.New("bigint out of range")

func parseFloat(s string) (float64, error) {
	switch s {
	case "NaN":
		return math.NaN(), nil
	case "Infinity":
		return math.Inf(1), nil
	case "-Infinity":
		return math.Inf(-1), nil
	}
	return strconv.ParseFloat(s, 64)
}

// formatFloat prints like Postgres's float4out/float8out with the default
// extra_float_digits: shortest exact digits, fixed notation for decimal
// exponents in [-4, 15) (float8) or [-4, 6) (float4).
func formatFloat(f float64, typ uint32) []byte {
	switch {
	case math.IsNaN(f):
		return []byte("NaN")
	case math.IsInf(f, 1):
		return []byte("Infinity")
	case math.IsInf(f, -1):
		return []byte("-Infinity")
	}
	bits, limit := 64, 15
	if typ == Float4OID {
		bits, limit = 32, 6
	}
	if f == 0 {
		if math.Signbit(f) {
			return []byte("-0")
		}
		return []byte("0")
	}
	e := strconv.FormatFloat(f, 'e', -1, bits)
	exp, _ := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:])
	if exp >= -4 && exp < limit {
		return []byte(strconv.FormatFloat(f, 'f', -1, bits))
	}
	return []byte(e)
}

// Comparator returns the ordering of typ's text format, as Postgres orders
// the type (NaN above every number; text in byte order, which is right only
// under collation C, so textByteOrder must say the shards use it).
func Comparator(typ uint32, textByteOrder bool) (func(a, b []byte) (int, error), error) {
	switch typ {
	case Int2OID, Int4OID, Int8OID, OIDOID:
		return func(a, b []byte) (int, error) {
			x, err1 := strconv.ParseInt(string(a), 10, 64)
			y, err2 := strconv.ParseInt(string(b), 10, 64)
			if err := errors.Join(err1, err2); err != nil {
				return 0, err
			}
			return cmpOrdered(x, y), nil
		}, nil
	case NumericOID:
		return func(a, b []byte) (int, error) {
			return cmpNumeric(string(a), string(b))
		}, nil
	case Float4OID, Float8OID:
		return func(a, b []byte) (int, error) {
			x, err1 := parseFloat(string(a))
			y, err2 := parseFloat(string(b))
			if err := errors.Join(err1, err2); err != nil {
				return 0, err
			}
			// Postgres sorts NaN above every other value.
			switch {
			case math.IsNaN(x) && math.IsNaN(y):
				return 0, nil
			case math.IsNaN(x):
				return 1, nil
			case math.IsNaN(y):
				return -1, nil
			}
			return cmpOrdered(x, y), nil
		}, nil
	case BoolOID, UUIDOID:
		return func(a, b []byte) (int, error) { return bytes.Compare(a, b), nil }, nil
	case DateOID, TimestampOID, TimestamptzOID:
		return func(a, b []byte) (int, error) {
			x, err1 := parseTime(string(a))
			y, err2 := parseTime(string(b))
			if err := errors.Join(err1, err2); err != nil {
				return 0, fmt.Errorf("%w: %v", ErrUnsupported, err)
			}
			return x.Compare(y), nil
		}, nil
	case BPCharOID:
		if !textByteOrder {
			return nil, fmt.Errorf("%w: min/max over text needs the shards' collation to be C", ErrUnsupported)
		}
		// char(n) compares without its trailing spaces.
		return func(a, b []byte) (int, error) {
			return bytes.Compare(bytes.TrimRight(a, " "), bytes.TrimRight(b, " ")), nil
		}, nil
	case TextOID, VarcharOID:
		if !textByteOrder {
			return nil, fmt.Errorf("%w: min/max over text needs the shards' collation to be C", ErrUnsupported)
		}
		return func(a, b []byte) (int, error) { return bytes.Compare(a, b), nil }, nil
	}
	return nil, fmt.Errorf("%w: min/max over type %d", ErrUnsupported, typ)
}

func cmpOrdered[T int64 | float64](x, y T) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func cmpNumeric(a, b string) (int, error) {
	rank := func(s string) (int, *big.Rat, error) {
		switch s {
		case "NaN":
			return 2, nil, nil
		case "Infinity":
			return 1, nil, nil
		case "-Infinity":
			return -1, nil, nil
		}
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			return 0, nil, fmt.Errorf("bad numeric %q", s)
		}
		return 0, r, nil
	}
	ra, x, err := rank(a)
	if err != nil {
		return 0, err
	}
	rb, y, err := rank(b)
	if err != nil {
		return 0, err
	}
	if ra != rb || ra != 0 {
		return cmpOrdered(int64(ra), int64(rb)), nil
	}
	return x.Cmp(y), nil
}

// parseTime reads ISO DateStyle output (the proxy's backends use ISO).
func parseTime(s string) (time.Time, error) {
	for _, l := range []string{"2006-01-02 15:04:05.999999Z07", "2006-01-02 15:04:05.999999Z07:00",
		"2006-01-02 15:04:05.999999Z07:00:00", "2006-01-02 15:04:05.999999", "2006-01-02"} {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("cannot order time value %q (infinity, BC dates or a non-ISO DateStyle)", s)
}

// SumTags combines the CommandComplete tags of one statement run on several
// shards: row counts are added (SELECT n, INSERT 0 n, UPDATE n, DELETE n,
// MERGE n, COPY n); other tags (CREATE TABLE...) are the same everywhere.
func SumTags(tags []string) string {
	if len(tags) == 0 {
		return ""
	}
	first := tags[0]
	i := strings.LastIndexByte(first, ' ')
	if i < 0 {
		return first
	}
	prefix := first[:i+1]
	switch {
	case strings.HasPrefix(first, "SELECT "), strings.HasPrefix(first, "INSERT "), strings.HasPrefix(first, "UPDATE "),
		strings.HasPrefix(first, "DELETE "), strings.HasPrefix(first, "MERGE "), strings.HasPrefix(first, "COPY "),
		strings.HasPrefix(first, "FETCH "), strings.HasPrefix(first, "MOVE "):
	default:
		return first
	}
	var total int64
	for _, t := range tags {
		j := strings.LastIndexByte(t, ' ')
		n, err := strconv.ParseInt(t[j+1:], 10, 64)
		if err != nil || t[:j+1] != prefix {
			return first
		}
		total += n
	}
	return prefix + strconv.FormatInt(total, 10)
}
