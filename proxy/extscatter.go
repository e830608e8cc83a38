package proxy

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/fanout"
	"github.com/shardproxy/shardproxy/router"
)

// A scatter portal is a bound statement for several shards. Describe runs
// on the first shard; Execute runs Bind+Describe+Execute+Sync on every
// target shard at once and merges the replies like the simple protocol's
// scatter, in the result formats the client asked for.

func (s *session) describeScatter(ctx context.Context, p *portal) error {
	if err := s.extFlush(false); err != nil || s.x.errored {
		return err
	}
	b, err := s.lease(ctx, p.plan.Shards[0])
	if err != nil {
		return err
	}
	defer s.release(b)
	var buf []byte
	injected := injectedParse(b, p.ps)
	buf = s.prepareOn(b, p.ps, buf)
	buf = appendMsg(buf, p.unnamedBind())
	buf = appendMsg(buf, &pgproto3.Describe{ObjectType: 'P'})
	buf = appendMsg(buf, &pgproto3.Sync{})
	if _, err := b.conn.Write(buf); err != nil {
		b.broken = true
		return &shardError{shard: b.pool.name, err: err}
	}
	var failed []byte
	for {
		typ, body, raw, err := b.rd.next()
		if err != nil {
			b.broken = true
			return &shardError{shard: b.pool.name, err: err}
		}
		switch typ {
		case '1':
			injected = false // the Parse succeeded
		case 'T', 'n':
			if failed == nil {
				s.out = append(s.out, raw...)
			}
		case 'E':
			if injected {
				forgetParse(b, p.ps)
			}
			if failed == nil {
				failed = bytes.Clone(raw)
			}
		case 'Z':
			b.txStatus = body[0]
			if failed != nil {
				s.out = append(s.out, failed...)
				s.x.errored = true
			}
			return nil
		}
	}
}

// prepareOn appends a Parse of ps to buf when b lacks it.
// injectedParse reports whether prepareOn will add a Parse for ps on b.
// A reader that sees an ErrorResponse before that Parse's ParseComplete
// must forget it (forgetParse): the backend skipped or rejected it.
func injectedParse(b *backend, ps *prepared) bool { return !b.stmts[ps.global] }

// forgetParse drops a statement the backend did not prepare after all.
func forgetParse(b *backend, ps *prepared) { delete(b.stmts, ps.global) }

func (s *session) prepareOn(b *backend, ps *prepared, buf []byte) []byte {
	if b.stmts[ps.global] {
		return buf
	}
	if b.stmts == nil {
		b.stmts = map[string]bool{}
	}
	b.stmts[ps.global] = true
	return appendMsg(buf, &pgproto3.Parse{Name: ps.global, Query: ps.query, ParameterOIDs: ps.oids})
}

func (p *portal) unnamedBind() *pgproto3.Bind {
	b := *p.bind
	b.DestinationPortal = ""
	return &b
}

// shardBind returns the Bind each shard of a scatter portal runs: a split
// statement (or a grouped merge, computed in text) runs as the unnamed
// statement of each shard (custom); formats, when set, are the result
// formats the merged text rows are converted to.
func (p *portal) shardBind() (bind *pgproto3.Bind, custom bool, formats []int16) {
	bind = p.unnamedBind()
	plan := p.plan
	custom = plan.SQL != nil || plan.Merge != nil
	if custom {
		bind.PreparedStatement = ""
		switch sp := plan.Merge; {
		case sp != nil && sp.Grouped:
			for _, f := range bind.ResultFormatCodes {
				if f != 0 {
					formats = bind.ResultFormatCodes
				}
			}
			bind.ResultFormatCodes = nil
		case sp != nil && sp.Hidden > 0 && len(bind.ResultFormatCodes) > 1:
			bind.ResultFormatCodes = append(append([]int16(nil), bind.ResultFormatCodes...), make([]int16, sp.Hidden)...)
		}
	}
	return bind, custom, formats
}

func (s *session) executeScatter(ctx context.Context, p *portal, maxRows uint32) error {
	if maxRows != 0 && !p.ps.st.ReturnsRows() {
		// A write without RETURNING has no rows to fetch in parts (pgjdbc
		// sends Execute with a limit of 1 for such statements).
		maxRows = 0
	}
	if maxRows != 0 || p.mc != nil {
		return s.executePartial(ctx, p, maxRows) // mcursor.go: the merge read in parts
	}
	if err := s.extFlush(false); err != nil || s.x.errored {
		return err
	}
	plan := p.plan
	bind, custom, formats := p.shardBind()
	var oids []uint32
	// Inside a transaction the statement runs on the transaction's
	// backends (joining shards as needed); outside, a write on several
	// shards runs in an implicit transaction of its own on each (BEGIN
	// sent with it) and commits with two-phase commit.
	inTx := s.status != 'I'
	implicit := !inTx && (p.ps.st.Writes || plan.Write)
	var bs []*backend
	if inTx {
		for _, sh := range plan.Shards {
			b, err := s.txOn(ctx, sh)
			if err != nil {
				return err
			}
			bs = append(bs, b)
		}
	} else {
		var err error
		bs, err = s.leaseAllFor(ctx, p.ps.st, plan.Shards) // replicas.go: reads may use replicas
		defer s.releaseAll(bs)
		if err != nil {
			return err
		}
	}
	if custom {
		var err error
		if oids, err = shardParamTypes(p, plan); err != nil {
			// Ask a shard for the types the client left out, as Postgres
			// infers them for the statement the client sent.
			if lerr := learnParamTypes(bs[0], p.ps); lerr != nil {
				return lerr
			}
			if oids, err = shardParamTypes(p, plan); err != nil {
				return err
			}
		}
	}
	sent := time.Now()
	var injected []*backend
	for i, b := range bs {
		var buf []byte
		if implicit {
			buf = appendQuery(buf, "BEGIN")
		}
		if custom {
			sql := p.ps.query
			if plan.SQL != nil {
				sql = plan.SQL[i]
			}
			buf = appendMsg(buf, &pgproto3.Parse{Query: sql, ParameterOIDs: oids})
		} else {
			if injectedParse(b, p.ps) {
				injected = append(injected, b)
			}
			buf = s.prepareOn(b, p.ps, buf)
		}
		buf = appendMsg(buf, bind)
		buf = appendMsg(buf, &pgproto3.Describe{ObjectType: 'P'})
		buf = appendMsg(buf, &pgproto3.Execute{})
		buf = appendMsg(buf, &pgproto3.Sync{})
		if _, err := b.conn.Write(buf); err != nil {
			b.broken = true
			for _, o := range bs[:i] {
				o.broken = true
				go o.cancel()
			}
			return &shardError{shard: b.pool.name, err: err}
		}
	}
	if implicit {
		for _, b := range bs {
			if err := readQuiet(b); err != nil {
				for _, o := range bs {
					o.broken = true
				}
				return err
			}
		}
	}
	m, shardErr, err := s.gather(bs, plan, sent, false, formats)
	if err != nil || shardErr != nil || m.firstErr != nil {
		// A Parse injected with this statement may have failed (a cancel
		// that landed on it, an error on that shard): the backend may lack
		// the statement its bookkeeping lists, and the next Bind would
		// fail. Such a backend is closed, not pooled.
		for _, b := range injected {
			b.broken = true
		}
	}
	if inTx {
		for _, b := range bs {
			if b.txStatus == 'E' {
				s.status = 'E'
			}
		}
		if m.firstErr != nil && s.status == 'T' {
			s.status = 'E'
		}
	}
	if err != nil {
		return err
	}
	if shardErr != nil {
		if implicit {
			s.rollbackAll(bs)
		}
		return shardErr
	}
	if implicit {
		defer func() {
			s.releaseAll(s.moved)
			s.moved = nil
		}()
	}
	if m.firstErr == nil {
		if err := s.moveKeyed(ctx, plan, bs, m); err != nil {
			if implicit {
				s.rollbackAll(append(bs, s.moved...))
			} else if inTx {
				s.status = 'E'
			}
			return err
		}
	}
	if implicit {
		all := append(append([]*backend(nil), bs...), s.moved...)
		slices.SortFunc(all, func(a, b *backend) int { return a.pool.shard - b.pool.shard })
		if m.firstErr != nil {
			s.rollbackAll(all)
		} else if err := s.commitShards(ctx, all); err != nil {
			return err
		}
	}
	if err := s.answer(m, plan, bs, false); err != nil {
		s.fail(err)
		s.x.errored = true
	}
	return nil
}

// shardParamTypes returns the parameter types of a portal's shard
// statement when it differs from the client's: the client's types, else
// those a Describe taught, else the type Postgres gives a parameter the
// shard statement no longer uses (LIMIT and OFFSET: int8). A parameter
// the shards could not type is refused rather than failing there.
func shardParamTypes(p *portal, plan *router.Plan) ([]uint32, error) {
	n := len(p.bind.Parameters)
	oids := make([]uint32, n)
	for i := range oids {
		if i < len(p.ps.oids) {
			oids[i] = p.ps.oids[i]
		}
		if oids[i] == 0 && i < len(p.ps.described) {
			oids[i] = p.ps.described[i]
		}
	}
	unusedParamTypes(p, plan, oids)
	if plan.Merge == nil {
		// A split INSERT: each shard's statement holds some of the
		// parameters; the others need their types.
		for _, o := range oids {
			if o == 0 {
				return nil, refused("a statement rewritten per shard needs its parameter types in the extended protocol",
					"Give the parameter types in Parse (or Describe the statement first), or use the simple protocol.")
			}
		}
		return oids, nil
	}
	for param, typ := range plan.Merge.Dropped {
		i := param - 1
		if i < 0 || i >= n || oids[i] != 0 {
			continue
		}
		if typ != "int8" {
			return nil, refused(fmt.Sprintf("the type of parameter $%d is needed to merge across shards", param),
				"Give the parameter types in Parse (or Describe the statement first), or use the simple protocol.")
		}
		oids[i] = 20
	}
	return oids, nil
}

// unusedParamTypes types the untyped parameters that no shard statement
// uses any more (a LIMIT or OFFSET the router computed from the bound
// values): Postgres cannot infer a type for a parameter the statement
// does not mention (42P18), and any type that reads the value will do:
// text for a text-format value, bytea for a binary one.
func unusedParamTypes(p *portal, plan *router.Plan, oids []uint32) {
	sqls := plan.SQL
	if sqls == nil {
		sqls = []string{p.ps.query}
	}
	for i := range oids {
		if oids[i] != 0 {
			continue
		}
		used := false
		for _, q := range sqls {
			if mentionsParam(q, i+1) {
				used = true
				break
			}
		}
		if used {
			continue
		}
		oids[i] = 25
		if paramFormat(p.bind, i) == 1 {
			oids[i] = 17
		}
	}
}

// mentionsParam reports whether sql contains $n as a token (it may also
// be inside a literal: then the parameter keeps no type, as before).
func mentionsParam(sql string, n int) bool {
	tok := "$" + strconv.Itoa(n)
	for i := 0; ; {
		j := strings.Index(sql[i:], tok)
		if j < 0 {
			return false
		}
		end := i + j + len(tok)
		if end >= len(sql) || sql[end] < '0' || sql[end] > '9' {
			return true
		}
		i = end
	}
}

func paramFormat(b *pgproto3.Bind, i int) int16 {
	switch len(b.ParameterFormatCodes) {
	case 0:
		return 0
	case 1:
		return b.ParameterFormatCodes[0]
	}
	if i < len(b.ParameterFormatCodes) {
		return b.ParameterFormatCodes[i]
	}
	return 0
}

var typeMaps = sync.Pool{New: func() any { return pgtype.NewMap() }}

// binaryToText converts a binary-format value to Postgres's text format.
func binaryToText(oid uint32, v []byte) ([]byte, error) {
	return convertFormat(oid, 1, 0, v)
}

// textToBinary converts a text-format value to the binary format.
func textToBinary(oid uint32, v []byte) ([]byte, error) {
	return convertFormat(oid, 0, 1, v)
}

func convertFormat(oid uint32, from, to int16, v []byte) ([]byte, error) {
	m := typeMaps.Get().(*pgtype.Map)
	defer typeMaps.Put(m)
	var val any
	if err := m.Scan(oid, from, v, &val); err != nil {
		return nil, fmt.Errorf("%w: cannot convert a value of type %d: %v", fanout.ErrUnsupported, oid, err)
	}
	out, err := m.Encode(oid, to, val, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot convert a value of type %d: %v", fanout.ErrUnsupported, oid, err)
	}
	return out, nil
}

// learnParamTypes describes the client's statement on b (as the unnamed
// statement, with the client's own types) and keeps the parameter types
// the shard inferred.
func learnParamTypes(b *backend, ps *prepared) error {
	var buf []byte
	buf = appendMsg(buf, &pgproto3.Parse{Query: ps.query, ParameterOIDs: ps.oids})
	buf = appendMsg(buf, &pgproto3.Describe{ObjectType: 'S'})
	buf = appendMsg(buf, &pgproto3.Sync{})
	if _, err := b.conn.Write(buf); err != nil {
		b.broken = true
		return &shardError{shard: b.pool.name, err: err}
	}
	var qerr error
	for {
		typ, body, _, err := b.rd.next()
		if err != nil {
			b.broken = true
			return &shardError{shard: b.pool.name, err: err}
		}
		switch typ {
		case 't':
			var pd pgproto3.ParameterDescription
			if err := pd.Decode(body); err == nil {
				ps.described = append([]uint32(nil), pd.ParameterOIDs...)
			}
		case 'E':
			if qerr == nil {
				qerr = backendError(body)
			}
		case 'Z':
			b.txStatus = body[0]
			return qerr
		}
	}
}
