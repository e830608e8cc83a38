package reshard

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// BucketDiff is one bucket of one table on source and target.
type BucketDiff struct {
	Table                    string
	Bucket                   int
	SourceRows, TargetRows   int64
	SourceCheck, TargetCheck string
}

// Equal reports whether both sides hold the same rows.
func (d BucketDiff) Equal() bool {
	return d.SourceRows == d.TargetRows && d.SourceCheck == d.TargetCheck
}

// Verify compares every moved bucket of every table on its source and its
// target: row count and a checksum (the sum of a 64-bit hash of each row's
// text), like Vitess's VDiff, and prints one line per bucket that differs
// and a summary. Run it after the cutover and before cleanup.
//
// Once writes reach the targets (after the cutover) the targets move on
// and the comparison only holds in a quiet period; Cutover therefore runs
// the same comparison while the writes are held, before it publishes.
func (t *Tool) Verify(ctx context.Context) ([]BucketDiff, error) {
	st, err := t.must(ctx, CutOver)
	if err != nil {
		return nil, err
	}
	out, err := t.verify(ctx, st, nil)
	if out != nil {
		// A comparison in a quiet period replaces the cutover's.
		st.Diffs = 0
		for _, d := range out {
			if !d.Equal() {
				st.Diffs++
			}
		}
		if serr := t.save(ctx, st); serr != nil && err == nil {
			err = serr
		}
	}
	return out, err
}

// querier is a connection or a transaction (a snapshot the cutover took).
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// verify compares the moved rows; snaps, when set, holds the snapshot of
// each shard to read (the cutover's, taken while writes were held), else
// each shard is read now.
func (t *Tool) verify(ctx context.Context, st *State, snaps map[string]querier) ([]BucketDiff, error) {
	var out []BucketDiff
	bad := 0
	unit := "table buckets"
	if st.Range != nil {
		unit = "table ranges"
	}
	for _, m := range st.Moves {
		buckets := m.Buckets
		if st.Range != nil {
			buckets = []int{0} // the one moved range
		}
		for _, tb := range st.Tables {
			src, err := t.sums(ctx, m.From, snaps[m.From], st, tb, buckets)
			if err != nil {
				return nil, err
			}
			dst, err := t.sums(ctx, m.To, snaps[m.To], st, tb, buckets)
			if err != nil {
				return nil, err
			}
			for _, b := range buckets {
				d := BucketDiff{Table: tb.Name, Bucket: b, SourceRows: src[b].rows, TargetRows: dst[b].rows,
					SourceCheck: src[b].sum, TargetCheck: dst[b].sum}
				out = append(out, d)
				if !d.Equal() {
					bad++
					t.printf("DIFF %s bucket %d: %s has %d rows (checksum %s), %s has %d (checksum %s)\n",
						tb.Name, b, m.From, d.SourceRows, d.SourceCheck, m.To, d.TargetRows, d.TargetCheck)
				}
			}
		}
	}
	var rows int64
	for _, d := range out {
		rows += d.SourceRows
	}
	t.printf("verify: %d %s, %d rows compared, %d differ\n", len(out), unit, rows, bad)
	if bad > 0 {
		return out, fmt.Errorf("%d buckets differ between source and target", bad)
	}
	return out, nil
}

type sums struct {
	rows int64
	sum  string
}

// sums reads the per-bucket counts and checksums of tb on shard, through
// q when set (else a new connection); a range move has one "bucket", 0.
func (t *Tool) sums(ctx context.Context, shard string, q querier, st *State, tb Table, buckets []int) (map[int]sums, error) {
	if q == nil {
		c, err := t.connect(ctx, shard)
		if err != nil {
			return nil, err
		}
		defer c.Close(ctx)
		q = c
	}
	if st.Range != nil {
		where, err := t.moved(st, tb, nil)
		if err != nil {
			return nil, err
		}
		var s sums
		rows, err := q.Query(ctx, "SELECT count(*), coalesce(sum(hashtextextended(r::text, 0)::numeric), 0)::text FROM "+
			tableIdent(tb.Name)+" r WHERE "+where)
		if err == nil {
			_, err = pgx.ForEachRow(rows, []any{&s.rows, &s.sum}, func() error { return nil })
		}
		if err != nil {
			return nil, fmt.Errorf("verify %s on %s: %w", tb.Name, shard, err)
		}
		return map[int]sums{0: s}, nil
	}
	c := q
	// One scan: each row of the moved buckets names its bucket.
	parent, key := "'shardproxy_meta.hash_int8'::regclass", "r."+ident(tb.Key)+"::bigint"
	if tb.Text {
		parent, key = "'shardproxy_meta.hash_text'::regclass", "r."+ident(tb.Key)+"::text"
	}
	sql := fmt.Sprintf(`SELECT b, count(*), coalesce(sum(h), 0)::text FROM (
		SELECT (SELECT x FROM unnest($1::int[]) x WHERE satisfies_hash_partition(%s, %d, x, %s) LIMIT 1) AS b,
			hashtextextended(r::text, 0)::numeric AS h
		FROM %s r) s WHERE b IS NOT NULL GROUP BY b`, parent, st.Buckets, key, tableIdent(tb.Name))
	rows, err := c.Query(ctx, sql, buckets)
	if err != nil {
		return nil, fmt.Errorf("verify %s on %s: %w", tb.Name, shard, err)
	}
	defer rows.Close()
	out := map[int]sums{}
	for _, b := range buckets {
		out[b] = sums{sum: "0"}
	}
	for rows.Next() {
		var b int
		var s sums
		if err := rows.Scan(&b, &s.rows, &s.sum); err != nil {
			return nil, err
		}
		out[b] = s
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("verify %s on %s: %w", tb.Name, shard, err)
	}
	return out, nil
}
