package topology

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/router"
)

// Schema is the metadata schema's name.
const Schema = "shardproxy_meta"

// Channel is the LISTEN/NOTIFY channel a new version or fence is announced on.
const Channel = "shardproxy_topology"

// Config is the `metadata` section: where the versioned topology lives.
type Config struct {
	// DSN is the metadata database. Empty means the coordinator's
	// database when one is configured, else the default shard's
	// (DefaultDSN); the section itself is what turns the metadata on.
	DSN string `yaml:"dsn"`
	// Poll is how often a proxy rereads the topology and writes its
	// heartbeat, in addition to LISTEN/NOTIFY. Default 1s.
	Poll time.Duration `yaml:"poll"`
	// ProxyID names this proxy in the heartbeat table. Default: host name
	// and process id.
	ProxyID string `yaml:"proxy_id"`
	// IDs lists the id columns whose sequences hand out ids unique across
	// shards, in blocks kept in the metadata schema (ids.go).
	IDs []IDConfig `yaml:"ids"`
}

// WithDefaults fills Poll.
func (c Config) WithDefaults() Config {
	if c.Poll == 0 {
		c.Poll = time.Second
	}
	return c
}

// Validate checks the section.
func (c Config) Validate() error {
	if c.Poll < 0 {
		return errors.New("metadata.poll must be positive")
	}
	if err := validateIDs(c.IDs); err != nil {
		return err
	}
	if c.DSN != "" {
		if _, err := pgconn.ParseConfig(c.DSN); err != nil {
			return fmt.Errorf("metadata.dsn: %w", err)
		}
	}
	return nil
}

// DefaultDSN picks the metadata database when metadata.dsn is empty: the
// coordinator's when configured, else the default shard's.
func DefaultDSN(c Config, coordinatorDSN string, topo *router.Topology) string {
	switch {
	case c.DSN != "":
		return c.DSN
	case coordinatorDSN != "":
		return coordinatorDSN
	}
	return topo.Shards[topo.Default].DSN
}

// State is one version of the topology as the metadata schema holds it.
type State struct {
	// Version is the bucket map's version (0: none published yet).
	Version int64
	// Owners[b] is the name of the shard holding bucket b.
	Owners []string
	// Fence, when set, holds writes to some shards until a newer version.
	Fence *Fence
	// Stale lists, by shard name, the buckets a shard gave away at a
	// cutover and still holds rows of until the reshard's cleanup: reads
	// across shards hide them there.
	Stale map[string][]int
	// Ranges holds, by range table, the range maps a reshard moved an
	// interval of (the config's ranges apply to the other tables), and
	// StaleRanges, by shard name, the intervals a shard gave away and
	// still holds rows of until the cleanup (ranges.go).
	Ranges      map[string][]router.RangeConfig
	StaleRanges map[string][]StaleRange
}

// Fence is a cutover in progress: proxies hold new writes to Shards until
// they serve version Until (or the fence is cleared), each held statement
// for at most Hold.
type Fence struct {
	ID     int64
	Shards []string
	Until  int64
	Hold   time.Duration
	// Buckets are the moving buckets and Range the moving interval of a
	// range table: proxies hold only the writes that may touch them (or
	// that they cannot classify). Both empty: every write to Shards is
	// held (a fence set by an older tool, or the reference-table copy).
	Buckets []int
	Range   *FenceRange
}

// FenceRange is the interval [From, To) of a range table a cutover moves
// (bounds as RFC 3339, UTC).
type FenceRange struct {
	Table, From, To string
}

// Narrow reports whether the fence names what moves (else it holds
// every write to its shards).
func (f *Fence) Narrow() bool { return len(f.Buckets) > 0 || f.Range != nil }

// BucketMap resolves s against topo's shard names.
func (s *State) BucketMap(topo *router.Topology) (*router.BucketMap, error) {
	m := &router.BucketMap{Version: s.Version, Owner: make([]int, len(s.Owners))}
	for b, name := range s.Owners {
		i, ok := topo.ShardIndex(name)
		if !ok {
			return nil, fmt.Errorf("version %d: bucket %d is on shard %q, which is not in the config", s.Version, b, name)
		}
		m.Owner[b] = i
	}
	for name, bs := range s.Stale {
		i, ok := topo.ShardIndex(name)
		if !ok {
			return nil, fmt.Errorf("version %d: stale buckets on shard %q, which is not in the config", s.Version, name)
		}
		if m.Stale == nil {
			m.Stale = map[int][]int{}
		}
		m.Stale[i] = bs
	}
	if err := s.resolveRanges(topo, m); err != nil {
		return nil, err
	}
	return m, topo.CheckBucketMap(m)
}

// Names turns a bucket map into shard names.
func Names(m *router.BucketMap, topo *router.Topology) []string {
	out := make([]string, len(m.Owner))
	for b, o := range m.Owner {
		out[b] = topo.Shards[o].Name
	}
	return out
}

const ddl = `
CREATE SCHEMA IF NOT EXISTS shardproxy_meta;
CREATE TABLE IF NOT EXISTS shardproxy_meta.versions (
	version bigint PRIMARY KEY,
	buckets int NOT NULL,
	note text NOT NULL DEFAULT '',
	created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS shardproxy_meta.bucket_map (
	version bigint NOT NULL REFERENCES shardproxy_meta.versions ON DELETE CASCADE,
	bucket int NOT NULL,
	shard text NOT NULL,
	PRIMARY KEY (version, bucket));
CREATE TABLE IF NOT EXISTS shardproxy_meta.fences (
	id bigserial PRIMARY KEY,
	shards text[] NOT NULL,
	until_version bigint NOT NULL,
	hold_ms int NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	cleared_at timestamptz);
` + fenceDDL + `
CREATE TABLE IF NOT EXISTS shardproxy_meta.proxies (
	proxy_id text PRIMARY KEY,
	version bigint NOT NULL,
	fence_id bigint NOT NULL DEFAULT 0,
	started_at timestamptz NOT NULL DEFAULT now(),
	seen_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS shardproxy_meta.stale_buckets (
	shard text NOT NULL,
	bucket int NOT NULL,
	PRIMARY KEY (shard, bucket));
CREATE TABLE IF NOT EXISTS shardproxy_meta.reshards (
	id text PRIMARY KEY,
	state jsonb NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now());
`

// fenceDDL adds what moves to a fence (metadata schemas made before).
const fenceDDL = `
ALTER TABLE shardproxy_meta.fences ADD COLUMN IF NOT EXISTS buckets int[],
	ADD COLUMN IF NOT EXISTS range_table text, ADD COLUMN IF NOT EXISTS range_from text,
	ADD COLUMN IF NOT EXISTS range_to text;
`

// Store reads and writes the metadata schema. Safe for concurrent use.
type Store struct {
	dsn string
	log *slog.Logger
}

// NewStore returns a Store over the metadata database at dsn; log may be nil.
func NewStore(dsn string, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{dsn: dsn, log: log}
}

// Connect opens a connection to the metadata database.
func (s *Store) Connect(ctx context.Context) (*pgx.Conn, error) {
	c, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		return nil, fmt.Errorf("metadata database: %w", err)
	}
	return c, nil
}

// Init creates the schema if missing and, when no version exists yet,
// publishes seed (the config's map) as version 1. Concurrent callers are
// safe: one seed wins.
func (s *Store) Init(ctx context.Context, seed []string) error {
	c, err := s.Connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		// Serialise concurrent Inits (CREATE ... IF NOT EXISTS races).
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('shardproxy_meta.init'))"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, ddl+idsDDL+rangesDDL); err != nil {
			return fmt.Errorf("create metadata schema: %w", err)
		}
		var n int64
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM shardproxy_meta.versions").Scan(&n); err != nil {
			return err
		}
		if n > 0 || len(seed) == 0 {
			return nil
		}
		_, err := publish(ctx, tx, 1, seed, "seeded from the config")
		return err
	})
}

func publish(ctx context.Context, tx pgx.Tx, version int64, owners []string, note string) (int64, error) {
	if _, err := tx.Exec(ctx, "INSERT INTO shardproxy_meta.versions (version, buckets, note) VALUES ($1, $2, $3)",
		version, len(owners), note); err != nil {
		return 0, fmt.Errorf("publish version %d: %w", version, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO shardproxy_meta.bucket_map (version, bucket, shard)
		SELECT $1, o.n - 1, o.shard FROM unnest($2::text[]) WITH ORDINALITY AS o(shard, n)`, version, owners); err != nil {
		return 0, fmt.Errorf("publish version %d: %w", version, err)
	}
	if err := copyRanges(ctx, tx, version); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, fmt.Sprint(version)); err != nil {
		return 0, err
	}
	return version, nil
}

// Publish makes owners the next version and announces it. If after is not
// zero, it fails when the current version is not after (a concurrent
// change).
func (s *Store) Publish(ctx context.Context, owners []string, after int64, note string) (int64, error) {
	return s.PublishStale(ctx, owners, after, note, nil)
}

// PublishStale is Publish that also records, in the same transaction,
// the buckets each shard gives away and still holds rows of (stale until
// ClearStale): proxies never see the new map without them.
func (s *Store) PublishStale(ctx context.Context, owners []string, after int64, note string, stale map[string][]int) (int64, error) {
	c, err := s.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	return s.PublishStaleOn(ctx, c, owners, after, note, stale)
}

// PublishStaleOn is PublishStale on an open connection to the metadata
// database.
func (s *Store) PublishStaleOn(ctx context.Context, c *pgx.Conn, owners []string, after int64, note string, stale map[string][]int) (int64, error) {
	var v int64
	err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "LOCK TABLE shardproxy_meta.versions IN EXCLUSIVE MODE"); err != nil {
			return err
		}
		var cur int64
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM shardproxy_meta.versions").Scan(&cur); err != nil {
			return err
		}
		if after != 0 && cur != after {
			return fmt.Errorf("topology is at version %d, not %d: another change ran", cur, after)
		}
		for shard, bs := range stale {
			if _, err := tx.Exec(ctx, `INSERT INTO shardproxy_meta.stale_buckets (shard, bucket)
				SELECT $1, b FROM unnest($2::int[]) AS b ON CONFLICT DO NOTHING`, shard, bs); err != nil {
				return fmt.Errorf("record stale buckets: %w", err)
			}
		}
		var err error
		v, err = publish(ctx, tx, cur+1, owners, note)
		return err
	})
	return v, err
}

// ClearStale forgets the stale buckets of shard (its moved rows are
// deleted) and announces it.
func (s *Store) ClearStale(ctx context.Context, shard string) error {
	c, err := s.Connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM shardproxy_meta.stale_buckets WHERE shard = $1", shard); err != nil {
			return fmt.Errorf("clear stale buckets: %w", err)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM shardproxy_meta.stale_ranges WHERE shard = $1", shard); err != nil {
			return fmt.Errorf("clear stale ranges: %w", err)
		}
		_, err := tx.Exec(ctx, "SELECT pg_notify($1, 'stale')", Channel)
		return err
	})
}

// Load reads the current version and the active fence.
func (s *Store) Load(ctx context.Context, c *pgx.Conn) (*State, error) {
	st := &State{}
	err := c.QueryRow(ctx, `SELECT v.version, coalesce((SELECT array_agg(shard ORDER BY bucket) FROM shardproxy_meta.bucket_map m WHERE m.version = v.version), '{}')
		FROM shardproxy_meta.versions v ORDER BY v.version DESC LIMIT 1`).Scan(&st.Version, &st.Owners)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("load topology: %w", err)
	}
	rows, err := c.Query(ctx, "SELECT shard, array_agg(bucket ORDER BY bucket) FROM shardproxy_meta.stale_buckets GROUP BY shard")
	if err != nil {
		return nil, fmt.Errorf("load stale buckets: %w", err)
	}
	for rows.Next() {
		var shard string
		var bs []int32
		if err := rows.Scan(&shard, &bs); err != nil {
			return nil, fmt.Errorf("load stale buckets: %w", err)
		}
		if st.Stale == nil {
			st.Stale = map[string][]int{}
		}
		for _, b := range bs {
			st.Stale[shard] = append(st.Stale[shard], int(b))
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load stale buckets: %w", err)
	}
	if err := loadRanges(ctx, c, st); err != nil {
		return nil, err
	}
	f := &Fence{}
	var holdMS int64
	var buckets []int32
	var rt, rf, rto *string
	err = c.QueryRow(ctx, `SELECT id, shards, until_version, hold_ms, buckets, range_table, range_from, range_to FROM shardproxy_meta.fences
		WHERE cleared_at IS NULL AND until_version > $1 ORDER BY id DESC LIMIT 1`, st.Version).Scan(&f.ID, &f.Shards, &f.Until, &holdMS,
		&buckets, &rt, &rf, &rto)
	switch {
	case err == nil:
		f.Hold = time.Duration(holdMS) * time.Millisecond
		for _, b := range buckets {
			f.Buckets = append(f.Buckets, int(b))
		}
		if rt != nil && rf != nil && rto != nil {
			f.Range = &FenceRange{Table: *rt, From: *rf, To: *rto}
		}
		st.Fence = f
	case !errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("load fence: %w", err)
	}
	return st, nil
}

// SetFence starts holding writes to shards until version until.
func (s *Store) SetFence(ctx context.Context, shards []string, until int64, hold time.Duration) (int64, error) {
	c, err := s.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	return s.SetFenceOn(ctx, c, shards, until, hold)
}

// SetFenceOn is SetFence on an open connection to the metadata database.
func (s *Store) SetFenceOn(ctx context.Context, c *pgx.Conn, shards []string, until int64, hold time.Duration) (int64, error) {
	return s.SetMovingFenceOn(ctx, c, Fence{Shards: shards, Until: until, Hold: hold})
}

// SetMovingFenceOn starts holding writes to f.Shards until version
// f.Until; with f's Buckets or Range, only the writes that may touch them.
func (s *Store) SetMovingFenceOn(ctx context.Context, c *pgx.Conn, f Fence) (int64, error) {
	var id int64
	var buckets []int32
	for _, b := range f.Buckets {
		buckets = append(buckets, int32(b))
	}
	var rt, rf, rto *string
	if f.Range != nil {
		rt, rf, rto = &f.Range.Table, &f.Range.From, &f.Range.To
	}
	err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fenceDDL); err != nil {
			return fmt.Errorf("fence columns: %w", err)
		}
		if err := tx.QueryRow(ctx, `INSERT INTO shardproxy_meta.fences (shards, until_version, hold_ms, buckets, range_table, range_from, range_to)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
			f.Shards, f.Until, f.Hold.Milliseconds(), buckets, rt, rf, rto).Scan(&id); err != nil {
			return fmt.Errorf("set fence: %w", err)
		}
		_, err := tx.Exec(ctx, "SELECT pg_notify($1, 'fence')", Channel)
		return err
	})
	return id, err
}

// ClearFences ends every active fence (abort, or a cutover that gave up).
func (s *Store) ClearFences(ctx context.Context) error {
	c, err := s.Connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE shardproxy_meta.fences SET cleared_at = now() WHERE cleared_at IS NULL"); err != nil {
			return fmt.Errorf("clear fences: %w", err)
		}
		_, err := tx.Exec(ctx, "SELECT pg_notify($1, 'clear')", Channel)
		return err
	})
}

// Proxy is one proxy's heartbeat.
type Proxy struct {
	ID      string
	Version int64
	FenceID int64
	Age     time.Duration
}

// Proxies lists the proxies whose heartbeat is younger than live.
func (s *Store) Proxies(ctx context.Context, live time.Duration) ([]Proxy, error) {
	c, err := s.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	return ProxiesOn(ctx, c, live)
}

// ProxiesOn is Proxies on an open connection to the metadata database.
func ProxiesOn(ctx context.Context, c *pgx.Conn, live time.Duration) ([]Proxy, error) {
	rows, err := c.Query(ctx, `SELECT proxy_id, version, fence_id, extract(epoch FROM now() - seen_at)
		FROM shardproxy_meta.proxies WHERE seen_at > now() - $1::interval ORDER BY proxy_id`, fmt.Sprintf("%d milliseconds", live.Milliseconds()))
	if err != nil {
		return nil, fmt.Errorf("list proxies: %w", err)
	}
	var out []Proxy
	for rows.Next() {
		var p Proxy
		var age float64
		if err := rows.Scan(&p.ID, &p.Version, &p.FenceID, &age); err != nil {
			return nil, err
		}
		p.Age = time.Duration(age * float64(time.Second))
		out = append(out, p)
	}
	return out, rows.Err()
}

func heartbeat(ctx context.Context, c *pgx.Conn, id string, version, fence int64) error {
	_, err := c.Exec(ctx, `INSERT INTO shardproxy_meta.proxies (proxy_id, version, fence_id) VALUES ($1, $2, $3)
		ON CONFLICT (proxy_id) DO UPDATE SET version = excluded.version, fence_id = excluded.fence_id, seen_at = now()`, id, version, fence)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// Goodbye removes a proxy's heartbeat row (a clean shutdown), so that a
// cutover does not wait for it.
func (s *Store) Goodbye(ctx context.Context, id string) error {
	c, err := s.Connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, "DELETE FROM shardproxy_meta.proxies WHERE proxy_id = $1", id)
	return err
}
