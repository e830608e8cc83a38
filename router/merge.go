package router

import (
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/shardproxy/shardproxy/fanout"
	"github.com/shardproxy/shardproxy/parser"
)

// merger decides how a multi-shard SELECT's answers combine: concatenated,
// merged in order, or split (parser.Split) into a statement for the shards
// and a merge the proxy runs. It is built once per statement; the split is
// made on first use.
type merger struct {
	st    *parser.Statement
	sh    parser.Shape
	byKey bool
	// windowKey: every window function partitions by the shard key.
	windowKey bool
	isKey     func(ref []string) bool
	// collate: the statement has a COLLATE clause (Plan.Collate).
	collate bool
	columns []string

	once  sync.Once
	split *parser.Split
	err   error
}

const mergeHint = "Add a shard key predicate so the query runs on one shard (see docs/routing.md)."

func (m *merger) plan(p *Plan, params Params) error {
	sh := m.sh
	p.Collate, p.Columns = m.collate, m.columns
	switch {
	case sh.Intersect:
		return refuse(mergeHint, "INTERSECT and EXCEPT across shards are not supported: a row's matches may be on other shards")
	case sh.Window && (!m.windowKey || (!m.byKey && (sh.GroupBy || sh.Distinct || sh.Having || sh.Aggregate))):
		return refuse("Partition window functions by the shard key, run them on one shard (add a shard key predicate), or compute them in the application.",
			"window functions across shards are supported only when partitioned by the shard key: each shard sees only its own rows")
	case (sh.Union || sh.UnionAll) && sh.BranchLimit:
		return refuse(mergeHint, "LIMIT or OFFSET inside a UNION branch across shards is not supported")
	case (sh.Union || sh.UnionAll) && (sh.Aggregate || sh.GroupBy || sh.Having || (sh.Distinct && sh.UnionAll)):
		return refuse(mergeHint, "aggregates, GROUP BY or DISTINCT inside a UNION across shards are not supported yet")
	case (sh.Union || sh.UnionAll) && !sh.SortOK:
		return refuse("Order a UNION by output column names or positions.", "this ORDER BY over a UNION across shards is not supported")
	case sh.Union || sh.UnionAll:
		return m.setOp(p, params)
	}
	grouped := !m.byKey && (sh.GroupBy || sh.Distinct || sh.Having || sh.Aggregate)
	hidden := sh.OrderBy && !sh.SortOK
	limit, offset, err := limitOffset(sh, params)
	if err != nil || limit < -1 || offset < 0 {
		return err // a negative count: every shard raises Postgres's own error
	}
	if !grouped && !hidden && offset == 0 {
		// Concatenation or an ordered merge of the shards' own answers;
		// each shard applies the LIMIT itself.
		if sh.OrderBy {
			p.Sort = sh.Sort
			p.Reason += ", merged in order"
		}
		if limit >= 0 {
			p.Limited, p.Limit = true, limit
		}
		if m.byKey {
			p.Reason += ", grouped by the shard key"
		}
		return nil
	}
	m.once.Do(func() {
		m.split, m.err = m.st.Split(parser.SplitOptions{Grouped: grouped, IsKey: m.isKey})
	})
	if m.err != nil {
		if se, ok := m.err.(*parser.SplitError); ok {
			if se.Hint == "" {
				// Invalid for Postgres too: the shards raise its error.
				p.Merge, p.Sort = nil, nil
				return nil
			}
			return refuse(se.Hint, "%s", se.Msg)
		}
		return m.err
	}
	sp := m.split
	p.Merge = sp
	p.Limited, p.Limit, p.Offset = limit >= 0, limit, offset
	var sql string
	if grouped {
		if sp.Scalar {
			p.Reason += ", aggregates combined"
		} else {
			p.Reason += ", groups merged"
		}
		if sp.Having != nil {
			if p.Having, err = resolveCond(sp.Having, params); err != nil {
				return err
			}
		}
		if sp.Same {
			return nil
		}
		if limit >= 0 && pushableGroupLimit(sp) {
			// The first limit+offset groups in key order are among each
			// shard's first limit+offset groups, whole.
			if limit > math.MaxInt64-offset {
				return refuse("Use a smaller LIMIT.", "LIMIT plus OFFSET overflows")
			}
			sql, err = sp.SQL(true, limit+offset)
		} else {
			sql, err = sp.SQL(false, 0)
		}
	} else {
		p.Sort = sp.Sort
		if len(sp.Sort) > 0 {
			p.Reason += ", merged in order"
		}
		if limit >= 0 && limit > math.MaxInt64-offset {
			return refuse("Use a smaller LIMIT.", "LIMIT plus OFFSET overflows")
		}
		// Each shard returns its first limit+offset rows, without OFFSET;
		// the merge skips offset rows of the whole.
		sql, err = sp.SQL(limit >= 0, limit+offset)
	}
	if err != nil {
		return err
	}
	p.SQL = make([]string, len(p.Shards))
	for i := range p.SQL {
		p.SQL[i] = sql
	}
	return nil
}

// setOp plans a UNION [ALL] across shards: every shard runs it (a UNION
// dedupes its own rows), the proxy concatenates or merges in order,
// dedupes again for UNION, and applies OFFSET and LIMIT; each shard
// returns at most LIMIT+OFFSET rows.
func (m *merger) setOp(p *Plan, params Params) error {
	sh := m.sh
	p.Dedupe = sh.Union
	if sh.OrderBy {
		p.Sort = sh.Sort
		p.Reason += ", merged in order"
	}
	if sh.Union {
		p.Reason += ", deduplicated"
	}
	limit, offset, err := limitOffset(sh, params)
	if err != nil || limit < -1 || offset < 0 {
		return err // a negative count: every shard raises Postgres's own error
	}
	p.Limited, p.Limit = limit >= 0, limit
	if offset == 0 {
		return nil
	}
	if p.Limited && p.Limit > math.MaxInt64-offset {
		return refuse("Use a smaller LIMIT.", "LIMIT plus OFFSET overflows")
	}
	sql, err := m.st.WithoutOffset(p.Limited, p.Limit+offset)
	if err != nil {
		return err
	}
	p.Offset = offset
	p.SQL = make([]string, len(p.Shards))
	for i := range p.SQL {
		p.SQL[i] = sql
	}
	return nil
}

// pushableGroupLimit says a grouped split's LIMIT may go to the shards:
// the groups come in key order (ShardSort) and nothing drops or splits
// them after the merge (HAVING, DISTINCT, count(DISTINCT x) subgroups).
func pushableGroupLimit(sp *parser.Split) bool {
	if sp.ShardSort == nil || sp.Having != nil || sp.Distinct {
		return false
	}
	for _, c := range sp.Cols {
		if c.Agg == "count_distinct" {
			return false
		}
	}
	return true
}

// limitOffset reads the LIMIT (-1: none) and OFFSET of a statement.
func limitOffset(sh parser.Shape, params Params) (limit, offset int64, err error) {
	limit = -1
	if sh.Limit && sh.LimitCount != nil {
		n, ok := limitValue(*sh.LimitCount, params)
		if !ok {
			return 0, 0, refuse("Use a constant or a parameter for LIMIT.", "a LIMIT expression across shards is not supported")
		}
		limit = n
	}
	if sh.Offset && sh.OffsetCount != nil {
		o, ok := limitValue(*sh.OffsetCount, params)
		if !ok {
			return 0, 0, refuse("Use a constant or a parameter for OFFSET.", "an OFFSET expression across shards is not supported")
		}
		offset = o
	}
	return limit, offset, nil
}

// resolveCond reads a HAVING condition's constants and parameters.
func resolveCond(c *parser.Cond, params Params) (*fanout.Cond, error) {
	out := &fanout.Cond{Op: c.Op, Col: c.Col, Cmp: c.Cmp}
	if c.Op == "cmp" {
		v := literal(c.Val, params)
		text, null, ok := valueText(v, params)
		if !ok {
			return nil, refuse("Send HAVING parameters in text format, or use constants.",
				"a HAVING parameter across shards could not be read")
		}
		out.Val, out.Null = text, null
	}
	for _, a := range c.Args {
		ra, err := resolveCond(a, params)
		if err != nil {
			return nil, err
		}
		out.Args = append(out.Args, ra)
	}
	return out, nil
}

// MergeTree renders the merge tree (Tree) on one line, root first ("" for
// a plan on one shard).
func (p *Plan) MergeTree() string {
	if len(p.Shards) < 2 {
		return ""
	}
	return strings.Join(treeLines(p.Tree()), " <- ")
}

func sortString(keys []parser.SortKey, col string) string {
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(",")
		}
		if k.Column < 0 {
			b.WriteString(k.Name)
		} else {
			fmt.Fprintf(&b, "%s%d", col, k.Column+1)
		}
		if k.Desc {
			b.WriteString(" desc")
		}
		if k.NullsFirst != k.Desc {
			if k.NullsFirst {
				b.WriteString(" nulls first")
			} else {
				b.WriteString(" nulls last")
			}
		}
	}
	return b.String()
}
