package proxy

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestPlainReply(t *testing.T) {
	rd := appendMsg(nil, &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("a"), DataTypeOID: 23, DataTypeSize: 4, Format: 0}}})
	row := appendMsg(nil, &pgproto3.DataRow{Values: [][]byte{[]byte("1")}})
	cc := appendMsg(nil, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
	er := appendMsg(nil, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "22012", Message: "division by zero"})
	no := appendMsg(nil, &pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "hi"})
	join := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	for name, c := range map[string]struct {
		b    []byte
		want bool
	}{
		"rows":      {join(rd, row, row, cc), true},
		"empty":     {nil, false},
		"error":     {join(rd, row, er), false},
		"notice":    {join(no, rd, cc), false},
		"truncated": {join(rd, row, cc)[:len(rd)+3], false},
	} {
		if got := plainReply(c.b); got != c.want {
			t.Errorf("%s: plainReply = %v, want %v", name, got, c.want)
		}
	}
	if got := string(lastTag(join(rd, row, cc))); got != "SELECT 1\x00" {
		t.Errorf("lastTag = %q", got)
	}
}
