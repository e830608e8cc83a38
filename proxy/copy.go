package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/copyfmt"
	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// copyBatch is how much row data is gathered for one shard before it is
// sent as one CopyData message. Writes block while a shard is slow, and
// the client is not read meanwhile: memory stays at about one batch per
// shard plus the row being read, however large the COPY.
const copyBatch = 64 << 10

// copyLines is how many recent rows per shard keep their client line
// number, to rewrite the line in a shard's error CONTEXT. A shard's error
// is noticed at most a batch or two after the row that caused it.
const copyLines = 16 << 10

// copyStatement runs a COPY. COPY FROM STDIN into a sharded table splits the
// rows by shard key; into a reference table every shard gets every row;
// into a table not in the config it goes whole to the default shard. COPY
// TO STDOUT concatenates the shards' streams. A returned error means the
// client connection is unusable.
func (s *session) copyStatement(ctx context.Context, st *parser.Statement, c *parser.Copy) error {
	topo := s.srv.router.Topology()
	s.rc.touchCopy(c) // results.go: invalidated at commit
	var tb *router.Table
	if c.Query == nil {
		tb = topo.Lookup(c.Table)
		if tb == nil {
			var err error
			if tb, err = s.partitionOf(ctx, c.Table); err != nil {
				s.fail(err)
				return nil
			}
		}
	}
	if c.From {
		if err := s.holdCopy(); err != nil { // fencemove.go: resharding cutover
			s.fail(err)
			return nil
		}
		switch {
		case tb == nil:
			return s.copyPlain(ctx, topo.Default, st.SQL, true)
		case !c.Stdio:
			s.fail(refused(fmt.Sprintf("COPY from a server file or program into %s table %s is not supported", tb.Strategy, tb.Name),
				"Use COPY ... FROM STDIN (psql's \\copy) through shardproxy."))
			return nil
		}
		return s.copyIn(ctx, st.SQL, c, tb)
	}
	return s.copyOut(ctx, st.SQL, c, tb)
}

// partitionOf returns the configured table that t is a partition of (at
// any depth), read from the default shard's catalog, or nil. pg_dump and
// pg_restore copy the data of partitioned tables partition by partition;
// those rows belong where the partitioned table's rows do.
func (s *session) partitionOf(ctx context.Context, t parser.Table) (*router.Table, error) {
	topo := s.srv.router.Topology()
	var b *backend
	var err error
	if s.status != 'I' {
		b, err = s.txOn(ctx, topo.Default)
	} else {
		b, err = s.lease(ctx, topo.Default)
		if err == nil {
			defer s.release(b)
		}
	}
	if err != nil {
		return nil, err
	}
	rel := quoteIdent(t.Name)
	if t.Schema != "" {
		rel = quoteIdent(t.Schema) + "." + rel
	}
	reg := "pg_catalog.to_regclass(" + quoteLiteral(rel) + ")"
	rows, err := s.catalog(b, "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"+
		" WHERE c.oid = pg_catalog.pg_partition_root("+reg+") AND c.oid <> "+reg)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	return topo.Lookup(parser.Table{Schema: rows[0][0], Name: rows[0][1]}), nil
}

// copyPlain runs a COPY on one shard, relaying CopyData both ways.
func (s *session) copyPlain(ctx context.Context, shard int, sql string, writes bool) error {
	inTx := s.status != 'I'
	var b *backend
	var err error
	if inTx {
		if writes {
			err = s.txWrites(&parser.Statement{Writes: true}, &router.Plan{Shards: []int{shard}, Write: true})
		}
		if err == nil {
			b, err = s.txOn(ctx, shard)
		}
	} else {
		b, err = s.lease(ctx, shard)
	}
	if err != nil {
		s.fail(err)
		return nil
	}
	if !inTx {
		defer s.release(b)
	}
	if err := b.sendQuery(sql); err != nil {
		s.fail(err)
		return nil
	}
	for {
		typ, body, raw, err := b.rd.next()
		if err != nil {
			b.broken = true
			s.fail(&shardError{shard: b.pool.name, err: err})
			return nil
		}
		switch typ {
		case 'Z':
			b.txStatus = body[0]
			if inTx {
				s.status = body[0]
			}
			return nil
		case 'C':
			s.q.tag(body)
		case 'E':
			s.q.shardFailed(body)
		}
		s.out = append(s.out, raw...)
		if typ == 'G' {
			if err := s.flush(); err != nil {
				b.broken = true
				return err
			}
			if err := s.pumpPlain(b); err != nil {
				return err
			}
			continue
		}
		if len(s.out) >= flushAt {
			if err := s.flush(); err != nil {
				b.broken = true
				s.cancelRunning()
				return err
			}
		}
	}
}

// pumpPlain relays the client's CopyData to b until CopyDone or CopyFail.
func (s *session) pumpPlain(b *backend) error {
	buf := b.wbuf[:0]
	defer func() { b.wbuf = buf[:0] }()
	for {
		typ, _, raw, err := s.rd.next()
		if err != nil {
			b.broken = true // the shard is mid-COPY: the connection cannot be reused
			return err
		}
		switch typ {
		case 'd', 'c', 'f':
			buf = append(buf, raw...)
		case 'H', 'S':
			continue // ignored during COPY, as Postgres does
		default:
			buf = appendMsg(buf, &pgproto3.CopyFail{Message: fmt.Sprintf("unexpected message type 0x%02X during COPY from stdin", typ)})
			typ = 'f'
		}
		if typ != 'd' || len(buf) >= copyBatch {
			if _, err := b.conn.Write(buf); err != nil {
				b.broken = true
				return nil // the reply loop reports the lost shard
			}
			buf = buf[:0]
		}
		if typ != 'd' {
			return nil
		}
	}
}

// copyShard is one shard's part of a COPY FROM.
type copyShard struct {
	b   *backend
	buf []byte // a CopyData message being filled
	// copying is true while the shard is in COPY mode; wrote once a row
	// went to it.
	copying, wrote bool
	rows           int64 // rows sent
	lines          []int64
}

// record remembers the client line of the row just sent.
func (cs *copyShard) record(line int64) {
	if len(cs.lines) < copyLines {
		cs.lines = append(cs.lines, line)
	} else {
		cs.lines[cs.rows%copyLines] = line
	}
	cs.rows++
}

// clientLine maps the shard's n-th row (1-based) to the client's line.
func (cs *copyShard) clientLine(n int64) (int64, bool) {
	if n < 1 || n > cs.rows || cs.rows-n >= int64(len(cs.lines)) {
		return 0, false
	}
	return cs.lines[(n-1)%copyLines], true
}

// copyIn is one COPY FROM STDIN into a sharded or reference table.
type copyIn struct {
	s      *session
	ctx    context.Context
	sql    string
	tb     *router.Table
	name   string // the relation name for CONTEXT
	opt    parser.CopyOptions
	split  *copyfmt.Splitter
	keyTyp string
	keyOID uint32 // the key's type (its base type for a domain)
	header bool   // shards count the header as their line 1
	inTx   bool
	shards map[int]*copyShard
	order  []int // shards in the order they were opened
	// started: the client has its CopyInResponse.
	started bool
}

var errCopyShard = errors.New("a shard failed during COPY")

func (s *session) copyIn(ctx context.Context, sql string, c *parser.Copy, tb *router.Table) error {
	ci := &copyIn{s: s, ctx: ctx, sql: sql, tb: tb, name: c.Table.Name, opt: c.Options, inTx: s.status != 'I',
		shards: map[int]*copyShard{}, header: c.Options.Header && c.Options.Format != "binary"}
	topo := s.srv.router.Topology()
	// The default shard opens first: its catalog gives the columns, and it
	// checks the statement (options, permissions) and answers the client's
	// CopyInResponse.
	first, err := ci.acquire(topo.Default)
	if err != nil {
		ci.rollback()
		return ci.report(err)
	}
	if tb.Strategy != router.Reference {
		if err := ci.prepare(c, first.b); err != nil {
			ci.rollback()
			return ci.report(err)
		}
	}
	if err := ci.start(first); err != nil {
		ci.cancel("COPY failed on another shard")
		return ci.report(err)
	}
	if tb.Strategy == router.Reference {
		for i := range topo.Shards {
			if ci.inTx {
				if err := s.txWrites(&parser.Statement{Writes: true}, &router.Plan{Shards: []int{i}, Write: true}); err != nil {
					ci.cancel("COPY refused by shardproxy")
					return ci.report(err)
				}
			}
			if _, err := ci.open(i); err != nil {
				ci.cancel("COPY failed on another shard")
				return ci.report(err)
			}
		}
	}
	if err := s.flush(); err != nil {
		ci.gone()
		return err
	}
	for {
		typ, body, _, err := s.rd.next()
		if err != nil {
			ci.gone()
			return err
		}
		switch typ {
		case 'd':
			if tb.Strategy == router.Reference {
				err = ci.broadcast(body)
			} else {
				err = ci.split.Write(body, ci.route)
			}
		case 'c':
			if ci.split != nil {
				err = ci.split.Close(ci.route)
			}
			if err == nil {
				return ci.finish()
			}
		case 'f':
			var f pgproto3.CopyFail
			f.Decode(body)
			ci.cancel(f.Message)
			return ci.report(&pgError{code: pgerrcode.QueryCanceled, msg: "COPY from stdin failed: " + f.Message})
		case 'H', 'S':
		default:
			err = &pgError{code: pgerrcode.ProtocolViolation, msg: fmt.Sprintf("unexpected message type 0x%02X during COPY from stdin", typ)}
		}
		if err != nil {
			if errors.Is(err, errCopyShard) {
				return ci.finish() // collect the shard's error, end the others
			}
			ci.cancel("COPY refused by shardproxy")
			return ci.report(err)
		}
	}
}

// prepare reads the table's columns and the key's type from the default
// shard's catalog and makes the row splitter.
func (ci *copyIn) prepare(c *parser.Copy, b *backend) error {
	s, tb := ci.s, ci.tb
	rel := quoteIdent(c.Table.Name)
	if c.Table.Schema != "" {
		rel = quoteIdent(c.Table.Schema) + "." + rel
	}
	rows, err := s.catalog(b, "SELECT a.attname, pg_catalog.format_type(a.atttypid, NULL), (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END)::int8"+
		" FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"+
		" WHERE a.attrelid = "+quoteLiteral(rel)+"::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''"+
		" ORDER BY a.attnum")
	if err != nil {
		return err
	}
	types := map[string]string{}
	oids := map[string]uint32{}
	var all []string
	for _, r := range rows {
		types[r[0]] = r[1]
		oid, _ := strconv.ParseUint(r[2], 10, 32)
		oids[r[0]] = uint32(oid)
		all = append(all, r[0])
	}
	cols := c.Columns
	if cols == nil {
		cols = all
	}
	key := -1
	for i, col := range cols {
		if _, ok := types[col]; !ok {
			return &pgError{code: pgerrcode.UndefinedColumn, msg: fmt.Sprintf("column \"%s\" of relation \"%s\" does not exist", col, c.Table.Name)}
		}
		if col == tb.Key {
			key = i
		}
	}
	if key < 0 {
		return refused(fmt.Sprintf("COPY into %s must include its shard key column %s", tb.Name, tb.Key),
			"List the shard key column in the COPY's column list, with a value in every row.")
	}
	ci.keyTyp, ci.keyOID = types[tb.Key], oids[tb.Key]
	if tb.Strategy == router.Hash {
		intKey := ci.keyOID == 20 || ci.keyOID == 23 || ci.keyOID == 21
		textKey := ci.keyOID == 25 || ci.keyOID == 1043
		if tb.KeyText && !textKey || !tb.KeyText && !intKey {
			// The hash depends on the type: rows would be misplaced.
			return refused(fmt.Sprintf("the shard key %s of %s is of type %s on the shards, which does not match the config's key_type", tb.Key, tb.Name, ci.keyTyp),
				"Set key_type (bigint or text) for the table in the config to the column's type.")
		}
	}
	if tb.KeyText && !ci.utf8(c.Options.Encoding) {
		// The shards hash the key after converting it to UTF-8; the proxy
		// hashes the bytes it reads.
		return refused(fmt.Sprintf("COPY into %s, whose text shard key is hashed as UTF-8, in another encoding is not supported", tb.Name),
			"Send the data in UTF-8 (client_encoding and the ENCODING option).")
	}
	o := c.Options
	f := copyfmt.Format{Delimiter: o.Delimiter, Null: o.Null, Quote: o.Quote, Escape: o.Escape, Header: o.Header, Columns: cols, Key: key}
	switch o.Format {
	case "csv":
		f.Kind = copyfmt.CSV
		f.KeyForceNull = o.ForceNullAll || contains(o.ForceNull, tb.Key)
		f.KeyForceNotNull = o.ForceNotNullAll || contains(o.ForceNotNull, tb.Key)
	case "binary":
		f.Kind = copyfmt.Binary
		switch ci.keyOID {
		case 20, 23, 21, 25, 1043, 1042, 19, 705, 1184, 1114, 1082:
		default:
			return refused(fmt.Sprintf("binary COPY into %s with a shard key of type %s is not supported", tb.Name, ci.keyTyp),
				"Use the text or CSV format.")
		}
	}
	ci.split = copyfmt.New(f)
	return nil
}

// utf8 reports whether COPY data arrives in UTF-8: the ENCODING option, or
// else the session's client_encoding.
func (ci *copyIn) utf8(option string) bool {
	enc := option
	if enc == "" {
		for _, x := range ci.s.sets {
			if x.name != "client_encoding" {
				continue
			}
			enc = "unknown"
			if stmts, err := ci.s.srv.cache.Parse(x.sql); err == nil && len(stmts) == 1 {
				if v, ok := stmts[0].SetValue(); ok {
					enc = v
				}
			}
		}
	}
	switch strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(enc)) {
	case "", "utf8", "unicode", "sqlascii":
		return true
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// open starts the COPY on shard, once.
func (ci *copyIn) open(shard int) (*copyShard, error) {
	if cs := ci.shards[shard]; cs != nil {
		return cs, nil
	}
	cs, err := ci.acquire(shard)
	if err != nil {
		return nil, err
	}
	return cs, ci.start(cs)
}

// acquire takes shard's backend for the COPY: the client transaction's
// (the transaction helpers are the lead's: this is the one place COPY
// calls them), or a leased one inside BEGIN.
func (ci *copyIn) acquire(shard int) (*copyShard, error) {
	s := ci.s
	var b *backend
	var err error
	if ci.inTx {
		b, err = s.txOn(ci.ctx, shard)
	} else {
		b, err = s.lease(ci.ctx, shard)
		if err == nil {
			if err = s.quiet(b, "BEGIN"); err != nil {
				b.broken = true
				s.release(b)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	cs := &copyShard{b: b}
	ci.shards[shard] = cs
	ci.order = append(ci.order, shard)
	return cs, nil
}

// start sends the COPY to the shard and waits for its CopyInResponse; the
// first shard's goes to the client.
func (ci *copyIn) start(cs *copyShard) error {
	s, b := ci.s, cs.b
	if err := b.sendQuery(ci.sql); err != nil {
		return err
	}
	for {
		typ, body, raw, err := b.rd.next()
		if err != nil {
			b.broken = true
			return &shardError{shard: b.pool.name, err: err}
		}
		switch typ {
		case 'G':
			if !ci.started {
				ci.started = true
				s.out = append(s.out, raw...)
			}
			cs.buf = append(cs.buf[:0], 'd', 0, 0, 0, 0)
			cs.copying = true
			return nil
		case 'E':
			var e pgproto3.ErrorResponse
			e.Decode(body)
			s.q.shardFailed(body)
			for typ != 'Z' {
				if typ, body, _, err = b.rd.next(); err != nil {
					b.broken = true
					return &shardError{shard: b.pool.name, err: err}
				}
			}
			b.txStatus = body[0]
			return &shardErr{r: e}
		case 'N':
			s.out = append(s.out, raw...)
		}
	}
}

// shardErr is an ErrorResponse a shard sent, forwarded as it is.
type shardErr struct{ r pgproto3.ErrorResponse }

func (e *shardErr) Error() string { return e.r.Message }

// route sends one row to the shard its key selects.
func (ci *copyIn) route(r copyfmt.Row) error {
	s := ci.s
	var text string
	if !r.KeyNull {
		if ci.opt.Format == "binary" {
			t, ok := binaryText(ci.keyOID, r.Key)
			if !ok {
				return &copyfmt.Error{Code: pgerrcode.InvalidBinaryRepresentation, Msg: "incorrect binary data format", Line: r.Line, Column: ci.tb.Key}
			}
			text = t
		} else {
			text = string(r.Key)
		}
	}
	shard, how := s.srv.router.ShardOfKey(ci.tb, text, r.KeyNull)
	switch how {
	case router.KeyInvalid:
		code := pgerrcode.InvalidTextRepresentation
		if ci.tb.Strategy == router.Range {
			code = pgerrcode.InvalidDatetimeFormat
		}
		return &copyfmt.Error{Code: code, Msg: fmt.Sprintf("invalid input syntax for type %s: \"%s\"", ci.keyTyp, text),
			Line: r.Line, Column: ci.tb.Key, Value: text}
	case router.KeyNoRange:
		v := text
		if r.KeyNull {
			v = "null"
		}
		return &copyfmt.Error{Code: pgerrcode.CheckViolation, Msg: fmt.Sprintf("no shard of relation \"%s\" found for row", ci.name),
			Hint: fmt.Sprintf("Partition key of the failing row contains (%s) = (%s); no configured range holds it.", ci.tb.Key, v),
			Line: r.Line}
	case router.KeyAmbiguous:
		return &copyfmt.Error{Code: pgerrcode.FeatureNotSupported, Line: r.Line, Column: ci.tb.Key, Value: text,
			Msg:  fmt.Sprintf("the shard of %s value \"%s\" depends on the session time zone: it is near a range boundary", ci.tb.Key, text),
			Hint: "Write timestamps with a UTC offset (2025-01-01 00:00:00+00) in COPY data for range-sharded tables."}
	}
	cs, err := ci.open(shard)
	if err != nil {
		return err
	}
	if !cs.wrote && ci.inTx {
		if err := s.txWrites(&parser.Statement{Writes: true}, &router.Plan{Shards: []int{shard}, Write: true}); err != nil {
			return &copyfmt.Error{Code: pgerrcode.FeatureNotSupported, Msg: err.Error(), Line: r.Line,
				Hint: "Inside a transaction, COPY rows for one shard only until two-phase commit lands; or COPY outside the transaction."}
		}
	}
	if !cs.wrote {
		// The header line or binary header goes first, to every shard.
		cs.buf = append(cs.buf, ci.split.Preamble()...)
		cs.wrote = true
	}
	cs.buf = append(cs.buf, r.Raw...)
	cs.record(r.Line)
	if len(cs.buf) >= copyBatch {
		return ci.send(cs)
	}
	return nil
}

// broadcast sends a piece of the client's stream to every shard (a
// reference table: every shard gets every row).
func (ci *copyIn) broadcast(data []byte) error {
	for _, sh := range ci.order {
		cs := ci.shards[sh]
		cs.buf = append(cs.buf, data...)
		if len(cs.buf) >= copyBatch {
			if err := ci.send(cs); err != nil {
				return err
			}
		}
	}
	return nil
}

// send writes the shard's batch as one CopyData message. It blocks while
// the shard is slow. A shard that has spoken meanwhile has failed (it says
// nothing else during COPY): errCopyShard.
func (ci *copyIn) send(cs *copyShard) error {
	if len(cs.buf) > 5 {
		binary.BigEndian.PutUint32(cs.buf[1:5], uint32(len(cs.buf)-1))
		if _, err := cs.b.conn.Write(cs.buf); err != nil {
			cs.b.broken = true
			return &shardError{shard: cs.b.pool.name, err: err}
		}
		cs.buf = cs.buf[:5]
	}
	if !cs.b.alive() {
		return errCopyShard
	}
	return nil
}

// finish ends the COPY on every shard (CopyDone), reads their answers and
// commits all or none.
func (ci *copyIn) finish() error {
	s := ci.s
	var firstErr error
	var total int64
	done := make([]bool, len(ci.order))
	for i, sh := range ci.order {
		cs := ci.shards[sh]
		if err := ci.send(cs); err != nil && !errors.Is(err, errCopyShard) {
			firstErr = err
			break
		}
		if _, err := cs.b.conn.Write([]byte{'c', 0, 0, 0, 4}); err != nil {
			cs.b.broken = true
			firstErr = &shardError{shard: cs.b.pool.name, err: err}
			break
		}
		done[i] = true
	}
	var tags []string
	for i, sh := range ci.order {
		if !done[i] {
			continue
		}
		cs := ci.shards[sh]
		n, err := ci.reply(cs)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		tags = append(tags, "COPY "+strconv.FormatInt(n, 10))
		total += n
	}
	if firstErr != nil {
		// Every shard is out of COPY mode: the ones that finished end
		// without their rows.
		for _, sh := range ci.order {
			ci.shards[sh].copying = false
		}
		ci.rollback()
		return ci.report(firstErr)
	}
	var tag *pgproto3.CommandComplete
	if ci.tb.Strategy == router.Reference {
		tag = s.replicatedTag(tags, ci.backends())
	} else {
		tag = &pgproto3.CommandComplete{CommandTag: []byte("COPY " + strconv.FormatInt(total, 10))}
	}
	s.q.tag(append(tag.CommandTag, 0))
	if ci.inTx {
		s.out = appendMsg(s.out, tag)
		return nil
	}
	bs := ci.backends()
	err := s.commitShards(ci.ctx, bs)
	for _, b := range bs {
		if b.txStatus != 'I' {
			b.broken = true
		}
		s.release(b)
	}
	ci.shards, ci.order = map[int]*copyShard{}, nil
	if err != nil {
		s.fail(err)
		return nil
	}
	s.out = appendMsg(s.out, tag)
	return nil
}

func (ci *copyIn) backends() []*backend {
	bs := make([]*backend, 0, len(ci.order))
	for _, sh := range ci.order {
		if cs := ci.shards[sh]; cs != nil {
			bs = append(bs, cs.b)
		}
	}
	return bs
}

// reply reads a shard's answer to the end of its COPY: the row count or its
// error, with the line rewritten to the client's.
func (ci *copyIn) reply(cs *copyShard) (int64, error) {
	s, b := ci.s, cs.b
	var n int64
	var qerr error
	for {
		typ, body, raw, err := b.rd.next()
		if err != nil {
			b.broken = true
			return 0, &shardError{shard: b.pool.name, err: err}
		}
		switch typ {
		case 'C':
			tag := commandTag(body)
			n, _ = strconv.ParseInt(strings.TrimPrefix(tag, "COPY "), 10, 64)
		case 'E':
			var e pgproto3.ErrorResponse
			e.Decode(body)
			s.q.shardFailed(body)
			e.Where = ci.where(cs, e.Where)
			if e.Code != pgerrcode.QueryCanceled || qerr == nil {
				qerr = &shardErr{r: e}
			}
		case 'N':
			s.out = append(s.out, raw...)
		case 'Z':
			b.txStatus = body[0]
			return n, qerr
		}
	}
}

var copyLine = regexp.MustCompile(`^(COPY [^\n]*?, line )(\d+)`)

// where rewrites a shard's "COPY t, line N" to the client's line number.
func (ci *copyIn) where(cs *copyShard, w string) string {
	m := copyLine.FindStringSubmatchIndex(w)
	if m == nil {
		return w
	}
	n, _ := strconv.ParseInt(w[m[4]:m[5]], 10, 64)
	row := n
	if ci.header {
		row--
	}
	if line, ok := cs.clientLine(row); ok {
		return w[:m[4]] + strconv.FormatInt(line, 10) + w[m[5]:]
	}
	if row == 0 && ci.header {
		return w[:m[4]] + "1" + w[m[5]:]
	}
	return w + fmt.Sprintf(" (line %d of the rows sent to shard %s)", n, cs.b.pool.name)
}

// cancel ends the COPY on every open shard with CopyFail and reads their
// answers; outside a client transaction the shards' transactions roll back.
func (ci *copyIn) cancel(msg string) {
	for _, sh := range ci.order {
		cs := ci.shards[sh]
		if cs.b.broken || !cs.copying {
			continue
		}
		cs.copying = false
		m := appendMsg(nil, &pgproto3.CopyFail{Message: msg})
		if _, err := cs.b.conn.Write(m); err != nil {
			cs.b.broken = true
			continue
		}
		for {
			typ, body, _, err := cs.b.rd.next()
			if err != nil {
				cs.b.broken = true
				break
			}
			if typ == 'Z' {
				cs.b.txStatus = body[0]
				break
			}
		}
	}
	ci.rollback()
}

// rollback ends the shards' part after a failure: outside a client
// transaction each shard's transaction rolls back and the backend goes
// back; inside one, every shard's transaction is left aborted, so that the
// client's COMMIT cannot keep part of the COPY.
func (ci *copyIn) rollback() {
	s := ci.s
	for _, sh := range ci.order {
		cs := ci.shards[sh]
		b := cs.b
		switch {
		case ci.inTx:
			if !b.broken && b.txStatus == 'T' {
				if err := s.quiet(b, "DO $$BEGIN RAISE EXCEPTION 'COPY failed on another shard'; END$$"); err == nil {
					b.broken = true
				}
			}
		default:
			if !b.broken {
				if err := s.quiet(b, "ROLLBACK"); err != nil || b.txStatus != 'I' {
					b.broken = true
				}
			}
			s.release(b)
		}
	}
	if ci.inTx {
		s.status = 'E'
	}
	ci.shards, ci.order = map[int]*copyShard{}, nil
}

// gone handles a client that left mid-COPY: every shard's COPY is aborted
// by closing its connection.
func (ci *copyIn) gone() {
	for _, sh := range ci.order {
		cs := ci.shards[sh]
		cs.b.broken = true
		if !ci.inTx {
			ci.s.release(cs.b)
		}
	}
	ci.shards, ci.order = map[int]*copyShard{}, nil
}

// report sends a COPY's error to the client, with a CONTEXT naming the
// line for data errors.
func (ci *copyIn) report(err error) error {
	s := ci.s
	var ce *copyfmt.Error
	var se *shardErr
	switch {
	case errors.As(err, &ce):
		r := &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: ce.Code, Message: ce.Msg, Hint: ce.Hint}
		r.Where = fmt.Sprintf("COPY %s, line %d", ci.name, ce.Line)
		switch {
		case ce.Column != "":
			r.Where += fmt.Sprintf(", column %s: \"%s\"", ce.Column, printout(ce.Value))
		case ce.Value != "":
			r.Where += fmt.Sprintf(": \"%s\"", printout(ce.Value))
		}
		s.q.failed(r.Code)
		s.out = appendMsg(s.out, r)
	case errors.As(err, &se):
		r := se.r
		s.q.failed(r.Code)
		s.out = appendMsg(s.out, &r)
	default:
		s.sendError(err)
	}
	if s.status == 'T' {
		s.status = 'E'
	}
	return nil
}

// printout shortens a value for a CONTEXT line as Postgres does.
func printout(v string) string {
	const max = 100
	if len(v) <= max {
		return v
	}
	return v[:max] + "..."
}

// catalog runs a query on b and returns its rows as text.
func (s *session) catalog(b *backend, sql string) ([][]string, error) {
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
			if err := d.Decode(body); err != nil {
				return nil, err
			}
			row := make([]string, len(d.Values))
			for i, v := range d.Values {
				row[i] = string(v)
			}
			rows = append(rows, row)
		case 'E':
			var e pgproto3.ErrorResponse
			e.Decode(body)
			qerr = &shardErr{r: e}
		case 'Z':
			b.txStatus = body[0]
			return rows, qerr
		}
	}
}

// copyOut runs COPY ... TO. A table not in the config, a reference table and
// a query the router places on one shard are relayed from that one shard;
// a sharded table, or a query that reads several shards and needs no merge,
// has the shards' streams concatenated.
func (s *session) copyOut(ctx context.Context, sql string, c *parser.Copy, tb *router.Table) error {
	topo := s.srv.router.Topology()
	var shards []int
	if c.Query != nil {
		plan, err := s.route(c.Query, nil)
		if err != nil {
			s.fail(err)
			return nil
		}
		if plan.Single() {
			return s.copyPlain(ctx, plan.Shards[0], sql, c.Query.Writes)
		}
		if c.Query.Writes {
			s.fail(refused("COPY (query) TO STDOUT of a query that writes on several shards is not supported",
				"Add a shard key predicate so it runs on one shard."))
			return nil
		}
		if plan.SQL != nil || plan.Sort != nil || plan.Limited || plan.Offset > 0 || plan.Merge != nil || plan.Dedupe {
			if why := copyMergeable(c); why != "" {
				s.fail(refused("COPY (query) TO with "+why+" over several shards is supported only when the shards' rows are simply concatenated",
					"Use COPY (query) TO STDOUT in text or CSV format (the proxy merges ORDER BY, LIMIT, aggregates and DISTINCT there), or add a shard key predicate so it runs on one shard."))
				return nil
			}
			return s.copyMerged(ctx, c, plan) // copymerge.go
		}
		shards = plan.Shards
	} else {
		switch {
		case tb == nil || tb.Strategy == router.Reference:
			return s.copyPlain(ctx, topo.Default, sql, false)
		case !c.Stdio:
			s.fail(refused(fmt.Sprintf("COPY %s TO a server file or program is not supported: its rows are on several shards", tb.Name),
				"Use COPY ... TO STDOUT (psql's \\copy) through shardproxy."))
			return nil
		}
		// The shards that hold rows: not a reshard's target before its
		// cutover (it holds copied rows its source still owns).
		shards = s.srv.router.Serving()
	}
	// A reshard's source still holds the rows it gave away until cleanup:
	// each shard's statement hides them (router/stale.go).
	sqls := make([]string, len(shards))
	for i, sh := range shards {
		q, err := s.srv.router.HideStale(sh, sql)
		if err != nil {
			s.fail(err)
			return nil
		}
		sqls[i] = q
	}
	if !c.Stdio {
		s.fail(refused("COPY (query) TO a server file or program over several shards is not supported",
			"Use COPY ... TO STDOUT (psql's \\copy) through shardproxy."))
		return nil
	}
	var bs []*backend
	if s.status != 'I' {
		for _, sh := range shards {
			b, err := s.txOn(ctx, sh)
			if err != nil {
				s.fail(err)
				return nil
			}
			bs = append(bs, b)
		}
	} else {
		var err error
		bs, err = s.leaseAll(ctx, shards)
		defer s.releaseAll(bs)
		if err != nil {
			s.fail(err)
			return nil
		}
	}
	return s.concatCopy(bs, sqls, c.Options)
}

// concatCopy sends a COPY TO STDOUT to every backend and relays their
// streams one after the other as one: one CopyOutResponse, the CSV or text
// header once, the binary header once and its trailer once, one CopyDone
// and the summed row count. Backends are read one at a time, so memory
// stays at one message; the others wait, blocked on their sockets.
func (s *session) concatCopy(bs []*backend, sqls []string, o parser.CopyOptions) error {
	sent := time.Now()
	for i, b := range bs {
		if err := b.sendQuery(sqls[i]); err != nil {
			for _, x := range bs[:i] {
				x.broken = true
				go x.cancel()
			}
			s.fail(err)
			return nil
		}
	}
	bin := o.Format == "binary"
	var total int64
	var firstErr []byte
	started := false
	var held []byte // binary: the last CopyData, which may end in the trailer
	for i, b := range bs {
		last := i == len(bs)-1
		skip := 0 // binary header bytes still to drop
		first := true
		if i > 0 && bin {
			skip = -1 // the header's length is read from it
		}
		for {
			typ, body, raw, err := b.rd.next()
			if err != nil {
				b.broken = true
				for _, x := range bs[i+1:] {
					x.broken = true
				}
				s.fail(&shardError{shard: b.pool.name, err: err})
				return nil
			}
			if typ == 'Z' {
				b.txStatus = body[0]
				if s.status != 'I' && b.txStatus == 'E' {
					s.status = 'E'
				}
				s.shardDone(b, sent)
				break
			}
			if firstErr != nil && typ != 'E' {
				continue // drain the rest after an error
			}
			switch typ {
			case 'H':
				if !started {
					started = true
					s.out = append(s.out, raw...)
				}
			case 'd':
				data := body
				if first && i > 0 && o.Header && !bin {
					first = false
					continue // one header, from the first shard
				}
				first = false
				if skip < 0 && len(data) >= 19 {
					skip = 19 + int(binary.BigEndian.Uint32(data[15:19]))
				}
				if skip > 0 {
					n := min(skip, len(data))
					data, skip = data[n:], skip-n
				}
				if !bin {
					s.out = append(s.out, raw...)
					break
				}
				if held != nil {
					s.out = appendMsg(s.out, &pgproto3.CopyData{Data: held})
				}
				held = append(held[:0:0], data...)
			case 'c':
				if bin && held != nil {
					if !last && len(held) >= 2 {
						held = held[:len(held)-2] // the trailer: only the last shard's stays
					}
					if len(held) > 0 {
						s.out = appendMsg(s.out, &pgproto3.CopyData{Data: held})
					}
					held = nil
				}
			case 'C':
				n, _ := strconv.ParseInt(strings.TrimPrefix(commandTag(body), "COPY "), 10, 64)
				total += n
			case 'E':
				s.q.shardFailed(body)
				if firstErr == nil {
					firstErr = append([]byte(nil), raw...)
					for _, x := range bs[i+1:] {
						go x.cancel()
					}
				}
			default:
				s.out = append(s.out, raw...)
			}
			if len(s.out) >= flushAt {
				if err := s.flush(); err != nil {
					for _, x := range bs {
						x.broken = true
					}
					s.cancelRunning()
					return err
				}
			}
		}
	}
	if firstErr != nil {
		s.out = append(s.out, firstErr...)
		if s.status == 'T' {
			s.status = 'E'
		}
		return nil
	}
	tag := &pgproto3.CommandComplete{CommandTag: []byte("COPY " + strconv.FormatInt(total, 10))}
	s.q.tag(append(tag.CommandTag, 0))
	s.out = append(s.out, 'c', 0, 0, 0, 4)
	s.out = appendMsg(s.out, tag)
	return nil
}
