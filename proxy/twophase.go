package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Two-phase commit across shards.
//
// A transaction that wrote on several shards commits like this. One of its
// shards, the decider (the lowest-numbered writer), keeps its transaction
// open; the others are participants.
//
//  1. The decider takes a transaction-level advisory lock named by the
//     transaction's id. It is held until the decider's transaction ends.
//  2. Every participant gets PREPARE TRANSACTION 'gid' (in parallel). The
//     gid names the deployment, the decider and the id.
//  3. The decider inserts the id into shardproxy.commit_decisions and
//     commits, in one message. That commit is the commit point: the
//     decision is durable in Postgres, inside the decider's own
//     transaction, so it costs no prepare there (Vitess's "3-in-1").
//  4. Every participant gets COMMIT PREPARED (in parallel); the client is
//     answered when they are done.
//
// Recovery needs no state on the proxy, so any proxy of the deployment
// resolves any transaction: for each prepared transaction of ours (found by
// gid prefix in pg_prepared_xacts), it tries the advisory lock on the
// decider. Held means the transaction is live and is left alone; free means
// the decider's transaction has ended, and its decision row says commit
// (present) or roll back (absent: presumed abort). Since step 1 precedes
// every PREPARE, a prepared participant whose lock is free can no longer be
// decided by anyone else. COMMIT/ROLLBACK PREPARED of a gid that is gone
// means another proxy finished it: done either way.

// decisionLockClass is the first key of the two-key advisory locks that
// guard commit decisions (a key space apart from one-key locks).
const decisionLockClass = 1936750642

// twoPhase is the server's two-phase commit state.
type twoPhase struct {
	prefix   string
	disabled bool
	mu       sync.Mutex
	// ready says every shard was checked: max_prepared_transactions > 0
	// and the decision table exists. problem is why not, for the client.
	ready   bool
	problem string
	checked time.Time // when the shards were last checked
	// finished are decided gids whose decision rows can be deleted, per
	// decider shard.
	finished map[int][]string

	commits, aborts, recovered, inDoubt atomic.Int64
	// fault is a test hook: a non-nil error at a named point makes the
	// commit stop there as if the proxy had crashed.
	fault func(point string, shard int) error
}

func newTwoPhase(cfg TwoPhaseConfig) *twoPhase {
	return &twoPhase{prefix: cfg.GIDPrefix, disabled: cfg.Mode == "off", finished: map[int][]string{}}
}

// errCrash is what the fault hook returns to simulate a proxy crash.
var errCrash = errors.New("simulated proxy crash")

func (tp *twoPhase) at(point string, shard int) error {
	if tp.fault == nil {
		return nil
	}
	return tp.fault(point, shard)
}

// available reports why several shards cannot commit together, or nil.
func (s *Server) twoPhaseUnavailable() error {
	tp := s.tpc
	if tp.disabled {
		return refused("a write on several shards needs two-phase commit, which is off (two_phase.mode: off)",
			"Set two_phase.mode: on, or keep the transaction's writes on one shard key.")
	}
	tp.mu.Lock()
	ready, problem, checked := tp.ready, tp.problem, tp.checked
	tp.mu.Unlock()
	if !ready && time.Since(checked) > 5*time.Second {
		// Check again (a shard may have come back), at most every 5s.
		s.prepareTwoPhase(context.Background())
		tp.mu.Lock()
		ready, problem = tp.ready, tp.problem
		tp.mu.Unlock()
	}
	if ready {
		return nil
	}
	return refused("a write on several shards needs two-phase commit, which the shards cannot do: "+problem,
		"Set max_prepared_transactions > 0 (e.g. 100) on every shard and restart it, or keep the transaction's writes on one shard key.")
}

// prepareTwoPhase checks every shard for max_prepared_transactions and
// creates the decision table where it is missing. It is cheap to call again.
func (s *Server) prepareTwoPhase(ctx context.Context) {
	tp := s.tpc
	if tp.disabled {
		return
	}
	var problems []string
	for _, p := range s.pools {
		b, err := p.acquire(ctx)
		if err != nil {
			problems = append(problems, fmt.Sprintf("shard %s unreachable", p.name))
			continue
		}
		v, err := simpleValue(b, "SHOW max_prepared_transactions")
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("shard %s: %v", p.name, err))
		case v == "0":
			problems = append(problems, fmt.Sprintf("shard %s has max_prepared_transactions = 0", p.name))
		default:
			// Sessions may reach the shards as their own, unprivileged
			// backend roles (roles.go): they record decisions, nothing more.
			if err := execSimple(b, `CREATE SCHEMA IF NOT EXISTS shardproxy;
				CREATE TABLE IF NOT EXISTS shardproxy.commit_decisions (gid text PRIMARY KEY, decided_at timestamptz NOT NULL DEFAULT now());
				GRANT USAGE ON SCHEMA shardproxy TO PUBLIC;
				GRANT INSERT ON shardproxy.commit_decisions TO PUBLIC`); err != nil {
				// Several proxies starting at once race on IF NOT EXISTS:
				// check that the table is there before giving up.
				if _, err2 := simpleValue(b, "SELECT 'shardproxy.commit_decisions'::regclass"); err2 != nil {
					problems = append(problems, fmt.Sprintf("shard %s: create shardproxy.commit_decisions: %v", p.name, err))
				}
			}
		}
		p.release(b)
	}
	tp.mu.Lock()
	tp.ready = len(problems) == 0
	tp.problem = strings.Join(problems, "; ")
	tp.checked = time.Now()
	tp.mu.Unlock()
}

// newGID names a distributed transaction: deployment prefix, decider shard
// and a random id. The lock key is the id's first 31 bits.
func (tp *twoPhase) newGID(decider string) (gid string, key int32) {
	var id [12]byte
	rand.Read(id[:])
	key = int32(binary.BigEndian.Uint32(id[:4]) & 0x7fffffff)
	return tp.prefix + ":" + decider + ":" + hex.EncodeToString(id[:]), key
}

// parseGID splits one of our gids; ok is false for anyone else's.
func (tp *twoPhase) parseGID(gid string) (decider string, key int32, ok bool) {
	rest, found := strings.CutPrefix(gid, tp.prefix+":")
	if !found {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return "", 0, false
	}
	id, err := hex.DecodeString(rest[i+1:])
	if err != nil || len(id) < 4 {
		return "", 0, false
	}
	return rest[:i], int32(binary.BigEndian.Uint32(id[:4]) & 0x7fffffff), true
}

// commitShards commits the transactions open on bs (one backend per shard,
// each inside BEGIN) so that all commit or none does. With one backend it
// is a plain COMMIT; with several it is two-phase commit (above). On error
// every transaction has been rolled back (or, when the decider's connection
// was lost during the decision, is left for recovery), and the error is for
// the client. The backends stay leased; the caller releases them.
func (s *session) commitShards(ctx context.Context, bs []*backend) error {
	if len(bs) == 1 {
		tag, err := execTag(bs[0], "COMMIT")
		if err == nil && bs[0].txStatus != 'I' {
			bs[0].broken = true
		}
		if err == nil && tag != "COMMIT" {
			err = rolledBack(bs[0])
		}
		return err
	}
	tp := s.srv.tpc
	if err := s.srv.twoPhaseUnavailable(); err != nil {
		s.rollbackAll(bs)
		return err
	}
	decider, parts := bs[0], bs[1:]
	gid, key := tp.newGID(decider.pool.name)
	crash := func(err error) error {
		// The proxy "dies": its connections drop, Postgres rolls back what
		// is not prepared and keeps what is, for recovery.
		for _, b := range bs {
			b.broken = true
			b.conn.Close()
		}
		return &pgError{code: pgerrcode.ConnectionFailure, msg: "shardproxy: " + err.Error()}
	}
	if err := s.quiet(decider, fmt.Sprintf("SELECT pg_advisory_xact_lock(%d, %d)", decisionLockClass, key)); err != nil {
		s.rollbackAll(bs)
		return err
	}
	if err := tp.at("locked", decider.pool.shard); err != nil {
		return crash(err)
	}
	prepare := "PREPARE TRANSACTION " + quoteLiteral(gid)
	for _, b := range parts {
		if err := b.sendQuery(prepare); err != nil {
			b.broken = true
		}
	}
	var first error
	prepared := make([]bool, len(parts))
	for i, b := range parts {
		if b.broken {
			if first == nil {
				first = &shardError{shard: b.pool.name, err: errors.New("connection lost before PREPARE TRANSACTION")}
			}
			continue
		}
		tag, err := readReply(b)
		if err == nil && b.txStatus == 'I' && tag == "PREPARE TRANSACTION" {
			prepared[i] = true
		} else if first == nil {
			first = err
			if first == nil {
				// PREPARE of a failed transaction rolls it back.
				first = rolledBack(b)
			}
		}
		if err := tp.at("prepared", b.pool.shard); err != nil {
			return crash(err)
		}
	}
	if first != nil {
		// Presumed abort: no decision row, so nothing commits.
		s.quiet(decider, "ROLLBACK")
		for i, b := range parts {
			if prepared[i] {
				if err := execSimple(b, "ROLLBACK PREPARED "+quoteLiteral(gid)); err != nil {
					s.srv.log.Warn("roll back prepared transaction", "shard", b.pool.name, "gid", gid, "err", err)
				}
			}
		}
		tp.aborts.Add(1)
		return first
	}
	err := execSimple(decider, "INSERT INTO shardproxy.commit_decisions (gid) VALUES ("+quoteLiteral(gid)+"); COMMIT")
	if err != nil {
		if decider.broken {
			// The decision's outcome is unknown: recovery will find it.
			tp.inDoubt.Add(1)
			return &pgError{code: pgerrcode.ConnectionFailure,
				msg:  fmt.Sprintf("connection to shard %s lost while committing; the transaction will be committed or rolled back by recovery", decider.pool.name),
				hint: "SHOW TRANSACTIONS on the admin console lists transactions in doubt."}
		}
		if decider.txStatus != 'I' {
			s.quiet(decider, "ROLLBACK")
		}
		for _, b := range parts {
			if err := execSimple(b, "ROLLBACK PREPARED "+quoteLiteral(gid)); err != nil {
				s.srv.log.Warn("roll back prepared transaction", "shard", b.pool.name, "gid", gid, "err", err)
			}
		}
		tp.aborts.Add(1)
		return err
	}
	if err := tp.at("decided", decider.pool.shard); err != nil {
		return crash(err)
	}
	commit := "COMMIT PREPARED " + quoteLiteral(gid)
	for _, b := range parts {
		if err := b.sendQuery(commit); err != nil {
			b.broken = true
		}
	}
	left := false
	for _, b := range parts {
		if err := tp.at("committing", b.pool.shard); err != nil {
			return crash(err)
		}
		if b.broken {
			left = true
			continue
		}
		if err := readQuiet(b); err != nil && !isCode(err, pgerrcode.UndefinedObject) {
			// Decided: the commit stands; recovery finishes this shard.
			s.srv.log.Warn("commit prepared transaction", "shard", b.pool.name, "gid", gid, "err", err)
			left = true
		}
	}
	tp.commits.Add(1)
	if left {
		tp.inDoubt.Add(1)
	} else {
		tp.mu.Lock()
		tp.finished[decider.pool.shard] = append(tp.finished[decider.pool.shard], gid)
		tp.mu.Unlock()
	}
	return nil
}

// rollbackAll rolls back every backend's open transaction.
func (s *session) rollbackAll(bs []*backend) {
	for _, b := range bs {
		if b.broken {
			continue
		}
		if err := s.quiet(b, "ROLLBACK"); err != nil || b.txStatus != 'I' {
			b.broken = true
		}
	}
}

func isCode(err error, code string) bool {
	var pe *pgError
	return errors.As(err, &pe) && pe.code == code
}

// rolledBack is the error of a shard whose transaction ended in a
// rollback where a commit was asked for.
func rolledBack(b *backend) error {
	return &pgError{code: pgerrcode.TransactionRollback,
		msg: fmt.Sprintf("the transaction was rolled back on shard %s", b.pool.name)}
}

// readQuiet reads one reply up to ReadyForQuery, returning its error.
func readQuiet(b *backend) error {
	_, err := readReply(b)
	return err
}

// execTag runs sql on b and returns its last command tag and first error.
func execTag(b *backend, sql string) (string, error) {
	if err := b.sendQuery(sql); err != nil {
		return "", err
	}
	return readReply(b)
}

// readReply reads one reply up to ReadyForQuery, returning the last
// command tag and the first error.
func readReply(b *backend) (tag string, qerr error) {
	for {
		typ, body, _, err := b.rd.next()
		if err != nil {
			b.broken = true
			return tag, &shardError{shard: b.pool.name, err: err}
		}
		switch typ {
		case 'C':
			tag = string(bytes.TrimRight(body, "\x00"))
		case 'E':
			if qerr == nil {
				qerr = backendError(body)
			}
		case 'Z':
			b.txStatus = body[0]
			return tag, qerr
		}
	}
}

// execSimple runs sql on b and returns its first error.
func execSimple(b *backend, sql string) error {
	if err := b.sendQuery(sql); err != nil {
		return err
	}
	return readQuiet(b)
}

// simpleRows runs sql on b and returns its rows as text (NULL as "").
func simpleRows(b *backend, sql string) ([][]string, error) {
	if err := b.sendQuery(sql); err != nil {
		return nil, err
	}
	var rows [][]string
	var qerr error
	for {
		typ, body, _, err := b.rd.next()
		if err != nil {
			b.broken = true
			return nil, &shardError{shard: b.pool.name, err: err}
		}
		switch typ {
		case 'D':
			var d pgproto3.DataRow
			if err := d.Decode(body); err == nil {
				row := make([]string, len(d.Values))
				for i, v := range d.Values {
					row[i] = string(v)
				}
				rows = append(rows, row)
			}
		case 'E':
			if qerr == nil {
				qerr = backendError(body)
			}
		case 'Z':
			b.txStatus = body[0]
			return rows, qerr
		}
	}
}

// InDoubt is a prepared transaction of this deployment found on a shard.
type InDoubt struct {
	GID, Shard, Decider string
	Prepared            string
}

// listInDoubt returns every prepared transaction of ours on every shard.
func (s *Server) listInDoubt(ctx context.Context) ([]InDoubt, error) {
	var out []InDoubt
	var errs []error
	for _, p := range s.pools {
		b, err := p.acquire(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rows, err := simpleRows(b, "SELECT gid, prepared FROM pg_prepared_xacts WHERE database = current_database() AND left(gid, "+
			fmt.Sprint(len(s.tpc.prefix)+1)+") = "+quoteLiteral(s.tpc.prefix+":")+" ORDER BY prepared")
		p.release(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("shard %s: %w", p.name, err))
			continue
		}
		for _, r := range rows {
			if len(r) != 2 {
				errs = append(errs, fmt.Errorf("shard %s: pg_prepared_xacts answered %d columns, want 2", p.name, len(r)))
				break
			}
			d, _, _ := s.tpc.parseGID(r[0])
			out = append(out, InDoubt{GID: r[0], Shard: p.name, Decider: d, Prepared: r[1]})
		}
	}
	return out, errors.Join(errs...)
}

// Recover resolves every prepared transaction of this deployment whose
// decider transaction has ended: COMMIT PREPARED where the decision row
// exists, ROLLBACK PREPARED where it does not. Live transactions (decider
// lock held) are left alone. It also deletes decision rows nobody needs.
// It returns how many transactions it resolved.
func (s *Server) Recover(ctx context.Context) (int, error) {
	tp := s.tpc
	if tp.disabled {
		return 0, nil
	}
	list, err := s.listInDoubt(ctx)
	n := 0
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	topo := s.router.Topology()
	for _, x := range list {
		decider, key, _ := tp.parseGID(x.GID)
		di, ok := topo.ShardIndex(decider)
		if !ok {
			errs = append(errs, fmt.Errorf("prepared transaction %s names unknown shard %s", x.GID, decider))
			continue
		}
		commit, live, err := s.decision(ctx, di, x.GID, key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if live {
			continue
		}
		si, _ := topo.ShardIndex(x.Shard)
		verb := "ROLLBACK PREPARED "
		if commit {
			verb = "COMMIT PREPARED "
		}
		b, err := s.pools[si].acquire(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = execSimple(b, verb+quoteLiteral(x.GID))
		s.pools[si].release(b)
		if err != nil && !isCode(err, pgerrcode.UndefinedObject) {
			errs = append(errs, fmt.Errorf("shard %s: %s%s: %w", x.Shard, verb, x.GID, err))
			continue
		}
		n++
		tp.recovered.Add(1)
		s.log.Info("recovered prepared transaction", "shard", x.Shard, "gid", x.GID, "commit", commit)
	}
	if err := s.sweepDecisions(ctx, list, err == nil); err != nil {
		errs = append(errs, err)
	}
	tp.inDoubt.Store(int64(len(list) - n))
	return n, errors.Join(errs...)
}

// decision reads the outcome of gid on its decider shard di: live when
// the decider's transaction still holds the lock.
func (s *Server) decision(ctx context.Context, di int, gid string, key int32) (commit, live bool, err error) {
	p := s.pools[di]
	b, err := p.acquire(ctx)
	if err != nil {
		return false, false, err
	}
	defer p.release(b)
	// Two statements: the second's snapshot is taken after the lock, so a
	// decision committed just before the lock was free is seen.
	rows, err := simpleRows(b, fmt.Sprintf(`BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_try_advisory_xact_lock(%d, %d);
		SELECT EXISTS (SELECT 1 FROM shardproxy.commit_decisions WHERE gid = %s); COMMIT`, decisionLockClass, key, quoteLiteral(gid)))
	if err != nil {
		if b.txStatus != 'I' {
			execSimple(b, "ROLLBACK")
		}
		return false, false, fmt.Errorf("shard %s: read decision of %s: %w", p.name, gid, err)
	}
	if len(rows) != 2 || len(rows[0]) != 1 || len(rows[1]) != 1 {
		return false, false, fmt.Errorf("shard %s: read decision of %s: unexpected reply", p.name, gid)
	}
	return rows[1][0] == "t", rows[0][0] != "t", nil
}

// sweepDecisions deletes decision rows no prepared transaction needs: the
// gids committed cleanly, and, when list is complete (every shard
// answered), rows older than a minute whose gid is not prepared anywhere
// (list was read before).
func (s *Server) sweepDecisions(ctx context.Context, list []InDoubt, complete bool) error {
	tp := s.tpc
	tp.mu.Lock()
	finished := tp.finished
	tp.finished = map[int][]string{}
	tp.mu.Unlock()
	keep := map[string]bool{}
	for _, x := range list {
		keep[x.GID] = true
	}
	var errs []error
	for i, p := range s.pools {
		b, err := p.acquire(ctx)
		if err != nil {
			tp.mu.Lock()
			tp.finished[i] = append(tp.finished[i], finished[i]...)
			tp.mu.Unlock()
			continue
		}
		var q strings.Builder
		q.WriteString("DELETE FROM shardproxy.commit_decisions WHERE false")
		if complete {
			q.WriteString(" OR (decided_at < now() - interval '1 minute' AND left(gid, " + fmt.Sprint(len(tp.prefix)+1) + ") = " + quoteLiteral(tp.prefix+":"))
			for g := range keep {
				q.WriteString(" AND gid <> " + quoteLiteral(g))
			}
			q.WriteString(")")
		}
		if len(finished[i]) > 0 {
			q.WriteString(" OR gid IN (")
			for j, g := range finished[i] {
				if j > 0 {
					q.WriteString(",")
				}
				q.WriteString(quoteLiteral(g))
			}
			q.WriteString(")")
		}
		if err := execSimple(b, q.String()); err != nil && !isCode(err, pgerrcode.UndefinedTable) {
			errs = append(errs, fmt.Errorf("shard %s: sweep decisions: %w", p.name, err))
		}
		p.release(b)
	}
	return errors.Join(errs...)
}

// recoveryLoop runs Recover at start and every interval until ctx ends.
func (s *Server) recoveryLoop(ctx context.Context, every time.Duration) {
	if s.tpc.disabled {
		return
	}
	s.prepareTwoPhase(ctx)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := s.Recover(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("two-phase commit recovery", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SetFaultHook installs a test hook called at each step of a two-phase
// commit: "locked" (decider lock taken), "prepared" (after each
// participant's PREPARE), "decided" (decision committed), "committing"
// (before each participant's COMMIT PREPARED is read). A non-nil error
// makes the commit stop there as if the proxy had crashed: its backend
// connections are dropped and the client gets 08006. For tests only.
func (s *Server) SetFaultHook(fn func(point string, shard int) error) { s.tpc.fault = fn }

// TwoPhaseStats are two-phase commit's counters since start.
type TwoPhaseStats struct {
	Commits, Aborts, Recovered, InDoubt int64
}

// TwoPhaseStats returns two-phase commit's counters.
func (s *Server) TwoPhaseStats() TwoPhaseStats {
	tp := s.tpc
	return TwoPhaseStats{Commits: tp.commits.Load(), Aborts: tp.aborts.Load(), Recovered: tp.recovered.Load(), InDoubt: tp.inDoubt.Load()}
}

// backendError is a shard's ErrorResponse body as an error for the client
// (code, message, detail, hint and position kept).
func backendError(body []byte) *pgError {
	var e pgproto3.ErrorResponse
	e.Decode(body)
	return &pgError{code: e.Code, msg: e.Message, detail: e.Detail, hint: e.Hint, position: e.Position}
}
