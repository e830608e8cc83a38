package parser

import (
	"strconv"
	"strings"
)

// Strip replaces the constants of a simple-protocol query (numbers and
// standard string literals) by $1..$n and returns that key with the
// constants' values, as Postgres reads them. Queries that differ only in
// their constants share a key, so their analysis is shared.
//
// ok is false when the text holds anything the small lexer does not fully
// understand (dollar quotes, parameters, E” or B” strings, unterminated
// tokens); the caller then parses the query itself.
func Strip(sql string) (key string, consts []string, ok bool) {
	var b strings.Builder
	b.Grow(len(sql) + 8)
	n := len(sql)
	prevIdent := false // the previous byte continued an identifier or number
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == '$':
			return "", nil, false
		case c == '\'':
			if prevIdent {
				// E'..', B'..', X'..', U&'..' and typed literals like DATE '...'
				// keep their text: a parameter cannot stand there.
				return "", nil, false
			}
			var v strings.Builder
			j := i + 1
			for {
				if j >= n {
					return "", nil, false
				}
				if sql[j] == '\'' {
					if j+1 < n && sql[j+1] == '\'' {
						v.WriteByte('\'')
						j += 2
						continue
					}
					break
				}
				v.WriteByte(sql[j])
				j++
			}
			// Adjacent string literals separated by a newline concatenate.
			if k := skipSpace(sql, j+1); k < n && sql[k] == '\'' && strings.ContainsAny(sql[j+1:k], "\n\r") {
				return "", nil, false
			}
			consts = append(consts, v.String())
			b.WriteString(placeholder(len(consts)))
			i = j + 1
			prevIdent = false
			continue
		case c == '"':
			j := i + 1
			for {
				if j >= n {
					return "", nil, false
				}
				if sql[j] == '"' {
					if j+1 < n && sql[j+1] == '"' {
						j += 2
						continue
					}
					break
				}
				j++
			}
			b.WriteString(sql[i : j+1])
			i = j + 1
			prevIdent = true
			continue
		case c == '-' && i+1 < n && sql[i+1] == '-':
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				j = n - i
			}
			b.WriteString(sql[i : i+j])
			i += j
			continue
		case c == '/' && i+1 < n && sql[i+1] == '*':
			depth, j := 1, i+2
			for depth > 0 {
				if j+1 >= n {
					return "", nil, false
				}
				switch {
				case sql[j] == '/' && sql[j+1] == '*':
					depth++
					j += 2
				case sql[j] == '*' && sql[j+1] == '/':
					depth--
					j += 2
				default:
					j++
				}
			}
			b.WriteString(sql[i:j])
			i = j
			continue
		case !prevIdent && (isDigit(c) || (c == '.' && i+1 < n && isDigit(sql[i+1])) ||
			(c == '-' && i+1 < n && (isDigit(sql[i+1]) || sql[i+1] == '.') && unaryContext(b.String()))):
			j := i
			if c == '-' {
				j++
			}
			for j < n && isDigit(sql[j]) {
				j++
			}
			if j < n && sql[j] == '.' && !(j+1 < n && sql[j+1] == '.') {
				j++
				for j < n && isDigit(sql[j]) {
					j++
				}
			}
			if j < n && (sql[j] == 'e' || sql[j] == 'E') {
				k := j + 1
				if k < n && (sql[k] == '+' || sql[k] == '-') {
					k++
				}
				if k < n && isDigit(sql[k]) {
					for k < n && isDigit(sql[k]) {
						k++
					}
					j = k
				}
			}
			if j < n && (isIdentChar(sql[j]) || sql[j] == '.') {
				return "", nil, false // 1abc, 0x1F, 1_000, 1.2.3: leave to the parser
			}
			consts = append(consts, sql[i:j])
			b.WriteString(placeholder(len(consts)))
			i = j
			prevIdent = false
			continue
		}
		b.WriteByte(c)
		prevIdent = isIdentChar(c)
		i++
	}
	return b.String(), consts, true
}

// unaryContext reports whether a '-' after the text so far is a sign (it
// follows an operator, an opening bracket, a comma, or nothing), so that
// "= -5" strips to "= $1" with the constant -5.
func unaryContext(before string) bool {
	k := len(before) - 1
	for k >= 0 && (before[k] == ' ' || before[k] == '\t' || before[k] == '\n' || before[k] == '\r') {
		k--
	}
	if k < 0 {
		return true
	}
	return strings.IndexByte("=<>(,+*/%[", before[k]) >= 0
}

func placeholder(k int) string { return "$" + strconv.Itoa(k) }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isIdentChar(c byte) bool {
	return c == '_' || c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || isDigit(c)
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f') {
		i++
	}
	return i
}

// Template is the analysis of a stripped query: the statement parsed with
// $n in place of each constant.
type Template struct {
	Stmt *Statement
	// N is the number of constants.
	N int
}

// Literals are the constants of one query, given to the router as bind
// parameters of its template.
type Literals []string

// Text returns constant n (1-based).
func (l Literals) Text(n int) (string, bool, bool) {
	if n < 1 || n > len(l) {
		return "", false, false
	}
	return l[n-1], false, true
}
