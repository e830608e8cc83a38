package parser

import (
	"strconv"
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// TestCountTokensMatchesScanner: CountTokens counts what Postgres's own
// scanner (pg_query's Scan) returns as tokens, comments aside.
func TestCountTokensMatchesScanner(t *testing.T) {
	for _, sql := range []string{
		"SELECT 1",
		"SELECT * FROM users WHERE id IN (1, 2, 3) AND name = 'o''brien'",
		`SELECT "Weird ""col""", e'it\'s', $1::int, $$dollar ' body$$, $tag$x$tag$ FROM t -- trailing`,
		"SELECT a+b, c<=d, e->>'k', f::text[], 1.5e3, .5, x[1:2] FROM t /* c /* nested */ */ WHERE g !~ 'r'",
		"INSERT INTO orders (user_id, total) VALUES (7, 12.50), (8, 3) RETURNING id;",
		"UPDATE t SET a = a || 'x' WHERE b IS NOT NULL; DELETE FROM u",
	} {
		res, err := pg.Scan(sql)
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for _, tok := range res.Tokens {
			if tok.Token != pg.Token_SQL_COMMENT && tok.Token != pg.Token_C_COMMENT {
				want++
			}
		}
		if got := CountTokens(sql, 0); got != want {
			t.Errorf("CountTokens(%q) = %d, Postgres's scanner: %d", sql, got, want)
		}
	}
}

func TestCountTokensStopsPastMax(t *testing.T) {
	sql := "SELECT * FROM t WHERE id IN (" + strings.Repeat("1,", 100000) + "1)"
	if n := CountTokens(sql, 1000); n != 1001 {
		t.Fatalf("CountTokens with max 1000: %d, want 1001", n)
	}
	if n := CountTokens(sql, 0); n != 200000+10 {
		t.Fatalf("CountTokens: %d, want %d", n, 200010)
	}
}

func BenchmarkCountTokensHugeIN(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("SELECT * FROM users WHERE id IN (")
	for i := 0; i < 1300000; i++ {
		sb.WriteString(strconv.Itoa(i))
		sb.WriteString(",")
	}
	sb.WriteString("0)")
	sql := sb.String()
	b.SetBytes(int64(len(sql)))
	for b.Loop() {
		CountTokens(sql, 0)
	}
}
