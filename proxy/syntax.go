package proxy

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/parser"
)

// Syntax errors in Postgres's words.
//
// The proxy's parser (pg_query, Postgres's grammar) rejects a statement
// without Postgres's HINT, and it reads string literals as with
// standard_conforming_strings = on whatever the session set. For the
// error the client sees, a statement the parser rejects is parsed (never
// executed: a Parse message, then Sync) by the default shard's Postgres
// with the session's settings, and that error is relayed. Should the
// shard accept what the parser rejected, the statement is refused: the
// proxy cannot route what it cannot read.

// shardParseError returns the error for sql, which the proxy's parser
// rejected with perr.
func (s *session) shardParseError(ctx context.Context, sql string, perr error) error {
	var se *parser.SyntaxError
	if !errors.As(perr, &se) {
		return perr
	}
	b, err := s.lease(ctx, s.srv.router.Topology().Default)
	if err != nil {
		return perr
	}
	defer s.release(b)
	b.wbuf = appendMsg(b.wbuf[:0], &pgproto3.Parse{Query: sql})
	b.wbuf = appendMsg(b.wbuf, &pgproto3.Sync{})
	if _, err := b.conn.Write(b.wbuf); err != nil {
		b.broken = true
		return perr
	}
	var shardErr *pgError
	for {
		typ, body, _, err := b.rd.next()
		if err != nil {
			b.broken = true
			return perr
		}
		switch typ {
		case 'E':
			if shardErr == nil {
				shardErr = backendError(body)
			}
		case 'Z':
			b.txStatus = body[0]
			if shardErr == nil || shardErr.msg == "cannot insert multiple commands into a prepared statement" {
				hint := "The proxy's parser (pg_query, a newer Postgres grammar) rejects a statement the shards' Postgres accepts; run it on a shard directly."
				if strings.Contains(sql, `\`) {
					hint = "The proxy reads statements as with standard_conforming_strings = on; write string literals with E'...' for backslash escapes."
				}
				return refused("the proxy cannot parse this statement: "+se.Message, hint)
			}
			return shardErr
		}
	}
}
