package reshard

import (
	"context"
	"fmt"
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
	return t.verify(ctx, st)
}

func (t *Tool) verify(ctx context.Context, st *State) ([]BucketDiff, error) {
	var out []BucketDiff
	bad := 0
	for _, m := range st.Moves {
		for _, tb := range st.Tables {
			src, err := t.bucketSums(ctx, m.From, st, tb, m.Buckets)
			if err != nil {
				return nil, err
			}
			dst, err := t.bucketSums(ctx, m.To, st, tb, m.Buckets)
			if err != nil {
				return nil, err
			}
			for _, b := range m.Buckets {
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
	t.printf("verify: %d table buckets, %d rows compared, %d differ\n", len(out), rows, bad)
	if bad > 0 {
		return out, fmt.Errorf("%d buckets differ between source and target", bad)
	}
	return out, nil
}

type sums struct {
	rows int64
	sum  string
}

func (t *Tool) bucketSums(ctx context.Context, shard string, st *State, tb Table, buckets []int) (map[int]sums, error) {
	c, err := t.connect(ctx, shard)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
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
