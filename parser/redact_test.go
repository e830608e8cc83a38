package parser

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		secret   string // must not appear in the output
	}{
		{"SELECT * FROM users WHERE email = 'a@b.c'", "SELECT * FROM users WHERE email = $1", "a@b.c"},
		{"ALTER ROLE app PASSWORD 'hunter2'", "ALTER ROLE app PASSWORD $1", "hunter2"},
		{"CREATE TABLESPACE x LOCATION 'relative'", "CREATE TABLESPACE x LOCATION $1", "relative"},
		{"COPY users FROM '/etc/passwd'", "COPY users FROM $1", "passwd"},
		{"CREATE TABLE t (a text DEFAULT 'secret', b int DEFAULT 42)", "CREATE TABLE t (a text DEFAULT $1, b int DEFAULT $2)", "secret"},
		{"SELECT $1, 'x' /* card 4111 */ FROM t WHERE a = 'y'", "SELECT $1, $2  FROM t WHERE a = $3", "4111"},
		{"SELECT e'\\x41bc', x'ff', b'01', U&'d\\0061t'", "SELECT $1, $2, $3, $4", "bc"},
		{"SELEC 'oops' FROM t", "SELEC $1 FROM t", "oops"},
		{"SELECT 1; SELECT 'two'", "SELECT $1; SELECT $2", "two"},
		{"-- the password is 'x9'\nSELECT 1", "SELECT $1", "x9"},
	} {
		got, err := Redact(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, tc.secret) {
			t.Errorf("%q: %q still holds %q", tc.in, got, tc.secret)
		}
	}
	if got, err := Redact("SELECT 'unterminated"); err == nil && strings.Contains(got, "unterminated") {
		t.Errorf("unterminated literal leaked: %q", got)
	}
}
