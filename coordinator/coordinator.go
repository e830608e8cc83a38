package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// Mode says what the proxy does with the coordinator.
type Mode string

const (
	// Off: the coordinator is not used (reads the merge cannot answer are
	// refused with 0A000).
	Off Mode = "off"
	// Fallback: a read the proxy's merge cannot answer runs on the
	// coordinator instead of being refused.
	Fallback Mode = "fallback"
)

// Config is the coordinator section of the config file.
type Config struct {
	// DSN is the coordinator database (libpq URL or key=value). It must be
	// a database of its own: the proxy creates postgres_fdw objects and
	// tables there. Its user needs CREATE on the database and the right to
	// create the postgres_fdw extension (or it must exist already).
	DSN string `yaml:"dsn"`
	// Mode is fallback (the default when dsn is set) or off.
	Mode Mode `yaml:"mode"`
	// PoolSize is the most backend connections to the coordinator.
	// Default 4.
	PoolSize int `yaml:"pool_size"`
	// FetchSize is postgres_fdw's fetch_size: rows fetched per round trip
	// from a shard. Default 10000.
	FetchSize int `yaml:"fetch_size"`
	// RemoteEstimate sets postgres_fdw's use_remote_estimate: the
	// coordinator asks the shards for row estimates while planning (better
	// join plans, one EXPLAIN round trip per foreign scan). Default true.
	RemoteEstimate *bool `yaml:"remote_estimate"`
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Mode == "" && c.DSN != "" {
		c.Mode = Fallback
	}
	if c.PoolSize == 0 {
		c.PoolSize = 4
	}
	if c.FetchSize == 0 {
		c.FetchSize = 10000
	}
	if c.RemoteEstimate == nil {
		t := true
		c.RemoteEstimate = &t
	}
	return c
}

// Enabled reports whether reads fall back to the coordinator.
func (c Config) Enabled() bool { return c.DSN != "" && c.Mode == Fallback }

// Validate reports every problem in c.
func (c Config) Validate() error {
	var errs []error
	switch c.Mode {
	case "", Off:
	case Fallback:
		if c.DSN == "" {
			errs = append(errs, errors.New("coordinator: mode fallback needs a dsn"))
		}
	default:
		errs = append(errs, fmt.Errorf("coordinator: mode %q is not fallback or off", c.Mode))
	}
	if c.DSN != "" {
		if _, err := pgconn.ParseConfig(c.DSN); err != nil {
			errs = append(errs, fmt.Errorf("coordinator: dsn: %w", err))
		}
	}
	if c.PoolSize < 0 || c.FetchSize < 0 {
		errs = append(errs, errors.New("coordinator: pool_size and fetch_size must be positive"))
	}
	return errors.Join(errs...)
}

// SessionParams are the startup parameters of the proxy's sessions on the
// coordinator: partitionwise joins and aggregates (each shard joins and
// aggregates its own partitions where the query allows), and read only, so
// that no write can ever go through the coordinator.
func SessionParams() map[string]string {
	return map[string]string{
		"enable_partitionwise_join":      "on",
		"enable_partitionwise_aggregate": "on",
		"default_transaction_read_only":  "on",
		"application_name":               "shardproxy coordinator",
	}
}

// Marker is the comment on every table the proxy owns in the coordinator.
const Marker = "shardproxy coordinator"

const (
	serverPrefix = "shardproxy_"
	stageSchema  = "shardproxy_stage"
	partsSchema  = "shardproxy_parts"
	// lockKey is the advisory lock that serialises provisioning between
	// proxies sharing a coordinator (an arbitrary constant: "shardprx").
	lockKey int64 = 0x7368617264707278
)

// Provision builds (or rebuilds) the coordinator's view of the cluster
// described by topo: the postgres_fdw extension, one foreign server and
// user mapping per shard, and one table per table of the default shard's
// schemas (public and the schemas of configured tables). It runs in one
// transaction under an advisory lock: idempotent, and safe with several
// proxies provisioning at once. Readers on the coordinator wait while it
// runs and then see the new definitions. It blocks for the duration.
func Provision(ctx context.Context, cfg Config, topo *router.Topology, log *slog.Logger) error {
	cfg = cfg.WithDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	conn, err := pgx.Connect(ctx, cfg.DSN)
	if err != nil {
		return fmt.Errorf("connect coordinator: %w", err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.Background())
	p := &provisioner{tx: tx, cfg: cfg, topo: topo, log: log}
	if err := p.run(ctx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	log.Info("coordinator provisioned", "tables", p.tables, "duration_ms", time.Since(start).Milliseconds())
	return nil
}

type provisioner struct {
	tx     pgx.Tx
	cfg    Config
	topo   *router.Topology
	log    *slog.Logger
	tables int
}

func (p *provisioner) exec(ctx context.Context, sql string, args ...any) error {
	if _, err := p.tx.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("coordinator: %s: %w", firstWords(sql), err)
	}
	return nil
}

func firstWords(sql string) string {
	f := strings.Fields(sql)
	if len(f) > 6 {
		f = f[:6]
	}
	return strings.Join(f, " ")
}

func (p *provisioner) run(ctx context.Context) error {
	if err := p.exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey); err != nil {
		return err
	}
	if err := p.exec(ctx, "CREATE EXTENSION IF NOT EXISTS postgres_fdw"); err != nil {
		return err
	}
	if err := p.dropOwn(ctx); err != nil {
		return err
	}
	if err := p.exec(ctx, "CREATE SCHEMA "+ident(partsSchema)); err != nil {
		return err
	}
	for _, sh := range p.topo.Shards {
		if err := p.server(ctx, sh); err != nil {
			return err
		}
	}
	for _, schema := range p.schemas() {
		if err := p.importSchema(ctx, schema); err != nil {
			return err
		}
	}
	return nil
}

// dropOwn drops what an earlier Provision made: the marked tables (their
// partitions go with them), the shardproxy_ servers (with their user
// mappings and any foreign table left on them) and the work schemas.
func (p *provisioner) dropOwn(ctx context.Context) error {
	rows, err := p.tx.Query(ctx, `SELECT c.oid::regclass::text, c.relkind = 'f'
FROM pg_class c
WHERE c.relkind IN ('p', 'f', 'r') AND NOT c.relispartition AND obj_description(c.oid, 'pg_class') = $1`, Marker)
	if err != nil {
		return fmt.Errorf("coordinator: list own tables: %w", err)
	}
	type rel struct {
		name    string
		foreign bool
	}
	var rels []rel
	for rows.Next() {
		var r rel
		if err := rows.Scan(&r.name, &r.foreign); err != nil {
			return err
		}
		rels = append(rels, r)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range rels {
		kind := "TABLE"
		if r.foreign {
			kind = "FOREIGN TABLE"
		}
		// r.name is regclass output: already quoted as needed.
		if err := p.exec(ctx, "DROP "+kind+" IF EXISTS "+r.name); err != nil {
			return err
		}
	}
	servers, err := p.strings(ctx, "SELECT srvname FROM pg_foreign_server WHERE starts_with(srvname, $1)", serverPrefix)
	if err != nil {
		return err
	}
	for _, s := range servers {
		if err := p.exec(ctx, "DROP SERVER "+ident(s)+" CASCADE"); err != nil {
			return err
		}
	}
	for _, s := range []string{stageSchema, partsSchema} {
		if err := p.exec(ctx, "DROP SCHEMA IF EXISTS "+ident(s)+" CASCADE"); err != nil {
			return err
		}
	}
	return nil
}

func (p *provisioner) strings(ctx context.Context, sql string, args ...any) ([]string, error) {
	rows, err := p.tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %s: %w", firstWords(sql), err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("coordinator: %s: %w", firstWords(sql), err)
	}
	return out, nil
}

// ServerName is the coordinator's foreign server for a shard.
func ServerName(shard string) string { return serverPrefix + shard }

// server creates the foreign server and the user mapping of one shard from
// its DSN.
func (p *provisioner) server(ctx context.Context, sh router.ShardConfig) error {
	pc, err := pgconn.ParseConfig(sh.DSN)
	if err != nil {
		return fmt.Errorf("coordinator: shard %s: parse dsn: %w", sh.Name, err)
	}
	opts := [][2]string{
		{"host", pc.Host},
		{"port", strconv.Itoa(int(pc.Port))},
		{"dbname", pc.Database},
		{"fetch_size", strconv.Itoa(p.cfg.FetchSize)},
		{"use_remote_estimate", strconv.FormatBool(*p.cfg.RemoteEstimate)},
		// Scans of several shards' partitions run at once (Append of
		// async foreign scans).
		{"async_capable", "true"},
	}
	if pc.TLSConfig == nil {
		opts = append(opts, [2]string{"sslmode", "disable"})
	}
	sql := "CREATE SERVER " + ident(ServerName(sh.Name)) + " FOREIGN DATA WRAPPER postgres_fdw OPTIONS (" + options(opts) + ")"
	if err := p.exec(ctx, sql); err != nil {
		return err
	}
	um := [][2]string{{"user", pc.User}}
	if pc.Password != "" {
		um = append(um, [2]string{"password", pc.Password})
	}
	return p.exec(ctx, "CREATE USER MAPPING FOR CURRENT_USER SERVER "+ident(ServerName(sh.Name))+" OPTIONS ("+options(um)+")")
}

// schemas are the schemas whose tables the coordinator shows: public and
// those of configured tables.
func (p *provisioner) schemas() []string {
	out := []string{"public"}
	seen := map[string]bool{"public": true}
	for name := range p.topo.Tables {
		if s, _, ok := strings.Cut(name, "."); ok && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// importSchema imports schema's tables from the default shard into the
// staging schema, then makes each the coordinator's table of that name.
func (p *provisioner) importSchema(ctx context.Context, schema string) error {
	def := p.topo.Shards[p.topo.Default].Name
	if err := p.exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+ident(schema)); err != nil {
		return err
	}
	if err := p.exec(ctx, "CREATE SCHEMA "+ident(stageSchema)); err != nil {
		return err
	}
	if err := p.exec(ctx, "IMPORT FOREIGN SCHEMA "+ident(schema)+" FROM SERVER "+ident(ServerName(def))+" INTO "+ident(stageSchema)); err != nil {
		return err
	}
	names, err := p.strings(ctx, "SELECT relname::text FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind = 'f' ORDER BY relname", stageSchema)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := p.table(ctx, schema, n); err != nil {
			return err
		}
	}
	return p.exec(ctx, "DROP SCHEMA "+ident(stageSchema)+" CASCADE")
}

// table makes schema.name from the staged foreign table of that name.
func (p *provisioner) table(ctx context.Context, schema, name string) error {
	target := ident(schema) + "." + ident(name)
	staged := ident(stageSchema) + "." + ident(name)
	var exists bool
	if err := p.tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", target).Scan(&exists); err != nil {
		return fmt.Errorf("coordinator: check %s: %w", target, err)
	}
	if exists {
		return fmt.Errorf("coordinator: %s already exists and is not the proxy's: the coordinator database must hold only the proxy's tables", target)
	}
	tb := p.topo.Lookup(parser.Table{Schema: schema, Name: name})
	if schema == "public" && tb == nil {
		tb = p.topo.Lookup(parser.Table{Name: name})
	}
	p.tables++
	if tb == nil || tb.Strategy == router.Reference {
		// One foreign table on the default shard, as imported.
		if err := p.exec(ctx, "ALTER FOREIGN TABLE "+staged+" SET SCHEMA "+ident(schema)); err != nil {
			return err
		}
		return p.exec(ctx, "COMMENT ON FOREIGN TABLE "+target+" IS "+literal(Marker))
	}
	by := "HASH"
	if tb.Strategy == router.Range {
		by = "RANGE"
	}
	if err := p.exec(ctx, "CREATE TABLE "+target+" (LIKE "+staged+") PARTITION BY "+by+" ("+ident(tb.Key)+")"); err != nil {
		return err
	}
	if err := p.exec(ctx, "COMMENT ON TABLE "+target+" IS "+literal(Marker)); err != nil {
		return err
	}
	remote := options([][2]string{{"schema_name", schema}, {"table_name", name}})
	switch tb.Strategy {
	case router.Hash:
		n := len(p.topo.Shards)
		for i, sh := range p.topo.Shards {
			part := ident(partsSchema) + "." + ident(partName(schema, name, sh.Name, -1))
			sql := fmt.Sprintf("CREATE FOREIGN TABLE %s PARTITION OF %s FOR VALUES WITH (MODULUS %d, REMAINDER %d) SERVER %s OPTIONS (%s)",
				part, target, n, i, ident(ServerName(sh.Name)), remote)
			if err := p.exec(ctx, sql); err != nil {
				return err
			}
		}
	case router.Range:
		for j, iv := range tb.Ranges {
			sh := p.topo.Shards[iv.Shard].Name
			part := ident(partsSchema) + "." + ident(partName(schema, name, sh, j))
			sql := fmt.Sprintf("CREATE FOREIGN TABLE %s PARTITION OF %s FOR VALUES FROM (%s) TO (%s) SERVER %s OPTIONS (%s)",
				part, target, bound(iv.From, tb, "MINVALUE"), bound(iv.To, tb, "MAXVALUE"), ident(ServerName(sh)), remote)
			if err := p.exec(ctx, sql); err != nil {
				return err
			}
		}
	}
	return nil
}

// partName names a foreign partition: schema.table@shard, with the
// interval's index for range tables (one table may have several intervals
// on a shard). Postgres truncates identifiers at 63 bytes.
func partName(schema, table, shard string, interval int) string {
	n := schema + "." + table + "@" + shard
	if interval >= 0 {
		n += "#" + strconv.Itoa(interval)
	}
	return n
}

// bound is a range partition bound for a router interval end, in the key's
// type; a zero time is the open end.
func bound(t time.Time, tb *router.Table, open string) string {
	if t.IsZero() {
		return open
	}
	switch {
	case tb.KeyDate:
		return literal(t.UTC().Format("2006-01-02"))
	case tb.KeyLocal:
		return literal(t.UTC().Format("2006-01-02 15:04:05.999999"))
	}
	return literal(t.UTC().Format("2006-01-02 15:04:05.999999") + "+00")
}

// options renders an fdw OPTIONS list.
func options(kv [][2]string) string {
	parts := make([]string, 0, len(kv))
	for _, o := range kv {
		parts = append(parts, ident(o[0])+" "+literal(o[1]))
	}
	return strings.Join(parts, ", ")
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// literal quotes s as a standard-conforming string literal.
func literal(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, "\x00", ""), "'", "''") + "'"
}

// String describes c without secrets (the DSN's password is left out), for
// logs and SHOW CONFIG.
func (c Config) String() string {
	if c.DSN == "" {
		return "off"
	}
	where := "?"
	if pc, err := pgconn.ParseConfig(c.DSN); err == nil {
		where = fmt.Sprintf("%s@%s:%d/%s", pc.User, pc.Host, pc.Port, pc.Database)
	}
	rest := ""
	if c.RemoteEstimate != nil {
		rest = fmt.Sprintf(" remote_estimate=%t", *c.RemoteEstimate)
	}
	return fmt.Sprintf("%s %s pool_size=%d fetch_size=%d%s", c.Mode, where, c.PoolSize, c.FetchSize, rest)
}
