package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/fanout"
	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// Cross-shard cursors: a merged result read in parts.
//
// An extended-protocol portal executed with a row limit (pg-cursor,
// pg-query-stream, JDBC's fetch size) and a SQL cursor over a cross-shard
// query (DECLARE, then FETCH/MOVE) both stop the merge after n rows and
// resume it later, possibly after other statements ran on the same shards.
//
// Each shard runs its part as a named protocol portal inside a transaction
// on that shard: the client's transaction's backends, or, outside a
// transaction, backends leased for the cursor with a BEGIN of their own,
// committed and returned to the pool when the client's implicit
// transaction ends (Sync) or the portal is closed. Every shard's portal is
// fetched in batches of cursorBatch rows (Execute(name, cursorBatch) and
// Sync), each batch read whole, so between two fetches of the client every
// backend is idle in its transaction and usable by the client's other
// statements, and the fanout operator tree stays suspended over the batch
// sources. Memory is bounded by one batch per shard (plus what the
// operators buffer by design: groups, a sort after them, under
// merge_memory_mb); the result is never materialised.
//
// The other design, each shard's stream left open (Execute without a limit)
// and read as the client asks, saves the round trip per batch but pins the
// backends mid-reply: any other statement to those shards before the
// cursor ends would have to drain the rest into memory first, and a cancel
// or an error would have to be untangled from the other statement's reply.
// With batches of 1000 rows the extra round trips cost little: reading
// 100k merged rows through a cursor took the time of the plain scatter
// within the run-to-run noise of this machine (docs/pooling.md).

// cursorBatch is how many rows each shard returns per fetch of a merged
// cursor.
const cursorBatch = 1000

// mcursor is a merged result read in parts.
type mcursor struct {
	name string // the shards' portal
	plan *router.Plan
	bs   []*backend
	// own: bs were leased for the cursor (outside a transaction, or the
	// coordinator's); it ends their transactions and releases them.
	own  bool
	srcs []*batchRows
	root fanout.Source
	// desc is the client's RowDescription (raw); formats, when set, are
	// the result formats merged text rows are converted to.
	desc    []byte
	formats []int16
	types   []uint32
	// text: the merged rows are in text (a FETCH in the extended protocol
	// may ask for binary: converted with the column types).
	text   bool
	done   bool // every row was read
	closed bool // ended: by the client, an error or the transaction's end
	sp     int  // savepoints open when it was opened (cursorsp.go)
}

// cursorState is the session's merged cursors.
type cursorState struct {
	seq  int
	open []*mcursor
	// sql are the SQL cursors (DECLARE) among them, by name.
	sql map[string]*mcursor
}

// batchRows is one shard's part of a merged cursor as a fanout.Source: the
// rows of the batch read last, then the next batch, fetched on demand.
type batchRows struct {
	s    *session
	c    *mcursor
	i    int
	rows [][]byte
	pos  int
	end  bool // the shard's portal completed
}

func (r *batchRows) Next() ([]byte, error) {
	for r.pos >= len(r.rows) {
		if r.end {
			return nil, nil
		}
		b := r.c.bs[r.i]
		buf := appendMsg(nil, &pgproto3.Execute{Portal: r.c.name, MaxRows: cursorBatch})
		buf = appendMsg(buf, &pgproto3.Sync{})
		if _, err := b.conn.Write(buf); err != nil {
			b.broken = true
			return nil, errShardLost{&shardError{shard: b.pool.name, err: err}}
		}
		if err := r.read(nil); err != nil {
			return nil, err
		}
	}
	row := r.rows[r.pos]
	r.pos++
	return row, nil
}

// cursorShardErr is an ErrorResponse (raw) a shard sent for a cursor.
type cursorShardErr struct{ raw []byte }

func (e *cursorShardErr) Error() string { return "shard error" }

// read reads one reply of the shard up to ReadyForQuery: the rows of a
// batch (copied: they outlive the read buffer), and with desc set the
// RowDescription of an opening Describe.
func (r *batchRows) read(desc *[]byte) error {
	b := r.c.bs[r.i]
	r.rows, r.pos = r.rows[:0], 0
	var arena []byte
	var ends []int
	var failed []byte
	for {
		typ, body, raw, err := b.rd.next()
		if err != nil {
			b.broken = true
			return errShardLost{&shardError{shard: b.pool.name, err: err}}
		}
		switch typ {
		case 'D':
			arena = append(arena, body...)
			ends = append(ends, len(arena))
		case 'T':
			if desc != nil {
				*desc = bytes.Clone(raw)
			}
		case 'C', 'I':
			r.end = true
		case 'E':
			if failed == nil {
				failed = withShard(raw, body, b.pool.name)
				if r.c.plan.Replicated || len(r.c.bs) == 1 {
					failed = bytes.Clone(raw)
				}
			}
		case 'N', 'S':
			if typ == 'S' {
				noteStatus(b, body)
			}
			if r.i == 0 {
				r.s.out = append(r.s.out, raw...)
			}
		case 'Z':
			b.txStatus = body[0]
			start := 0
			for _, e := range ends {
				r.rows = append(r.rows, arena[start:e:e])
				start = e
			}
			if failed != nil {
				return &cursorShardErr{failed}
			}
			return nil
		}
	}
}

// cursorOpen is what opening a merged cursor needs: the statement each
// shard runs (prepare appends its Parse, or nothing when the backend has
// it) and the Bind of it.
type cursorOpen struct {
	st      *parser.Statement
	plan    *router.Plan
	bind    *pgproto3.Bind
	prepare func(i int, b *backend, buf []byte) []byte
	// formats: convert the merged (text) rows to these result formats.
	formats []int16
	// on: run on these backends (the coordinator's), owned by the cursor.
	on []*backend
}

// openCursor starts a merged cursor: every shard binds its portal and
// returns its first batch; the operator tree is built over them. A
// statement error goes to the client (in the extended protocol the request
// then skips to Sync) and the result is nil; err means the client is gone.
func (s *session) openCursor(ctx context.Context, o cursorOpen) (*mcursor, error) {
	s.mc.seq++
	c := &mcursor{name: "shardproxy_c" + strconv.Itoa(s.mc.seq), plan: o.plan, formats: o.formats, sp: len(s.savepoints)}
	switch {
	case o.on != nil:
		c.bs, c.own = o.on, true
	case s.status != 'I':
		for _, sh := range o.plan.Shards {
			b, err := s.txOn(ctx, sh)
			if err != nil {
				s.cursorFail(err)
				return nil, nil
			}
			c.bs = append(c.bs, b)
		}
	default:
		bs, err := s.leaseAllFor(ctx, o.st, o.plan.Shards) // replicas.go: reads may use replicas
		if err != nil {
			s.releaseAll(bs)
			s.cursorFail(err)
			return nil, nil
		}
		c.bs, c.own = bs, true
	}
	s.mc.open = append(s.mc.open, c)
	bind := *o.bind
	bind.DestinationPortal = c.name
	for i, b := range c.bs {
		var buf []byte
		if c.own {
			buf = appendQuery(buf, "BEGIN")
		}
		buf = o.prepare(i, b, buf)
		buf = appendMsg(buf, &bind)
		buf = appendMsg(buf, &pgproto3.Describe{ObjectType: 'P', Name: c.name})
		buf = appendMsg(buf, &pgproto3.Execute{Portal: c.name, MaxRows: cursorBatch})
		buf = appendMsg(buf, &pgproto3.Sync{})
		if _, err := b.conn.Write(buf); err != nil {
			b.broken = true
			for _, o := range c.bs[:i] {
				o.broken = true
				go o.cancel()
			}
			s.endCursor(c, false)
			s.cursorFail(&shardError{shard: b.pool.name, err: err})
			return nil, nil
		}
	}
	var desc []byte
	var failed error
	c.srcs = make([]*batchRows, len(c.bs))
	for i, b := range c.bs {
		if c.own {
			if err := readQuiet(b); err != nil && failed == nil {
				failed = err
			}
		}
		r := &batchRows{s: s, c: c, i: i}
		c.srcs[i] = r
		var d []byte
		if err := r.read(&d); err != nil && failed == nil {
			failed = err
		}
		if desc == nil {
			desc = d
		} else if failed == nil && d != nil && !sameColumns(d, desc) {
			failed = &pgError{code: pgerrcode.InternalError,
				msg:  fmt.Sprintf("shard %s returned different columns than shard %s", b.pool.name, c.bs[0].pool.name),
				hint: "The table definitions differ between shards."}
		}
	}
	if failed != nil {
		s.cursorError(c, failed)
		return nil, nil
	}
	if desc == nil {
		s.cursorError(c, &pgError{code: pgerrcode.InvalidCursorDefinition, msg: "cursor can only scan forward over a query that returns rows"})
		return nil, nil
	}
	g := &gatherer{s: s, bs: c.bs, plan: c.plan, withRowDesc: true, descShard: c.bs[0].pool.shard, done: make([]bool, len(c.bs))}
	g.m.rowDesc = desc
	var rd pgproto3.RowDescription
	if rd.Decode(desc[5:]) == nil {
		g.m.fields = rd.Fields
	}
	in := make([]fanout.Source, len(c.srcs))
	for i, r := range c.srcs {
		in[i] = r
	}
	before := len(s.out)
	root, err := s.pipeline(g, in)
	c.desc = bytes.Clone(s.out[before:])
	s.out = s.out[:before]
	if err != nil {
		s.cursorError(c, err)
		return nil, nil
	}
	if len(c.desc) == 0 {
		c.desc = desc
	}
	c.root, c.types = root, g.types
	if c.formats != nil {
		c.desc = withFormats(c.desc, c.formats)
	}
	c.text = c.formats == nil && allText(o.bind.ResultFormatCodes)
	if c.types == nil {
		var rd pgproto3.RowDescription
		if rd.Decode(c.desc[5:]) == nil {
			for _, f := range rd.Fields {
				c.types = append(c.types, f.DataTypeOID)
			}
		}
	}
	return c, nil
}

// withFormats rewrites a RowDescription's column formats.
func withFormats(raw []byte, formats []int16) []byte {
	var rd pgproto3.RowDescription
	if rd.Decode(raw[5:]) != nil {
		return raw
	}
	for i := range rd.Fields {
		f := formats[0]
		if len(formats) > 1 {
			f = 0
			if i < len(formats) {
				f = formats[i]
			}
		}
		rd.Fields[i].Format = f
	}
	return appendMsg(nil, &rd)
}

// cursorFail reports a proxy-side error of a cursor statement.
func (s *session) cursorFail(err error) {
	s.fail(err)
	if s.x != nil {
		s.x.errored = true
	}
}

// cursorError ends c after err: a shard's ErrorResponse is relayed as it
// came, a lost shard or a merge failure reported. Inside a transaction the
// transaction is aborted, as the failed statement aborts it in Postgres.
func (s *session) cursorError(c *mcursor, err error) {
	var se *cursorShardErr
	var lost errShardLost
	switch {
	case errors.As(err, &se):
		s.out = append(s.out, se.raw...)
		if s.status == 'T' {
			s.status = 'E'
		}
		if s.x != nil {
			s.x.errored = true
		}
	case errors.As(err, &lost):
		s.cursorFail(lost.err)
	default:
		var pe *pgError
		var sh *shardError
		if !errors.As(err, &pe) && !errors.As(err, &sh) {
			err = mergeError(err)
		}
		s.cursorFail(err)
	}
	s.endCursor(c, false)
}

// fetch sends up to n rows of c (n < 0: all) as DataRows, or skips them
// (MOVE). It reports how many rows it read; ok is false when an error
// ended the cursor (the client has it). err means the client is gone.
func (s *session) fetch(c *mcursor, n int64, send bool, formats []int16) (got int64, ok bool, err error) {
	for n < 0 || got < n {
		row, rerr := c.root.Next()
		if rerr != nil {
			s.cursorError(c, rerr)
			return got, false, nil
		}
		if row == nil {
			c.done = true
			break
		}
		got++
		if !send {
			continue
		}
		if formats != nil {
			if row, rerr = toFormats(row, formats, c.types); rerr != nil {
				s.cursorError(c, rerr)
				return got, false, nil
			}
		}
		s.out = append(s.out, 'D', 0, 0, 0, 0)
		binary.BigEndian.PutUint32(s.out[len(s.out)-4:], uint32(len(row)+4))
		s.out = append(s.out, row...)
		if len(s.out) >= flushAt {
			if err := s.flush(); err != nil {
				return got, false, err
			}
		}
	}
	return got, true, nil
}

// endCursor ends c. Backends leased for it finish their transaction
// (COMMIT, or ROLLBACK after an error) and go back to the pool; the
// transaction's backends close its portal unless the transaction is over
// (txOver: they may be in the pool already, the portal gone with the
// transaction).
func (s *session) endCursor(c *mcursor, txOver bool) {
	if c.closed {
		return
	}
	c.closed = true
	for i, o := range s.mc.open {
		if o == c {
			s.mc.open = append(s.mc.open[:i], s.mc.open[i+1:]...)
			break
		}
	}
	for name, o := range s.mc.sql {
		if o == c {
			delete(s.mc.sql, name)
		}
	}
	switch {
	case c.own:
		for _, b := range c.bs {
			if !b.broken {
				end := "COMMIT"
				if b.txStatus != 'T' {
					end = "ROLLBACK"
				}
				if err := s.quiet(b, end); err != nil || b.txStatus != 'I' {
					b.broken = true
				}
			}
			s.release(b)
		}
	case !txOver:
		for _, b := range c.bs {
			if b.broken || b.txStatus != 'T' {
				continue
			}
			buf := appendMsg(nil, &pgproto3.Close{ObjectType: 'P', Name: c.name})
			buf = appendMsg(buf, &pgproto3.Sync{})
			if _, err := b.conn.Write(buf); err != nil {
				b.broken = true
				continue
			}
			if err := readQuiet(b); err != nil {
				var se *shardError
				if errors.As(err, &se) {
					b.broken = true
				}
			}
		}
	}
	c.bs, c.srcs, c.root = nil, nil, nil
}

// settleCursors ends every merged cursor once no transaction is open
// (at ReadyForQuery): Sync ended the client's implicit transaction, or
// COMMIT/ROLLBACK the explicit one.
func (s *session) settleCursors() {
	if s.status != 'I' || len(s.mc.open) == 0 {
		return
	}
	for len(s.mc.open) > 0 {
		s.endCursor(s.mc.open[0], true)
	}
	s.mc.sql = nil
}

// dropCursors is the end of a session: backends leased for cursors are
// in a transaction of their own and are closed, never pooled.
func (s *session) dropCursors() {
	for _, c := range s.mc.open {
		if c.own {
			for _, b := range c.bs {
				b.broken = true
				s.release(b)
			}
		}
		c.closed = true
	}
	s.mc.open, s.mc.sql = nil, nil
}

// executePartial runs Execute with a row limit of a cross-shard portal
// (maxRows 0 after a first limited Execute: the rest). The first Execute
// opens the merged cursor; each returns up to maxRows rows, then
// PortalSuspended, or CommandComplete once the rows ran out, as Postgres
// does (its tag counts the rows of that Execute).
func (s *session) executePartial(ctx context.Context, p *portal, maxRows uint32) error {
	if err := s.extFlush(false); err != nil || s.x.errored {
		return err
	}
	c := p.mc
	if c == nil {
		if p.ps.st.Writes || p.plan.Write {
			return refused("fetching the RETURNING rows of a cross-shard write in parts (Execute with a row limit) is not supported",
				"Fetch all rows at once (no row limit), or add a shard key predicate.")
		}
		var err error
		if c, err = s.openPortal(ctx, p); err != nil || c == nil {
			return err
		}
		p.mc = c
	}
	if c.closed {
		return &pgError{code: pgerrcode.InvalidCursorName, msg: "portal does not exist"}
	}
	limit := int64(maxRows)
	if maxRows == 0 {
		limit = -1
	}
	got, ok, err := s.fetch(c, limit, true, c.formats)
	if err != nil || !ok {
		return err
	}
	s.q.rows += got
	if maxRows != 0 && got == limit {
		s.out = appendMsg(s.out, &pgproto3.PortalSuspended{})
		return nil
	}
	tag := "SELECT " + strconv.FormatInt(got, 10)
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(tag)})
	return nil
}

// openPortal opens the merged cursor of a scatter portal. A statement
// error goes to the client and the result is nil.
func (s *session) openPortal(ctx context.Context, p *portal) (*mcursor, error) {
	bind, custom, formats := p.shardBind()
	var oids []uint32
	if custom {
		var err error
		if oids, err = shardParamTypes(p, p.plan); err != nil {
			// Ask a shard for the types the client left out, as
			// executeScatter does.
			b, lerr := s.lease(ctx, p.plan.Shards[0])
			if lerr != nil {
				return nil, lerr
			}
			lerr = learnParamTypes(b, p.ps)
			s.release(b)
			if lerr != nil {
				return nil, lerr
			}
			if oids, err = shardParamTypes(p, p.plan); err != nil {
				return nil, err
			}
		}
	}
	prepare := func(i int, b *backend, buf []byte) []byte {
		if !custom {
			return s.prepareOn(b, p.ps, buf)
		}
		sql := p.ps.query
		if p.plan.SQL != nil {
			sql = p.plan.SQL[i]
		}
		return appendMsg(buf, &pgproto3.Parse{Query: sql, ParameterOIDs: oids})
	}
	return s.openCursor(ctx, cursorOpen{st: p.ps.st, plan: p.plan, bind: bind, prepare: prepare, formats: formats})
}

// closePortalCursor ends the merged cursor of a portal the client closes
// or binds anew.
func (s *session) closePortalCursor(p *portal) {
	if p != nil && p.mc != nil {
		s.endCursor(p.mc, false)
		p.mc = nil
	}
}

// declareMerged runs DECLARE over a cross-shard query (simple protocol)
// as a merged cursor inside the transaction. The merge reads forward only:
// SCROLL and WITH HOLD are refused.
func (s *session) declareMerged(ctx context.Context, c parser.Cursor, plan *router.Plan, on []*backend) error {
	switch {
	case c.Hold:
		s.fail(refused("a cursor WITH HOLD over a query on several shards is not supported",
			"Declare it WITHOUT HOLD inside a transaction, or add a shard key predicate to the cursor's query."))
		return nil
	case s.status == 'I':
		s.fail(&pgError{code: pgerrcode.NoActiveSQLTransaction, msg: "DECLARE CURSOR can only be used in transaction blocks"})
		return nil
	case c.Scroll:
		s.fail(refused("a SCROLL cursor over a query on several shards is not supported: the merge reads forward only",
			"Declare it NO SCROLL, or add a shard key predicate to the cursor's query."))
		return nil
	case c.QuerySQL == "":
		s.fail(refused("this cursor's query cannot be sent to the shards", "Add a shard key predicate to the cursor's query."))
		return nil
	case s.cursorExists(c.Name):
		s.fail(&pgError{code: pgerrcode.DuplicateCursor, msg: fmt.Sprintf("cursor \"%s\" already exists", c.Name)})
		return nil
	}
	if on == nil {
		if err := s.txWrites(c.Query, plan); err != nil {
			s.fail(err)
			return nil
		}
	}
	bind := &pgproto3.Bind{}
	var formats []int16
	if c.Binary {
		if plan.Merge != nil && plan.Merge.Grouped {
			formats = []int16{1} // computed in text, converted
		} else {
			bind.ResultFormatCodes = []int16{1}
		}
	}
	prepare := func(i int, b *backend, buf []byte) []byte {
		sql := c.QuerySQL
		if plan.SQL != nil && on == nil {
			sql = plan.SQL[i]
		}
		return appendMsg(buf, &pgproto3.Parse{Query: sql})
	}
	mc, err := s.openCursor(ctx, cursorOpen{st: c.Query, plan: plan, bind: bind, prepare: prepare, formats: formats, on: on})
	if err != nil || mc == nil {
		return err
	}
	if s.mc.sql == nil {
		s.mc.sql = map[string]*mcursor{}
	}
	s.mc.sql[c.Name] = mc
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("DECLARE CURSOR")})
	return nil
}

// cursorExists reports whether the client has a cursor of that name.
func (s *session) cursorExists(name string) bool {
	_, one := s.rsv.cursors[name]
	return one || s.mc.sql[name] != nil
}

// fetchMerged runs FETCH or MOVE forward on a merged cursor (in the
// simple protocol: with its RowDescription).
func (s *session) fetchMerged(c *mcursor, f parser.Cursor) error {
	return s.fetchMergedAs(c, f, true, c.formats)
}

// fetchMergedAs is fetchMerged; desc sends the RowDescription first,
// formats are the result formats of the rows sent.
func (s *session) fetchMergedAs(c *mcursor, f parser.Cursor, desc bool, formats []int16) error {
	if f.Backward || f.Count == 0 {
		s.fail(refused("fetching backward (or re-reading the current row) from a cursor over several shards is not supported: the merge reads forward only",
			"Use FETCH/MOVE FORWARD n or ALL, or add a shard key predicate to the cursor's query."))
		return nil
	}
	if !f.Move && desc {
		s.out = append(s.out, c.desc...)
	}
	var got int64
	if !c.done {
		var ok bool
		var err error
		if got, ok, err = s.fetch(c, f.Count, !f.Move, formats); err != nil || !ok {
			return err
		}
	}
	verb := "FETCH "
	if f.Move {
		verb = "MOVE "
	}
	s.q.rows += got
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte(verb + strconv.FormatInt(got, 10))})
	return nil
}

// closeMerged runs CLOSE of a merged cursor.
func (s *session) closeMerged(c *mcursor) {
	s.endCursor(c, false)
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("CLOSE CURSOR")})
}

// closeAllMerged ends every SQL merged cursor (CLOSE ALL).
func (s *session) closeAllMerged() {
	for _, c := range s.mc.sql {
		s.endCursor(c, false)
	}
	s.mc.sql = nil
}

// declareOnCoordinator runs DECLARE over a query the merge cannot answer on
// the coordinator, when it takes reads (coordinator.go): a coordinator
// backend of the cursor's own, in a transaction of its own, ended with
// the client's transaction. It reports whether it took the statement.
func (s *session) declareOnCoordinator(ctx context.Context, c parser.Cursor, routeErr error) (bool, error) {
	if s.status == 'I' || c.Hold || c.Scroll || c.QuerySQL == "" || !s.coordinatorTakes(c.Query, routeErr) {
		return false, nil
	}
	if s.cursorExists(c.Name) {
		s.fail(&pgError{code: pgerrcode.DuplicateCursor, msg: fmt.Sprintf("cursor \"%s\" already exists", c.Name)})
		return true, nil
	}
	if err := s.coordinatorInTx(); err != nil {
		s.fail(err)
		return true, nil
	}
	b, err := s.leaseCoordinator(ctx)
	if err != nil {
		s.fail(err)
		return true, nil
	}
	plan := &router.Plan{Shards: []int{coordShard}, Reason: "coordinator"}
	return true, s.declareMerged(ctx, c, plan, []*backend{b})
}

// declared is a DECLARE over a cross-shard query bound in the extended
// protocol (psycopg's named cursors), opened at its Execute.
type declared struct {
	c    parser.Cursor
	plan *router.Plan
}

// cursorCmd is a FETCH, MOVE or CLOSE of a merged cursor bound in the
// extended protocol, with the result formats of its Bind.
type cursorCmd struct {
	c       *mcursor
	f       parser.Cursor
	formats []int16
}

// bindDeclare binds an extended-protocol DECLARE whose query runs on
// several shards (with the bound parameters), or a FETCH, MOVE or CLOSE of
// a merged cursor. It reports whether it took the statement; other cursor
// statements go the one-shard way (reserve.go).
func (s *session) bindDeclare(p *portal) (bool, error) {
	c, ok := p.ps.st.Cursor()
	if !ok {
		return false, nil
	}
	if c.Op != parser.DeclareCursor {
		mc := s.mc.sql[c.Name]
		if mc == nil || c.All {
			return false, nil
		}
		if c.Op == parser.FetchCursor && !allText(p.bind.ResultFormatCodes) && !mc.text {
			return true, refused("this FETCH asks for result formats the cursor's rows cannot be converted to",
				"FETCH in text, or declare the cursor without BINARY.")
		}
		p.cmd = &cursorCmd{c: mc, f: c, formats: p.bind.ResultFormatCodes}
		if allText(p.cmd.formats) {
			p.cmd.formats = mc.formats
		}
		s.emit(&pgproto3.BindComplete{})
		return true, nil
	}
	plan, err := s.route(c.Query, bindParams{ps: p.ps, b: p.bind})
	if err != nil || (plan.Single() && plan.SQL == nil && len(plan.KeyGuard) == 0) || s.anywhere(c.Query) {
		return false, nil
	}
	switch {
	case c.Hold:
		return true, refused("a cursor WITH HOLD over a query on several shards is not supported",
			"Declare it WITHOUT HOLD inside a transaction, or add a shard key predicate to the cursor's query.")
	case s.status == 'I':
		return true, &pgError{code: pgerrcode.NoActiveSQLTransaction, msg: "DECLARE CURSOR can only be used in transaction blocks"}
	case c.Scroll:
		return true, refused("a SCROLL cursor over a query on several shards is not supported: the merge reads forward only",
			"Declare it NO SCROLL, or add a shard key predicate to the cursor's query.")
	case c.QuerySQL == "":
		return true, refused("this cursor's query cannot be sent to the shards", "Add a shard key predicate to the cursor's query.")
	}
	if err := s.txWrites(c.Query, plan); err != nil {
		return true, err
	}
	p.decl = &declared{c: c, plan: plan}
	s.emit(&pgproto3.BindComplete{})
	return true, nil
}

// executeDeclare runs a cursor statement bound by bindDeclare. A DECLARE
// opens the merged cursor: its query runs as a portal of its own with the
// DECLARE's parameters.
func (s *session) executeDeclare(ctx context.Context, p *portal) error {
	if err := s.extFlush(false); err != nil || s.x.errored {
		return err
	}
	if cmd := p.cmd; cmd != nil {
		if cmd.c.closed {
			return noCursor(cmd.f.Name)
		}
		if cmd.f.Op == parser.CloseCursor {
			s.closeMerged(cmd.c)
			return nil
		}
		return s.fetchMergedAs(cmd.c, cmd.f, false, cmd.formats)
	}
	d := p.decl
	if s.cursorExists(d.c.Name) {
		return &pgError{code: pgerrcode.DuplicateCursor, msg: fmt.Sprintf("cursor \"%s\" already exists", d.c.Name)}
	}
	inner := &prepared{query: d.c.QuerySQL, oids: p.ps.oids, st: d.c.Query, described: p.ps.described}
	inner.global = s.srv.globalName(inner.query, inner.oids)
	bind := *p.bind
	bind.PreparedStatement = inner.global
	bind.ResultFormatCodes = nil
	if d.c.Binary {
		bind.ResultFormatCodes = []int16{1}
	}
	c, err := s.openPortal(ctx, &portal{ps: inner, bind: &bind, plan: d.plan, scatter: true})
	if err != nil || c == nil {
		return err
	}
	if s.mc.sql == nil {
		s.mc.sql = map[string]*mcursor{}
	}
	s.mc.sql[d.c.Name] = c
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("DECLARE CURSOR")})
	return nil
}

// describeDeclare answers Describe of a portal bound by bindDeclare. It
// reports whether p is one.
func (s *session) describeDeclare(p *portal) bool {
	switch {
	case p.decl != nil:
		s.emit(&pgproto3.NoData{})
	case p.cmd != nil:
		if p.cmd.f.Op != parser.FetchCursor || p.cmd.f.Move || p.cmd.c.closed {
			s.emit(&pgproto3.NoData{})
			return true
		}
		var rd pgproto3.RowDescription
		desc := p.cmd.c.desc
		if p.cmd.formats != nil {
			desc = withFormats(desc, p.cmd.formats)
		}
		if rd.Decode(desc[5:]) != nil {
			return false
		}
		s.emit(&rd)
	default:
		return false
	}
	return true
}

// allText reports whether result format codes ask for text only.
func allText(formats []int16) bool {
	for _, f := range formats {
		if f != 0 {
			return false
		}
	}
	return true
}

// describeCursor answers Describe of a portal that is a merged SQL cursor
// (psycopg describes its named cursor after DECLARE). It reports whether
// name is one.
func (s *session) describeCursor(name string) bool {
	c := s.mc.sql[name]
	if c == nil {
		return false
	}
	var rd pgproto3.RowDescription
	if rd.Decode(c.desc[5:]) != nil {
		return false
	}
	s.emit(&rd)
	return true
}
