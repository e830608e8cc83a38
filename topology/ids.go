package topology

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/router"
)

// Globally unique ids. A sharded table whose id comes from a sequence
// (bigserial, identity, DEFAULT nextval) would get the same ids on every
// shard. With an `ids` entry, each shard's sequence hands out only a block
// of ids reserved for it in the metadata schema (shardproxy_meta.id_blocks
// keeps the next free id of each table's id sequence, id_shard_blocks the
// block each shard's sequence is in): the sequence's MAXVALUE is the end of
// its block, and a proxy (or the reshard tool, on a new shard) moves it to
// a fresh block, RESTART WITH its first id, once half of it is used. Blocks
// never overlap, so ids are unique across shards and stay so when rows move
// to other shards. Postgres itself fills the column: INSERT without it (one
// row or many), RETURNING, COPY without the column, both protocols, and
// writes that bypass the proxy all work unchanged. A sequence that uses up
// its block before a refill fails the insert (SQLSTATE 2200H), never
// repeats an id.

// IDConfig names a sharded table's id column whose sequence hands out ids
// that are unique across shards.
type IDConfig struct {
	// Table is the table, as in tables: (table or schema.table).
	Table string `yaml:"table"`
	// Column is the id column; its sequence is the one it owns (serial,
	// identity) or the one its DEFAULT calls.
	Column string `yaml:"column"`
	// Block is how many ids a shard's sequence takes at a time. Default
	// 1000000.
	Block int64 `yaml:"block"`
}

func (c IDConfig) name() string { return c.Table + "." + c.Column }

func (c IDConfig) block() int64 {
	if c.Block <= 0 {
		return 1000000
	}
	return c.Block
}

func validateIDs(ids []IDConfig) error {
	var errs []error
	seen := map[string]bool{}
	for i, c := range ids {
		switch {
		case c.Table == "" || c.Column == "":
			errs = append(errs, fmt.Errorf("metadata.ids[%d]: table and column are required", i))
		case c.Block < 0:
			errs = append(errs, fmt.Errorf("metadata.ids[%d]: block must be positive", i))
		case seen[c.name()]:
			errs = append(errs, fmt.Errorf("metadata.ids[%d]: %s is listed twice", i, c.name()))
		}
		seen[c.name()] = true
	}
	return errors.Join(errs...)
}

const idsDDL = `
CREATE TABLE IF NOT EXISTS shardproxy_meta.id_blocks (
	name text PRIMARY KEY,
	next_id bigint NOT NULL);
CREATE TABLE IF NOT EXISTS shardproxy_meta.id_shard_blocks (
	name text NOT NULL,
	shard text NOT NULL,
	lo bigint NOT NULL,
	hi bigint NOT NULL,
	PRIMARY KEY (name, shard));
`

// Refill gives each listed id sequence on each of shards a block of its
// own when it has none, or a fresh one when half of its block is used.
// Shards where the table does not exist yet are skipped. Safe to run from
// several proxies at once: blocks are taken under a row lock and a
// sequence moved twice only wastes ids.
func (s *Store) Refill(ctx context.Context, shards []router.ShardConfig, ids []IDConfig) error {
	if len(ids) == 0 {
		return nil
	}
	meta, err := s.Connect(ctx)
	if err != nil {
		return err
	}
	defer meta.Close(context.Background())
	var errs []error
	for _, sc := range shards {
		c, err := pgx.Connect(ctx, sc.DSN)
		if err != nil {
			errs = append(errs, fmt.Errorf("ids on shard %s: %w", sc.Name, err))
			continue
		}
		for _, id := range ids {
			if err := s.refillOne(ctx, meta, c, sc.Name, shards, id); err != nil {
				errs = append(errs, fmt.Errorf("ids of %s on shard %s: %w", id.name(), sc.Name, err))
			}
		}
		c.Close(context.Background())
	}
	return errors.Join(errs...)
}

// sequenceOf finds the sequence of table.column on a shard: "" when the
// table is not there.
func sequenceOf(ctx context.Context, c *pgx.Conn, id IDConfig) (string, error) {
	var seq *string
	err := c.QueryRow(ctx, `SELECT CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE coalesce(
		pg_get_serial_sequence($1, $2),
		(SELECT d.refobjid::regclass::text FROM pg_attrdef ad
			JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
			JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
			JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
			WHERE ad.adrelid = to_regclass($1) AND a.attname = $2 LIMIT 1), '') END`, quoteTable(id.Table), id.Column).Scan(&seq)
	if err != nil {
		return "", err
	}
	if seq == nil {
		return "", nil
	}
	if *seq == "" {
		return "", fmt.Errorf("column %s of %s takes its values from no sequence", id.Column, id.Table)
	}
	return *seq, nil
}

func (s *Store) refillOne(ctx context.Context, meta, c *pgx.Conn, shard string, shards []router.ShardConfig, id IDConfig) error {
	seq, err := sequenceOf(ctx, c, id)
	if err != nil || seq == "" {
		return err
	}
	// seq is regclass output: quoted where needed.
	var last, max int64
	var called bool
	if err := c.QueryRow(ctx, "SELECT s.last_value, s.is_called, p.seqmax FROM "+seq+" s, pg_sequence p WHERE p.seqrelid = $1::regclass", seq).Scan(&last, &called, &max); err != nil {
		return err
	}
	var lo, hi int64
	err = meta.QueryRow(ctx, "SELECT lo, hi FROM shardproxy_meta.id_shard_blocks WHERE name = $1 AND shard = $2", id.name(), shard).Scan(&lo, &hi)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return err
	case max == hi && last >= lo-1 && hi-last > id.block()/2:
		return nil // in its block, more than half left
	}
	// A fresh block, after every id any shard may have handed out.
	var start int64
	if err := meta.QueryRow(ctx, "SELECT next_id FROM shardproxy_meta.id_blocks WHERE name = $1", id.name()).Scan(&start); errors.Is(err, pgx.ErrNoRows) {
		if start, err = highestID(ctx, shards, id); err != nil {
			return err
		}
		if _, err := meta.Exec(ctx, "INSERT INTO shardproxy_meta.id_blocks (name, next_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", id.name(), start+1); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, meta, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT next_id FROM shardproxy_meta.id_blocks WHERE name = $1 FOR UPDATE", id.name()).Scan(&lo); err != nil {
			return err
		}
		hi = lo + id.block() - 1
		if _, err := tx.Exec(ctx, "UPDATE shardproxy_meta.id_blocks SET next_id = $2 WHERE name = $1", id.name(), hi+1); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO shardproxy_meta.id_shard_blocks (name, shard, lo, hi) VALUES ($1, $2, $3, $4)
			ON CONFLICT (name, shard) DO UPDATE SET lo = excluded.lo, hi = excluded.hi`, id.name(), shard, lo, hi)
		return err
	})
	if err != nil {
		return fmt.Errorf("reserve a block: %w", err)
	}
	if _, err := c.Exec(ctx, fmt.Sprintf("ALTER SEQUENCE %s MINVALUE 1 MAXVALUE %d RESTART WITH %d", seq, hi, lo)); err != nil {
		return err
	}
	s.log.Info("id block", "table", id.Table, "column", id.Column, "shard", shard, "from", lo, "to", hi)
	return nil
}

// highestID is the largest id any shard holds or its sequence handed out:
// the first block starts after it.
func highestID(ctx context.Context, shards []router.ShardConfig, id IDConfig) (int64, error) {
	var top int64
	for _, sc := range shards {
		c, err := pgx.Connect(ctx, sc.DSN)
		if err != nil {
			return 0, fmt.Errorf("shard %s: %w", sc.Name, err)
		}
		seq, err := sequenceOf(ctx, c, id)
		if err == nil && seq != "" {
			var n int64
			err = c.QueryRow(ctx, "SELECT greatest((SELECT last_value FROM "+seq+"), (SELECT coalesce(max("+
				pgx.Identifier{id.Column}.Sanitize()+")::bigint, 0) FROM "+quoteTable(id.Table)+"))").Scan(&n)
			top = max(top, n)
		}
		c.Close(context.Background())
		if err != nil {
			return 0, fmt.Errorf("shard %s: %w", sc.Name, err)
		}
	}
	return top, nil
}

func quoteTable(name string) string {
	for i := 0; i < len(name); i++ {
		if name[i] == '.' {
			return pgx.Identifier{name[:i], name[i+1:]}.Sanitize()
		}
	}
	return pgx.Identifier{name}.Sanitize()
}

// refillLoop runs Refill every interval until ctx ends.
func (s *Store) refillLoop(ctx context.Context, shards []router.ShardConfig, ids []IDConfig, every time.Duration) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		if err := s.Refill(ctx, shards, ids); err != nil && ctx.Err() == nil {
			s.log.Warn("id blocks", "err", err)
		}
	}
}
