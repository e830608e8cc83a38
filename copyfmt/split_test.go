package copyfmt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

type got struct {
	rows []string // line:key (or line:NULL)
	raw  []byte   // the rows' bytes, concatenated
	pre  string
	err  *Error
}

// run feeds data in pieces of size step (0: whole) and collects the result.
func run(f Format, data []byte, step int) got {
	s := New(f)
	var g got
	emit := func(r Row) error {
		k := string(r.Key)
		if r.KeyNull {
			k = "NULL"
		}
		g.rows = append(g.rows, fmt.Sprintf("%d:%s", r.Line, k))
		g.raw = append(g.raw, r.Raw...)
		return nil
	}
	var err error
	if step <= 0 {
		step = len(data) + 1
	}
	for i := 0; i < len(data) && err == nil; i += step {
		err = s.Write(data[i:min(i+step, len(data))], emit)
	}
	if err == nil {
		err = s.Close(emit)
	}
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			panic(err)
		}
		g.err = e
	}
	g.pre = string(s.Preamble())
	return g
}

var cols3 = []string{"id", "user_id", "name"}

func TestSplitText(t *testing.T) {
	text := Format{Kind: Text, Delimiter: '\t', Null: `\N`, Columns: cols3, Key: 1}
	csv := Format{Kind: CSV, Delimiter: ',', Quote: '"', Escape: '"', Columns: cols3, Key: 1}
	hdr := csv
	hdr.Header = true
	bs := csv
	bs.Escape = '\\'
	semi := csv
	semi.Delimiter, semi.Null = ';', "NULL"
	cases := []struct {
		name string
		f    Format
		in   string
		rows string
		raw  string // expected forwarded bytes when different from in
		err  string
	}{
		{"text", text, "1\t42\ta\n2\t7\tb\n", "1:42 2:7", "", ""},
		{"text no final newline", text, "1\t42\ta\n2\t7\tb", "1:42 2:7", "1\t42\ta\n2\t7\tb\n", ""},
		{"text crlf", text, "1\t42\ta\r\n2\t7\tb", "1:42 2:7", "1\t42\ta\r\n2\t7\tb\r\n", ""},
		{"text null key", text, "1\t\\N\ta\n", "1:NULL", "", ""},
		{"text escapes", text, "1\t4\\062\ta\\\tb\n2\t\\x37\\n\tc\\\nd\n", "1:42 2:7\n", "", ""},
		{"text end marker", text, "1\t42\ta\n\\.\nignored\n", "1:42", "1\t42\ta\n", ""},
		{"text end marker mid line", text, "1\t42\ta\n2\t7\tb\\.\n", "1:42 2:7", "1\t42\ta\n2\t7\tb\n", ""},
		{"text corrupt marker", text, "1\t42\ta\n\\.x\n", "1:42", "1\t42\ta\n", "end-of-copy marker corrupt@2"},
		{"text extra", text, "1\t42\ta\n1\t2\t3\t4\n", "1:42", "1\t42\ta\n", "extra data after last expected column@2"},
		{"text missing", text, "1\t42\n", "", "-", `missing data for column "name"@1`},
		{"text bare cr", text, "1\t42\ta\rb\n", "", "-", "literal carriage return found in data@1"},
		{"text empty line", text, "\n", "", "-", `missing data for column "user_id"@1`},
		{"csv", csv, "1,42,a\n2,7,b\n", "1:42 2:7", "", ""},
		{"csv quoted newline", csv, "1,42,\"a\nb,c\"\n2,\"7\",\"x\"\"y\"\n", "1:42 2:7", "", ""},
		{"csv quoted key", csv, "1,\"4\"\"2\",a\n", `1:4"2`, "", ""},
		{"csv null", csv, "1,,a\n2,\"\",b\n", "1:NULL 2:", "", ""},
		{"csv header", hdr, "id,user_id,name\n1,42,a\n", "2:42", "1,42,a\n", ""},
		{"csv backslash escape", bs, "1,\"4\\\"2\",\"a\\\\\"\n", `1:4"2`, "", ""},
		{"csv delimiter and null", semi, "1;NULL;a,b\n2;\"NULL\";x\n", "1:NULL 2:NULL", "", ""},
		{"csv end marker", csv, "1,42,a\n\\.\n", "1:42", "1,42,a\n", ""},
		{"csv quoted backslash-dot is data", csv, "1,42,\"x\n\\.\n\"\n", "1:42", "", ""},
		{"csv unterminated", csv, "1,42,\"a\n", "", "-", "unterminated CSV quoted field@1"},
		{"csv bare cr", csv, "1,42,a\rb\n", "", "-", "unquoted carriage return found in data@1"},
		{"csv quoted cr", csv, "1,42,\"a\rb\"\r\n", "1:42", "", ""},
		{"csv extra", csv, "1,42,a,b\n", "", "-", "extra data after last expected column@1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "csv null" {
				// a quoted empty string is not NULL; FORCE_NULL makes it NULL
				f := c.f
				f.KeyForceNull = true
				if g := run(f, []byte(c.in), 0); strings.Join(g.rows, " ") != "1:NULL 2:NULL" {
					t.Errorf("FORCE_NULL: %v", g.rows)
				}
				f.KeyForceNull, f.KeyForceNotNull = false, true
				if g := run(f, []byte(c.in), 0); strings.Join(g.rows, " ") != "1: 2:" {
					t.Errorf("FORCE_NOT_NULL: %v", g.rows)
				}
			}
			for _, step := range []int{0, 1, 2, 3, 7} {
				g := run(c.f, []byte(c.in), step)
				wantRows := c.rows
				if r := strings.Join(g.rows, " "); r != wantRows {
					t.Errorf("step %d: rows %q, want %q", step, r, wantRows)
				}
				errStr := ""
				if g.err != nil {
					errStr = fmt.Sprintf("%s@%d", g.err.Msg, g.err.Line)
				}
				if errStr != c.err {
					t.Errorf("step %d: error %q, want %q", step, errStr, c.err)
				}
				want := c.raw
				switch want {
				case "":
					want = c.in
				case "-":
					want = ""
				}
				if c.err == "" && string(g.raw) != want {
					t.Errorf("step %d: forwarded %q, want %q", step, g.raw, want)
				}
			}
		})
	}
}

// binRow encodes one binary tuple; nil is NULL.
func binRow(fields ...[]byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(fields)))
	for _, f := range fields {
		if f == nil {
			b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

func binHeader() []byte {
	return append(append([]byte(nil), binarySignature...), 0, 0, 0, 0, 0, 0, 0, 0)
}

func TestSplitBinary(t *testing.T) {
	f := Format{Kind: Binary, Columns: cols3, Key: 1}
	big := bytes.Repeat([]byte("x"), 3<<20)
	r1 := binRow([]byte("1"), []byte("42"), big)
	r2 := binRow([]byte("2"), nil, []byte("b"))
	in := append(append(append(binHeader(), r1...), r2...), 0xff, 0xff)
	for _, step := range []int{0, 1, 5, 65536} {
		if step == 1 {
			continue // 3 MB byte by byte: covered by the small case below
		}
		g := run(f, in, step)
		if g.err != nil || strings.Join(g.rows, " ") != "1:42 2:NULL" || g.pre != string(binHeader()) ||
			!bytes.Equal(g.raw, append(append([]byte(nil), r1...), r2...)) {
			t.Errorf("step %d: rows %v err %v pre %q", step, g.rows, g.err, g.pre)
		}
	}
	small := append(append(binHeader(), r2...), 0xff, 0xff)
	if g := run(f, small, 1); g.err != nil || strings.Join(g.rows, " ") != "1:NULL" {
		t.Errorf("byte by byte: %v %v", g.rows, g.err)
	}
	errs := []struct {
		name string
		in   []byte
		want string
	}{
		{"signature", []byte("PGCOPY\nxxxxxxxxxxxxxxxx"), "COPY file signature not recognized"},
		{"empty", nil, "COPY file signature not recognized"},
		{"field count", append(binHeader(), binRow([]byte("1"))...), "row field count is 1, expected 3"},
		{"truncated", append(binHeader(), r2[:5]...), "unexpected EOF in COPY data"},
		{"after trailer", append(append(binHeader(), 0xff, 0xff), r2...), "received copy data after EOF marker"},
	}
	for _, c := range errs {
		if g := run(f, c.in, 0); g.err == nil || g.err.Msg != c.want {
			t.Errorf("%s: got %v, want %q", c.name, g.err, c.want)
		}
	}
}

// FuzzSplit checks that where the stream is cut into messages never
// changes what comes out: the same rows, keys, errors and bytes.
func FuzzSplit(f *testing.F) {
	f.Add([]byte("1,42,\"a\nb\"\n2,7,x\n"), uint8(1), uint8(3))
	f.Add([]byte("1\t4\\\t2\tb\\.\n"), uint8(0), uint8(2))
	f.Add(append(append(binHeader(), binRow([]byte("1"), []byte("2"), nil)...), 0xff, 0xff), uint8(2), uint8(5))
	f.Fuzz(func(t *testing.T, data []byte, kind, step uint8) {
		fm := Format{Kind: Kind(kind % 3), Delimiter: ',', Null: `\N`, Quote: '"', Escape: '"', Columns: cols3, Key: 1, Header: kind&4 != 0}
		if kind&8 != 0 {
			fm.Escape = '\\'
		}
		whole := run(fm, data, 0)
		cut := run(fm, data, int(step%16)+1)
		if strings.Join(whole.rows, " ") != strings.Join(cut.rows, " ") || !bytes.Equal(whole.raw, cut.raw) || whole.pre != cut.pre {
			t.Fatalf("cut changes rows: %v / %v", whole.rows, cut.rows)
		}
		if (whole.err == nil) != (cut.err == nil) || whole.err != nil && *whole.err != *cut.err {
			t.Fatalf("cut changes error: %v / %v", whole.err, cut.err)
		}
		if whole.err == nil && fm.Kind != Binary && !bytes.Contains(data, []byte(`\.`)) && !bytes.Contains(data, []byte("\r")) {
			// Everything read is forwarded: header, rows, and a line end
			// added to a last row without one.
			fwd := whole.pre + string(whole.raw)
			if fwd != string(data) && fwd != string(data)+"\n" {
				t.Fatalf("forwarded %q, read %q", fwd, data)
			}
		}
	})
}
