package router

import (
	"fmt"

	"github.com/shardproxy/shardproxy/fanout"
	"strconv"
	"strings"

	"github.com/shardproxy/shardproxy/parser"
)

// Plan says where a statement runs and how its answers combine. Plans
// returned by Route are the caller's; the slices in them may be shared
// with other plans and must not be modified.
type Plan struct {
	// Shards are the target shard indexes, ascending.
	Shards []int
	// SQL holds per-shard statements aligned with Shards when the statement
	// was rewritten (a split INSERT); nil means every shard runs it as sent.
	SQL []string
	// Merge, when set, says how the proxy merges the shards' rows of a
	// split statement (SQL, when set, is its shard statement): partial
	// groups combined, or hidden ORDER BY columns stripped.
	Merge *parser.Split
	// Collate says the statement names a collation (COLLATE other than
	// C): computed text columns may not be in byte order.
	Collate bool
	// Columns are the column names the statement refers to: a computed
	// text column can carry the collation of one of them.
	Columns []string
	// Dedupe removes duplicate rows after the merge (UNION).
	Dedupe bool
	// Having is Merge's HAVING with its constants read.
	Having *fanout.Cond
	// Write is true when the statement changes data or schema.
	Write bool
	// Replicated is true for a write to reference tables: every shard
	// applies the same change to its copy, and the client's answer (rows
	// of RETURNING, the CommandComplete count) is one shard's, not the sum.
	Replicated bool
	// Any is true when any one shard would do (no table, or reference
	// tables only): Shards holds a round-robin pick, and a session already
	// pinned to a shard may run the statement there instead.
	Any bool
	// NoRows is true when the filter is a contradiction: no row can match,
	// and Shards holds one shard only to answer with the right columns.
	NoRows bool
	// KeyGuard are shards where the statement (an UPDATE setting the
	// shard key) must change no row: a row there would belong on another
	// shard. The proxy fails the statement, and rolls it back on every
	// shard, when one does.
	KeyGuard []int
	// KeyMove, with KeyGuard, says how rows found on a guarded shard move
	// to the shard of their new key (nil: such rows are refused).
	KeyMove *KeyMove
	// Sort, when set, says each shard returns its rows in this order and
	// the answer is their merge (k-way, streaming).
	Sort []parser.SortKey
	// Limited says the answer stops after Limit rows (each shard applies
	// the same LIMIT, so its part is at most that long).
	Limited bool
	Limit   int64
	// Offset rows of the merged answer are skipped (each shard runs the
	// statement without OFFSET and with LIMIT Limit+Offset: SQL).
	Offset int64
	// Reason explains the decision, for SHOW ROUTE, EXPLAIN and logs.
	Reason string

	names []string // shard names, for String
}

// Single reports whether the plan runs on exactly one shard.
func (p *Plan) Single() bool { return len(p.Shards) == 1 }

// String renders the routing decision, one `key: value` per line, for
// EXPLAIN and SHOW ROUTE:
//
//	shards: s1, s3
//	reason: orders by user_id: s1,s3
//	write: true
//	sql s1: INSERT INTO orders ...
func (p *Plan) String() string {
	var b strings.Builder
	b.WriteString("shards: ")
	for i, s := range p.Shards {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.shardName(s))
	}
	if p.Any {
		b.WriteString(" (any)")
	}
	b.WriteString("\nreason: ")
	b.WriteString(p.Reason)
	if p.Write {
		b.WriteString("\nwrite: true")
	}
	if p.Replicated {
		b.WriteString("\nreplicated: true")
	}
	if p.NoRows {
		b.WriteString("\nno rows: true")
	}
	if len(p.KeyGuard) > 0 {
		b.WriteString("\nkey guard: ")
		for i, s := range p.KeyGuard {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(p.shardName(s))
		}
		if p.KeyMove != nil {
			b.WriteString("\nkey move: rows to " + p.shardName(p.KeyMove.Target))
		}
	}
	if len(p.Shards) > 1 && !p.Write {
		t := p.Tree()
		// (A write's merge is its RETURNING rows concatenated, or one
		// copy's for reference tables: not printed.)
		b.WriteString("\nmerge:")
		for i, l := range treeLines(t) {
			fmt.Fprintf(&b, "\n%s%s", strings.Repeat("  ", i+1), l)
		}
	}
	for i, q := range p.SQL {
		fmt.Fprintf(&b, "\nsql %s: %s", p.shardName(p.Shards[i]), q)
	}
	return b.String()
}

func (p *Plan) shardName(i int) string {
	if i >= 0 && i < len(p.names) {
		return p.names[i]
	}
	return strconv.Itoa(i)
}
