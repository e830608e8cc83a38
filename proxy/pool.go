package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// backend is one hijacked server connection, driven with raw frames.
type backend struct {
	conn   net.Conn
	rd     *frameReader
	pid    uint32
	secret []byte
	params map[string]string
	pool   *pool
	// broken is set when the connection must not be reused.
	broken bool
	// dirty is set when session state (SET, ParameterStatus) may differ
	// from a fresh connection's; release resets it.
	dirty bool
	// applied is the settings query (a session's replay) in effect on the
	// backend, "" for none: a backend whose only state is a replay goes
	// back to the pool as is, and the next session with the same settings
	// skips its replay (sessionstate.go).
	applied string
	// resetRole: a ParameterStatus said the user changed; release resets
	// role and session authorization too.
	resetRole bool
	// discard asks for DISCARD ALL before pooling (temporary tables).
	discard bool
	// idleSince is when the backend went back to the pool.
	idleSince time.Time
	// txStatus is the last ReadyForQuery status: 'I', 'T' or 'E'.
	txStatus byte
	wbuf     []byte
	// stmts are the global statement names prepared on this connection.
	stmts map[string]bool
	// gen is the pool's generation when b was dialed: a backend of an
	// older generation (the server before a failover) is never reused.
	gen uint64
	// host and port are the server b is connected to (for cancel).
	host string
	port uint16
	// cancels are CancelRequests in flight to b (cancelwait.go).
	cancels sync.WaitGroup
}

// pool holds idle backend connections to one shard. Waiters are served in
// FIFO order; a lease never spawns a goroutine or allocates a timer unless
// the pool is exhausted.
type pool struct {
	shard   int
	name    string
	cfgp    atomic.Pointer[pgconn.Config] // the server dialed; a failover swaps it (retarget)
	size    int
	timeout time.Duration
	// gen counts retargets; backends of older generations are closed.
	gen atomic.Uint64
	// srv is the server the pool dials now, nil for a shard without
	// replicas (replicas.go); it keeps the per-server figures.
	srv atomic.Pointer[server]
	// reads marks a replica-set server's read pool (replicas.go).
	reads bool
	// replicated marks the write pool of a shard with replicas: its
	// server can be stopped or demoted in a failover at any moment.
	replicated bool
	// load is what the read balancer looks at (balance.go).
	load poolLoad
	// buffer is how long acquire waits for a down pool to come back (or
	// be retargeted) before failing (replicas.failover_buffer).
	buffer atomic.Int64

	mu      sync.Mutex
	idle    []*backend
	open    int
	waiters []chan leaseResult
	closed  bool
	// changed is closed (and replaced) when the pool comes up or is
	// retargeted: acquire's failover wait listens on it.
	changed chan struct{}
	params  map[string]string // ParameterStatus of the first connection
	// colls are the shard's columns with collations other than C (nil:
	// not known yet, treated as "some").
	colls atomic.Pointer[collations]

	// Observability (health.go, metrics.go): set while the health checker
	// holds the shard down; dial counts.
	downErr                 atomic.Pointer[shardError]
	connects, connectErrors atomic.Uint64

	// base is the default pool a backend role's pool stands in for
	// (roles.go), nil for a default pool: the role's pool follows its
	// base's health and failover retargets.
	base    *pool
	role    *backendRole
	baseGen atomic.Uint64
	// loggedIn: a role's pool has logged into its shard once (checkRole).
	loggedIn atomic.Bool
}

type leaseResult struct {
	b   *backend
	err error
}

// errPoolTimeout is returned when no backend became free in time (53300).
var errPoolTimeout = errors.New("pool exhausted")

func newPool(shard int, name, dsn string, size int, connectTimeout, acquireTimeout time.Duration) (*pool, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("shard %s: parse dsn: %w", name, err)
	}
	cfg.ConnectTimeout = connectTimeout
	p := &pool{shard: shard, name: name, size: size, timeout: acquireTimeout, changed: make(chan struct{})}
	p.cfgp.Store(cfg)
	return p, nil
}

// config is the server the pool dials now.
func (p *pool) config() *pgconn.Config { return p.cfgp.Load() }

// acquire leases a backend, dialing one if the pool is below size, else
// waiting up to the acquire timeout.
func (p *pool) acquire(ctx context.Context) (*backend, error) {
	b, err := p.get(ctx)
	if err == nil {
		r := p.root()
		r.load.busy.Add(1)
		r.load.routed.Add(1)
	}
	return b, err
}

func (p *pool) get(ctx context.Context) (*backend, error) {
	if p.base != nil {
		if err := p.follow(ctx); err != nil {
			return nil, err
		}
	} else if e := p.downErr.Load(); e != nil {
		if err := p.awaitUp(ctx, e); err != nil {
			return nil, err
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("pool closed")
	}
	for n := len(p.idle); n > 0; n = len(p.idle) {
		b := p.idle[n-1]
		p.idle = p.idle[:n-1]
		// A replica set's pools always look: a server shutting down in a
		// failover terminates its idle connections, and the request can
		// go elsewhere (a read to another server, a write to the promoted
		// primary) only if the dead connection is not used first.
		if b.gen == p.gen.Load() && ((!p.reads && !p.replicated && time.Since(b.idleSince) < time.Second) || b.alive()) {
			p.mu.Unlock()
			return b, nil
		}
		// The server closed it while it sat idle (restart, terminate):
		// drop it and try the next, or dial a new one.
		b.conn.Close()
		p.open--
	}
	if p.open < p.size {
		p.open++
		p.mu.Unlock()
		b, err := p.dial(ctx)
		if err != nil {
			p.mu.Lock()
			p.open--
			p.mu.Unlock()
			return nil, err
		}
		return b, nil
	}
	ch := make(chan leaseResult, 1)
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()
	t := time.NewTimer(p.timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-t.C:
	case <-ctx.Done():
	}
	// Withdraw. Still listed: nobody will answer. Not listed: a release
	// (or the dial it started) took this waiter and answers it, maybe not
	// yet: its backend must go back to the pool when it comes, or the
	// pool would lose it.
	p.mu.Lock()
	claimed := true
	for i, w := range p.waiters {
		if w == ch {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			claimed = false
			break
		}
	}
	p.mu.Unlock()
	if claimed {
		go func() {
			if r := <-ch; r.b != nil {
				p.root().load.busy.Add(1) // release counts it back
				p.release(r.b)
			}
		}()
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, errPoolTimeout
}

// release returns a backend. A broken one, or one not idle outside a
// transaction, is closed and its slot freed.
func (p *pool) release(b *backend) {
	p.root().load.busy.Add(-1)
	if p.downErr.Load() != nil || p.base != nil && p.base.downErr.Load() != nil {
		b.broken = true // the shard went down while b was leased
	}
	if b.broken || b.txStatus != 'I' || b.gen != p.gen.Load() {
		b.conn.Close()
		p.mu.Lock()
		p.open--
		var w chan leaseResult
		if len(p.waiters) > 0 && !p.closed {
			w = p.waiters[0]
			p.waiters = p.waiters[1:]
			p.open++
		}
		p.mu.Unlock()
		if w != nil {
			go func() {
				nb, err := p.dial(context.Background())
				if err != nil {
					p.mu.Lock()
					p.open--
					p.mu.Unlock()
				}
				w <- leaseResult{nb, err}
			}()
		}
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		b.conn.Close()
		return
	}
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		w <- leaseResult{b: b}
		return
	}
	b.idleSince = time.Now()
	p.idle = append(p.idle, b)
	p.mu.Unlock()
}

// alive checks, without blocking, that an idle backend's server has not
// closed it or sent anything: an idle connection only hears from its
// server when it is being terminated. One non-blocking MSG_PEEK recv.
func (b *backend) alive() bool {
	if b.rd.buffered() > 0 {
		return false
	}
	conn := b.conn
	if w, ok := conn.(*parseWatch); ok {
		conn = w.Conn
	}
	if tc, ok := conn.(*tls.Conn); ok {
		// A TLS shard connection: peek at the socket beneath (any byte
		// there, a TLS record, is as unsolicited as a plaintext one).
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	alive := true
	var one [1]byte
	rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case n > 0: // unsolicited data: a FATAL notice before the close
			alive = false
		case err == nil: // n == 0: orderly shutdown
			alive = false
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
		default:
			alive = false
		}
		return true
	})
	return alive
}

func (p *pool) dial(ctx context.Context) (*backend, error) {
	gen := p.gen.Load()
	cfg := p.config()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		p.connectErrors.Add(1)
		return nil, &shardError{shard: p.name, err: err}
	}
	p.connects.Add(1)
	h, err := conn.Hijack()
	if err != nil {
		conn.Close(ctx)
		return nil, &shardError{shard: p.name, err: err}
	}
	bc := newRawConn(h.Conn)
	b := &backend{conn: bc, rd: newFrameReader(bc, 32<<10), pid: h.PID, secret: h.SecretKey,
		params: h.ParameterStatuses, pool: p, txStatus: 'I', gen: gen, host: cfg.Host, port: cfg.Port}
	watchParses(b) // parsewatch.go
	p.mu.Lock()
	if p.params == nil {
		p.params = h.ParameterStatuses
	}
	p.mu.Unlock()
	return b, nil
}

// stats is a point-in-time view of the pool.
func (p *pool) stats() (open, idle, waiting int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open, len(p.idle), len(p.waiters)
}

func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, b := range idle {
		b.conn.Close()
	}
}

// cancel sends a CancelRequest for whatever b is running.
func (b *backend) cancel() {
	addr := net.JoinHostPort(b.host, fmt.Sprint(b.port))
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return
	}
	defer c.Close()
	msg := make([]byte, 12, 12+len(b.secret))
	put32(msg[0:], uint32(12+len(b.secret)))
	put32(msg[4:], 80877102)
	put32(msg[8:], b.pid)
	msg = append(msg, b.secret...)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	c.Write(msg)
	var one [1]byte
	c.Read(one[:]) // the server closes the connection when done
}

func put32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

// send writes a simple Query message for sql.
func (b *backend) sendQuery(sql string) error {
	b.wbuf = appendQuery(b.wbuf[:0], sql)
	if _, err := b.conn.Write(b.wbuf); err != nil {
		b.broken = true
		return &shardError{shard: b.pool.name, err: err}
	}
	return nil
}

func appendQuery(dst []byte, sql string) []byte {
	n := 4 + len(sql) + 1
	dst = append(dst, 'Q', byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	dst = append(dst, sql...)
	return append(dst, 0)
}

// shardError is an I/O failure talking to a shard (08006).
type shardError struct {
	shard string
	err   error
}

func (e *shardError) Error() string { return fmt.Sprintf("shard %s: %v", e.shard, e.err) }
func (e *shardError) Unwrap() error { return e.err }
