package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/fanout"
	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// gathered is what gather collected from the shards of a scatter.
type gathered struct {
	rowDesc []byte                      // the first shard's RowDescription, raw
	fields  []pgproto3.FieldDescription // decoded
	tags    []string                    // each shard's CommandComplete tag
	// shardTags are the tags by backend index (nil until one arrives).
	shardTags []string
	firstErr  []byte // the first ErrorResponse, raw
	empty     bool   // EmptyQueryResponse
	rows      int64  // rows relayed to the client
}

// shardRows is one shard's reply as a fanout.Source: its DataRows, with
// every other message handled on the way.
type shardRows struct {
	g    *gatherer
	i    int
	head []byte // a row read ahead (priming), returned first
	done bool
}

func (r *shardRows) Next() ([]byte, error) {
	if r.head != nil {
		h := r.head
		r.head = nil
		return h, nil
	}
	if r.done {
		return nil, nil
	}
	body, err := r.g.step(r.i)
	if err != nil {
		return nil, err
	}
	if body == nil {
		r.done = true
	}
	return body, nil
}

// gatherer reads the replies of one scatter.
type gatherer struct {
	s           *session
	bs          []*backend
	plan        *router.Plan
	sent        time.Time
	withRowDesc bool
	m           gathered
	types       []uint32 // a grouped merge's final column types
	done        []bool   // shards that reached ReadyForQuery
	descShard   int      // the shard whose RowDescription m.fields is
	// cancels are CancelRequests in flight; gather waits for them before
	// the backends go back to the pool, so that a late cancel cannot hit
	// the next statement a backend runs.
	cancels sync.WaitGroup
}

// errShardLost marks a shard connection lost mid-reply (the error is in
// shardErr).
type errShardLost struct{ err error }

func (e errShardLost) Error() string { return e.err.Error() }

// step reads shard i up to its next DataRow and returns its body (valid
// until shard i is read again), handling every other message; nil once
// the shard reached ReadyForQuery.
func (g *gatherer) step(i int) ([]byte, error) {
	b, m, s := g.bs[i], &g.m, g.s
	for {
		typ, body, raw, err := b.rd.next()
		if err != nil {
			for _, o := range g.bs {
				o.broken = true
			}
			return nil, errShardLost{&shardError{shard: b.pool.name, err: err}}
		}
		switch typ {
		case 'D':
			return body, nil
		case 'T':
			if m.rowDesc == nil {
				m.rowDesc = bytes.Clone(raw)
				g.descShard = b.pool.shard
				// Decode the copy: field names alias the decoded bytes.
				var rd pgproto3.RowDescription
				if rd.Decode(m.rowDesc[5:]) == nil {
					m.fields = rd.Fields
				}
				if g.withRowDesc && g.plan.Merge == nil && m.firstErr == nil {
					s.out = append(s.out, raw...)
				}
			} else if m.firstErr == nil && !sameColumns(raw, m.rowDesc) {
				m.firstErr = appendMsg(nil, errorResponse(&pgError{code: pgerrcode.InternalError,
					msg:  fmt.Sprintf("shard %s returned different columns than shard %s", b.pool.name, g.bs[0].pool.name),
					hint: "The table definitions differ between shards."}))
			}
		case 'C':
			m.tags = append(m.tags, commandTag(body))
			if m.shardTags == nil {
				m.shardTags = make([]string, len(g.bs))
			}
			m.shardTags[i] = commandTag(body)
			if !g.plan.Replicated || i == 0 {
				s.q.tag(body)
			}
		case 'I':
			m.empty = true
		case 'E':
			s.q.shardFailed(body)
			if m.firstErr == nil {
				if g.plan.Write {
					// DDL and writes on several shards: every shard ran
					// the same statement; its error is the statement's,
					// worded as one Postgres would.
					m.firstErr = bytes.Clone(raw)
				} else {
					m.firstErr = withShard(raw, body, b.pool.name)
				}
				g.cancelOthers(i)
			}
		case 'N', 'S':
			if typ == 'S' {
				noteStatus(b, body)
			}
			if i == 0 {
				s.out = append(s.out, raw...)
			}
		case 'Z':
			b.txStatus = body[0]
			g.done[i] = true
			s.shardDone(b, g.sent)
			return nil, nil
		}
	}
}

// textOK says whether column f of the result orders in byte order on
// every shard, so that the merge may order it (or take its min/max): the
// shards' databases use collation C, and the column is a table column
// without a collation of its own, or a computed one in a statement without
// COLLATE over tables that have no such column.
func (g *gatherer) textOK(f pgproto3.FieldDescription) bool {
	c, text := g.collations(f)
	switch {
	case !text:
		return true
	case c == nil || !g.s.srv.textByteOrder:
		return false
	case f.TableOID != 0:
		_, own := c.cols[[2]uint32{f.TableOID, uint32(f.TableAttributeNumber)}]
		return !own
	}
	return !g.plan.Collate && !c.mentioned(g.plan.Columns, false)
}

// keyOK says whether equal text values of column f are equal bytes, as
// grouping and DISTINCT across shards assume: false under a
// nondeterministic collation (case-insensitive ICU...).
func (g *gatherer) keyOK(f pgproto3.FieldDescription) bool {
	c, text := g.collations(f)
	switch {
	case !text:
		return true
	case c == nil:
		return false
	case f.TableOID != 0:
		return !c.cols[[2]uint32{f.TableOID, uint32(f.TableAttributeNumber)}]
	}
	return !g.plan.Collate && !c.mentioned(g.plan.Columns, true)
}

// collations returns what the shard that described the result knows of
// column collations (nil: unknown), and whether f is a text column.
func (g *gatherer) collations(f pgproto3.FieldDescription) (*collations, bool) {
	switch f.DataTypeOID {
	case fanout.TextOID, fanout.VarcharOID, fanout.BPCharOID, fanout.NameOID:
	default:
		return nil, false
	}
	pools := g.s.srv.pools
	if g.descShard < 0 || g.descShard >= len(pools) {
		return nil, true
	}
	return pools[g.descShard].colls.Load(), true
}

// withShard names the shard an error of a multi-shard statement came
// from, in the error's context (psql's CONTEXT line); the SQLSTATE and
// message stay the shard's.
func withShard(raw, body []byte, shard string) []byte {
	var e pgproto3.ErrorResponse
	if e.Decode(body) != nil {
		return bytes.Clone(raw)
	}
	where := "shard " + shard
	if e.Where != "" {
		where = e.Where + "\n" + where
	}
	e.Where = where
	return appendMsg(nil, &e)
}

// cancelOthers stops every shard but i; their replies are drained.
func (g *gatherer) cancelOthers(i int) {
	for j, o := range g.bs {
		if j != i && !g.done[j] {
			g.cancels.Go(o.cancel)
		}
	}
}

// gather reads every shard's reply and answers from it through a tree of
// fanout operators: the shards' rows concatenated, or merged in order
// (plan.Sort), or merged as groups (plan.Merge), then OFFSET and LIMIT.
// The shards work in parallel; the proxy holds one message per shard,
// except where the answer needs buffering (groups, a sort after them),
// which is bounded by merge_memory_mb. RowDescriptions must agree; the
// first error stops the other shards. withRowDesc relays the
// RowDescription (the simple protocol; in the extended one Describe did).
// formats, when set, are the result formats the client asked for a
// grouped merge (its rows are computed in text). shardErr is a shard lost
// mid-reply; err means the client is gone.
func (s *session) gather(bs []*backend, plan *router.Plan, sent time.Time, withRowDesc bool, formats []int16) (m gathered, shardErr, err error) {
	g := &gatherer{s: s, bs: bs, plan: plan, sent: sent, withRowDesc: withRowDesc, done: make([]bool, len(bs))}
	defer g.cancels.Wait()
	srcs := make([]*shardRows, len(bs))
	for i := range bs {
		srcs[i] = &shardRows{g: g, i: i}
	}
	lost := func(err error) (gathered, error, error) {
		var l errShardLost
		if errors.As(err, &l) {
			return g.m, l.err, nil
		}
		return g.m, nil, err
	}
	// Prime: every shard's first row (or end), so that the columns and
	// early errors are known before anything is sent.
	for _, src := range srcs {
		row, err := src.Next()
		if err != nil {
			return lost(err)
		}
		src.head = row
		if row == nil {
			src.done = true
		}
	}
	var root fanout.Source
	in := make([]fanout.Source, len(srcs))
	for i, src := range srcs {
		in[i] = src
	}
	if g.m.firstErr == nil {
		var perr error
		root, perr = s.pipeline(g, in)
		if perr != nil {
			g.m.firstErr = appendMsg(nil, errorResponse(perr))
			g.cancelOthers(-1)
		}
	} else if withRowDesc && plan.Merge != nil && g.m.rowDesc != nil {
		// A shard described its rows, then failed computing them:
		// Postgres sends the (merged) RowDescription before the error.
		// Building the tree sends it and reads nothing.
		s.pipeline(g, in)
	}
	for root != nil && g.m.firstErr == nil {
		row, err := root.Next()
		if err != nil {
			var l errShardLost
			if errors.As(err, &l) {
				return g.m, l.err, nil
			}
			g.m.firstErr = appendMsg(nil, errorResponse(mergeError(err)))
			g.cancelOthers(-1)
			break
		}
		if row == nil || g.m.firstErr != nil {
			break
		}
		if formats != nil {
			if row, err = toFormats(row, formats, g.types); err != nil {
				g.m.firstErr = appendMsg(nil, errorResponse(mergeError(err)))
				g.cancelOthers(-1)
				break
			}
		}
		g.m.rows++
		if s.copyTo != nil { // copymerge.go: COPY (query) TO STDOUT
			s.copyTo.row(s, g, row)
			if len(s.out) >= flushAt {
				if err := s.flush(); err != nil {
					for _, o := range bs {
						o.broken = true
						go o.cancel()
					}
					return g.m, nil, err
				}
			}
			continue
		}
		s.out = append(s.out, 'D', 0, 0, 0, 0)
		binary.BigEndian.PutUint32(s.out[len(s.out)-4:], uint32(len(row)+4))
		s.out = append(s.out, row...)
		if len(s.out) >= flushAt {
			if err := s.flush(); err != nil {
				for _, o := range bs {
					o.broken = true
					go o.cancel()
				}
				return g.m, nil, err
			}
		}
	}
	// Drain what is left: after an error, a LIMIT reached, or rows of
	// copies not used (each shard's part is bounded by its own LIMIT).
	for _, src := range srcs {
		src.head = nil
		for !src.done {
			if _, err := src.Next(); err != nil {
				return lost(err)
			}
		}
	}
	return g.m, nil, nil
}

// mergeError turns an operator's error into what the client sees.
func mergeError(err error) error {
	var pe *pgError
	switch {
	case errors.As(err, &pe), errors.Is(err, fanout.ErrMemory), errors.Is(err, fanout.ErrOverflow),
		errors.Is(err, fanout.ErrDivisionByZero), errors.As(err, new(*fanout.ErrNumericOverflow)):
		return err
	case errors.Is(err, fanout.ErrUnsupported):
		return refused(fmt.Sprintf("cannot merge rows across shards: %v", err), "Add a shard key predicate so the query runs on one shard.")
	}
	return &pgError{code: pgerrcode.InternalError, msg: fmt.Sprintf("merging rows across shards: %v", err)}
}

// pipeline instantiates the plan's merge tree (router.Plan.Tree, where
// every decision of how the shards' rows combine is made) over the
// shards' row streams. What it adds is what only the shards' columns
// tell: each column's type, its ordering and equality, the aggregates'
// result types. The RowDescription of a rewritten statement goes out
// here (the client's columns, not the shards').
func (s *session) pipeline(g *gatherer, in []fanout.Source) (fanout.Source, error) {
	tb := treeBuilder{s: s, g: g, in: in, fields: g.m.fields}
	root, err := tb.build(g.plan.Tree())
	if err != nil {
		return nil, err
	}
	if g.plan.Merge != nil && g.withRowDesc {
		switch {
		case tb.changed && tb.fields != nil:
			g.s.out = appendMsg(g.s.out, &pgproto3.RowDescription{Fields: tb.fields})
		case !tb.changed && g.m.rowDesc != nil:
			g.s.out = append(g.s.out, g.m.rowDesc...)
		}
	}
	return root, nil
}

// treeBuilder instantiates merge operators, carrying the columns of the
// rows each operator yields.
type treeBuilder struct {
	s  *session
	g  *gatherer
	in []fanout.Source
	// fields are the columns of the rows built so far; types, after a
	// group merge, their types (computed columns included); exprs the
	// group's expression columns.
	fields  []pgproto3.FieldDescription
	types   []uint32
	exprs   []*fanout.Expr
	changed bool // fields differ from the shards'
	budget  *fanout.Budget
}

func (b *treeBuilder) memory() *fanout.Budget {
	if b.budget == nil {
		b.budget = &fanout.Budget{Max: int64(b.s.srv.live.Load().cfg.MergeMemoryMB) << 20}
	}
	return b.budget
}

func (b *treeBuilder) build(op *router.Op) (fanout.Source, error) {
	if op == nil {
		return nil, &pgError{code: pgerrcode.InternalError, msg: "a multi-shard plan without a merge"}
	}
	s, g := b.s, b.g
	switch op.Kind {
	case router.OpFirst:
		return b.in[0], nil
	case router.OpConcat:
		return fanout.Concat(b.in...), nil
	case router.OpMergeSort:
		ord, err := s.rowOrder(b.fields, op.Sort, g)
		if err != nil {
			return nil, err
		}
		return fanout.MergeSort(ord, b.in...), nil
	}
	src, err := b.build(op.In)
	if err != nil {
		return nil, err
	}
	switch op.Kind {
	case router.OpGroup, router.OpGroupSorted:
		spec, err := b.group(op.Split)
		if err != nil {
			return nil, err
		}
		if op.Kind == router.OpGroupSorted {
			return fanout.GroupSorted(src, spec, b.memory())
		}
		return fanout.Group(src, spec, b.memory())
	case router.OpProject:
		return fanout.Project(src, b.exprs, b.types), nil
	case router.OpFilter:
		return fanout.Filter(src, op.Having, b.types, s.srv.textByteOrder), nil
	case router.OpDistinct:
		width, what := op.Width, "DISTINCT"
		if width < 0 {
			width, what = len(b.fields), "UNION"
		}
		kinds := make([]fanout.KeyKind, width)
		for i := range kinds {
			f := b.fields[i]
			typ := f.DataTypeOID
			if b.types != nil {
				typ = b.types[i]
			}
			kind, ok := fanout.KeyKindOf(typ)
			if f.Format != 0 {
				kind = kind.BinaryKind()
			}
			if !ok || !g.keyOK(f) {
				hint := "Select columns of built-in scalar types, or add a shard key predicate."
				if what == "UNION" {
					hint = "Select columns of built-in scalar types, use UNION ALL, or add a shard key predicate."
				}
				return nil, refused(fmt.Sprintf("cannot compare column %q of type %d across shards for %s", f.Name, typ, what), hint)
			}
			kinds[i] = kind
		}
		return fanout.Distinct(src, width, kinds, b.memory()), nil
	case router.OpSort:
		final := make([]pgproto3.FieldDescription, len(b.fields))
		copy(final, b.fields)
		ord, err := s.rowOrder(final, op.Sort, g)
		if err != nil {
			return nil, err
		}
		return fanout.Sort(src, ord, b.memory()), nil
	case router.OpLimit:
		return fanout.Limit(src, op.Offset, op.Limit), nil
	case router.OpStrip:
		n := op.Width
		if op.Hidden > 0 {
			n = len(b.fields) - op.Hidden
		}
		if b.fields != nil {
			b.fields, b.changed = b.fields[:n], true
		}
		return fanout.Strip(src, n), nil
	}
	return nil, &pgError{code: pgerrcode.InternalError, msg: fmt.Sprintf("unknown merge operator %d", op.Kind)}
}

// group reads a group merge's spec from the shards' columns and sets the
// builder's columns to the merged ones.
func (b *treeBuilder) group(sp *parser.Split) (fanout.GroupSpec, error) {
	s, g, fields := b.s, b.g, b.fields
	spec := fanout.GroupSpec{Scalar: sp.Scalar, TextByteOrder: s.srv.textByteOrder}
	for _, c := range sp.Cols {
		if (c.Agg == "min" || c.Agg == "max") && c.Col < len(fields) && !g.textOK(fields[c.Col]) {
			spec.TextByteOrder = false // text min/max refused
		}
	}
	for _, f := range fields {
		if f.Format != 0 {
			return spec, &pgError{code: pgerrcode.InternalError, msg: "a grouped merge needs text results from the shards"}
		}
	}
	for _, k := range sp.Keys {
		if k >= len(fields) {
			return spec, &pgError{code: pgerrcode.InternalError, msg: "group key out of range of the shards' columns"}
		}
		kind, ok := fanout.KeyKindOf(fields[k].DataTypeOID)
		if !ok || !g.keyOK(fields[k]) {
			return spec, refused(fmt.Sprintf("cannot group by column %q of type %d across shards: its equality is not known to the proxy", fields[k].Name, fields[k].DataTypeOID),
				"Group by columns of built-in scalar types, or add a shard key predicate.")
		}
		spec.Keys = append(spec.Keys, k)
		spec.KeyKinds = append(spec.KeyKinds, kind)
	}
	out := make([]pgproto3.FieldDescription, len(sp.Cols))
	types := make([]uint32, len(sp.Cols))
	for i, c := range sp.Cols {
		if c.Agg == "expr" {
			spec.Cols = append(spec.Cols, fanout.AggCol{Func: "expr"})
			continue
		}
		if c.Col >= len(fields) || (c.Agg == "avg" && c.Count >= len(fields)) {
			return spec, &pgError{code: pgerrcode.InternalError, msg: "merge column out of range of the shards' columns"}
		}
		f := fields[c.Col]
		col := fanout.AggCol{Func: c.Agg, Col: c.Col, Count: c.Count, Type: f.DataTypeOID}
		typ, err := col.ResultType()
		if err != nil {
			return spec, err
		}
		spec.Cols = append(spec.Cols, col)
		types[i] = typ
		out[i] = f
		if typ != f.DataTypeOID {
			out[i].DataTypeOID, out[i].TypeModifier, out[i].DataTypeSize = typ, -1, typeSize(typ)
		}
		if c.Name != "" {
			out[i].Name = []byte(c.Name)
		}
	}
	for i, c := range sp.Cols {
		if c.Agg != "expr" {
			continue
		}
		typ, err := c.Expr.Type(types)
		if err != nil {
			return spec, err
		}
		types[i] = typ
		out[i] = pgproto3.FieldDescription{Name: []byte(c.Name), DataTypeOID: typ, DataTypeSize: typeSize(typ), TypeModifier: c.Typmod}
		if b.exprs == nil {
			b.exprs = make([]*fanout.Expr, len(sp.Cols))
		}
		b.exprs[i] = c.Expr
	}
	g.types = types
	b.fields, b.types, b.changed = out, types, true
	return spec, nil
}

// rowOrder builds the ORDER BY comparison of DataRow bodies from the
// result's column types: Postgres's ordering of each type (in text or
// binary format), DESC, NULLS FIRST/LAST. Types it cannot order exactly
// are refused before any row is sent.
func (s *session) rowOrder(fields []pgproto3.FieldDescription, keys []parser.SortKey, g *gatherer) (*fanout.Order, error) {
	okeys := make([]fanout.OrderKey, 0, len(keys))
	for _, k := range keys {
		if k.Column < 0 {
			// SELECT *: the key names exactly one of the result's columns.
			k.Column = -1
			for i, f := range fields {
				if string(f.Name) == k.Name {
					if k.Column >= 0 {
						return nil, refused(fmt.Sprintf("ORDER BY %s is ambiguous among the columns of SELECT * across shards", k.Name),
							"Select the columns by name.")
					}
					k.Column = i
				}
			}
			if k.Column < 0 {
				return nil, refused(fmt.Sprintf("ORDER BY %s: no result column of that name across shards", k.Name),
					"Select the column you order by.")
			}
		}
		if k.Column >= len(fields) {
			return nil, &pgError{code: pgerrcode.InternalError, msg: "ORDER BY column out of range of the result"}
		}
		f := fields[k.Column]
		base, err := fanout.Comparator(f.DataTypeOID, g.textOK(f))
		if err != nil {
			return nil, refused(fmt.Sprintf("ORDER BY column %q across shards: %v", f.Name, err),
				"Add a shard key predicate so the query runs on one shard.")
		}
		cmp := base
		if f.Format == 1 {
			oid := f.DataTypeOID
			cmp = func(a, b []byte) (int, error) {
				ta, err1 := binaryToText(oid, a)
				tb, err2 := binaryToText(oid, b)
				if err1 != nil || err2 != nil {
					return 0, errors.Join(err1, err2)
				}
				return base(ta, tb)
			}
		}
		norm, _ := fanout.NormOf(f.DataTypeOID, f.Format == 1, g.textOK(f))
		okeys = append(okeys, fanout.OrderKey{Col: k.Column, Desc: k.Desc, NullsFirst: k.NullsFirst, Cmp: cmp, Norm: norm})
	}
	return fanout.NewOrder(okeys), nil
}

// toFormats converts a grouped merge's text row to the client's result
// formats (the extended protocol).
func toFormats(row []byte, formats []int16, types []uint32) ([]byte, error) {
	vals, err := fanout.DecodeRow(nil, row)
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		f := formats[0]
		if len(formats) > 1 {
			if i >= len(formats) {
				break
			}
			f = formats[i]
		}
		if f == 0 || v == nil || i >= len(types) {
			continue
		}
		if vals[i], err = textToBinary(types[i], v); err != nil {
			return nil, err
		}
	}
	return fanout.EncodeRow(nil, vals), nil
}

// typeSize is the RowDescription size of a computed column's type.
func typeSize(typ uint32) int16 {
	switch typ {
	case fanout.Int2OID:
		return 2
	case fanout.Int4OID:
		return 4
	case fanout.Int8OID, fanout.Float8OID:
		return 8
	case fanout.BoolOID:
		return 1
	}
	return -1
}

// sameColumns reports whether two shards' RowDescriptions (raw) describe
// the same columns: names, types, modifiers and formats. The table OIDs
// and column numbers may differ (each shard numbers its own objects).
func sameColumns(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y pgproto3.RowDescription
	if x.Decode(a[5:]) != nil || y.Decode(b[5:]) != nil || len(x.Fields) != len(y.Fields) {
		return false
	}
	for i, f := range x.Fields {
		g := y.Fields[i]
		if !bytes.Equal(f.Name, g.Name) || f.DataTypeOID != g.DataTypeOID || f.DataTypeSize != g.DataTypeSize ||
			f.TypeModifier != g.TypeModifier || f.Format != g.Format {
			return false
		}
	}
	return true
}
