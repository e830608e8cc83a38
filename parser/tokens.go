package parser

// CountTokens counts the lexical tokens of sql as Postgres's scanner
// splits them (keywords and identifiers, constants, operators,
// punctuation, parameters; a string, quoted identifier or dollar-quoted
// body is one token; comments and whitespace none), stopping as soon as
// the count passes max (max <= 0: no stop). It reads sql once and
// allocates nothing, so it bounds the work of a statement before the
// grammar parses it: the size of the parse tree grows with the tokens.
func CountTokens(sql string, max int) int {
	n := 0
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
			continue
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
			continue
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			i = skipBlockComment(sql, i)
			continue
		case c == '\'':
			i = skipQuoted(sql, i, '\'', false)
		case c == '"':
			i = skipQuoted(sql, i, '"', false)
		case (c == 'e' || c == 'E') && i+1 < len(sql) && sql[i+1] == '\'':
			i = skipQuoted(sql, i+1, '\'', true)
		case c == '$':
			i = skipDollar(sql, i)
		case isIdentStart(c):
			for i++; i < len(sql) && isIdentCont(sql[i]); i++ {
			}
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(sql) && sql[i+1] >= '0' && sql[i+1] <= '9':
			for i++; i < len(sql) && (isIdentCont(sql[i]) || sql[i] == '.'); i++ {
			}
		case isOpChar(c):
			for i++; i < len(sql) && isOpChar(sql[i]) && !(sql[i] == '-' && i+1 < len(sql) && sql[i+1] == '-') &&
				!(sql[i] == '/' && i+1 < len(sql) && sql[i+1] == '*'); i++ {
			}
		case c == ':' && i+1 < len(sql) && (sql[i+1] == ':' || sql[i+1] == '='):
			i += 2 // :: and :=
		default: // ( ) , ; [ ] : and anything else
			i++
		}
		n++
		if max > 0 && n > max {
			return n
		}
	}
	return n
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentCont(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' || c == '$' }

func isOpChar(c byte) bool {
	switch c {
	case '+', '-', '*', '/', '<', '>', '=', '~', '!', '@', '#', '%', '^', '&', '|', '`', '?':
		return true
	}
	return false
}

// skipBlockComment returns the index after the (nested) comment at i.
func skipBlockComment(sql string, i int) int {
	depth := 0
	for i < len(sql) {
		switch {
		case sql[i] == '/' && i+1 < len(sql) && sql[i+1] == '*':
			depth++
			i += 2
		case sql[i] == '*' && i+1 < len(sql) && sql[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return i
}

// skipQuoted returns the index after the quoted token at i (q doubled
// inside it stands for itself; with backslash, \ escapes the next byte).
func skipQuoted(sql string, i int, q byte, backslash bool) int {
	for i++; i < len(sql); i++ {
		switch sql[i] {
		case '\\':
			if backslash {
				i++
			}
		case q:
			if i+1 < len(sql) && sql[i+1] == q {
				i++
				continue
			}
			return i + 1
		}
	}
	return i
}

// skipDollar returns the index after a $n parameter or a $tag$...$tag$
// string at i.
func skipDollar(sql string, i int) int {
	j := i + 1
	if j < len(sql) && sql[j] >= '0' && sql[j] <= '9' {
		for j < len(sql) && sql[j] >= '0' && sql[j] <= '9' {
			j++
		}
		return j
	}
	for j < len(sql) && isIdentCont(sql[j]) && sql[j] != '$' {
		j++
	}
	if j >= len(sql) || sql[j] != '$' {
		return i + 1
	}
	tag := sql[i : j+1]
	for k := j + 1; k+len(tag) <= len(sql); k++ {
		if sql[k] == '$' && sql[k:k+len(tag)] == tag {
			return k + len(tag)
		}
	}
	return len(sql)
}
