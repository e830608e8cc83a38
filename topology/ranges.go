package topology

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/router"
)

// Range maps in the metadata: a version may carry the range map of range
// tables a reshard moved an interval of (range_map); a table without rows
// there keeps the config's ranges. Every new version copies the previous
// version's range maps, so a later bucket move keeps them. stale_ranges
// lists the intervals a source still holds rows of until the cleanup.
const rangesDDL = `
CREATE TABLE IF NOT EXISTS shardproxy_meta.range_map (
	version bigint NOT NULL REFERENCES shardproxy_meta.versions ON DELETE CASCADE,
	table_name text NOT NULL,
	ord int NOT NULL,
	lo text NOT NULL,
	hi text NOT NULL,
	shard text NOT NULL,
	PRIMARY KEY (version, table_name, ord));
CREATE TABLE IF NOT EXISTS shardproxy_meta.stale_ranges (
	shard text NOT NULL,
	table_name text NOT NULL,
	lo text NOT NULL,
	hi text NOT NULL,
	PRIMARY KEY (shard, table_name, lo, hi));
`

// StaleRange is an interval of a range table that a shard gave away and
// still holds rows of.
type StaleRange struct {
	Table, From, To string
}

func loadRanges(ctx context.Context, c *pgx.Conn, st *State) error {
	rows, err := c.Query(ctx, "SELECT table_name, lo, hi, shard FROM shardproxy_meta.range_map WHERE version = $1 ORDER BY table_name, ord", st.Version)
	if err != nil {
		return fmt.Errorf("load range maps: %w", err)
	}
	for rows.Next() {
		var table string
		var rc router.RangeConfig
		if err := rows.Scan(&table, &rc.From, &rc.To, &rc.Shard); err != nil {
			return fmt.Errorf("load range maps: %w", err)
		}
		if st.Ranges == nil {
			st.Ranges = map[string][]router.RangeConfig{}
		}
		st.Ranges[table] = append(st.Ranges[table], rc)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load range maps: %w", err)
	}
	rows, err = c.Query(ctx, "SELECT shard, table_name, lo, hi FROM shardproxy_meta.stale_ranges ORDER BY shard, table_name, lo")
	if err != nil {
		return fmt.Errorf("load stale ranges: %w", err)
	}
	for rows.Next() {
		var shard string
		var sr StaleRange
		if err := rows.Scan(&shard, &sr.Table, &sr.From, &sr.To); err != nil {
			return fmt.Errorf("load stale ranges: %w", err)
		}
		if st.StaleRanges == nil {
			st.StaleRanges = map[string][]StaleRange{}
		}
		st.StaleRanges[shard] = append(st.StaleRanges[shard], sr)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load stale ranges: %w", err)
	}
	return nil
}

// resolveRanges adds s's range maps and stale ranges to m.
func (s *State) resolveRanges(topo *router.Topology, m *router.BucketMap) error {
	for table, rcs := range s.Ranges {
		ivs, err := topo.ResolveRanges(table, rcs)
		if err != nil {
			return fmt.Errorf("version %d: %w", s.Version, err)
		}
		if m.Ranges == nil {
			m.Ranges = map[string][]router.Interval{}
		}
		m.Ranges[table] = ivs
	}
	for shard, srs := range s.StaleRanges {
		i, ok := topo.ShardIndex(shard)
		if !ok {
			return fmt.Errorf("version %d: stale ranges on shard %q, which is not in the config", s.Version, shard)
		}
		for _, sr := range srs {
			ivs, err := topo.ResolveRanges(sr.Table, []router.RangeConfig{{From: sr.From, To: sr.To, Shard: shard}})
			if err != nil {
				return fmt.Errorf("version %d: stale range: %w", s.Version, err)
			}
			if m.StaleRanges == nil {
				m.StaleRanges = map[int]map[string][]router.Interval{}
			}
			if m.StaleRanges[i] == nil {
				m.StaleRanges[i] = map[string][]router.Interval{}
			}
			m.StaleRanges[i][sr.Table] = append(m.StaleRanges[i][sr.Table], ivs...)
		}
	}
	return nil
}

// StaleRangeCount is the number of stale intervals s lists.
func (s *State) StaleRangeCount() int {
	n := 0
	for _, srs := range s.StaleRanges {
		n += len(srs)
	}
	return n
}

// copyRanges carries the previous version's range maps into version.
func copyRanges(ctx context.Context, tx pgx.Tx, version int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO shardproxy_meta.range_map (version, table_name, ord, lo, hi, shard)
		SELECT $1::bigint, table_name, ord, lo, hi, shard FROM shardproxy_meta.range_map WHERE version = $1::bigint - 1`, version)
	if err != nil {
		return fmt.Errorf("publish version %d: range maps: %w", version, err)
	}
	return nil
}

// PublishRange makes the next version: the current bucket map with
// table's range map replaced by ranges, recording in the same transaction
// the intervals shard gave away (stale until ClearStale). It fails when
// the current version is not after.
func (s *Store) PublishRange(ctx context.Context, after int64, note, table string, ranges []router.RangeConfig, shard string, stale []StaleRange) (int64, error) {
	c, err := s.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	return s.PublishRangeOn(ctx, c, after, note, table, ranges, shard, stale)
}

// PublishRangeOn is PublishRange on an open connection to the metadata
// database.
func (s *Store) PublishRangeOn(ctx context.Context, c *pgx.Conn, after int64, note, table string, ranges []router.RangeConfig, shard string, stale []StaleRange) (int64, error) {
	var v int64
	err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "LOCK TABLE shardproxy_meta.versions IN EXCLUSIVE MODE"); err != nil {
			return err
		}
		var cur int64
		var owners []string
		err := tx.QueryRow(ctx, `SELECT v.version, coalesce((SELECT array_agg(shard ORDER BY bucket) FROM shardproxy_meta.bucket_map m WHERE m.version = v.version), '{}')
			FROM shardproxy_meta.versions v ORDER BY v.version DESC LIMIT 1`).Scan(&cur, &owners)
		if err != nil {
			return fmt.Errorf("load topology: %w", err)
		}
		if cur != after {
			return fmt.Errorf("topology is at version %d, not %d: another change ran", cur, after)
		}
		for _, sr := range stale {
			if _, err := tx.Exec(ctx, `INSERT INTO shardproxy_meta.stale_ranges (shard, table_name, lo, hi)
				VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, shard, sr.Table, sr.From, sr.To); err != nil {
				return fmt.Errorf("record stale ranges: %w", err)
			}
		}
		if v, err = publish(ctx, tx, cur+1, owners, note); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM shardproxy_meta.range_map WHERE version = $1 AND table_name = $2", v, table); err != nil {
			return err
		}
		for i, rc := range ranges {
			if _, err := tx.Exec(ctx, `INSERT INTO shardproxy_meta.range_map (version, table_name, ord, lo, hi, shard)
				VALUES ($1, $2, $3, $4, $5, $6)`, v, table, i, rc.From, rc.To, rc.Shard); err != nil {
				return fmt.Errorf("publish version %d: range map of %s: %w", v, table, err)
			}
		}
		return nil
	})
	return v, err
}
