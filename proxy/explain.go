package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/parser"
)

// EXPLAIN of a statement that runs on several shards. The proxy answers
// with its own plan (the route and the merge) and each shard's plan
// beneath, as Citus shows its tasks; EXPLAIN ANALYZE runs on every shard
// the statement touches and adds the rows the shards returned in all.
// Text format only: other formats keep the router's behaviour.

// explainScatter answers st when it is the EXPLAIN of a multi-shard read
// outside a transaction. It reports whether it took the statement; err
// means the client connection is unusable.
func (s *session) explainScatter(ctx context.Context, st *parser.Statement) (bool, error) {
	in := st.Inner
	if st.Kind != parser.Explain || in == nil || in.Kind != parser.Select || in.Writes || s.status != 'I' ||
		len(st.Hints) > 0 || s.shardHint != "" || st.ExplainsCursor() {
		return false, nil
	}
	plan, err := s.route(in, nil)
	if err != nil || plan.Single() || plan.NoRows {
		return false, nil
	}
	texts := make([]string, len(plan.Shards))
	for i := range plan.Shards {
		texts[i] = st.SQL
		if plan.SQL != nil {
			sql, structured, err := st.ExplainAround(plan.SQL[i])
			if err != nil || structured {
				return false, nil
			}
			texts[i] = sql
		} else if _, structured, err := st.ExplainAround("SELECT 1"); err != nil || structured {
			return false, nil
		}
	}
	bs, err := s.leaseAll(ctx, plan.Shards)
	defer s.releaseAll(bs)
	if err != nil {
		s.fail(err)
		return true, nil
	}
	for i, b := range bs {
		if err := b.sendQuery(texts[i]); err != nil {
			s.fail(err)
			return true, nil
		}
	}
	lines := make([][]string, len(bs))
	var failed []byte
	for i, b := range bs {
		l, errMsg, err := planLines(b)
		if err != nil {
			s.fail(err)
			return true, nil
		}
		if errMsg != nil && failed == nil {
			failed = errMsg
		}
		lines[i] = l
	}
	if failed != nil {
		s.out = append(s.out, failed...)
		return true, nil
	}
	out := []string{fmt.Sprintf("shardproxy: %s over %d shards (%s)", mergeName(mergeText(plan)), len(bs), s.shardNames(plan.Shards))}
	out = append(out, "  Reason: "+plan.Reason)
	if c := s.srv.cacheText(in, in.SQL); c != "" { // results.go
		out = append(out, "  Result cache: "+c)
	}
	var total int64
	counted := true
	for i, b := range bs {
		head := "  ->  Shard " + b.pool.name
		if plan.SQL != nil {
			head += ": " + plan.SQL[i]
		}
		out = append(out, head)
		for _, l := range lines[i] {
			out = append(out, "        "+l)
		}
		if n, ok := actualRows(lines[i]); ok {
			total += n
		} else {
			counted = false
		}
	}
	if counted {
		out = append(out, fmt.Sprintf("  Rows from the shards (actual): %d", total))
	}
	s.out = appendMsg(s.out, &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
		{Name: []byte("QUERY PLAN"), DataTypeOID: oidText, DataTypeSize: -1, TypeModifier: -1}}})
	for _, l := range out {
		s.out = appendMsg(s.out, &pgproto3.DataRow{Values: [][]byte{[]byte(l)}})
	}
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("EXPLAIN")})
	return true, nil
}

// mergeName is the merge's description for the plan's first line.
func mergeName(m string) string {
	if m == "" {
		return "Proxy Concatenate"
	}
	first, _, _ := strings.Cut(m, "\n")
	return "Proxy Merge: " + first
}

// planLines reads one EXPLAIN reply: its text lines, or the ErrorResponse
// to relay. err means the backend failed.
func planLines(b *backend) (lines []string, errMsg []byte, err error) {
	for {
		typ, body, raw, err := b.rd.next()
		if err != nil {
			b.broken = true
			return nil, nil, &shardError{shard: b.pool.name, err: err}
		}
		switch typ {
		case 'D':
			if len(body) >= 6 {
				n := int32(binary.BigEndian.Uint32(body[2:6]))
				if n >= 0 && int(n) <= len(body)-6 {
					lines = append(lines, string(body[6:6+n]))
				}
			}
		case 'E':
			if errMsg == nil {
				errMsg = bytes.Clone(raw)
			}
		case 'Z':
			b.txStatus = body[0]
			return lines, errMsg, nil
		}
	}
}

var actualRowsRe = regexp.MustCompile(`actual time=[0-9.]+\.\.[0-9.]+ rows=([0-9]+)`)

// actualRows is the rows the top node of an EXPLAIN ANALYZE returned.
func actualRows(lines []string) (int64, bool) {
	if len(lines) == 0 {
		return 0, false
	}
	m := actualRowsRe.FindStringSubmatch(lines[0])
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	return n, err == nil
}
