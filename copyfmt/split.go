package copyfmt

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Kind is a COPY format.
type Kind uint8

const (
	Text Kind = iota
	CSV
	Binary
)

// Format is what the splitter needs to know about a COPY FROM.
type Format struct {
	Kind      Kind
	Delimiter byte   // text and CSV
	Null      string // text and CSV: the NULL marker
	Quote     byte   // CSV
	Escape    byte   // CSV
	Header    bool   // text and CSV: the first line is a header
	// Columns are the names of the columns each row holds, in order.
	Columns []string
	// Key is the index in Columns of the column whose value is reported.
	Key int
	// KeyForceNull and KeyForceNotNull apply CSV's FORCE_NULL and
	// FORCE_NOT_NULL to the key column.
	KeyForceNull, KeyForceNotNull bool
}

// Row is one data row. Raw is the row's bytes as they must be forwarded
// (terminator included); Raw and Key are valid until the emit callback
// returns.
type Row struct {
	Raw []byte
	// Line is the row's line number as Postgres counts it in a CONTEXT
	// (the header is line 1 when there is one).
	Line int64
	// Key is the key column's value: decoded text for text and CSV, the
	// field's bytes for binary. KeyNull is true for NULL.
	Key     []byte
	KeyNull bool
}

// Error is a data error, with the SQLSTATE Postgres raises for it and the
// line it is on.
type Error struct {
	Code, Msg, Hint string
	Line            int64
	// Column names the column the error is about, if any; Value is the
	// offending value (the raw line when no column is named).
	Column, Value string
}

func (e *Error) Error() string { return e.Msg }

const (
	badCopyFormat = "22P04"
	eofMarker     = -1
)

var binarySignature = []byte("PGCOPY\n\xff\r\n\x00")

// Splitter cuts a COPY FROM data stream into rows. It is not safe for
// concurrent use. Memory: it holds at most one row (the one that spans the
// messages seen so far) and the header.
type Splitter struct {
	f       Format
	pending []byte // the start of the row being read
	line    int64
	done    bool // the end-of-copy marker (or binary trailer) was read
	pre     []byte
	header  bool // a header line is still to come
	crlf    bool // the first line ended in \r\n

	// text and CSV scanning state
	field, fieldStart int
	keyStart, keyEnd  int
	esc, cr           bool
	inQuote, lastEsc  bool
	maybeMark         bool
	mark, markAt      int
	crAt              int
	escapec           int // -1 when it is the quote character

	key []byte // decoded key, reused
}

// New returns a splitter for f.
func New(f Format) *Splitter {
	s := &Splitter{f: f, header: f.Header && f.Kind != Binary, escapec: int(f.Escape)}
	if f.Escape == f.Quote {
		s.escapec = -1
	}
	s.resetRow()
	return s
}

// Preamble returns what every shard must receive before its first row: the
// header line (HEADER), or the binary header. It is nil until read.
func (s *Splitter) Preamble() []byte { return s.pre }

// Done reports whether the end of the data (\. or the binary trailer) was read.
func (s *Splitter) Done() bool { return s.done }

// Lines returns the number of lines read so far.
func (s *Splitter) Lines() int64 { return s.line }

func (s *Splitter) resetRow() {
	s.field, s.fieldStart = 0, 0
	s.keyStart, s.keyEnd = -1, -1
	s.esc, s.cr, s.inQuote, s.lastEsc, s.maybeMark = false, false, false, false, false
	s.mark = 0
	s.pending = s.pending[:0]
}

// Write reads the next piece of the stream and calls emit for every row it
// completes. An error stops the COPY (a *Error for bad data, or emit's).
func (s *Splitter) Write(p []byte, emit func(Row) error) error {
	if s.done {
		if s.f.Kind == Binary && len(p) > 0 {
			return s.errf("received copy data after EOF marker")
		}
		return nil // Postgres ignores what follows \.
	}
	if s.f.Kind == Binary {
		return s.writeBinary(p, emit)
	}
	return s.writeText(p, emit)
}

// Close ends the stream (CopyDone): a last row without a line end is
// emitted; a row left open is an error.
func (s *Splitter) Close(emit func(Row) error) error {
	if s.done {
		return nil
	}
	if s.f.Kind == Binary {
		switch {
		case s.pre == nil:
			return s.errf("COPY file signature not recognized")
		case len(s.pending) > 0:
			return s.errf("unexpected EOF in COPY data")
		}
		return nil
	}
	if len(s.pending) == 0 {
		return nil
	}
	if s.inQuote {
		s.line++
		return s.errf("unterminated CSV quoted field")
	}
	off := len(s.pending)
	switch {
	case s.mark > 0:
		// \. at the very end: the data before it is the last row.
		s.done = true
		if s.markAt == 0 {
			return nil
		}
		off = s.markAt
	case s.cr:
		off = s.crAt
	}
	row := append(s.pending[:off:off], s.eol()...)
	s.pending = row[:0]
	return s.endRow(row, off, emit)
}

func (s *Splitter) eol() []byte {
	if s.crlf {
		return []byte("\r\n")
	}
	return []byte("\n")
}

func (s *Splitter) errf(format string, args ...any) *Error {
	return &Error{Code: badCopyFormat, Msg: fmt.Sprintf(format, args...), Line: s.line}
}

// writeText scans text or CSV. Rows that end inside p are emitted from p
// directly; only a row that spans messages is copied (into pending).
func (s *Splitter) writeText(p []byte, emit func(Row) error) error {
	csv := s.f.Kind == CSV
	delim, quote := s.f.Delimiter, s.f.Quote
	start := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		off := len(s.pending) + i - start
		if s.mark > 0 { // after \.: only a line end may follow
			switch {
			case c == '\n':
				s.done = true
				if s.markAt == 0 {
					return nil
				}
				row := s.take(p[start : i+1])
				row = append(row[:s.markAt:s.markAt], s.eol()...)
				return s.endRow(row, s.markAt, emit)
			case c == '\r' && s.mark == 1:
				s.mark = 2
				continue
			}
			s.line++
			return s.errf("end-of-copy marker corrupt")
		}
		if s.cr {
			if c != '\n' {
				s.line++
				if csv {
					return &Error{Code: badCopyFormat, Msg: "unquoted carriage return found in data", Line: s.line,
						Hint: "Use quoted CSV field to represent carriage return."}
				}
				return &Error{Code: badCopyFormat, Msg: "literal carriage return found in data", Line: s.line,
					Hint: `Use "\r" to represent carriage return.`}
			}
		}
		if !csv {
			if s.esc {
				s.esc = false
				if c == '.' {
					s.mark, s.markAt = 1, off-1
				}
				continue
			}
			switch c {
			case '\\':
				s.esc = true
				continue
			case delim:
				s.endField(off)
				continue
			}
		} else {
			if s.maybeMark {
				s.maybeMark = false
				if c == '.' {
					s.mark, s.markAt = 1, 0
					continue
				}
			}
			if off == 0 && c == '\\' {
				s.maybeMark = true
			}
			if s.inQuote && int(c) == s.escapec {
				s.lastEsc = !s.lastEsc
			}
			if c == quote && !s.lastEsc {
				s.inQuote = !s.inQuote
			}
			if int(c) != s.escapec {
				s.lastEsc = false
			}
			if s.inQuote {
				continue
			}
			if c == delim {
				s.endField(off)
				continue
			}
		}
		switch c {
		case '\r':
			s.cr, s.crAt = true, off
		case '\n':
			end := off
			if s.cr {
				end = s.crAt
			}
			if s.line == 0 {
				s.crlf = s.cr
			}
			row := s.take(p[start : i+1])
			start = i + 1
			if err := s.endRow(row, end, emit); err != nil {
				return err
			}
		}
	}
	s.pending = append(s.pending, p[start:]...)
	return nil
}

// take returns the current row: pending plus part, without copying when
// nothing is pending.
func (s *Splitter) take(part []byte) []byte {
	if len(s.pending) == 0 {
		return part
	}
	s.pending = append(s.pending, part...)
	return s.pending
}

func (s *Splitter) endField(off int) {
	if s.field == s.f.Key {
		s.keyStart, s.keyEnd = s.fieldStart, off
	}
	s.field++
	s.fieldStart = off + 1
}

// endRow checks a complete text or CSV row whose content ends at end and
// emits it.
func (s *Splitter) endRow(row []byte, end int, emit func(Row) error) error {
	s.endField(end)
	s.line++
	fields, ks, ke := s.field, s.keyStart, s.keyEnd
	s.resetRow()
	if s.header {
		s.header = false
		s.pre = append([]byte(nil), row...)
		return nil
	}
	content := row[:end]
	switch n := len(s.f.Columns); {
	case fields > n:
		return &Error{Code: badCopyFormat, Msg: "extra data after last expected column", Line: s.line, Value: string(content)}
	case fields < n:
		return &Error{Code: badCopyFormat, Msg: fmt.Sprintf("missing data for column \"%s\"", s.f.Columns[fields]),
			Line: s.line, Value: string(content)}
	}
	r := Row{Raw: row, Line: s.line}
	raw := content[ks:ke]
	if s.f.Kind == CSV {
		r.Key, r.KeyNull = s.csvField(raw)
	} else if string(raw) == s.f.Null {
		r.KeyNull = true
	} else {
		r.Key = s.unescape(raw)
	}
	return emit(r)
}

// unescape decodes a text-format field (backslash escapes) as Postgres's
// CopyReadAttributesText does.
func (s *Splitter) unescape(raw []byte) []byte {
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	out := s.key[:0]
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' || i+1 == len(raw) {
			out = append(out, c)
			continue
		}
		i++
		c = raw[i]
		switch c {
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v := int(c - '0')
			for n := 0; n < 2 && i+1 < len(raw) && raw[i+1] >= '0' && raw[i+1] <= '7'; n++ {
				i++
				v = v<<3 + int(raw[i]-'0')
			}
			out = append(out, byte(v))
		case 'x':
			if i+1 < len(raw) && isHex(raw[i+1]) {
				i++
				v := hexVal(raw[i])
				if i+1 < len(raw) && isHex(raw[i+1]) {
					i++
					v = v<<4 + hexVal(raw[i])
				}
				out = append(out, byte(v))
			} else {
				out = append(out, 'x')
			}
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'v':
			out = append(out, '\v')
		default:
			out = append(out, c)
		}
	}
	s.key = out
	return out
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexVal(c byte) int {
	switch {
	case c >= 'a':
		return int(c-'a') + 10
	case c >= 'A':
		return int(c-'A') + 10
	}
	return int(c - '0')
}

// csvField decodes a CSV field as CopyReadAttributesCSV does: quotes may
// open anywhere in the field; an unquoted field equal to the NULL marker is
// NULL (unless FORCE_NOT_NULL), a quoted one only with FORCE_NULL.
func (s *Splitter) csvField(raw []byte) ([]byte, bool) {
	quote := s.f.Quote
	if bytes.IndexByte(raw, quote) < 0 {
		if string(raw) == s.f.Null && !s.f.KeyForceNotNull {
			return nil, true
		}
		return raw, false
	}
	out := s.key[:0]
	in := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case in && int(c) == s.escapec && i+1 < len(raw) && (raw[i+1] == quote || int(raw[i+1]) == s.escapec):
			i++
			out = append(out, raw[i])
		case c == quote:
			if in && s.escapec < 0 && i+1 < len(raw) && raw[i+1] == quote {
				i++
				out = append(out, quote)
				continue
			}
			in = !in
		default:
			out = append(out, c)
		}
	}
	s.key = out
	if s.f.KeyForceNull && string(out) == s.f.Null {
		return nil, true
	}
	return out, false
}

// writeBinary reads the binary format: the header once, then tuples
// (int16 field count, then int32 length and bytes per field; -1 is NULL),
// then the trailer (a field count of -1).
func (s *Splitter) writeBinary(p []byte, emit func(Row) error) error {
	buf := p
	if len(s.pending) > 0 {
		s.pending = append(s.pending, p...)
		buf = s.pending
	}
	for len(buf) > 0 && !s.done {
		if s.pre == nil {
			if len(buf) < 19 {
				break
			}
			if !bytes.Equal(buf[:11], binarySignature) {
				return s.errf("COPY file signature not recognized")
			}
			flags := binary.BigEndian.Uint32(buf[11:15])
			if flags&(1<<16) != 0 {
				return s.errf("invalid COPY file header (WITH OIDS)")
			}
			if flags&0xffff0000&^(1<<16) != 0 {
				return s.errf("unrecognized critical flags in COPY file header")
			}
			ext := int(binary.BigEndian.Uint32(buf[15:19]))
			if ext < 0 || ext > 1<<20 {
				return s.errf("invalid COPY file header (missing length)")
			}
			if len(buf) < 19+ext {
				break
			}
			s.pre = append([]byte(nil), buf[:19+ext]...)
			buf = buf[19+ext:]
			continue
		}
		n, key, keyNull, err := s.tuple(buf)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		if n == 2 && int16(binary.BigEndian.Uint16(buf)) == eofMarker {
			s.done = true
			if len(buf) > 2 {
				return s.errf("received copy data after EOF marker")
			}
			buf = buf[2:]
			break
		}
		s.line++
		if err := emit(Row{Raw: buf[:n], Line: s.line, Key: key, KeyNull: keyNull}); err != nil {
			return err
		}
		buf = buf[n:]
	}
	// Keep the unread rest (an incomplete header or tuple); a row that
	// grows over many messages is appended to, never copied again.
	switch {
	case len(s.pending) == 0:
		s.pending = append(s.pending, buf...)
	case len(buf) != len(s.pending):
		s.pending = append(s.pending[:0], buf...)
	}
	return nil
}

// tuple measures the tuple at the start of buf: its length (0 when buf
// holds only part of it) and its key field.
func (s *Splitter) tuple(buf []byte) (n int, key []byte, keyNull bool, err error) {
	if len(buf) < 2 {
		return 0, nil, false, nil
	}
	count := int(int16(binary.BigEndian.Uint16(buf)))
	if count == eofMarker {
		return 2, nil, false, nil
	}
	if count != len(s.f.Columns) {
		return 0, nil, false, &Error{Code: badCopyFormat, Line: s.line + 1,
			Msg: fmt.Sprintf("row field count is %d, expected %d", count, len(s.f.Columns))}
	}
	pos := 2
	for i := 0; i < count; i++ {
		if len(buf) < pos+4 {
			return 0, nil, false, nil
		}
		l := int(int32(binary.BigEndian.Uint32(buf[pos:])))
		pos += 4
		if l < -1 {
			return 0, nil, false, &Error{Code: badCopyFormat, Msg: "invalid field size", Line: s.line + 1}
		}
		if l == -1 {
			if i == s.f.Key {
				keyNull = true
			}
			continue
		}
		if len(buf) < pos+l {
			return 0, nil, false, nil
		}
		if i == s.f.Key {
			key = buf[pos : pos+l]
		}
		pos += l
	}
	return pos, key, keyNull, nil
}
