package parser

import (
	"errors"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// ErrUnredactable means a text could not be lexed, so no part of it is
// safe to log.
var ErrUnredactable = errors.New("statement cannot be lexed: text withheld")

// Redact returns sql with every constant replaced by $n, safe for logs:
// pg_query's normalization first, then what it leaves (it keeps the
// literals of most utility statements: CREATE TABLESPACE ... LOCATION
// '...', COPY ... FROM '...', column DEFAULTs) is replaced by a pass of
// Postgres's own lexer, which also drops comments. Text that does not
// parse is lexed as it is; text that does not lex gives ErrUnredactable.
func Redact(sql string) (string, error) {
	text, err := pg.Normalize(sql)
	if err != nil {
		text = sql
	}
	scan, err := pg.Scan(text)
	if err != nil {
		return "", ErrUnredactable
	}
	next := 1
	for _, t := range scan.Tokens {
		if t.Token == pg.Token_PARAM {
			if n, err := strconv.Atoi(strings.TrimPrefix(text[t.Start:t.End], "$")); err == nil && n >= next {
				next = n + 1
			}
		}
	}
	var b strings.Builder
	b.Grow(len(text))
	last := 0
	for _, t := range scan.Tokens {
		var repl string
		switch t.Token {
		case pg.Token_SCONST, pg.Token_USCONST, pg.Token_BCONST, pg.Token_XCONST, pg.Token_ICONST, pg.Token_FCONST:
			repl = "$" + strconv.Itoa(next)
			next++
		case pg.Token_SQL_COMMENT, pg.Token_C_COMMENT:
		default:
			continue
		}
		if int(t.Start) < last || int(t.End) > len(text) {
			return "", ErrUnredactable
		}
		b.WriteString(text[last:t.Start])
		b.WriteString(repl)
		last = int(t.End)
	}
	// Whatever the lexer did not cover (an unterminated token it
	// swallowed at the end) is withheld.
	if last < len(text) {
		if end := scanEnd(scan); end > last {
			b.WriteString(text[last:end])
		}
	}
	return strings.TrimSpace(b.String()), nil
}

// scanEnd is where the last token ends.
func scanEnd(scan *pg.ScanResult) int {
	if n := len(scan.Tokens); n > 0 {
		return int(scan.Tokens[n-1].End)
	}
	return 0
}
