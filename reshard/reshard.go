package reshard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/router"
	"github.com/shardproxy/shardproxy/topology"
)

// Phases of a reshard, in order; Aborted and Done end it.
const (
	Planned  = "planned"
	Copying  = "copying"
	CutOver  = "cut over"
	Cleaned  = "cleaned"
	Aborted  = "aborted"
	metaName = "current"
)

// Move is one stream: the buckets that go from shard From to shard To.
type Move struct {
	From, To string
	Buckets  []int
}

// Table is a hash table to move, with its key.
type Table struct {
	Name string // as configured: table or schema.table
	Key  string
	Text bool // text key (else an integer type)
}

// State is a reshard as the metadata schema keeps it (resumable).
type State struct {
	Phase string
	// FromVersion is the map version the plan was made from; ToVersion
	// the one the cutover published.
	FromVersion, ToVersion int64
	Buckets                int
	Owners                 []string // the target map, by bucket
	Moves                  []Move
	Tables                 []Table
	// IdentityFull lists "shard\ttable" whose replica identity the start
	// set to FULL (the row filter's key must be covered by it); cleanup
	// and abort set them back to DEFAULT.
	IdentityFull []string
	// Range, when set, moves one interval of a range table (PlanRange);
	// Owners is then the unchanged bucket map.
	Range *RangeMove `json:",omitempty"`
	// Diffs is the number of moved buckets (or ranges) the last
	// comparison found different: cleanup refuses while it is not zero.
	Diffs int
	// RefCopied lists the targets that have the reference tables (start
	// copied them, or the shard served rows already).
	RefCopied        []string
	Started, Updated time.Time
}

// Tool runs reshard commands against a topology and its metadata store.
type Tool struct {
	Topo  *router.Topology
	Store *topology.Store
	Log   *slog.Logger
	Out   io.Writer
	// Hold bounds how long the cutover holds writes (default 2s); Live is
	// how fresh a proxy heartbeat must be to count (default 5s).
	Hold, Live time.Duration
	// SkipVerify leaves out the per-bucket comparison that Cutover runs
	// while writes are held (it scans the moved buckets on both sides,
	// which lengthens the pause on big tables).
	SkipVerify bool
	// BinDir holds pg_dump; empty: localpg.BinDir.
	BinDir string
	// IDs are the id sequences that take blocks of globally unique ids
	// (metadata.ids): a target's copy of them gets its own block before
	// it can take a write.
	IDs []topology.IDConfig
	// Hook, when set, is called at named points of every step (Points):
	// tests cancel the tool's context there to stop it as an interrupt
	// would, and run the step again.
	Hook func(point string)
}

// Points are the places Hook is called, in the order a reshard meets them.
var Points = []string{
	"start:schema", "start:publication", "start:subscribed",
	"cutover:fenced", "cutover:drained", "cutover:caught-up", "cutover:published", "cutover:acked",
	"cleanup:streams", "cleanup:batch",
}

func (t *Tool) at(point string) {
	if t.Hook != nil {
		t.Hook(point)
	}
}

func (t *Tool) printf(format string, args ...any) {
	if t.Out != nil {
		fmt.Fprintf(t.Out, format, args...)
	}
}

func (t *Tool) shard(name string) (router.ShardConfig, error) {
	i, ok := t.Topo.ShardIndex(name)
	if !ok {
		return router.ShardConfig{}, fmt.Errorf("shard %q is not in the config", name)
	}
	return t.Topo.Shards[i], nil
}

func (t *Tool) connect(ctx context.Context, shard string) (*pgx.Conn, error) {
	sc, err := t.shard(shard)
	if err != nil {
		return nil, err
	}
	c, err := pgx.Connect(ctx, sc.DSN)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", shard, err)
	}
	return c, nil
}

// Load reads the reshard state; nil when none was planned.
func (t *Tool) Load(ctx context.Context) (*State, error) {
	c, err := t.Store.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	var b []byte
	err = c.QueryRow(ctx, "SELECT state FROM shardproxy_meta.reshards WHERE id = $1", metaName).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("load reshard state: %w", err)
	}
	st := &State{}
	return st, json.Unmarshal(b, st)
}

func (t *Tool) save(ctx context.Context, st *State) error {
	st.Updated = time.Now().UTC()
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	c, err := t.Store.Connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, `INSERT INTO shardproxy_meta.reshards (id, state) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = now()`, metaName, b)
	if err != nil {
		return fmt.Errorf("save reshard state: %w", err)
	}
	return nil
}

func (t *Tool) current(ctx context.Context) (*topology.State, error) {
	c, err := t.Store.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	return t.Store.Load(ctx, c)
}

// Plan records a reshard onto shards (names from the config): bucket b
// goes to shards[b mod len(shards)], so with V a multiple of the new count
// only the buckets whose shard changes move.
func (t *Tool) Plan(ctx context.Context, shards []string) (*State, error) {
	cur, err := t.planCheck(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range shards {
		if _, err := t.shard(s); err != nil {
			return nil, err
		}
	}
	if len(shards) == 0 {
		return nil, errors.New("name the shards to spread the buckets over")
	}
	st := &State{Phase: Planned, FromVersion: cur.Version, Buckets: len(cur.Owners), Started: time.Now().UTC()}
	moves := map[[2]string][]int{}
	for b, from := range cur.Owners {
		to := shards[b%len(shards)]
		st.Owners = append(st.Owners, to)
		if to != from {
			moves[[2]string{from, to}] = append(moves[[2]string{from, to}], b)
		}
	}
	if len(moves) == 0 {
		return nil, errors.New("nothing to move: the buckets already sit there")
	}
	for k, bs := range moves {
		st.Moves = append(st.Moves, Move{From: k[0], To: k[1], Buckets: bs})
	}
	sort.Slice(st.Moves, func(i, j int) bool {
		return st.Moves[i].From+"\x00"+st.Moves[i].To < st.Moves[j].From+"\x00"+st.Moves[j].To
	})
	for _, tb := range t.Topo.Tables {
		if tb.Strategy == router.Hash {
			st.Tables = append(st.Tables, Table{Name: tb.Name, Key: tb.Key, Text: tb.KeyText})
		}
	}
	sort.Slice(st.Tables, func(i, j int) bool { return st.Tables[i].Name < st.Tables[j].Name })
	if err := t.save(ctx, st); err != nil {
		return nil, err
	}
	t.printPlan(st)
	return st, nil
}

func (t *Tool) printPlan(st *State) {
	t.printf("reshard %s: version %d, %d buckets\n", st.Phase, st.FromVersion, st.Buckets)
	for _, m := range st.Moves {
		if st.Range != nil {
			t.printf("  %s -> %s: %s from %s to %s\n", m.From, m.To, st.Range.Table, st.Range.From, st.Range.To)
			continue
		}
		t.printf("  %s -> %s: buckets %s\n", m.From, m.To, router.FormatBucketList(m.Buckets))
	}
	var names []string
	for _, tb := range st.Tables {
		names = append(names, tb.Name+"("+tb.Key+")")
	}
	t.printf("  tables: %s\n", strings.Join(names, ", "))
}

// object names: one publication and slot per move, on the source; one
// subscription per move, on the target.
func pubName(m Move) string { return "shardproxy_rs_" + sanitize(m.To) }
func subName(m Move) string { return "shardproxy_rs_" + sanitize(m.From) + "_" + sanitize(m.To) }

func sanitize(s string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('_')
		}
	}
	return sb.String()
}

func ident(parts ...string) string { return pgx.Identifier(parts).Sanitize() }

func tableIdent(name string) string {
	if s, n, ok := strings.Cut(name, "."); ok {
		return ident(s, n)
	}
	return ident(name)
}

// literal quotes a string as an SQL literal (standard_conforming_strings on).
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// hashHelpers are the hash-partitioned parents satisfies_hash_partition
// needs to name (one per key type; they hold no rows) and the marks table:
// each move's publication carries its row, which the cutover writes on
// the source and waits for on the target (the stream applies in commit
// order, so every earlier change is applied then; quicker than waiting
// for the slot's confirmed position, which the subscriber reports only
// now and then).
const hashHelpers = `
CREATE SCHEMA IF NOT EXISTS shardproxy_meta;
CREATE TABLE IF NOT EXISTS shardproxy_meta.hash_int8 (k bigint) PARTITION BY HASH (k);
CREATE TABLE IF NOT EXISTS shardproxy_meta.hash_text (k text) PARTITION BY HASH (k);
CREATE TABLE IF NOT EXISTS shardproxy_meta.reshard_marks (name text PRIMARY KEY, n bigint NOT NULL);
`

// bucketFilter is the SQL condition "the row's key is in one of buckets".
func bucketFilter(tb Table, v int, buckets []int) string {
	parent, key := "'shardproxy_meta.hash_int8'::regclass", ident(tb.Key)+"::bigint"
	if tb.Text {
		parent, key = "'shardproxy_meta.hash_text'::regclass", ident(tb.Key)+"::text"
	}
	var ors []string
	for _, b := range buckets {
		ors = append(ors, fmt.Sprintf("satisfies_hash_partition(%s, %d, %d, %s)", parent, v, b, key))
	}
	return "(" + strings.Join(ors, " OR ") + ")"
}

func (t *Tool) pgDump(ctx context.Context, dsn string, tables []Table, patterns ...string) (string, error) {
	pgDump, err := t.pgDumpPath()
	if err != nil {
		return "", err
	}
	args := []string{"--schema-only", "--no-owner", "--no-privileges", "--no-publications", "--no-subscriptions", "-d", dsn}
	for _, tb := range tables {
		args = append(args, "-t", tableIdent(tb.Name))
	}
	for _, p := range patterns {
		args = append(args, "-t", p)
	}
	out, err := exec.CommandContext(ctx, pgDump, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("pg_dump: %w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("pg_dump: %w", err)
	}
	// Drop psql meta-commands (\restrict in recent minor releases).
	var sb strings.Builder
	for _, line := range strings.SplitAfter(string(out), "\n") {
		if !strings.HasPrefix(line, "\\") {
			sb.WriteString(line)
		}
	}
	// pg_dump empties search_path for the session: give it back.
	sb.WriteString("\nRESET search_path;\n")
	return sb.String(), nil
}

// pgDumpPath finds pg_dump: in BinDir, beside the real initdb (the bin
// directory may hold links to a few programs only), else in PATH.
func (t *Tool) pgDumpPath() (string, error) {
	bin := t.BinDir
	if bin == "" {
		var err error
		if bin, err = localpg.BinDir(); err != nil {
			return exec.LookPath("pg_dump")
		}
	}
	if p := filepath.Join(bin, "pg_dump"); fileExists(p) {
		return p, nil
	}
	if real, err := filepath.EvalSymlinks(filepath.Join(bin, "initdb")); err == nil {
		if p := filepath.Join(filepath.Dir(real), "pg_dump"); fileExists(p) {
			return p, nil
		}
	}
	return exec.LookPath("pg_dump")
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
