package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/jackc/pgerrcode"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardproxy/shardproxy/parser"
)

// Limits bound what clients may take. Zero means no limit. Every field is
// reloadable: connection counts and idle timeouts apply at once, query
// timeouts to sessions that log in after the reload.
type Limits struct {
	// MaxClientConnections bounds client connections in total; past it a
	// login gets FATAL 53300 "sorry, too many clients already".
	MaxClientConnections int `yaml:"max_client_connections"`
	// MaxQueryBytes bounds one Query, Parse or Bind message. A larger one
	// is skipped without being buffered and answered with 54000; the
	// session stays usable.
	MaxQueryBytes int `yaml:"max_query_bytes"`
	// MaxQueryTokens bounds the lexical tokens of one Query or Parse
	// statement text, counted before the grammar parses it (the parse
	// tree, and the parse time, grow with them: a 1.3M-item IN list takes
	// seconds). A statement with more is refused with 54001, unparsed;
	// the session stays usable.
	MaxQueryTokens int `yaml:"max_query_tokens"`
	// ClientIdleTimeout closes a session idle outside a transaction that
	// long (FATAL 57P05, as Postgres's idle_session_timeout).
	ClientIdleTimeout time.Duration `yaml:"client_idle_timeout"`
	// IdleInTransactionTimeout ends a transaction left idle that long: the
	// shard transactions are rolled back and the session closed with FATAL
	// 25P03, as Postgres's idle_in_transaction_session_timeout.
	IdleInTransactionTimeout time.Duration `yaml:"idle_in_transaction_timeout"`
	// QueryTimeout cancels a request still running after that long (the
	// shards answer 57014). A user's query_timeout overrides it.
	QueryTimeout time.Duration `yaml:"query_timeout"`
}

func (l Limits) validate() error {
	if l.MaxClientConnections < 0 || l.MaxQueryBytes < 0 || l.MaxQueryTokens < 0 || l.ClientIdleTimeout < 0 ||
		l.IdleInTransactionTimeout < 0 || l.QueryTimeout < 0 {
		return errors.New("max_client_connections, max_query_bytes, max_query_tokens, client_idle_timeout, " +
			"idle_in_transaction_timeout and query_timeout must be positive (0: no limit)")
	}
	return nil
}

// The limits counted in shardproxy_limit_hits_total.
const (
	limitConnections = iota
	limitUserConnections
	limitQueryBytes
	limitIdle
	limitIdleInTx
	limitQueryTimeout
	limitTLSHandshake
	limitQueryTokens
	nLimits
)

var limitNames = [nLimits]string{"max_client_connections", "user_max_client_connections", "max_query_bytes",
	"client_idle_timeout", "idle_in_transaction_timeout", "query_timeout", "tls_handshake", "max_query_tokens"}

// limiter counts client connections, in total and per user, and the
// limits hit.
type limiter struct {
	mu     sync.Mutex
	total  int
	byUser map[string]int

	hitsVec *prometheus.CounterVec
	hits    [nLimits]prometheus.Counter
}

func newLimiter() *limiter {
	l := &limiter{byUser: map[string]int{}, hitsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shardproxy_limit_hits_total",
		Help: "Clients stopped by a limit: max_client_connections (total or user_), max_query_bytes, max_query_tokens, client_idle_timeout, " +
			"idle_in_transaction_timeout, query_timeout, or a failed TLS handshake (tls_handshake).",
	}, []string{"limit"})}
	for i, n := range limitNames {
		l.hits[i] = l.hitsVec.WithLabelValues(n)
	}
	return l
}

func (l *limiter) hit(k int) { l.hits[k].Inc() }

// admit counts a session of user, or refuses it with 53300 when the total
// or the user's bound is reached (userMax 0: no bound of its own).
func (l *limiter) admit(user string, total, userMax int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if total > 0 && l.total >= total {
		l.hits[limitConnections].Inc()
		return &pgError{code: pgerrcode.TooManyConnections, msg: "sorry, too many clients already", fatal: true,
			hint: "Raise max_client_connections or use fewer client connections."}
	}
	if userMax > 0 && l.byUser[user] >= userMax {
		l.hits[limitUserConnections].Inc()
		return &pgError{code: pgerrcode.TooManyConnections, msg: fmt.Sprintf("too many connections for role \"%s\"", user),
			fatal: true, hint: "Raise the user's max_client_connections or use fewer client connections."}
	}
	l.total++
	l.byUser[user]++
	return nil
}

func (l *limiter) leave(user string) {
	l.mu.Lock()
	l.total--
	if l.byUser[user]--; l.byUser[user] <= 0 {
		delete(l.byUser, user)
	}
	l.mu.Unlock()
}

// sessionLimits is a session's part of the limits.
type sessionLimits struct {
	admitted     bool
	queryTimeout time.Duration
	timer        *time.Timer
	armed        bool
	// gen counts arm and disarm; the timer cancels only while the
	// generation it was armed in is current.
	gen, armedGen atomic.Uint64
}

// admit counts the session against max_client_connections once its user
// is known, before authentication (no password is asked of a client that
// would be refused anyway), and resolves its query timeout.
func (s *session) admit(c *credential) error {
	lc := s.srv.live.Load()
	if err := s.srv.limits.admit(s.user, lc.cfg.Limits.MaxClientConnections, c.maxConns); err != nil {
		return err
	}
	s.lim.admitted = true
	if c.role != nil {
		s.role = c.role
	}
	s.lim.queryTimeout = lc.cfg.Limits.QueryTimeout
	if c.queryTimeout > 0 {
		s.lim.queryTimeout = c.queryTimeout
	}
	return nil
}

// leave uncounts the session (at its end).
func (s *session) leave() {
	s.disarmQuery()
	if s.lim.admitted {
		s.lim.admitted = false
		s.srv.limits.leave(s.user)
	}
}

// errTooLarge is a client message over max_query_bytes, already skipped.
type errTooLarge struct {
	typ    byte
	n, max int
	// tokens: the statement is over max_query_tokens (n is past max).
	tokens bool
}

func (e *errTooLarge) Error() string {
	if e.tokens {
		return fmt.Sprintf("statement has more than %d tokens (max_query_tokens)", e.max)
	}
	return fmt.Sprintf("message of %d bytes exceeds max_query_bytes (%d)", e.n, e.max)
}

// tooManyTokens checks the statement text of a Query or Parse message
// against max_query_tokens before anything parses it.
func tooManyTokens(typ byte, body []byte, max int) *errTooLarge {
	if typ == 'P' {
		i := bytes.IndexByte(body, 0)
		if i < 0 {
			return nil // malformed: the Parse handler says so
		}
		body = body[i+1:]
	}
	if i := bytes.IndexByte(body, 0); i >= 0 {
		body = body[:i]
	}
	// The conversion does not copy: CountTokens keeps no reference.
	if n := parser.CountTokens(unsafe.String(unsafe.SliceData(body), len(body)), max); n > max {
		return &errTooLarge{typ: typ, n: n, max: max, tokens: true}
	}
	return nil
}

// nextRequest reads the client's next message for the session loop and
// enforces the limits there: the idle timeouts while waiting for the
// client, max_query_bytes on each message, and the query timeout from a
// request's first message until the proxy waits for the client again.
// A returned error ends the session (the client was told why).
func (s *session) nextRequest() (typ byte, body, raw []byte, err error) {
	lim := &s.srv.live.Load().cfg.Limits
	s.rd.limit = lim.MaxQueryBytes
	for {
		var idle time.Duration
		if s.rd.buffered() == 0 {
			s.disarmQuery()
			if s.status == 'I' {
				idle = lim.ClientIdleTimeout
			} else {
				idle = lim.IdleInTransactionTimeout
			}
			if idle > 0 {
				s.conn.SetReadDeadline(time.Now().Add(idle))
			}
		}
		typ, body, raw, err := s.rd.next()
		if idle > 0 {
			s.conn.SetReadDeadline(time.Time{})
		}
		var tl *errTooLarge
		switch {
		case err == nil:
			if lim.MaxQueryTokens > 0 && (typ == 'Q' || typ == 'P') && !s.q.admin {
				if tl := tooManyTokens(typ, body, lim.MaxQueryTokens); tl != nil {
					s.srv.limits.hit(limitQueryTokens)
					if err := s.tooLarge(tl); err != nil {
						return 0, nil, nil, err
					}
					continue
				}
			}
			s.armQuery()
			if (typ == 'Q' || typ == 'P') && s.srv.obs.slowLog.Load().Literals {
				s.keepText(typ, body)
			}
			return typ, body, raw, nil
		case errors.As(err, &tl):
			s.srv.limits.hit(limitQueryBytes)
			if err := s.tooLarge(tl); err != nil {
				return 0, nil, nil, err
			}
			continue
		case idle > 0 && errors.Is(err, os.ErrDeadlineExceeded):
			e := &pgError{code: pgerrcode.IdleSessionTimeout, msg: "terminating connection due to idle-session timeout", fatal: true}
			k := limitIdle
			if s.status != 'I' {
				// The session's backends are closed by cleanup, never
				// pooled: their shards roll the transaction back.
				e = &pgError{code: pgerrcode.IdleInTransactionSessionTimeout,
					msg: "terminating connection due to idle-in-transaction timeout", fatal: true}
				k = limitIdleInTx
			}
			s.srv.limits.hit(k)
			s.sendError(e)
			s.flush()
			return 0, nil, nil, e
		}
		return 0, nil, nil, err
	}
}

// tooLarge answers a skipped oversized message: a Query gets the error and
// ReadyForQuery; an extended-protocol message fails its request, whose
// other messages are then skipped until Sync, as after any error.
func (s *session) tooLarge(tl *errTooLarge) error {
	err := &pgError{code: pgerrcode.ProgramLimitExceeded, msg: tl.Error(),
		hint: "Send a smaller statement (fewer VALUES rows or IN items, or COPY), or raise max_query_bytes."}
	if tl.tokens {
		err = &pgError{code: pgerrcode.StatementTooComplex, msg: tl.Error(),
			hint: "Send a smaller statement (fewer VALUES rows or IN items: COPY, or an array parameter = ANY($1)), or raise max_query_tokens."}
	}
	if s.q.start.IsZero() {
		s.q.begin()
	}
	if tl.typ == 'Q' {
		s.fail(err)
		return s.readyForQuery()
	}
	s.ext()
	return s.extFail(err)
}

// armQuery starts the query timeout at a request's first message.
func (s *session) armQuery() {
	l := &s.lim
	if l.armed || l.queryTimeout <= 0 || s.q.admin {
		return
	}
	l.armed = true
	l.armedGen.Store(l.gen.Add(1))
	if l.timer == nil {
		l.timer = time.AfterFunc(l.queryTimeout, s.queryTimedOut)
		return
	}
	l.timer.Reset(l.queryTimeout)
}

// disarmQuery stops the query timeout: the proxy waits for the client.
func (s *session) disarmQuery() {
	l := &s.lim
	if !l.armed {
		return
	}
	l.armed = false
	l.gen.Add(1)
	l.timer.Stop()
}

// queryTimedOut runs on the timer's goroutine: it cancels the shard
// queries of the request, if the request is still the one it was armed for.
func (s *session) queryTimedOut() {
	if s.lim.armedGen.Load() != s.lim.gen.Load() {
		return
	}
	s.srv.limits.hit(limitQueryTimeout)
	s.cancelRunning()
}

// keepText keeps the statement text of a Query or Parse for the log when
// log_literals is on.
func (s *session) keepText(typ byte, body []byte) {
	if typ == 'P' {
		i := bytes.IndexByte(body, 0)
		if i < 0 {
			return
		}
		body = body[i+1:]
	}
	if i := bytes.IndexByte(body, 0); i >= 0 {
		body = body[:i]
	}
	s.q.text = string(body)
}
