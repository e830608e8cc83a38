package proxy

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardproxy/shardproxy/parser"
)

// LISTEN, UNLISTEN and notifications.
//
// NOTIFY and pg_notify run on the default shard (the router sends them
// there, as writes), so every notification is raised there. The proxy
// keeps one listener connection of its own to the default shard's
// primary (notifyHub), which LISTENs on the union of the channels its
// clients listen to, and forwards each NotificationResponse to every
// client session listening on that channel, with the PID Postgres reports
// (the backend that sent it).
//
// A client's LISTEN and UNLISTEN are answered by the proxy and never reach
// a pooled backend. Outside a transaction a LISTEN is answered once the
// listener connection listens on the channel, so a notification committed
// after the answer reaches the client; inside a transaction LISTEN and
// UNLISTEN take effect at COMMIT and are forgotten at ROLLBACK, as in
// Postgres. DISCARD ALL and the end of the session unlisten everything.
//
// Delivery follows Postgres: a client idle outside a transaction (waiting
// in the proxy, holding no backend) gets a notification at once, written by
// the session's notifier goroutine; a client inside a transaction, or in
// the middle of a request, gets it just before the ReadyForQuery that ends
// it idle. A session that notifies a channel it listens to waits (at most
// selfNotifyWait) for the listener to see its own notifications, so that
// they come before that ReadyForQuery as they would from Postgres.

const (
	// maxQueuedNotifications bounds what one client may have waiting; more
	// are dropped (counted in shardproxy_notifications_total{outcome="dropped"}).
	maxQueuedNotifications = 100000
	// selfNotifyWait bounds the wait for the listener to see a session's
	// own notifications before its ReadyForQuery.
	selfNotifyWait = 2 * time.Second
)

// notifyHub owns the listener connection. Its goroutine (run) is started
// on the first LISTEN and lives until the server closes.
type notifyHub struct {
	mu      sync.Mutex
	started bool
	subs    map[string]map[*listenState]struct{}
	waiters []chan error // sessions waiting for the next reconcile
	kick    chan struct{}

	listened                       atomic.Int64 // channels the connection listens on
	up                             atomic.Bool
	delivered, dropped, reconnects atomic.Uint64
}

// listenState is a session's side of LISTEN. chans, pending and sent
// belong to the session goroutine; the rest is shared with the hub and the
// notifier goroutine under mu.
type listenState struct {
	hub     *notifyHub
	chans   map[string]bool
	pending []listenOp      // LISTEN/UNLISTEN of the open transaction
	before  map[string]bool // chans before a commit applied pending (listenPreCommit)
	sent    bool            // the request ran NOTIFY or pg_notify

	mu      sync.Mutex
	cond    *sync.Cond // signalled when writing ends
	idle    bool       // the client waits for a request, outside a transaction
	writing bool       // the notifier is writing to the client
	queue   []pgproto3.NotificationResponse
	dead    bool // a write to the client failed
	wake    chan struct{}
	done    chan struct{}
	sess    *session
}

type listenOp struct {
	op parser.ListenOp
	ch string
}

// listening returns the session's listen state, made on first use.
func (s *session) listening() *listenState {
	if s.ntf == nil {
		l := &listenState{hub: &s.srv.notify, chans: map[string]bool{}, wake: make(chan struct{}, 1),
			done: make(chan struct{}), sess: s}
		l.cond = sync.NewCond(&l.mu)
		s.ntf = l
		go l.notifier()
	}
	return s.ntf
}

// listenStmt answers LISTEN, UNLISTEN and UNLISTEN *.
func (s *session) listenStmt(ctx context.Context, st *parser.Statement) error {
	op, ch, _ := st.Listen()
	tag := "LISTEN"
	if op != parser.Listen {
		tag = "UNLISTEN"
	}
	if op != parser.Listen && s.ntf == nil {
		s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(tag)})
		return nil
	}
	l := s.listening()
	if s.status != 'I' {
		l.pending = append(l.pending, listenOp{op, ch})
		s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(tag)})
		return nil
	}
	if err := s.applyListen(ctx, []listenOp{{op, ch}}); err != nil {
		s.fail(err)
		return nil
	}
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(tag)})
	return nil
}

// applyListen makes ops the session's and waits until the listener
// connection listens on every channel the session now listens to. On an
// error the channels it added are dropped again.
func (s *session) applyListen(ctx context.Context, ops []listenOp) error {
	l := s.listening()
	var added []string
	for _, o := range ops {
		switch o.op {
		case parser.Listen:
			if !l.chans[o.ch] {
				l.chans[o.ch] = true
				added = append(added, o.ch)
				l.hub.subscribe(l, o.ch)
			}
		case parser.Unlisten:
			if l.chans[o.ch] {
				delete(l.chans, o.ch)
				l.hub.unsubscribe(l, o.ch)
			}
		case parser.UnlistenAll:
			for ch := range l.chans {
				delete(l.chans, ch)
				l.hub.unsubscribe(l, ch)
			}
		}
	}
	if len(added) == 0 {
		l.hub.poke(s.srv)
		return nil
	}
	if err := l.hub.sync(ctx, s.srv); err != nil {
		for _, ch := range added {
			if l.chans[ch] {
				delete(l.chans, ch)
				l.hub.unsubscribe(l, ch)
			}
		}
		return err
	}
	return nil
}

// listenPreCommit applies the transaction's LISTEN and UNLISTEN just
// before its shards commit, as Postgres registers a LISTEN before its
// commit (so the transaction's own notifications reach it); listenTxEnd
// keeps them when the commit succeeded and restores the channels of
// before when it did not.
func (s *session) listenPreCommit(commit bool) {
	l := s.ntf
	if l == nil || len(l.pending) == 0 || !commit {
		return
	}
	l.before = map[string]bool{}
	for ch := range l.chans {
		l.before[ch] = true
	}
	ops := l.pending
	l.pending = nil
	if err := s.applyListen(context.Background(), ops); err != nil {
		// Postgres would fail the commit; the proxy commits and says
		// that the LISTEN did not take.
		s.out = appendMsg(s.out, &pgproto3.NoticeResponse{Severity: "WARNING", SeverityUnlocalized: "WARNING",
			Code: pgerrcode.ConnectionFailure, Message: "LISTEN did not take effect: " + err.Error()})
	}
}

// listenTxEnd ends the transaction's LISTEN and UNLISTEN: kept when it
// committed, undone or forgotten when not.
func (s *session) listenTxEnd(committed bool) {
	s.notified = false
	l := s.ntf
	if l == nil {
		return
	}
	l.pending = nil
	before := l.before
	l.before = nil
	if before == nil || committed {
		return
	}
	for ch := range l.chans {
		if !before[ch] {
			delete(l.chans, ch)
			l.hub.unsubscribe(l, ch)
		}
	}
	for ch := range before {
		if !l.chans[ch] {
			l.chans[ch] = true
			l.hub.subscribe(l, ch)
		}
	}
	l.hub.poke(s.srv)
}

// unlistenAll is UNLISTEN * for DISCARD ALL and the end of the session.
func (s *session) unlistenAll() {
	l := s.ntf
	if l == nil {
		return
	}
	l.pending = nil
	for ch := range l.chans {
		delete(l.chans, ch)
		l.hub.unsubscribe(l, ch)
	}
	l.hub.poke(s.srv)
}

// closeListening ends the session's listening: everything is unlistened
// and the notifier goroutine stops.
func (s *session) closeListening() {
	if s.ntf == nil {
		return
	}
	s.unlistenAll()
	close(s.ntf.done)
}

// noteNotify marks a transaction that notifies (notifierDecides) and, for
// a listening session, a request that notifies: its ReadyForQuery waits
// for its own notifications.
func (s *session) noteNotify(st *parser.Statement) {
	if !st.Writes || !st.Notifies() {
		return
	}
	if s.status != 'I' {
		s.notified = true
	}
	if s.ntf != nil && len(s.ntf.chans)+len(s.ntf.pending) > 0 {
		s.ntf.sent = true
	}
}

// notifierDecides puts the default shard's backend first among the
// writers of a transaction that notified: two-phase commit's first writer
// decides and commits plainly, after the others prepared (twophase.go),
// while Postgres refuses to PREPARE a transaction that notified. The
// notification is delivered exactly when the transaction commits.
func (s *session) notifierDecides(writers []*backend) {
	if !s.notified {
		return
	}
	def := s.srv.router.Topology().Default
	for i, b := range writers {
		if b.pool.shard == def && i > 0 {
			copy(writers[1:i+1], writers[:i])
			writers[0] = b
			return
		}
	}
}

// listenBusy is called when a request starts: the notifier no longer
// writes to the client.
func (s *session) listenBusy() {
	l := s.ntf
	if l == nil {
		return
	}
	l.mu.Lock()
	for l.writing {
		l.cond.Wait()
	}
	l.idle = false
	l.mu.Unlock()
}

// flushListening sends s.out, which ends with ReadyForQuery: when the
// session is idle after it, queued notifications go just before the
// ReadyForQuery, and the notifier may write later ones at once.
func (s *session) flushListening() error {
	l := s.ntf
	if s.status == 'I' && l.sent {
		l.sent = false
		ctx, cancel := context.WithTimeout(context.Background(), selfNotifyWait)
		l.hub.barrier(ctx, s.srv)
		cancel()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.writing {
		l.cond.Wait()
	}
	if s.status == 'I' && len(l.queue) > 0 {
		z := append([]byte(nil), s.out[len(s.out)-6:]...)
		s.out = s.out[:len(s.out)-6]
		for i := range l.queue {
			s.out = appendMsg(s.out, &l.queue[i])
		}
		s.out = append(s.out, z...)
		l.hub.delivered.Add(uint64(len(l.queue)))
		l.queue = l.queue[:0]
	}
	l.idle = s.status == 'I'
	return s.flush()
}

// push queues n for the client and wakes the notifier. It never blocks
// on the client.
func (l *listenState) push(n *pgconn.Notification) {
	l.mu.Lock()
	if l.dead || len(l.queue) >= maxQueuedNotifications {
		l.mu.Unlock()
		l.hub.dropped.Add(1)
		return
	}
	l.queue = append(l.queue, pgproto3.NotificationResponse{PID: n.PID, Channel: n.Channel, Payload: n.Payload})
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// notifier writes queued notifications to the client while it is idle.
// The session goroutine may read from the connection meanwhile; it waits
// for a write in progress before writing itself (listenBusy,
// flushListening).
func (l *listenState) notifier() {
	var buf []byte
	for {
		select {
		case <-l.done:
			return
		case <-l.wake:
		}
		l.mu.Lock()
		if !l.idle || len(l.queue) == 0 || l.dead {
			l.mu.Unlock()
			continue
		}
		buf = buf[:0]
		for i := range l.queue {
			buf = appendMsg(buf, &l.queue[i])
		}
		n := len(l.queue)
		l.queue = l.queue[:0]
		l.writing = true
		conn := l.sess.conn
		l.mu.Unlock()
		conn.SetWriteDeadline(time.Now().Add(time.Minute))
		_, err := conn.Write(buf)
		conn.SetWriteDeadline(time.Time{})
		l.mu.Lock()
		l.writing = false
		if err != nil {
			l.dead = true
			l.hub.dropped.Add(uint64(n))
		} else {
			l.hub.delivered.Add(uint64(n))
		}
		l.cond.Broadcast()
		l.mu.Unlock()
	}
}

func (h *notifyHub) subscribe(l *listenState, ch string) {
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[string]map[*listenState]struct{}{}
	}
	m := h.subs[ch]
	if m == nil {
		m = map[*listenState]struct{}{}
		h.subs[ch] = m
	}
	m[l] = struct{}{}
	h.mu.Unlock()
}

func (h *notifyHub) unsubscribe(l *listenState, ch string) {
	h.mu.Lock()
	if m := h.subs[ch]; m != nil {
		delete(m, l)
		if len(m) == 0 {
			delete(h.subs, ch)
		}
	}
	h.mu.Unlock()
}

// start runs the hub's goroutine once. Call with h.mu held.
func (h *notifyHub) start(srv *Server) {
	if h.started {
		return
	}
	h.started = true
	h.kick = make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-srv.stopped
		cancel()
	}()
	go h.run(ctx, srv)
}

// poke asks the hub to reconcile what it listens on, without waiting.
func (h *notifyHub) poke(srv *Server) {
	h.mu.Lock()
	h.start(srv)
	h.mu.Unlock()
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// sync waits until the listener connection listens on every subscribed
// channel (a reconcile that starts after the call).
func (h *notifyHub) sync(ctx context.Context, srv *Server) error {
	done := make(chan error, 1)
	h.mu.Lock()
	h.start(srv)
	h.waiters = append(h.waiters, done)
	h.mu.Unlock()
	select {
	case h.kick <- struct{}{}:
	default:
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return &pgError{code: pgerrcode.ConnectionFailure, msg: "the proxy's listener connection did not answer in time"}
	case <-srv.stopped:
		return &pgError{code: pgerrcode.AdminShutdown, msg: "terminating connection due to administrator command"}
	}
}

// barrier waits until the listener connection has received what was
// notified before the call: a round trip after which Postgres has sent it
// every notification committed before.
func (h *notifyHub) barrier(ctx context.Context, srv *Server) { h.sync(ctx, srv) }

// run owns the listener connection: it (re)connects while any channel is
// wanted, reconciles LISTEN/UNLISTEN with the subscriptions, and waits for
// notifications, which pgconn hands to dispatch.
func (h *notifyHub) run(ctx context.Context, srv *Server) {
	var conn *pgconn.PgConn
	listened := map[string]bool{}
	backoff := 100 * time.Millisecond
	connected := false
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(cctx)
			cancel()
		}
		h.up.Store(false)
		h.failWaiters(&pgError{code: pgerrcode.AdminShutdown, msg: "terminating connection due to administrator command"})
	}()
	for ctx.Err() == nil {
		h.mu.Lock()
		want := make([]string, 0, len(h.subs))
		for ch := range h.subs {
			want = append(want, ch)
		}
		waiters := h.waiters
		h.waiters = nil
		h.mu.Unlock()
		if conn == nil && (len(want) > 0 || len(waiters) > 0) {
			c, err := h.connect(ctx, srv)
			if err != nil {
				srv.log.Warn("listener connection", "shard", srv.pools[srv.router.Topology().Default].name, "err", err)
				for _, w := range waiters {
					w <- err
				}
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
				backoff = min(backoff*2, 5*time.Second)
				continue
			}
			if connected {
				h.reconnects.Add(1)
			}
			conn, connected, backoff = c, true, 100*time.Millisecond
			listened = map[string]bool{}
			h.up.Store(true)
		}
		if conn != nil {
			sql := reconcileSQL(listened, want)
			if sql != "" || len(waiters) > 0 {
				if sql == "" {
					sql = "SELECT"
				}
				_, err := conn.Exec(ctx, sql).ReadAll()
				if err == nil {
					listened = map[string]bool{}
					for _, ch := range want {
						listened[ch] = true
					}
					h.listened.Store(int64(len(listened)))
				}
				for _, w := range waiters {
					w <- err
				}
				if err != nil {
					srv.log.Warn("listener connection", "err", err)
					h.drop(&conn)
					continue
				}
			}
		}
		if conn == nil {
			select {
			case <-ctx.Done():
			case <-h.kick:
			}
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		stop := make(chan struct{})
		go func() {
			select {
			case <-h.kick:
				cancel()
			case <-stop:
			}
		}()
		err := conn.WaitForNotification(wctx)
		close(stop)
		cancel()
		if err != nil && wctx.Err() == nil && ctx.Err() == nil {
			srv.log.Warn("listener connection lost", "err", err)
			h.drop(&conn)
		} else if conn.IsClosed() {
			h.drop(&conn)
		}
	}
}

// drop closes the listener connection after an error; run reconnects.
func (h *notifyHub) drop(conn **pgconn.PgConn) {
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	(*conn).Close(cctx)
	cancel()
	*conn = nil
	h.up.Store(false)
	h.listened.Store(0)
}

func (h *notifyHub) failWaiters(err error) {
	h.mu.Lock()
	ws := h.waiters
	h.waiters = nil
	h.mu.Unlock()
	for _, w := range ws {
		w <- err
	}
}

// connect dials the default shard's primary as the proxy's own user.
func (h *notifyHub) connect(ctx context.Context, srv *Server) (*pgconn.PgConn, error) {
	p := srv.pools[srv.router.Topology().Default]
	cfg := p.config().Copy()
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) { h.dispatch(n) }
	cfg.RuntimeParams["application_name"] = "shardproxy listener"
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, &shardError{shard: p.name, err: err}
	}
	return c, nil
}

// dispatch hands n to every session listening on its channel.
func (h *notifyHub) dispatch(n *pgconn.Notification) {
	h.mu.Lock()
	ls := make([]*listenState, 0, len(h.subs[n.Channel]))
	for l := range h.subs[n.Channel] {
		ls = append(ls, l)
	}
	h.mu.Unlock()
	for _, l := range ls {
		l.push(n)
	}
}

// reconcileSQL is the LISTEN and UNLISTEN that take the connection from
// listened to want.
func reconcileSQL(listened map[string]bool, want []string) string {
	var b strings.Builder
	sort.Strings(want)
	w := map[string]bool{}
	for _, ch := range want {
		w[ch] = true
		if !listened[ch] {
			fmt.Fprintf(&b, "LISTEN %s;", quoteIdent(ch))
		}
	}
	var gone []string
	for ch := range listened {
		if !w[ch] {
			gone = append(gone, ch)
		}
	}
	sort.Strings(gone)
	for _, ch := range gone {
		fmt.Fprintf(&b, "UNLISTEN %s;", quoteIdent(ch))
	}
	return b.String()
}

var (
	descListenChannels = prometheus.NewDesc("shardproxy_listen_channels",
		"Channels the proxy's listener connection LISTENs on (the union of its clients' channels).", nil, nil)
	descListenClients = prometheus.NewDesc("shardproxy_listen_clients",
		"Client sessions listening on at least one channel.", nil, nil)
	descListenerUp = prometheus.NewDesc("shardproxy_listener_up",
		"1 while the listener connection to the default shard is open.", nil, nil)
	descListenerReconnects = prometheus.NewDesc("shardproxy_listener_reconnects_total",
		"Times the listener connection was opened again after it was lost.", nil, nil)
	descNotifications = prometheus.NewDesc("shardproxy_notifications_total",
		"Notifications for clients, by outcome: delivered, or dropped (client queue full or client gone).", []string{"outcome"}, nil)
)

// notifyCollector reports the listener at scrape time.
type notifyCollector struct{ s *Server }

func (c notifyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descListenChannels, descListenClients, descListenerUp, descListenerReconnects, descNotifications} {
		ch <- d
	}
}

func (c notifyCollector) Collect(ch chan<- prometheus.Metric) {
	h := &c.s.notify
	h.mu.Lock()
	clients := map[*listenState]bool{}
	for _, m := range h.subs {
		for l := range m {
			clients[l] = true
		}
	}
	h.mu.Unlock()
	up := 0.0
	if h.up.Load() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descListenChannels, prometheus.GaugeValue, float64(h.listened.Load()))
	ch <- prometheus.MustNewConstMetric(descListenClients, prometheus.GaugeValue, float64(len(clients)))
	ch <- prometheus.MustNewConstMetric(descListenerUp, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(descListenerReconnects, prometheus.CounterValue, float64(h.reconnects.Load()))
	ch <- prometheus.MustNewConstMetric(descNotifications, prometheus.CounterValue, float64(h.delivered.Load()), "delivered")
	ch <- prometheus.MustNewConstMetric(descNotifications, prometheus.CounterValue, float64(h.dropped.Load()), "dropped")
}
