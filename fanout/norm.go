package fanout

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
)

// A Norm appends to dst a column value as bytes whose byte order is the type's
// Postgres order, so a row's sort key is read once, when the row arrives,
// and every later comparison is bytes.Compare: a k-way merge compares each
// head many times.
type Norm func(dst, v []byte) ([]byte, error)

// NormOf returns the Norm of a type in text (binary false) or binary
// format; ok is false for types without one (numeric...), which compare
// with their Comparator.
func NormOf(typ uint32, binaryFormat, textByteOrder bool) (Norm, bool) {
	switch typ {
	case Int2OID, Int4OID, Int8OID, OIDOID:
		if binaryFormat {
			return func(dst, v []byte) ([]byte, error) {
				var n int64
				switch len(v) {
				case 2:
					n = int64(int16(binary.BigEndian.Uint16(v)))
				case 4:
					n = int64(int32(binary.BigEndian.Uint32(v)))
					if typ == OIDOID {
						n = int64(binary.BigEndian.Uint32(v))
					}
				case 8:
					n = int64(binary.BigEndian.Uint64(v))
				default:
					return nil, fmt.Errorf("bad binary integer of %d bytes", len(v))
				}
				return appendInt(dst, n), nil
			}, true
		}
		return func(dst, v []byte) ([]byte, error) {
			n, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil {
				return nil, err
			}
			return appendInt(dst, n), nil
		}, true
	case Float4OID, Float8OID:
		if binaryFormat {
			return func(dst, v []byte) ([]byte, error) {
				switch len(v) {
				case 4:
					return appendFloat(dst, float64(math.Float32frombits(binary.BigEndian.Uint32(v)))), nil
				case 8:
					return appendFloat(dst, math.Float64frombits(binary.BigEndian.Uint64(v))), nil
				}
				return nil, fmt.Errorf("bad binary float of %d bytes", len(v))
			}, true
		}
		return func(dst, v []byte) ([]byte, error) {
			f, err := parseFloat(string(v))
			if err != nil {
				return nil, err
			}
			return appendFloat(dst, f), nil
		}, true
	case DateOID, TimestampOID, TimestamptzOID:
		if binaryFormat {
			// int32 days or int64 microseconds since 2000-01-01; the
			// infinities are the extremes of the range.
			return func(dst, v []byte) ([]byte, error) {
				switch len(v) {
				case 4:
					return appendInt(dst, int64(int32(binary.BigEndian.Uint32(v)))), nil
				case 8:
					return appendInt(dst, int64(binary.BigEndian.Uint64(v))), nil
				}
				return nil, fmt.Errorf("bad binary time of %d bytes", len(v))
			}, true
		}
		return func(dst, v []byte) ([]byte, error) {
			t, err := parseTime(string(v))
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
			}
			return appendInt(dst, t.UnixMicro()), nil
		}, true
	case BoolOID:
		if binaryFormat {
			return func(dst, v []byte) ([]byte, error) { return append(dst, v...), nil }, true
		}
		return func(dst, v []byte) ([]byte, error) { return append(dst, v...), nil }, true // 'f' < 't'
	case UUIDOID:
		// Lower-case hex text orders as the 16 bytes do.
		return func(dst, v []byte) ([]byte, error) { return append(dst, v...), nil }, true
	case TextOID, VarcharOID, NameOID:
		if !textByteOrder {
			return nil, false
		}
		return func(dst, v []byte) ([]byte, error) { return append(dst, v...), nil }, true
	case BPCharOID:
		if !textByteOrder {
			return nil, false
		}
		return func(dst, v []byte) ([]byte, error) { return append(dst, bytes.TrimRight(v, " ")...), nil }, true
	}
	return nil, false
}

// appendInt appends n big-endian with the sign bit flipped: byte order is
// numeric order.
func appendInt(dst []byte, n int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(n)^(1<<63))
}

// appendFloat orders floats as Postgres does: -Infinity < ... < -0 = 0 < ...
// < Infinity < NaN (every NaN equal).
func appendFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) {
		return binary.BigEndian.AppendUint64(dst, math.MaxUint64)
	}
	if f == 0 {
		f = 0 // -0 = 0
	}
	u := math.Float64bits(f)
	if u&(1<<63) != 0 {
		u = ^u
	} else {
		u |= 1 << 63
	}
	return binary.BigEndian.AppendUint64(dst, u)
}
