package proxy

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/fanout"
	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// pgError is an error the proxy itself raises with a SQLSTATE.
type pgError struct {
	code, msg, hint, detail string
	position                int32
	fatal                   bool
}

func (e *pgError) Error() string { return e.msg }

func protocolErr(format string, args ...any) error {
	return &pgError{code: pgerrcode.ProtocolViolation, msg: fmt.Sprintf(format, args...), fatal: true}
}

func refused(msg, hint string) error {
	return &pgError{code: pgerrcode.FeatureNotSupported, msg: msg, hint: hint}
}

// errorResponse translates any error into the ErrorResponse the client
// sees. This is the one place errors meet SQLSTATEs.
func errorResponse(err error) *pgproto3.ErrorResponse {
	r := &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Message: err.Error()}
	var (
		pe  *pgError
		se  *parser.SyntaxError
		un  *router.Unsupported
		sh  *shardError
		srv *pgconn.PgError
		af  errAuthFailed
	)
	switch {
	case errors.As(err, &pe):
		r.Code, r.Message, r.Hint, r.Detail, r.Position = pe.code, pe.msg, pe.hint, pe.detail, pe.position
		if pe.fatal {
			r.Severity, r.SeverityUnlocalized = "FATAL", "FATAL"
		}
	case errors.As(err, &se):
		r.Code, r.Message, r.Position = pgerrcode.SyntaxError, se.Message, int32(se.Position)
	case errors.As(err, &un):
		r.Code, r.Message, r.Hint = pgerrcode.FeatureNotSupported, un.Msg, un.Hint
	case errors.As(err, &af):
		r.Code, r.Severity, r.SeverityUnlocalized = pgerrcode.InvalidPassword, "FATAL", "FATAL"
	case errors.Is(err, errPoolTimeout):
		r.Code = pgerrcode.TooManyConnections
		r.Message = "no backend connection became free in time: " + err.Error()
		r.Hint = "Raise pool.size or pool.acquire_timeout, or lower client concurrency."
	case errors.Is(err, fanout.ErrUnsupported):
		r.Code = pgerrcode.FeatureNotSupported
		r.Hint = "Add a shard key predicate so the query runs on one shard."
	case errors.Is(err, fanout.ErrMemory):
		r.Code = pgerrcode.ProgramLimitExceeded
		r.Hint = "Raise merge_memory_mb, narrow the query, or add a shard key predicate so it runs on one shard."
	case errors.Is(err, fanout.ErrDivisionByZero):
		r.Code = pgerrcode.DivisionByZero
	case errors.As(err, new(*fanout.ErrNumericOverflow)):
		r.Code = pgerrcode.NumericValueOutOfRange
	case errors.Is(err, fanout.ErrOverflow):
		r.Code = pgerrcode.NumericValueOutOfRange
	case errors.As(err, &srv):
		// A shard refused our connection (auth, missing database...).
		r.Code, r.Detail, r.Hint = srv.Code, srv.Detail, srv.Hint
		if errors.As(err, &sh) {
			r.Message = fmt.Sprintf("shard %s: %s", sh.shard, srv.Message)
		}
	case errors.As(err, &sh):
		r.Code = pgerrcode.ConnectionFailure
	case errors.Is(err, context.Canceled):
		r.Code, r.Message = pgerrcode.QueryCanceled, "canceling statement due to user request"
	default:
		r.Code = pgerrcode.InternalError
	}
	return r
}
