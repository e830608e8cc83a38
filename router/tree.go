package router

import (
	"fmt"
	"strings"

	"github.com/shardproxy/shardproxy/fanout"
	"github.com/shardproxy/shardproxy/parser"
)

// OpKind names a merge operator; each is the fanout operator of the same
// name.
type OpKind uint8

const (
	// OpFirst answers with the first shard's rows only (a write to
	// reference tables: every copy returns the same rows).
	OpFirst OpKind = iota
	// OpConcat appends the shards' rows.
	OpConcat
	// OpMergeSort merges the shards' ordered rows by Sort (shard columns).
	OpMergeSort
	// OpGroup combines partial groups by hash; OpGroupSorted combines
	// adjacent equal keys of an ordered input. Split says how.
	OpGroup
	OpGroupSorted
	// OpProject computes Split's expression columns over the merged
	// aggregates.
	OpProject
	// OpFilter keeps rows for which Having is true.
	OpFilter
	// OpDistinct drops repeated rows, comparing the first Width columns
	// (-1: all of them).
	OpDistinct
	// OpSort sorts the final rows by Sort (final columns).
	OpSort
	// OpLimit skips Offset rows and stops after Limit (-1: no limit).
	OpLimit
	// OpStrip keeps the first Width columns, or drops the last Hidden.
	OpStrip
)

// Op is one operator of a cross-shard read's merge: the tree the proxy
// instantiates over the shards' row streams, and what SHOW ROUTE, EXPLAIN
// and the golden files print. In is its input; Concat, MergeSort and
// First read the shards.
type Op struct {
	Kind   OpKind
	In     *Op
	Sort   []parser.SortKey
	Split  *parser.Split
	Having *fanout.Cond
	Width  int
	Hidden int
	Offset int64
	Limit  int64
}

// Tree is the merge a multi-shard plan runs: every decision of how the
// shards' rows combine, root first. (A plan on one shard has the trivial
// tree, one source concatenated, for the callers that read a single
// source through the merge: the coordinator's cursors.)
func (p *Plan) Tree() *Op {
	limit := int64(-1)
	if p.Limited {
		limit = p.Limit
	}
	sp := p.Merge
	var root *Op
	push := func(op *Op) { op.In = root; root = op }
	if sp != nil && sp.Grouped {
		if sp.ShardSort != nil {
			// The shards return their groups in the final order: merge
			// them in order and combine adjacent equal keys, streaming.
			root = &Op{Kind: OpMergeSort, Sort: sp.ShardSort}
			push(&Op{Kind: OpGroupSorted, Split: sp})
		} else {
			root = &Op{Kind: OpConcat}
			push(&Op{Kind: OpGroup, Split: sp})
		}
		for _, c := range sp.Cols {
			if c.Agg == "expr" {
				push(&Op{Kind: OpProject, Split: sp})
				break
			}
		}
		if p.Having != nil {
			push(&Op{Kind: OpFilter, Having: p.Having})
		}
		if sp.Distinct {
			push(&Op{Kind: OpDistinct, Width: sp.Visible})
		}
		if len(sp.Sort) > 0 && sp.ShardSort == nil {
			push(&Op{Kind: OpSort, Sort: sp.Sort})
		}
		if limit >= 0 || p.Offset > 0 {
			push(&Op{Kind: OpLimit, Offset: p.Offset, Limit: limit})
		}
		if sp.Visible < len(sp.Cols) {
			push(&Op{Kind: OpStrip, Width: sp.Visible})
		}
		return root
	}
	switch {
	case p.Replicated:
		root = &Op{Kind: OpFirst}
	case p.Sort != nil:
		root = &Op{Kind: OpMergeSort, Sort: p.Sort}
	default:
		root = &Op{Kind: OpConcat}
	}
	if p.Dedupe {
		push(&Op{Kind: OpDistinct, Width: -1})
	}
	if limit >= 0 || p.Offset > 0 {
		push(&Op{Kind: OpLimit, Offset: p.Offset, Limit: limit})
	}
	if sp != nil && sp.Hidden > 0 {
		push(&Op{Kind: OpStrip, Hidden: sp.Hidden})
	}
	return root
}

// String renders an operator on one line.
func (o *Op) String() string {
	switch o.Kind {
	case OpFirst:
		return "first shard's rows (every copy answers the same)"
	case OpConcat:
		return "concatenate shards"
	case OpMergeSort:
		return "merge sort shards by " + sortString(o.Sort, "col")
	case OpGroup, OpGroupSorted:
		sp := o.Split
		var cols []string
		for _, c := range sp.Cols {
			switch c.Agg {
			case "":
				cols = append(cols, fmt.Sprintf("col%d", c.Col+1))
			case "avg":
				cols = append(cols, fmt.Sprintf("avg(col%d/col%d)", c.Col+1, c.Count+1))
			case "expr":
				cols = append(cols, "(projected)")
			default:
				cols = append(cols, fmt.Sprintf("%s(col%d)", c.Agg, c.Col+1))
			}
		}
		keys := make([]string, len(sp.Keys))
		for i, k := range sp.Keys {
			keys[i] = fmt.Sprintf("col%d", k+1)
		}
		what := "group by " + strings.Join(keys, ",")
		switch {
		case o.Kind == OpGroupSorted:
			what = "group adjacent by " + strings.Join(keys, ",")
		case len(keys) == 0:
			what = "aggregate"
		}
		return what + ": " + strings.Join(cols, ", ")
	case OpProject:
		var exprs []string
		for i, c := range o.Split.Cols {
			if c.Agg == "expr" {
				exprs = append(exprs, fmt.Sprintf("out%d = %s", i+1, c.Expr.String()))
			}
		}
		return "project " + strings.Join(exprs, ", ")
	case OpFilter:
		return "having " + fanoutCondString(o.Having)
	case OpDistinct:
		if o.Width < 0 {
			return "distinct"
		}
		return fmt.Sprintf("distinct on %d columns", o.Width)
	case OpSort:
		return "sort by " + sortString(o.Sort, "out")
	case OpLimit:
		lim := "all"
		if o.Limit >= 0 {
			lim = fmt.Sprint(o.Limit)
		}
		return fmt.Sprintf("limit %s offset %d", lim, o.Offset)
	case OpStrip:
		if o.Hidden > 0 {
			return fmt.Sprintf("strip %d hidden columns", o.Hidden)
		}
		return fmt.Sprintf("strip to %d columns", o.Width)
	}
	return fmt.Sprintf("op %d", o.Kind)
}

// treeLines renders a tree root first, one operator a line.
func treeLines(root *Op) []string {
	var lines []string
	for o := root; o != nil; o = o.In {
		lines = append(lines, o.String())
	}
	return lines
}

// fanoutCondString renders a HAVING condition with its values read.
func fanoutCondString(c *fanout.Cond) string {
	switch c.Op {
	case "and", "or":
		parts := make([]string, len(c.Args))
		for i, a := range c.Args {
			parts[i] = fanoutCondString(a)
		}
		return "(" + strings.Join(parts, " "+c.Op+" ") + ")"
	case "not":
		return "not " + fanoutCondString(c.Args[0])
	case "bool":
		return fmt.Sprintf("out%d", c.Col+1)
	case "null":
		return fmt.Sprintf("out%d is null", c.Col+1)
	case "notnull":
		return fmt.Sprintf("out%d is not null", c.Col+1)
	}
	if c.Null {
		return fmt.Sprintf("out%d %s NULL", c.Col+1, c.Cmp)
	}
	return fmt.Sprintf("out%d %s %s", c.Col+1, c.Cmp, c.Val)
}
