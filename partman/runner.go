package partman

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/router"
)

// Runner maintains the configured tables on a list of shards. A Runner is
// safe for concurrent use: each call opens its own connections.
type Runner struct {
	Config Config
	Shards []router.ShardConfig
	// Logger receives one line per change and per failure; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests and --now inject one.
	Now func() time.Time
	// Table, when not empty, limits the run to that configured table.
	Table string
}

// Mode says how far a run goes.
type Mode int

// Modes of a run.
const (
	// Apply inspects, plans and changes the shards (partman run).
	Apply Mode = iota
	// DryRun inspects and plans, changing nothing (partman plan).
	DryRun
	// Inspect only reads the partitions and DEFAULT rows (partman status).
	Inspect
)

// Report is the outcome of one run on every shard, in shard order.
type Report struct {
	Mode   Mode
	Now    time.Time
	Shards []ShardResult
}

// ShardResult is the outcome on one shard.
type ShardResult struct {
	Shard string
	// Skipped says why the shard was left alone (a read replica); not a
	// failure.
	Skipped string
	// Err is a shard-wide failure (unreachable, ...); Tables is then empty.
	Err    error
	Tables []TableResult
}

// TableResult is the outcome for one table on one shard.
type TableResult struct {
	Table                      string
	Interval                   Interval
	Created, Detached, Dropped []string
	// MovedRows were moved out of DEFAULT into partitions created now.
	MovedRows int64
	// DefaultRows are the rows left in DEFAULT after the run (-1: no
	// DEFAULT partition).
	DefaultRows int64
	// Ahead counts periods covered after the current one (-1: the current
	// period has no partition).
	Ahead int
	// Locked means another run held this table's advisory lock: nothing
	// was done, and that is not a failure.
	Locked bool
	// Problems are conflicts partman reports instead of acting (a table
	// with the expected name and other bounds, ...). They fail the run.
	Problems []string
	// Err stopped the work on this table.
	Err error
	// Partitions attached after the run (Inspect mode and after changes).
	Partitions []Partition
	// Plan is the computed plan (Apply and DryRun modes).
	Plan *TablePlan
}

// Failed reports whether the table needs attention.
func (t TableResult) Failed() bool { return t.Err != nil || len(t.Problems) > 0 }

// Failures returns one line per failure, naming the shard and table; empty
// when the run is in order.
func (r Report) Failures() []string {
	var out []string
	for _, s := range r.Shards {
		if s.Err != nil {
			out = append(out, fmt.Sprintf("shard %s: %v", s.Shard, oneLine(s.Err)))
		}
		for _, t := range s.Tables {
			if t.Err != nil {
				out = append(out, fmt.Sprintf("shard %s: table %s: %v", s.Shard, t.Table, oneLine(t.Err)))
			}
			for _, p := range t.Problems {
				out = append(out, fmt.Sprintf("shard %s: table %s: %s", s.Shard, t.Table, p))
			}
		}
	}
	return out
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// Run runs one pass in mode m on every shard in parallel and waits for all
// of them. One shard's failure is recorded in its ShardResult and never
// stops the others. The error is non-nil only for a bad configuration.
func (r *Runner) Run(ctx context.Context, m Mode) (Report, error) {
	tables, err := r.Config.Resolve()
	if err != nil {
		return Report{}, err
	}
	if r.Table != "" {
		var only []Table
		for _, t := range tables {
			if strings.EqualFold(t.Name, r.Table) {
				only = append(only, t)
			}
		}
		if len(only) == 0 {
			return Report{}, fmt.Errorf("partman: table %q is not configured", r.Table)
		}
		tables = only
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	rep := Report{Mode: m, Now: now().UTC(), Shards: make([]ShardResult, len(r.Shards))}
	var wg sync.WaitGroup
	for i, sh := range r.Shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					rep.Shards[i] = ShardResult{Shard: sh.Name, Err: fmt.Errorf("internal error: %v\n%s", p, debug.Stack())}
				}
			}()
			rep.Shards[i] = r.shard(ctx, m, sh, tables, rep.Now)
		}()
	}
	wg.Wait()
	return rep, nil
}

// Loop runs Apply passes until ctx is done: one at once, then one every
// Config.LoopInterval (which must be positive). report receives each
// Report (e.g. to export metrics); it runs on the loop's goroutine.
func (r *Runner) Loop(ctx context.Context, report func(Report)) error {
	if r.Config.LoopInterval <= 0 {
		return errors.New("partman: loop_interval is not set")
	}
	tick := time.NewTicker(r.Config.LoopInterval)
	defer tick.Stop()
	for {
		rep, err := r.Run(ctx, Apply)
		if err != nil {
			return err
		}
		for _, f := range rep.Failures() {
			r.logger().Warn("partition maintenance failed", "reason", f)
		}
		if report != nil {
			report(rep)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (r *Runner) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

func (r *Runner) shard(ctx context.Context, m Mode, sh router.ShardConfig, tables []Table, now time.Time) ShardResult {
	res := ShardResult{Shard: sh.Name}
	log := r.logger().With("shard", sh.Name)
	cc, err := pgx.ParseConfig(sh.DSN)
	if err != nil {
		res.Err = fmt.Errorf("dsn: %w", err)
		return res
	}
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = 10 * time.Second
	}
	if _, ok := cc.RuntimeParams["application_name"]; !ok {
		cc.RuntimeParams["application_name"] = "partman"
	}
	// Reads (counting DEFAULT rows) must not queue behind a long
	// transaction either; DDL transactions set it again explicitly.
	cc.RuntimeParams["lock_timeout"] = fmt.Sprintf("%dms", r.Config.lockTimeout().Milliseconds())
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		res.Err = fmt.Errorf("connect: %w", err)
		log.Error("shard unreachable", "err", err)
		return res
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if m == Apply {
		var replica bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&replica); err != nil {
			res.Err = fmt.Errorf("check recovery: %w", err)
			return res
		}
		if replica {
			res.Skipped = "read replica (pg_is_in_recovery)"
			log.Info("shard skipped", "reason", res.Skipped)
			return res
		}
	}
	for _, t := range tables {
		tr := r.table(ctx, m, conn, t, now, log.With("table", t.Name))
		res.Tables = append(res.Tables, tr)
	}
	return res
}

// lockClass is the first key of partman's advisory locks ("prtm"); the
// second is hashtext of the parent's qualified name.
const lockClass = 0x7072746d

func (r *Runner) table(ctx context.Context, m Mode, conn *pgx.Conn, t Table, now time.Time, log *slog.Logger) TableResult {
	tr := TableResult{Table: t.Name, Interval: t.Interval, DefaultRows: -1, Ahead: -1}
	par, err := resolve(ctx, conn, t)
	if err != nil {
		tr.Err = err
		return tr
	}
	if m == Apply {
		key := par.schema + "." + par.relation
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, hashtext($2))", lockClass, key).Scan(&got); err != nil {
			tr.Err = fmt.Errorf("advisory lock: %w", err)
			return tr
		}
		if !got {
			tr.Locked = true
			log.Info("another partman run holds the table's lock; skipped")
			return tr
		}
		defer func() {
			if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1, hashtext($2))", lockClass, key); err != nil {
				log.Warn("advisory unlock", "err", err)
			}
		}()
	}
	st, err := inspect(ctx, conn, par)
	if err != nil {
		tr.Err = err
		return tr
	}
	if m != Inspect {
		plan := PlanTable(t, now, st, r.Config.lockTimeout())
		tr.Plan = &plan
		tr.Problems = plan.Problems
		for _, p := range plan.Problems {
			log.Warn("partition conflict", "problem", p)
		}
	}
	if m == Apply && len(tr.Plan.Actions) > 0 {
		for _, a := range tr.Plan.Actions {
			moved, err := r.apply(ctx, conn, tr.Plan, a)
			if err != nil {
				tr.Err = fmt.Errorf("%s %s: %w", a.Op, a.Name, err)
				log.Error("partition maintenance", "op", string(a.Op), "partition", a.Name, "err", err)
				break
			}
			log.Info("partition "+string(a.Op), "partition", a.Name, "moved_rows", moved)
			tr.MovedRows += moved
			switch a.Op {
			case OpCreate:
				tr.Created = append(tr.Created, a.Name)
			case OpDetach:
				tr.Detached = append(tr.Detached, a.Name)
			case OpDrop:
				tr.Dropped = append(tr.Dropped, a.Name)
			}
		}
		// Read the result back rather than trusting the plan.
		if st2, err := inspect(ctx, conn, par); err != nil {
			if tr.Err == nil {
				tr.Err = err
			}
		} else {
			st = st2
		}
	}
	tr.Partitions = st.Partitions
	tr.Ahead = Ahead(t.Interval, now, st.Partitions)
	if def, ok := st.DefaultPartition(); ok {
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM ONLY %s",
			pgx.Identifier{st.Schema, def.Name}.Sanitize())).Scan(&tr.DefaultRows); err != nil && tr.Err == nil {
			tr.Err = fmt.Errorf("count default rows: %w", err)
		}
		if tr.DefaultRows > 0 {
			log.Warn("rows in default partition", "rows", tr.DefaultRows)
		}
	}
	return tr
}

// apply runs one action in its own transaction, retrying when lock_timeout
// expires. It returns the rows moved out of DEFAULT.
func (r *Runner) apply(ctx context.Context, conn *pgx.Conn, p *TablePlan, a Action) (int64, error) {
	const attempts = 3
	var err error
	for i := 1; ; i++ {
		var moved int64
		moved, err = applyOnce(ctx, conn, p, a)
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) || pe.Code != pgerrcode.LockNotAvailable || i == attempts {
			return moved, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Duration(i) * 250 * time.Millisecond):
		}
	}
}

func applyOnce(ctx context.Context, conn *pgx.Conn, p *TablePlan, a Action) (int64, error) {
	var moved int64
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, q := range p.Statements(a) {
			tag, err := tx.Exec(ctx, q)
			if err != nil {
				return err
			}
			if strings.HasPrefix(q, "WITH moved AS") {
				moved = tag.RowsAffected()
			}
		}
		return nil
	})
	return moved, err
}

// parent is a resolved partitioned parent.
type parent struct {
	table    Table
	oid      uint32
	schema   string
	relation string
	kind     ColumnKind
}

func resolve(ctx context.Context, conn *pgx.Conn, t Table) (parent, error) {
	p := parent{table: t}
	ident := pgx.Identifier{t.Relation}
	if t.Schema != "" {
		ident = pgx.Identifier{t.Schema, t.Relation}
	}
	var relkind string
	var strat, keyCol, keyType *string
	var natts *int16
	err := conn.QueryRow(ctx, `
SELECT c.oid, n.nspname, c.relname, c.relkind::text, pt.partstrat::text, pt.partnatts,
       a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = pt.partattrs[0]
WHERE c.oid = to_regclass($1)`, ident.Sanitize()).Scan(&p.oid, &p.schema, &p.relation, &relkind, &strat, &natts, &keyCol, &keyType)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, fmt.Errorf("table %s does not exist (create the partitioned parent first)", t.Name)
	}
	if err != nil {
		return p, fmt.Errorf("look up %s: %w", t.Name, err)
	}
	switch {
	case relkind != "p":
		return p, fmt.Errorf("table %s is not partitioned (create it with PARTITION BY RANGE (%s))", t.Name, t.Column)
	case strat == nil || *strat != "r":
		return p, fmt.Errorf("table %s is not partitioned by range", t.Name)
	case natts == nil || *natts != 1 || keyCol == nil:
		return p, fmt.Errorf("table %s is not partitioned by one column", t.Name)
	case *keyCol != t.Column:
		return p, fmt.Errorf("table %s is partitioned by %s, config says %s", t.Name, *keyCol, t.Column)
	}
	switch *keyType {
	case "timestamp with time zone":
		p.kind = TimestampTZ
	case "timestamp without time zone":
		p.kind = Timestamp
	case "date":
		p.kind = Date
	default:
		return p, fmt.Errorf("table %s: partition column %s is %s, not timestamptz, timestamp or date", t.Name, t.Column, *keyType)
	}
	return p, nil
}

func inspect(ctx context.Context, conn *pgx.Conn, par parent) (State, error) {
	st := State{Schema: par.schema, Relation: par.relation, Kind: par.kind, Taken: map[string]bool{}, DefaultRows: -1}
	b := &pgx.Batch{}
	b.Queue(`SELECT attname FROM pg_attribute
WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum`, par.oid)
	b.Queue(`SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = $1 ORDER BY c.relname`, par.oid)
	b.Queue(`SELECT c.relname FROM pg_class c
WHERE c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = $1)
  AND starts_with(c.relname, $2)
  AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid AND i.inhparent = $1)`,
		par.oid, joinName(par.relation, ""))
	b.Queue(`SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = $1 AND NOT i.indisvalid ORDER BY 1`, par.oid)
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	rows, _ := br.Query()
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return st, fmt.Errorf("read columns of %s: %w", par.table.Name, err)
	}
	st.Columns = cols
	rows, _ = br.Query()
	type bound struct{ Name, Bound string }
	bounds, err := pgx.CollectRows(rows, pgx.RowToStructByPos[bound])
	if err != nil {
		return st, fmt.Errorf("read partitions of %s: %w", par.table.Name, err)
	}
	for _, bd := range bounds {
		p, _ := ParseBound(bd.Bound) // an unreadable bound is reported by PlanTable
		p.Name = bd.Name
		st.Partitions = append(st.Partitions, p)
	}
	rows, _ = br.Query()
	taken, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return st, fmt.Errorf("read tables near %s: %w", par.table.Name, err)
	}
	for _, n := range taken {
		st.Taken[n] = true
	}
	rows, _ = br.Query()
	if st.InvalidIndexes, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return st, fmt.Errorf("read indexes of %s: %w", par.table.Name, err)
	}
	return st, br.Close()
}
