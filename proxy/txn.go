package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// txState is the client's transaction as the proxy keeps it, driven by
// parsed statement kinds and by every error, the proxy's own included:
//
//	idle ('I') --BEGIN--> in transaction ('T') --any error--> failed ('E')
//	'T' --COMMIT--> 'I' (two-phase commit when several shards wrote)
//	'E' --COMMIT/ROLLBACK--> 'I' (everything rolled back, tag ROLLBACK)
//	'E' --ROLLBACK TO s--> 'T'
//
// The transaction runs on one backend per shard it touched (tx is the first,
// txMore the others); what it said before its first routed statement
// (BEGIN with its options, SAVEPOINTs, SET LOCALs) is the prelude replayed
// on each shard it joins. The session embeds it, so its fields read as the
// session's.
type txState struct {
	// status is the transaction status reported in ReadyForQuery.
	status byte
	// tx is the backend pinned to the open transaction, nil before its
	// first routed statement; txMore are its backends on other shards.
	tx     *backend
	txMore []*backend
	// wrote are the shards the transaction wrote on, ascending.
	wrote []int
	// txPrelude holds BEGIN (and SAVEPOINTs...) replayed when the
	// transaction joins a shard.
	txPrelude []string
	// savepoints are the open savepoints, innermost last; each remembers
	// how many of txSets came before it.
	savepoints []savepoint
	// txSets are the session SETs (not SET LOCAL) run in the transaction:
	// they become the session's at COMMIT, and go at ROLLBACK or with a
	// ROLLBACK TO an earlier savepoint.
	txSets []*parser.Statement
	// moved are backends a statement outside a transaction joined to
	// receive rows whose shard key it changed (moveKeyed); they commit or
	// roll back with the statement's own.
	moved []*backend
	// tempInTx: the transaction created temporary tables (the backend is
	// discarded clean afterwards); ddlInTx: it ran DDL (column collations
	// are reread when it ends).
	tempInTx, ddlInTx bool
}

type savepoint struct {
	name string
	sets int
}

// beginTx starts a transaction opened by sql (BEGIN with its options).
func (t *txState) beginTx(sql string) {
	t.status = 'T'
	t.wrote = t.wrote[:0]
	t.txPrelude = append(t.txPrelude[:0], sql)
	t.savepoints = t.savepoints[:0]
	t.txSets = t.txSets[:0]
}

// markWrote records that the transaction writes on shard.
func (t *txState) markWrote(shard int) {
	if i, found := slices.BinarySearch(t.wrote, shard); !found {
		t.wrote = slices.Insert(t.wrote, i, shard)
	}
}

// txBackends lists the transaction's backends, tx first.
func (t *txState) txBackends() []*backend {
	if t.tx == nil {
		return nil
	}
	return append([]*backend{t.tx}, t.txMore...)
}

// allowedWhenFailed reports whether st may run in a failed transaction:
// what ends it, and ROLLBACK TO a savepoint.
func allowedWhenFailed(st *parser.Statement) bool {
	if st.Kind != parser.Transaction {
		return false
	}
	switch st.Tx {
	case parser.Commit, parser.Rollback, parser.TwoPhase:
		return true
	case parser.Savepoint:
		op, _, _ := st.Savepoint()
		return op == parser.SavepointRollbackTo
	}
	return false
}

// chainOutside is Postgres's error for COMMIT AND CHAIN or ROLLBACK AND
// CHAIN outside a transaction block (a plain COMMIT only warns).
func chainOutside(st *parser.Statement, status byte) error {
	if status != 'I' || !st.Chain() || (st.Tx != parser.Commit && st.Tx != parser.Rollback) {
		return nil
	}
	what := "COMMIT"
	if st.Tx == parser.Rollback {
		what = "ROLLBACK"
	}
	return &pgError{code: pgerrcode.NoActiveSQLTransaction, msg: what + " AND CHAIN can only be used in transaction blocks"}
}

func (s *session) transaction(ctx context.Context, st *parser.Statement) error {
	switch st.Tx {
	case parser.Begin:
		if s.status != 'I' && st.HasTxOptions() {
			// Postgres warns and applies the modes, or refuses them
			// (25001: after a query, in a subtransaction): a shard says.
			return s.onShardInTx(ctx, st.SQL)
		}
		if s.status != 'I' {
			s.out = appendMsg(s.out, &pgproto3.NoticeResponse{Severity: "WARNING", SeverityUnlocalized: "WARNING",
				Code: pgerrcode.ActiveSQLTransaction, Message: "there is already a transaction in progress"})
		} else {
			s.beginTx(st.SQL)
		}
		s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(st.BeginTag())})
		return nil
	case parser.Commit, parser.Rollback:
		s.endTransaction()
		tag := "COMMIT"
		if st.Tx == parser.Rollback {
			tag = "ROLLBACK"
		}
		if err := chainOutside(st, s.status); err != nil {
			s.fail(err)
			return nil
		}
		if s.status == 'I' {
			s.out = appendMsg(s.out, &pgproto3.NoticeResponse{Severity: "WARNING", SeverityUnlocalized: "WARNING",
				Code: pgerrcode.NoActiveSQLTransaction, Message: "there is no transaction in progress"})
			s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(tag)})
			return nil
		}
		prelude := ""
		if st.Chain() && len(s.txPrelude) > 0 {
			prelude = s.txPrelude[0]
		}
		err := s.txEnd(ctx, st.Tx == parser.Commit, true)
		if prelude != "" && err == nil {
			s.beginTx(prelude) // AND CHAIN: the same characteristics
		}
		return err
	case parser.Savepoint:
		return s.savepointStmt(ctx, st)
	}
	// PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED: the proxy prepares
	// transactions itself; a client's would be a transaction the proxy
	// cannot see on several shards.
	s.fail(refused("PREPARE TRANSACTION, COMMIT PREPARED and ROLLBACK PREPARED are not supported through shardproxy: it commits transactions on several shards with two-phase commit itself",
		"Use BEGIN ... COMMIT; run these commands on a shard directly to manage its own prepared transactions."))
	return nil
}

// savepointStmt runs SAVEPOINT, RELEASE or ROLLBACK TO: checked against the
// transaction's savepoints by name, then sent to every backend of the
// transaction (or kept in the prelude before the first routed statement).
func (s *session) savepointStmt(ctx context.Context, st *parser.Statement) error {
	op, name, _ := st.Savepoint()
	if s.status == 'I' {
		// Postgres raises 25P01 (no active transaction); let a shard say it.
		return s.single(ctx, s.srv.router.Topology().Default, st.SQL)
	}
	i := len(s.savepoints) - 1
	for i >= 0 && s.savepoints[i].name != name {
		i--
	}
	if op != parser.SavepointSet && i < 0 {
		s.fail(&pgError{code: pgerrcode.InvalidSavepointSpecification, msg: fmt.Sprintf("savepoint \"%s\" does not exist", name)})
		return nil
	}
	tag := "SAVEPOINT"
	switch op {
	case parser.SavepointSet:
		s.savepoints = append(s.savepoints, savepoint{name: name, sets: len(s.txSets)})
	case parser.SavepointRelease:
		tag = "RELEASE"
		s.savepoints = s.savepoints[:i]
		s.cursorsReleased(i) // cursorsp.go
	case parser.SavepointRollbackTo:
		tag = "ROLLBACK"
		s.txSets = s.txSets[:s.savepoints[i].sets]
		s.savepoints = s.savepoints[:i+1]
		s.cursorsRolledBack(i + 1) // cursorsp.go
	}
	if s.tx == nil {
		s.txPrelude = append(s.txPrelude, st.SQL)
		s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(tag)})
		if op == parser.SavepointRollbackTo {
			s.status = 'T'
		}
		return nil
	}
	err := s.txEverywhere(st.SQL)
	if op == parser.SavepointRollbackTo && s.status == 'T' {
		for _, b := range s.txMore {
			if b.txStatus != 'T' {
				s.status = 'E'
			}
		}
	}
	return err
}

// txEnd ends the open transaction on every shard it joined: a COMMIT
// (two-phase when several shards wrote) or, when asked or when the
// transaction failed, a ROLLBACK. With tag, the client gets the command
// tag Postgres would send (ROLLBACK for a COMMIT of a failed transaction);
// without, it gets only an error (an implicit transaction's end). The
// backends go back to the pool and the session is idle.
func (s *session) txEnd(ctx context.Context, commit, tag bool) error {
	all := s.txBackends()
	if s.status == 'E' {
		commit = false
	}
	s.listenPreCommit(commit) // listen.go
	var err error
	relayed := false
	switch {
	case len(all) == 0:
	case !commit:
		s.rollbackAll(all)
	default:
		relayed, err = s.commitTx(ctx, all, tag)
	}
	switch {
	case errors.Is(err, errSent):
	case err != nil:
		s.sendError(err)
	case tag && !relayed:
		t := "COMMIT"
		if !commit {
			t = "ROLLBACK"
		}
		s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(t)})
	}
	if commit && err == nil {
		s.keepTxSets()
	}
	s.listenTxEnd(commit && err == nil) // listen.go
	s.tx, s.txMore = nil, nil
	s.wrote = s.wrote[:0]
	s.savepoints = s.savepoints[:0]
	s.txSets = s.txSets[:0]
	s.status = 'I'
	for _, b := range all {
		if s.tempInTx {
			b.discard = true
		}
		s.release(b)
	}
	s.tempInTx = false
	if s.ddlInTx {
		s.ddlInTx = false
		s.srv.refreshCollations(context.Background())
	}
	return nil
}

// errSent says the error already reached the client (relayed from a shard).
var errSent = errors.New("error relayed from the shard")

// commitTx commits the transaction's backends: the ones that only read
// first, then the writers all or none (two-phase commit for several). With
// one writer and relay set, the writer's own reply to COMMIT reaches the
// client (a deferred constraint's error with all its fields), and relayed
// is true. An error is for the client (errSent: it has it already); every
// backend has then been rolled back.
func (s *session) commitTx(ctx context.Context, all []*backend, relay bool) (relayed bool, err error) {
	var writers, readers []*backend
	for _, b := range all {
		if _, w := slices.BinarySearch(s.wrote, b.pool.shard); w {
			writers = append(writers, b)
		} else {
			readers = append(readers, b)
		}
	}
	for i, b := range readers {
		if _, err := execTag(b, "COMMIT"); err != nil {
			s.rollbackAll(readers[i+1:])
			s.rollbackAll(writers)
			return false, err
		}
		if b.txStatus != 'I' {
			b.broken = true
		}
	}
	switch {
	case len(writers) == 0:
		return false, nil
	case len(writers) == 1 && relay:
		b := writers[0]
		before := len(s.out)
		if err := s.exec(b, "COMMIT", false); err != nil {
			return true, err
		}
		if b.txStatus != 'I' {
			b.broken = true
		}
		if s.lastWasError(before) {
			return true, errSent
		}
		return true, nil
	}
	slices.SortFunc(writers, func(a, b *backend) int { return a.pool.shard - b.pool.shard })
	s.notifierDecides(writers) // listen.go
	return false, s.commitShards(ctx, writers)
}

// keepTxSets makes the SETs of a committed transaction the session's.
func (s *session) keepTxSets() {
	for _, st := range s.txSets {
		s.rememberSet(st)
	}
}

// rememberSet records a successful SET/RESET outside SET LOCAL as the
// session's, replayed on every backend it leases.
func (s *session) rememberSet(st *parser.Statement) {
	name, _ := st.SetName()
	s.setStatement(st, name)
}

// txWrites checks a write of the open transaction and records the shards
// it writes on. A transaction may write on several shards when two-phase
// commit is available; otherwise a second writing shard is refused (it
// could half commit).
func (s *session) txWrites(st *parser.Statement, plan *router.Plan) error {
	if !st.Writes && !plan.Write {
		return nil
	}
	spans := len(plan.Shards) > 1
	for _, sh := range plan.Shards {
		if len(s.wrote) > 0 && !slices.Contains(s.wrote, sh) {
			spans = true
		}
	}
	if spans {
		if err := s.srv.twoPhaseUnavailable(); err != nil {
			return err
		}
	}
	for _, sh := range plan.Shards {
		s.markWrote(sh)
	}
	return nil
}

// implicitWrite runs a write on several shards outside a transaction as
// Postgres runs any statement: atomically. Each shard's part runs inside
// BEGIN (sent with the statement, no extra round trip) and the parts commit
// together (two-phase commit). Statements Postgres refuses inside a
// transaction block run shard by shard.
func (s *session) implicitWrite(ctx context.Context, st *parser.Statement, text string, plan *router.Plan) error {
	if st.NoTransactionBlock() {
		return s.shardByShard(ctx, st, text, plan)
	}
	if err := s.srv.twoPhaseUnavailable(); err != nil {
		s.fail(err)
		return nil
	}
	bs, err := s.leaseAll(ctx, plan.Shards)
	defer s.releaseAll(bs)
	if err != nil {
		s.fail(err)
		return nil
	}
	for _, b := range bs {
		b.wbuf = appendQuery(b.wbuf[:0], "BEGIN")
	}
	outLen := len(s.out)
	if err := s.scatterOnBegun(bs, st, text, plan); err != nil {
		return err
	}
	all := append(append([]*backend(nil), bs...), s.moved...)
	defer func() {
		s.releaseAll(s.moved)
		s.moved = nil
	}()
	if s.lastWasError(outLen) {
		s.rollbackAll(all)
		return nil
	}
	slices.SortFunc(all, func(a, b *backend) int { return a.pool.shard - b.pool.shard })
	if err := s.commitShards(ctx, all); err != nil {
		// Drop the command tag the merge wrote: the statement did not
		// happen. Rows already sent stay, as with Postgres's own failed
		// commit after RETURNING.
		s.out = dropLastTag(s.out, outLen)
		s.sendError(err)
	}
	return nil
}

// dropLastTag removes the last CommandComplete written at or after from.
func dropLastTag(out []byte, from int) []byte {
	i := lastMessage(out[from:], 'C')
	if i < 0 {
		return out
	}
	i += from
	n := int(binary.BigEndian.Uint32(out[i+1 : i+5]))
	return append(out[:i], out[i+1+n:]...)
}

// shardByShard runs a statement that cannot run in a transaction block
// (CREATE INDEX CONCURRENTLY...) on each shard in turn, stopping at the
// first error, which then says which shards have it.
func (s *session) shardByShard(ctx context.Context, st *parser.Statement, text string, plan *router.Plan) error {
	var done []int
	var tag []byte
	for i, sh := range plan.Shards {
		b, err := s.lease(ctx, sh)
		if err != nil {
			s.fail(s.partial(err, done, plan.Shards[i:]))
			return nil
		}
		sql := text
		if plan.SQL != nil {
			sql = plan.SQL[i]
		}
		t, err := execTag(b, sql)
		s.release(b)
		if err != nil {
			s.fail(s.partial(err, done, plan.Shards[i:]))
			return nil
		}
		done = append(done, sh)
		tag = []byte(t)
	}
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: tag})
	return nil
}

// partial adds to a shard-by-shard failure which shards have the change.
func (s *session) partial(err error, done, left []int) error {
	if len(done) == 0 {
		return err // applied nowhere: the statement's error, as Postgres words it
	}
	e := errorResponse(err)
	detail := fmt.Sprintf("Applied on shards %s; not on %s.", s.shardNames(done), s.shardNames(left))
	if e.Detail != "" {
		detail = e.Detail + "\n" + detail
	}
	return &pgError{code: e.Code, msg: fmt.Sprintf("shard %s: %s", s.srv.router.Topology().Shards[left[0]].Name, e.Message),
		detail: detail, hint: "This statement cannot run inside a transaction block, so it runs shard by shard; rerun it (with IF NOT EXISTS / IF EXISTS) once the cause is fixed."}
}

// multiAcross runs a query string whose statements need several shards.
// Postgres runs such a string as one implicit transaction (unless it holds
// its own BEGIN/COMMIT): the statements run one by one in a transaction of
// the proxy's, which commits (two-phase across shards) when all succeed and
// rolls back at the first error, the rest of the string skipped.
func (s *session) multiAcross(ctx context.Context, stmts []*parser.Statement) error {
	implicit := s.status == 'I'
	for _, st := range stmts {
		if st.Kind == parser.Transaction {
			implicit = false
		}
	}
	if implicit {
		s.beginTx("BEGIN")
	}
	for _, st := range stmts {
		before := len(s.out)
		if err := s.statement(ctx, st); err != nil {
			return err
		}
		if s.lastWasError(before) {
			if s.status == 'T' {
				s.status = 'E'
			}
			break
		}
	}
	if implicit {
		return s.txEnd(ctx, true, false)
	}
	return nil
}

// txMerge is the client's status after one of its transaction's backends
// reported shard: a failed transaction stays failed until it ends (the
// proxy's own errors leave the shards' transactions open but the client's
// aborted); otherwise the shard's word holds.
func txMerge(client, shard byte) byte {
	if client == 'E' && shard == 'T' {
		return 'E'
	}
	return shard
}

// moveKeyed finishes an UPDATE that set the shard key (plan.KeyGuard): rows
// it changed on a shard their new key does not belong to move to the
// key's shard, in the statement's transaction: deleted where they are
// (their updated values returned as JSON) and inserted on the target,
// which the transaction joins. Without a KeyMove (the new value is not
// known as text) such rows are refused. An error is for the client; the
// caller rolls the statement back.
func (s *session) moveKeyed(ctx context.Context, plan *router.Plan, bs []*backend, m gathered) error {
	mv := plan.KeyMove
	if len(plan.KeyGuard) == 0 || m.firstErr != nil {
		return nil
	}
	var target *backend
	for i, b := range bs {
		if !slices.Contains(plan.KeyGuard, b.pool.shard) || i >= len(m.shardTags) {
			continue
		}
		n := tagRows(m.shardTags[i])
		if n == 0 {
			continue
		}
		if mv == nil {
			return refused(fmt.Sprintf("the UPDATE would move %d row(s) from shard %s to a shard its new key value does not name: the proxy cannot place them", n, b.pool.name),
				"Set the shard key to a constant or a parameter, or delete the rows and insert them with the new key.")
		}
		table := quoteQualified(mv.Table)
		rows, err := simpleRows(b, "WITH moved AS (DELETE FROM "+table+" WHERE "+quoteIdent(mv.Key)+" = "+quoteLiteral(mv.Value)+
			" RETURNING *) SELECT coalesce(json_agg(moved)::text, '[]') FROM moved")
		if err != nil {
			return err
		}
		if len(rows) != 1 || len(rows[0]) != 1 {
			return &pgError{code: pgerrcode.InternalError, msg: fmt.Sprintf("moving rows off shard %s: unexpected reply", b.pool.name)}
		}
		if target == nil {
			if target, err = s.joinForMove(ctx, mv.Target, bs); err != nil {
				return err
			}
		}
		if err := execSimple(target, "INSERT INTO "+table+" SELECT * FROM json_populate_recordset(NULL::"+table+", "+quoteLiteral(rows[0][0])+")"); err != nil {
			return err
		}
	}
	return nil
}

// joinForMove returns a backend on shard inside the statement's
// transaction: the statement's own backend there (bs), the client's
// transaction's, or, for a statement outside one, a backend of its own
// inside BEGIN that commits with the statement's (s.moved).
func (s *session) joinForMove(ctx context.Context, shard int, bs []*backend) (*backend, error) {
	for _, b := range bs {
		if b.pool.shard == shard {
			return b, nil // the statement's own backend there
		}
	}
	if s.status != 'I' {
		b, err := s.txOn(ctx, shard)
		if err == nil {
			s.markWrote(shard)
		}
		return b, err
	}
	b, err := s.lease(ctx, shard)
	if err != nil {
		return nil, err
	}
	s.moved = append(s.moved, b)
	return b, execSimple(b, "BEGIN")
}

// tagRows is the row count at the end of a command tag.
func tagRows(tag string) int64 {
	n, _ := strconv.ParseInt(tag[strings.LastIndexByte(tag, ' ')+1:], 10, 64)
	return n
}

// quoteQualified quotes a configured table name (name or schema.name).
func quoteQualified(name string) string {
	if sch, n, ok := strings.Cut(name, "."); ok {
		return quoteIdent(sch) + "." + quoteIdent(n)
	}
	return quoteIdent(name)
}

// onShardInTx runs sql on every shard of the open transaction, joining the
// default shard first when it has none yet, so that a shard answers what
// only Postgres can judge (transaction modes after queries or savepoints).
func (s *session) onShardInTx(ctx context.Context, sql string) error {
	if s.tx == nil {
		if _, err := s.txOn(ctx, s.srv.router.Topology().Default); err != nil {
			s.fail(err)
			return nil
		}
	}
	return s.txEverywhere(sql)
}
