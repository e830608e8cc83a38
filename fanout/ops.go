package fanout

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// A Source is a stream of rows, each a DataRow message body (a column
// count, then each column's length and bytes; length -1 is NULL). The row
// Next returns is valid until the next call; nil means the end.
//
// Operators are Sources over Sources: Concat, MergeSort, Limit, Strip,
// Group, Filter, Distinct, Sort. Each reads its input only as far as its
// answer needs, and buffers only what it must (Group, Distinct and Sort
// hold their rows under a Budget).
type Source interface {
	Next() ([]byte, error)
}

// Rows is a Source over rows held in memory (tests, and operators' output).
type Rows struct {
	rows [][]byte
	i    int
}

// NewRows returns a Source over bodies.
func NewRows(bodies [][]byte) *Rows { return &Rows{rows: bodies} }

func (r *Rows) Next() ([]byte, error) {
	if r.i >= len(r.rows) {
		return nil, nil
	}
	r.i++
	return r.rows[r.i-1], nil
}

// EncodeRow builds a DataRow body from column values (nil is NULL).
func EncodeRow(dst []byte, vals [][]byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			dst = binary.BigEndian.AppendUint32(dst, 0xFFFFFFFF)
			continue
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	return dst
}

// DecodeRow splits a DataRow body into its column values, which alias
// body (nil is NULL). dst is reused when large enough.
func DecodeRow(dst [][]byte, body []byte) ([][]byte, error) {
	if len(body) < 2 {
		return nil, errors.New("short DataRow")
	}
	n := int(binary.BigEndian.Uint16(body))
	dst = dst[:0]
	p := 2
	for c := 0; c < n; c++ {
		if p+4 > len(body) {
			return nil, errors.New("short DataRow")
		}
		l := int(int32(binary.BigEndian.Uint32(body[p:])))
		p += 4
		if l < 0 {
			dst = append(dst, nil)
			continue
		}
		if p+l > len(body) {
			return nil, errors.New("short DataRow")
		}
		dst = append(dst, body[p:p+l:p+l])
		p += l
	}
	return dst, nil
}

// Column returns column i of a DataRow body; null for SQL NULL (or a
// column out of range).
func Column(body []byte, i int) (val []byte, null bool) {
	if len(body) < 2 {
		return nil, true
	}
	n := int(binary.BigEndian.Uint16(body))
	p := 2
	for c := 0; c < n && p+4 <= len(body); c++ {
		l := int(int32(binary.BigEndian.Uint32(body[p:])))
		p += 4
		if c == i {
			if l < 0 || p+l > len(body) {
				return nil, true
			}
			return body[p : p+l], false
		}
		if l > 0 {
			p += l
		}
	}
	return nil, true
}

// Concat returns the rows of each source in turn.
func Concat(srcs ...Source) Source { return &concat{srcs: srcs} }

type concat struct {
	srcs []Source
	i    int
}

func (c *concat) Next() ([]byte, error) {
	for c.i < len(c.srcs) {
		row, err := c.srcs[c.i].Next()
		if err != nil || row != nil {
			return row, err
		}
		c.i++
	}
	return nil, nil
}

// MergeSort merges sources that are each sorted by ord into one sorted
// stream (a k-way merge holding one row per source). Ties go to the
// earlier source.
func MergeSort(ord *Order, srcs ...Source) Source {
	return &mergeSort{ord: ord, srcs: srcs, heads: make([][]byte, len(srcs)), keys: make([]RowKey, len(srcs)), last: -1}
}

type mergeSort struct {
	ord     *Order
	srcs    []Source
	heads   [][]byte
	keys    []RowKey // each head's sort key, read once
	started bool
	last    int // the source whose head was returned last: advance it first
}

func (m *mergeSort) Next() ([]byte, error) {
	if !m.started {
		m.started = true
		for i, s := range m.srcs {
			row, err := s.Next()
			if err != nil {
				return nil, err
			}
			m.heads[i] = row
			if row != nil {
				m.ord.Key(row, &m.keys[i])
			}
		}
	} else if m.last >= 0 {
		row, err := m.srcs[m.last].Next()
		if err != nil {
			return nil, err
		}
		m.heads[m.last] = row
		if row != nil {
			m.ord.Key(row, &m.keys[m.last])
		}
	}
	best := -1
	for i, h := range m.heads {
		if h != nil && (best < 0 || m.ord.LessKey(&m.keys[i], &m.keys[best])) {
			best = i
		}
	}
	if err := m.ord.Err(); err != nil {
		return nil, err
	}
	m.last = best
	if best < 0 {
		return nil, nil
	}
	return m.heads[best], nil
}

// Limit skips offset rows, then returns at most limit rows (all when
// limit < 0). Once satisfied it stops reading its input.
func Limit(src Source, offset, limit int64) Source {
	return &limitOp{src: src, offset: offset, limit: limit}
}

type limitOp struct {
	src           Source
	offset, limit int64
	n             int64
}

func (l *limitOp) Next() ([]byte, error) {
	for l.offset > 0 {
		row, err := l.src.Next()
		if err != nil || row == nil {
			return nil, err
		}
		l.offset--
	}
	if l.limit >= 0 && l.n >= l.limit {
		return nil, nil
	}
	row, err := l.src.Next()
	if row != nil {
		l.n++
	}
	return row, err
}

// Strip keeps the first n columns of each row (dropping hidden columns
// added for ORDER BY or HAVING).
func Strip(src Source, n int) Source { return &strip{src: src, n: n} }

type strip struct {
	src Source
	n   int
	buf []byte
}

func (s *strip) Next() ([]byte, error) {
	row, err := s.src.Next()
	if err != nil || row == nil {
		return row, err
	}
	if len(row) < 2 || int(binary.BigEndian.Uint16(row)) <= s.n {
		return row, nil
	}
	p := 2
	for c := 0; c < s.n; c++ {
		if p+4 > len(row) {
			return nil, errors.New("short DataRow")
		}
		l := int(int32(binary.BigEndian.Uint32(row[p:])))
		p += 4
		if l > 0 {
			p += l
		}
	}
	if p > len(row) {
		return nil, errors.New("short DataRow")
	}
	s.buf = binary.BigEndian.AppendUint16(s.buf[:0], uint16(s.n))
	s.buf = append(s.buf, row[2:p]...)
	return s.buf, nil
}

// Budget bounds the memory the buffering operators of one query hold.
type Budget struct {
	Max  int64 // bytes; 0 means no limit
	used int64
}

// ErrMemory is a merge that needs more memory than its Budget (SQLSTATE
// 54000, program_limit_exceeded).
var ErrMemory = errors.New("the merge needs more memory than merge_memory_mb allows")

func (b *Budget) take(n int) error {
	if b == nil {
		return nil
	}
	b.used += int64(n)
	if b.Max > 0 && b.used > b.Max {
		return ErrMemory
	}
	return nil
}

// Used returns the bytes taken so far.
func (b *Budget) Used() int64 { return b.used }

// Order compares DataRow bodies by ORDER BY keys with each column type's
// Postgres ordering. Comparison errors (a value that cannot be read) are
// kept and returned by Err.
type Order struct {
	keys []orderKey
	err  error
}

type orderKey struct {
	col        int
	desc       bool
	nullsFirst bool
	cmp        func(a, b []byte) (int, error)
	norm       Norm
}

// OrderKey is one ORDER BY key over a row's column.
type OrderKey struct {
	Col        int
	Desc       bool
	NullsFirst bool
	// Cmp orders the column's non-null values.
	Cmp func(a, b []byte) (int, error)
	// Norm, when set, is the column's Norm: sorting operators then read
	// each row's key once (RowKey) and compare bytes.
	Norm Norm
}

// NewOrder returns the ordering by keys.
func NewOrder(keys []OrderKey) *Order {
	o := &Order{}
	for _, k := range keys {
		o.keys = append(o.keys, orderKey{k.Col, k.Desc, k.NullsFirst, k.Cmp, k.Norm})
	}
	return o
}

// RowKey is a row's sort key read once: for each key, the normalized
// value (keys with a Norm) or the raw one; null marks NULL.
type RowKey struct {
	vals  [][]byte
	nulls []bool
	buf   []byte
}

// Key reads row's sort key into k (reusing its memory).
func (o *Order) Key(row []byte, k *RowKey) {
	k.vals, k.nulls, k.buf = k.vals[:0], k.nulls[:0], k.buf[:0]
	for _, ok := range o.keys {
		v, null := Column(row, ok.col)
		if !null && ok.norm != nil {
			start := len(k.buf)
			var err error
			if k.buf, err = ok.norm(k.buf, v); err != nil && o.err == nil {
				o.err = err
			}
			v = k.buf[start:len(k.buf):len(k.buf)]
		}
		k.vals = append(k.vals, v)
		k.nulls = append(k.nulls, null)
	}
	// k.buf may have moved while growing: re-slice the normalized values.
	p := 0
	for i, ok := range o.keys {
		if !k.nulls[i] && ok.norm != nil {
			n := len(k.vals[i])
			k.vals[i] = k.buf[p : p+n : p+n]
			p += n
		}
	}
}

// LessKey is Less over keys read with Key.
func (o *Order) LessKey(a, b *RowKey) bool {
	for i, k := range o.keys {
		na, nb := a.nulls[i], b.nulls[i]
		switch {
		case na && nb:
			continue
		case na:
			return k.nullsFirst
		case nb:
			return !k.nullsFirst
		}
		var c int
		if k.norm != nil {
			c = bytes.Compare(a.vals[i], b.vals[i])
		} else {
			var err error
			if c, err = k.cmp(a.vals[i], b.vals[i]); err != nil {
				if o.err == nil {
					o.err = err
				}
				return false
			}
		}
		if c != 0 {
			return (c < 0) != k.desc
		}
	}
	return false
}

// Less reports whether row a sorts before row b (reading both keys; the
// sorting operators read each row's key once instead).
func (o *Order) Less(a, b []byte) bool {
	var ka, kb RowKey
	o.Key(a, &ka)
	o.Key(b, &kb)
	return o.LessKey(&ka, &kb)
}

// Err returns the first comparison error.
func (o *Order) Err() error { return o.err }

// Sort returns src's rows sorted by ord (stable: equal rows keep their
// input order). It reads all of src into memory under budget.
func Sort(src Source, ord *Order, budget *Budget) Source {
	return &sortOp{src: src, ord: ord, budget: budget}
}

type sortOp struct {
	src    Source
	ord    *Order
	budget *Budget
	rows   *Rows
}

func (s *sortOp) Next() ([]byte, error) {
	if s.rows == nil {
		var all [][]byte
		for {
			row, err := s.src.Next()
			if err != nil {
				return nil, err
			}
			if row == nil {
				break
			}
			if err := s.budget.take(len(row) + 24); err != nil {
				return nil, err
			}
			all = append(all, append([]byte(nil), row...))
		}
		keys := make([]RowKey, len(all))
		idx := make([]int, len(all))
		for i, row := range all {
			s.ord.Key(row, &keys[i])
			idx[i] = i
		}
		sort.SliceStable(idx, func(i, j int) bool { return s.ord.LessKey(&keys[idx[i]], &keys[idx[j]]) })
		sorted := make([][]byte, len(all))
		for i, j := range idx {
			sorted[i] = all[j]
		}
		all = sorted
		if err := s.ord.Err(); err != nil {
			return nil, err
		}
		s.rows = NewRows(all)
	}
	return s.rows.Next()
}

// Distinct drops rows whose first n columns equal those of an earlier row
// (compared as keys: see KeyOf).
func Distinct(src Source, n int, kinds []KeyKind, budget *Budget) Source {
	return &distinct{src: src, n: n, kinds: kinds, budget: budget, seen: map[string]struct{}{}}
}

type distinct struct {
	src    Source
	n      int
	kinds  []KeyKind
	budget *Budget
	seen   map[string]struct{}
	vals   [][]byte
	key    []byte
}

func (d *distinct) Next() ([]byte, error) {
	for {
		row, err := d.src.Next()
		if err != nil || row == nil {
			return row, err
		}
		if d.vals, err = DecodeRow(d.vals, row); err != nil {
			return nil, err
		}
		cols := make([]int, 0, d.n)
		for i := 0; i < d.n && i < len(d.vals); i++ {
			cols = append(cols, i)
		}
		d.key = appendKey(d.key[:0], d.vals, cols, d.kinds)
		if _, dup := d.seen[string(d.key)]; dup {
			continue
		}
		if err := d.budget.take(len(d.key) + 48); err != nil {
			return nil, err
		}
		d.seen[string(d.key)] = struct{}{}
		return row, nil
	}
}

// KeyKind says how a column's text values are made into grouping keys so
// that equal values (as Postgres's equality says) give equal keys.
type KeyKind uint8

const (
	// KeyBytes: equality is byte equality (integers, text under a
	// deterministic collation, bool, date, timestamps, uuid).
	KeyBytes KeyKind = iota
	// KeyNumeric: 1.50 = 1.5.
	KeyNumeric
	// KeyFloat: -0 = 0.
	KeyFloat
	// KeyBPChar: char(n) without its trailing spaces ('a' = 'a  ').
	KeyBPChar
	// KeyNumericBinary and KeyFloatBinary are those in binary format.
	KeyNumericBinary
	KeyFloatBinary
)

// BinaryKind returns the key kind of a column of kind k in binary format.
func (k KeyKind) BinaryKind() KeyKind {
	switch k {
	case KeyNumeric:
		return KeyNumericBinary
	case KeyFloat:
		return KeyFloatBinary
	}
	return k
}

// KeyKindOf returns the key kind of a type; ok is false for types whose
// equality the proxy cannot decide from their text (json, arrays, types
// it does not know), which are then refused as group keys.
func KeyKindOf(typ uint32) (KeyKind, bool) {
	switch typ {
	case BPCharOID:
		return KeyBPChar, true
	case BoolOID, Int2OID, Int4OID, Int8OID, OIDOID, TextOID, VarcharOID, NameOID,
		DateOID, TimestampOID, TimestamptzOID, UUIDOID, TimeOID, CharOID:
		return KeyBytes, true
	case NumericOID:
		return KeyNumeric, true
	case Float4OID, Float8OID:
		return KeyFloat, true
	}
	return 0, false
}

// More type OIDs group keys accept.
const (
	CharOID = 18
	NameOID = 19
	TimeOID = 1083
)

func appendKey(dst []byte, vals [][]byte, cols []int, kinds []KeyKind) []byte {
	for j, c := range cols {
		v := vals[c]
		if v == nil {
			dst = append(dst, 0)
			continue
		}
		kind := KeyBytes
		if j < len(kinds) {
			kind = kinds[j]
		}
		switch kind {
		case KeyNumeric:
			v = []byte(normNumeric(string(v)))
		case KeyFloat:
			if string(v) == "-0" {
				v = []byte("0")
			}
		case KeyBPChar:
			v = bytes.TrimRight(v, " ")
		case KeyNumericBinary:
			v = normNumericBinary(v)
		case KeyFloatBinary:
			// -0 = 0, and every NaN is one NaN.
			switch {
			case len(v) == 8 && binary.BigEndian.Uint64(v) == 1<<63:
				v = make([]byte, 8)
			case len(v) == 4 && binary.BigEndian.Uint32(v) == 1<<31:
				v = make([]byte, 4)
			case len(v) == 8 && math.IsNaN(math.Float64frombits(binary.BigEndian.Uint64(v))):
				v = []byte{0x7f, 0xf8, 0, 0, 0, 0, 0, 0}
			case len(v) == 4 && math.IsNaN(float64(math.Float32frombits(binary.BigEndian.Uint32(v)))):
				v = []byte{0x7f, 0xc0, 0, 0}
			}
		}
		dst = append(dst, 1)
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	return dst
}

// normNumericBinary drops the display scale and trailing zero digits of
// a binary numeric (ndigits, weight, sign, dscale, base-10000 digits).
func normNumericBinary(v []byte) []byte {
	if len(v) < 8 {
		return v
	}
	n := int(binary.BigEndian.Uint16(v))
	if len(v) < 8+2*n {
		return v
	}
	for n > 0 && binary.BigEndian.Uint16(v[8+2*(n-1):]) == 0 {
		n--
	}
	out := make([]byte, 8+2*n)
	copy(out, v[:8+2*n])
	binary.BigEndian.PutUint16(out, uint16(n))
	binary.BigEndian.PutUint16(out[6:], 0)
	if n == 0 {
		binary.BigEndian.PutUint16(out[2:], 0) // zero: any weight
		if binary.BigEndian.Uint16(out[4:]) != 0xC000 {
			binary.BigEndian.PutUint16(out[4:], 0)
		}
	}
	return out
}

// normNumeric drops trailing fraction zeros: equal numerics, equal text.
func normNumeric(s string) string {
	if i := strings.IndexByte(s, '.'); i >= 0 {
		s = strings.TrimRight(s, "0")
		s = strings.TrimSuffix(s, ".")
		if s == "-0" {
			s = "0"
		}
	}
	return s
}

// errorf wraps ErrUnsupported.
func unsupportedf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnsupported, fmt.Sprintf(format, args...))
}

var _ = strconv.Itoa
