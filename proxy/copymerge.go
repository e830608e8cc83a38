package proxy

import (
	"context"
	"encoding/binary"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// COPY (query) TO STDOUT whose query needs a merge across shards (ORDER BY,
// LIMIT, aggregates, DISTINCT) runs the query as a SELECT on the shards,
// merges the rows with the same operators as the SELECT, and writes them
// as COPY text or CSV. The shards answer in text, so binary output and
// FORCE_QUOTE are refused.

// copyTo formats merged rows as COPY data, set on the session while a
// merged COPY TO runs (gather hands it each row).
type copyTo struct {
	o       parser.CopyOptions
	started bool
	rows    int64
	line    []byte
}

// copyMergeable says why a merged COPY TO cannot be formatted, or "".
func copyMergeable(c *parser.Copy) string {
	switch {
	case !c.Stdio:
		return "a server file or program"
	case c.Options.Format == "binary":
		return "the binary format"
	case c.Options.ForceQuote:
		return "FORCE_QUOTE"
	case c.Options.Bad || c.Options.Encoding != "":
		return "these options"
	case c.QuerySQL == "":
		return "this query"
	}
	return ""
}

// copyMerged runs the merged COPY (query) TO STDOUT. A returned error means
// the client connection is unusable.
func (s *session) copyMerged(ctx context.Context, c *parser.Copy, plan *router.Plan) error {
	var bs []*backend
	if s.status != 'I' {
		for _, sh := range plan.Shards {
			b, err := s.txOn(ctx, sh)
			if err != nil {
				s.fail(err)
				return nil
			}
			bs = append(bs, b)
		}
	} else {
		var err error
		bs, err = s.leaseAllFor(ctx, c.Query, plan.Shards)
		defer s.releaseAll(bs)
		if err != nil {
			s.fail(err)
			return nil
		}
	}
	sent := time.Now()
	for i, b := range bs {
		sql := c.QuerySQL
		if plan.SQL != nil {
			sql = plan.SQL[i]
		}
		if err := b.sendQuery(sql); err != nil {
			for _, o := range bs[:i] {
				o.broken = true
				go o.cancel()
			}
			s.fail(err)
			return nil
		}
	}
	ct := &copyTo{o: c.Options}
	s.copyTo = ct
	m, shardErr, err := s.gather(bs, plan, sent, false, nil)
	s.copyTo = nil
	if err != nil {
		return err
	}
	for _, b := range bs {
		if s.status != 'I' && b.txStatus == 'E' {
			s.status = 'E'
		}
	}
	switch {
	case shardErr != nil:
		s.fail(shardErr)
		return nil
	case m.firstErr != nil:
		s.out = append(s.out, m.firstErr...)
		if s.status == 'T' {
			s.status = 'E'
		}
		return nil
	}
	ct.start(s, m.fields, plan)
	tag := &pgproto3.CommandComplete{CommandTag: []byte("COPY " + strconv.FormatInt(ct.rows, 10))}
	s.q.tag(append(tag.CommandTag, 0))
	s.out = append(s.out, 'c', 0, 0, 0, 4)
	s.out = appendMsg(s.out, tag)
	return nil
}

// start sends CopyOutResponse and the header, once.
func (ct *copyTo) start(s *session, fields []pgproto3.FieldDescription, plan *router.Plan) {
	if ct.started {
		return
	}
	ct.started = true
	if plan.Merge != nil && plan.Merge.Hidden > 0 && len(fields) >= plan.Merge.Hidden {
		fields = fields[:len(fields)-plan.Merge.Hidden]
	}
	s.out = appendMsg(s.out, &pgproto3.CopyOutResponse{OverallFormat: 0, ColumnFormatCodes: make([]uint16, len(fields))})
	if !ct.o.Header {
		return
	}
	ct.line = ct.line[:0]
	for i, f := range fields {
		if i > 0 {
			ct.line = append(ct.line, ct.o.Delimiter)
		}
		ct.line = ct.field(ct.line, string(f.Name), len(fields) == 1)
	}
	ct.line = append(ct.line, '\n')
	s.out = appendMsg(s.out, &pgproto3.CopyData{Data: ct.line})
}

// row writes one merged DataRow body (text values) as a CopyData line.
func (ct *copyTo) row(s *session, g *gatherer, row []byte) {
	ct.start(s, g.m.fields, g.plan)
	ct.rows++
	line := ct.line[:0]
	n := int(binary.BigEndian.Uint16(row))
	p := 2
	for i := 0; i < n && p+4 <= len(row); i++ {
		if i > 0 {
			line = append(line, ct.o.Delimiter)
		}
		l := int(int32(binary.BigEndian.Uint32(row[p:])))
		p += 4
		if l < 0 {
			line = append(line, ct.o.Null...)
			continue
		}
		line = ct.field(line, string(row[p:p+l]), n == 1)
		p += l
	}
	ct.line = append(line, '\n')
	s.out = appendMsg(s.out, &pgproto3.CopyData{Data: ct.line})
}

// field appends one non-NULL value as Postgres's COPY TO writes it.
func (ct *copyTo) field(dst []byte, v string, single bool) []byte {
	o := ct.o
	if o.Format != "csv" {
		for i := 0; i < len(v); i++ {
			c := v[i]
			switch c {
			case '\\':
				dst = append(dst, '\\', '\\')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\v':
				dst = append(dst, '\\', 'v')
			default:
				if c == o.Delimiter {
					dst = append(dst, '\\')
				}
				dst = append(dst, c)
			}
		}
		return dst
	}
	quote := v == o.Null || single && v == `\.`
	for i := 0; i < len(v) && !quote; i++ {
		c := v[i]
		quote = c == o.Delimiter || c == o.Quote || c == '\n' || c == '\r'
	}
	if !quote {
		return append(dst, v...)
	}
	dst = append(dst, o.Quote)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == o.Quote || c == o.Escape {
			dst = append(dst, o.Escape)
		}
		dst = append(dst, c)
	}
	return append(dst, o.Quote)
}
