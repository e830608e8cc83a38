package proxy

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/fanout"
	"github.com/shardproxy/shardproxy/parser"
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
		case 'T', 'n':
			if failed == nil {
				s.out = append(s.out, raw...)
			}
		case 'E':
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

func (s *session) executeScatter(ctx context.Context, p *portal, maxRows uint32) error {
	if maxRows != 0 {
		return refused("fetching a cross-shard result in parts (Execute with a row limit) is not supported yet",
			"Fetch all rows at once, or add a shard key predicate.")
	}
	if err := s.extFlush(false); err != nil || s.x.errored {
		return err
	}
	plan := p.plan
	bs, err := s.leaseAll(ctx, plan.Shards)
	defer s.releaseAll(bs)
	if err != nil {
		return err
	}
	sent := time.Now()
	for i, b := range bs {
		var buf []byte
		buf = s.prepareOn(b, p.ps, buf)
		buf = appendMsg(buf, p.unnamedBind())
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
	m, shardErr, err := s.gather(bs, plan, sent, false)
	if err != nil {
		return err
	}
	if shardErr != nil {
		return shardErr
	}
	if err := s.answer(m, plan, bs, false); err != nil {
		s.fail(err)
		s.x.errored = true
	}
	return nil
}

// combine merges one aggregate row per shard in the result formats the
// shards used (the client's), converting binary values through text.
func (s *session) combine(aggs []parser.Agg, fields []pgproto3.FieldDescription, rows [][][]byte) ([][]byte, error) {
	if len(fields) != len(aggs) {
		return nil, &pgError{code: pgerrcode.InternalError, msg: "aggregate shape mismatch between plan and shard reply"}
	}
	cols := make([]fanout.Column, len(fields))
	for i, f := range fields {
		cols[i] = fanout.Column{Func: aggs[i].Func, Type: f.DataTypeOID}
	}
	text := make([][][]byte, len(rows))
	for r, row := range rows {
		text[r] = make([][]byte, len(row))
		for c, v := range row {
			if v == nil || c >= len(fields) || fields[c].Format == 0 {
				text[r][c] = v
				continue
			}
			t, err := binaryToText(fields[c].DataTypeOID, v)
			if err != nil {
				return nil, err
			}
			text[r][c] = t
		}
	}
	out, err := fanout.Aggregate(cols, text, s.srv.textByteOrder)
	if err != nil {
		return nil, err
	}
	for c, v := range out {
		if v == nil || fields[c].Format == 0 {
			continue
		}
		if out[c], err = textToBinary(fields[c].DataTypeOID, v); err != nil {
			return nil, err
		}
	}
	return out, nil
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
