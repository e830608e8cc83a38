package partman

import (
	"context"
	"fmt"
	"os"
	osexec "os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/delivery"
	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/router"
)

// shards are 4 real Postgres clusters started once for the package.
var shards *localpg.Set

func TestMain(m *testing.M) {
	localpg.Main(m, localpg.Options{N: 4, Database: "deliveryapp"}, func(set *localpg.Set) int {
		shards = set
		return m.Run()
	})
}

func shardConfigs(dsnSuffix string) []router.ShardConfig {
	out := make([]router.ShardConfig, len(shards.Clusters))
	for i, c := range shards.Clusters {
		out[i] = router.ShardConfig{Name: c.Name, DSN: c.DSN("deliveryapp") + dsnSuffix}
	}
	return out
}

func connect(t testing.TB, shard int) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, shards.Clusters[shard].DSN("deliveryapp"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func exec(t testing.TB, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// fresh recreates the delivery schema, with no partition but the DEFAULTs,
// on every shard.
func fresh(t testing.TB) {
	t.Helper()
	for i := range shards.Clusters {
		c := connect(t, i)
		exec(t, c, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
		exec(t, c, delivery.Schema)
	}
}

// attached lists "name bound" of the attached partitions of table, as
// rendered in a UTC session.
func attached(t testing.TB, shard int, table string) []string {
	t.Helper()
	c := connect(t, shard)
	rows, _ := c.Query(context.Background(), `SELECT c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = $1::regclass ORDER BY 1`, table)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func monthRows(table string, yms ...string) []string {
	out := []string{table + "_default DEFAULT"}
	for _, ym := range yms {
		from := ts(ym + "-01T00:00:00Z")
		out = append(out, fmt.Sprintf("%s FOR VALUES FROM (%s) TO (%s)", PartitionName(table, Month, from),
			TimestampTZ.literal(from), TimestampTZ.literal(Month.Next(from))))
	}
	slices.Sort(out)
	return out
}

func deliveryConfig() Config {
	return Config{Tables: map[string]TableConfig{
		"orders": {Column: "created_at"},
		"events": {Column: "created_at"},
	}}
}

func runAt(t testing.TB, cfg Config, now string, dsnSuffix string) Report {
	t.Helper()
	r := &Runner{Config: cfg, Shards: shardConfigs(dsnSuffix), Now: func() time.Time { return ts(now) }}
	rep, err := r.Run(context.Background(), Apply)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func noFailures(t testing.TB, rep Report) {
	t.Helper()
	if f := rep.Failures(); len(f) > 0 {
		t.Fatalf("failures:\n%s", strings.Join(f, "\n"))
	}
}

func created(rep Report, shard int, table string) []string {
	for _, tr := range rep.Shards[shard].Tables {
		if tr.Table == table {
			return tr.Created
		}
	}
	return nil
}

func tableResult(t testing.TB, rep Report, shard int, table string) TableResult {
	t.Helper()
	for _, tr := range rep.Shards[shard].Tables {
		if tr.Table == table {
			return tr
		}
	}
	t.Fatalf("no result for %s on shard %d", table, shard)
	return TableResult{}
}

func TestRunCreatesThenChangesNothing(t *testing.T) {
	fresh(t)
	want := []string{"2026-01", "2026-02", "2026-03", "2026-04", "2026-05"}
	rep := runAt(t, deliveryConfig(), "2026-01-15T00:00:00Z", "")
	noFailures(t, rep)
	for i := range shards.Clusters {
		for _, table := range []string{"orders", "events"} {
			if got := created(rep, i, table); len(got) != 5 {
				t.Errorf("shard %d %s: created %v", i, table, got)
			}
			if got := attached(t, i, table); !reflect.DeepEqual(got, monthRows(table, want...)) {
				t.Errorf("shard %d %s: attached\n%s", i, table, strings.Join(got, "\n"))
			}
			if tr := tableResult(t, rep, i, table); tr.Ahead != 4 || tr.DefaultRows != 0 {
				t.Errorf("shard %d %s: ahead %d, default rows %d", i, table, tr.Ahead, tr.DefaultRows)
			}
		}
	}
	// The parent's indexes reached the new partitions through ATTACH.
	var n int
	if err := connect(t, 0).QueryRow(context.Background(),
		"SELECT count(*) FROM pg_indexes WHERE tablename = 'orders_p2026_03'").Scan(&n); err != nil || n != 3 {
		t.Errorf("orders_p2026_03 has %d indexes (%v), want pkey, user_id and status", n, err)
	}
	// Every month of the premake window takes rows into its own partition.
	c := connect(t, 1)
	for i, ym := range want {
		exec(t, c, "INSERT INTO orders VALUES ($1, 7, 1, 9.5, 'new', $2)", i, ts(ym+"-28T23:59:59Z"))
	}
	var inDefault int
	if err := c.QueryRow(context.Background(), "SELECT count(*) FROM orders_default").Scan(&inDefault); err != nil || inDefault != 0 {
		t.Errorf("%d rows went to default (%v)", inDefault, err)
	}

	rep = runAt(t, deliveryConfig(), "2026-01-20T00:00:00Z", "")
	noFailures(t, rep)
	for i := range shards.Clusters {
		for _, tr := range rep.Shards[i].Tables {
			if len(tr.Created)+len(tr.Detached)+len(tr.Dropped) > 0 || tr.Plan == nil || len(tr.Plan.Actions) > 0 {
				t.Errorf("second run changed shard %d %s: %+v", i, tr.Table, tr)
			}
		}
	}
}

func TestNextMonthAndRetention(t *testing.T) {
	fresh(t)
	cfg := Config{Tables: map[string]TableConfig{
		"orders": {Column: "created_at", BackfillFrom: "2025-12-01", Retention: "1 month", RetentionMode: Detach},
		"events": {Column: "created_at", BackfillFrom: "2025-12-01", Retention: "1 month", RetentionMode: Drop},
	}}
	noFailures(t, runAt(t, cfg, "2026-01-15T00:00:00Z", ""))
	for i := range shards.Clusters {
		if got := attached(t, i, "orders"); !reflect.DeepEqual(got, monthRows("orders", "2025-12", "2026-01", "2026-02", "2026-03", "2026-04", "2026-05")) {
			t.Fatalf("shard %d after first run:\n%s", i, strings.Join(got, "\n"))
		}
	}
	rep := runAt(t, cfg, "2026-02-15T00:00:00Z", "")
	noFailures(t, rep)
	later := []string{"2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06"}
	for i := range shards.Clusters {
		o, e := tableResult(t, rep, i, "orders"), tableResult(t, rep, i, "events")
		if !reflect.DeepEqual(o.Created, []string{"orders_p2026_06"}) || !reflect.DeepEqual(o.Detached, []string{"orders_p2025_12"}) || len(o.Dropped) > 0 {
			t.Errorf("shard %d orders: %+v", i, o)
		}
		if !reflect.DeepEqual(e.Created, []string{"events_p2026_06"}) || !reflect.DeepEqual(e.Dropped, []string{"events_p2025_12"}) || len(e.Detached) > 0 {
			t.Errorf("shard %d events: %+v", i, e)
		}
		for _, table := range []string{"orders", "events"} {
			if got := attached(t, i, table); !reflect.DeepEqual(got, monthRows(table, later...)) {
				t.Errorf("shard %d %s:\n%s", i, table, strings.Join(got, "\n"))
			}
		}
		var detachedExists, droppedExists bool
		connect(t, i).QueryRow(context.Background(),
			"SELECT to_regclass('orders_p2025_12') IS NOT NULL, to_regclass('events_p2025_12') IS NOT NULL").Scan(&detachedExists, &droppedExists)
		if !detachedExists || droppedExists {
			t.Errorf("shard %d: detached table kept %v, dropped table kept %v", i, detachedExists, droppedExists)
		}
	}
	// The detached table is outside the window: no conflict, no change.
	rep = runAt(t, cfg, "2026-02-16T00:00:00Z", "")
	noFailures(t, rep)
	for _, s := range rep.Shards {
		for _, tr := range s.Tables {
			if len(tr.Plan.Actions) > 0 {
				t.Errorf("%s %s: %v", s.Shard, tr.Table, summary(*tr.Plan))
			}
		}
	}
}

func TestRowsInDefaultAreMoved(t *testing.T) {
	fresh(t)
	for i := range shards.Clusters {
		c := connect(t, i)
		// March is inside the window; September is not and stays in DEFAULT.
		exec(t, c, `INSERT INTO orders VALUES
			(1, 1, 1, 10, 'new', '2026-03-10 12:00:00+00'),
			(2, 1, 1, 11, 'new', '2026-03-31 23:59:59+00'),
			(3, 1, 1, 12, 'new', '2026-09-01 00:00:00+00')`)
	}
	rep := runAt(t, deliveryConfig(), "2026-01-15T00:00:00Z", "")
	noFailures(t, rep)
	for i := range shards.Clusters {
		o := tableResult(t, rep, i, "orders")
		if o.MovedRows != 2 || o.DefaultRows != 1 || len(o.Created) != 5 {
			t.Errorf("shard %d: moved %d, left in default %d, created %v", i, o.MovedRows, o.DefaultRows, o.Created)
		}
		var march, def int
		connect(t, i).QueryRow(context.Background(),
			"SELECT (SELECT count(*) FROM orders_p2026_03), (SELECT count(*) FROM orders_default)").Scan(&march, &def)
		if march != 2 || def != 1 {
			t.Errorf("shard %d: march %d rows, default %d", i, march, def)
		}
	}
}

func TestConcurrentRuns(t *testing.T) {
	fresh(t)
	// Deterministic: another session holds orders' lock on shard0.
	holder := connect(t, 0)
	exec(t, holder, "SELECT pg_advisory_lock($1, hashtext('public.orders'))", lockClass)
	rep := runAt(t, deliveryConfig(), "2026-01-15T00:00:00Z", "")
	noFailures(t, rep)
	if o := tableResult(t, rep, 0, "orders"); !o.Locked || len(o.Created) > 0 {
		t.Errorf("shard0 orders should report the lock: %+v", o)
	}
	if o := tableResult(t, rep, 1, "orders"); o.Locked || len(o.Created) != 5 {
		t.Errorf("shard1 orders: %+v", o)
	}
	exec(t, holder, "SELECT pg_advisory_unlock($1, hashtext('public.orders'))", lockClass)

	// Two real runs at once, one month later: both succeed, each new
	// partition is created exactly once.
	var wg sync.WaitGroup
	reps := make([]Report, 2)
	for k := range reps {
		wg.Add(1)
		go func() { defer wg.Done(); reps[k] = runAt(t, deliveryConfig(), "2026-02-15T00:00:00Z", "") }()
	}
	wg.Wait()
	locked := 0
	for _, r := range reps {
		noFailures(t, r)
		for _, s := range r.Shards {
			for _, tr := range s.Tables {
				if tr.Locked {
					locked++
				}
			}
		}
	}
	t.Logf("concurrent runs: %d table passes found the lock taken", locked)
	for i := range shards.Clusters {
		for _, table := range []string{"orders", "events"} {
			n := len(created(reps[0], i, table)) + len(created(reps[1], i, table))
			want, months := 1, []string{"2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06"}
			if i == 0 && table == "orders" {
				// The locked first pass left shard0 orders empty; January
				// is now in the past and not backfilled.
				want, months = 5, months[1:]
			}
			if n != want {
				t.Errorf("shard %d %s: %d partitions created by the two runs, want %d", i, table, n, want)
			}
			if got := attached(t, i, table); !reflect.DeepEqual(got, monthRows(table, months...)) {
				t.Errorf("shard %d %s:\n%s", i, table, strings.Join(got, "\n"))
			}
		}
	}
}

func TestShardDown(t *testing.T) {
	fresh(t)
	down := shards.Clusters[2]
	if err := down.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := down.Restart(ctx); err != nil {
			t.Errorf("restart %s: %v", down.Name, err)
		}
	})
	rep := runAt(t, deliveryConfig(), "2026-01-15T00:00:00Z", "")
	f := rep.Failures()
	if len(f) != 1 || !strings.HasPrefix(f[0], "shard "+down.Name+": connect:") || strings.Contains(f[0], "\n") {
		t.Fatalf("failures: %q", f)
	}
	for i := range shards.Clusters {
		if i == 2 {
			continue
		}
		if got := created(rep, i, "orders"); len(got) != 5 {
			t.Errorf("shard %d: created %v", i, got)
		}
	}
}

func TestSessionTimeZoneDoesNotShiftBounds(t *testing.T) {
	fresh(t)
	const madrid = "&timezone=Europe%2FMadrid"
	// The runner's own sessions really are in Madrid.
	cc, err := pgx.Connect(context.Background(), shardConfigs(madrid)[0].DSN)
	if err != nil {
		t.Fatal(err)
	}
	var tz string
	cc.QueryRow(context.Background(), "SHOW TimeZone").Scan(&tz)
	cc.Close(context.Background())
	if tz != "Europe/Madrid" {
		t.Fatalf("session TimeZone %q", tz)
	}
	noFailures(t, runAt(t, deliveryConfig(), "2026-01-15T00:00:00Z", madrid))
	for i := range shards.Clusters {
		if got := attached(t, i, "orders"); !reflect.DeepEqual(got, monthRows("orders", "2026-01", "2026-02", "2026-03", "2026-04", "2026-05")) {
			t.Fatalf("shard %d bounds in UTC:\n%s", i, strings.Join(got, "\n"))
		}
	}
	// Read back in Madrid (bounds render as +01/+02): still nothing to do.
	rep := runAt(t, deliveryConfig(), "2026-01-15T00:00:00Z", madrid)
	noFailures(t, rep)
	for _, s := range rep.Shards {
		for _, tr := range s.Tables {
			if len(tr.Plan.Actions) > 0 || tr.Ahead != 4 {
				t.Errorf("%s %s in Madrid: ahead %d, actions %v", s.Shard, tr.Table, tr.Ahead, summary(*tr.Plan))
			}
		}
	}
}

func TestConflictsAndMissingParent(t *testing.T) {
	fresh(t)
	c := connect(t, 3)
	exec(t, c, "CREATE TABLE orders_p2026_02 (LIKE orders)")
	exec(t, connect(t, 1), "CREATE INDEX orders_total_idx ON ONLY events (id)")
	cfg := deliveryConfig()
	cfg.Tables["nosuch"] = TableConfig{Column: "created_at"}
	rep := runAt(t, cfg, "2026-01-15T00:00:00Z", "")
	f := rep.Failures()
	var conflict, missing, invalid int
	for _, l := range f {
		switch {
		case strings.HasPrefix(l, "shard shard3: table orders: table orders_p2026_02 exists but is not attached"):
			conflict++
		case strings.Contains(l, "table nosuch: table nosuch does not exist"):
			missing++
		case strings.HasPrefix(l, "shard shard1: table events: index orders_total_idx on events is not valid: a partition lacks it"):
			invalid++
		default:
			t.Errorf("unexpected failure %q", l)
		}
	}
	if conflict != 1 || missing != 4 || invalid != 1 {
		t.Fatalf("failures:\n%s", strings.Join(f, "\n"))
	}
	if got := created(rep, 3, "orders"); len(got) != 4 {
		t.Errorf("shard3 orders: the other months are still created, got %v", got)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	fresh(t)
	r := &Runner{Config: deliveryConfig(), Shards: shardConfigs(""), Table: "orders", Now: func() time.Time { return ts("2026-01-15T00:00:00Z") }}
	rep, err := r.Run(context.Background(), DryRun)
	if err != nil {
		t.Fatal(err)
	}
	noFailures(t, rep)
	for i := range shards.Clusters {
		if n := len(rep.Shards[i].Tables); n != 1 {
			t.Fatalf("--table orders ran %d tables", n)
		}
		p := rep.Shards[i].Tables[0].Plan
		if p == nil || len(p.Actions) != 5 || !strings.Contains(strings.Join(p.Statements(p.Actions[0]), ";"), "ATTACH PARTITION") {
			t.Fatalf("shard %d plan: %+v", i, p)
		}
		if got := attached(t, i, "orders"); !reflect.DeepEqual(got, monthRows("orders")) {
			t.Errorf("shard %d changed by a dry run: %v", i, got)
		}
	}
	rep, _ = r.Run(context.Background(), Inspect)
	if tr := rep.Shards[0].Tables[0]; tr.Ahead != -1 || tr.DefaultRows != 0 || len(tr.Partitions) != 1 {
		t.Errorf("status: %+v", tr)
	}
}

func TestLoop(t *testing.T) {
	fresh(t)
	cfg := deliveryConfig()
	cfg.LoopInterval = 100 * time.Millisecond // Validate insists on 1m; the loop itself does not
	r := &Runner{Config: cfg, Shards: shardConfigs(""), Now: func() time.Time { return ts("2026-01-15T00:00:00Z") }}
	ctx, cancel := context.WithCancel(context.Background())
	var reps []Report
	err := r.Loop(ctx, func(rep Report) {
		reps = append(reps, rep)
		if len(reps) == 3 {
			cancel()
		}
	})
	if err != context.Canceled || len(reps) != 3 {
		t.Fatalf("loop: %v after %d passes", err, len(reps))
	}
	for i, want := range []int{5, 0, 0} {
		noFailures(t, reps[i])
		if got := len(created(reps[i], 2, "orders")); got != want {
			t.Errorf("pass %d created %d on shard2 orders, want %d", i, got, want)
		}
	}
	if err := (&Runner{}).Loop(context.Background(), nil); err == nil {
		t.Error("a loop without interval should refuse to start")
	}
}

func TestDateColumnWeeksAndSchema(t *testing.T) {
	fresh(t)
	for i := range shards.Clusters {
		exec(t, connect(t, i), `DROP SCHEMA IF EXISTS "App" CASCADE; CREATE SCHEMA "App";
CREATE TABLE "App".visits (day date NOT NULL, n int, twice int GENERATED ALWAYS AS (n * 2) STORED) PARTITION BY RANGE (day)`)
	}
	cfg := Config{Tables: map[string]TableConfig{
		"App.visits": {Column: "day", Interval: Week, Premake: intp(1)}, // no DEFAULT yet: partman creates it
		"orders":     {Column: "created_at", Interval: Day, Premake: intp(1)},
	}}
	visits := func(c *pgx.Conn) []string {
		rows, _ := c.Query(context.Background(), `SELECT c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = '"App".visits'::regclass ORDER BY 1`)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// Thursday 1 January 2026 is in ISO week 1, which starts on Monday 29 December 2025.
	noFailures(t, runAt(t, cfg, "2026-01-01T10:00:00Z", ""))
	for i := range shards.Clusters {
		c := connect(t, i)
		want := []string{
			"visits_default DEFAULT",
			"visits_p2026w01 FOR VALUES FROM ('2025-12-29') TO ('2026-01-05')",
			"visits_p2026w02 FOR VALUES FROM ('2026-01-05') TO ('2026-01-12')",
		}
		if got := visits(c); !reflect.DeepEqual(got, want) {
			t.Fatalf("shard %d:\n%s", i, strings.Join(got, "\n"))
		}
		if got := attached(t, i, "orders"); !reflect.DeepEqual(got[1:], []string{
			"orders_p2026_01_01 FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-01-02 00:00:00+00')",
			"orders_p2026_01_02 FOR VALUES FROM ('2026-01-02 00:00:00+00') TO ('2026-01-03 00:00:00+00')"}) {
			t.Errorf("shard %d orders by day:\n%s", i, strings.Join(got, "\n"))
		}
		// Week 4 has no partition yet: the row goes to DEFAULT.
		exec(t, c, `INSERT INTO "App".visits (day, n) VALUES ('2026-01-20', 21)`)
	}
	// Two weeks later, week 4 is within premake: the row moves, and its
	// generated column is recomputed in the new partition.
	rep := runAt(t, cfg, "2026-01-13T00:00:00Z", "")
	noFailures(t, rep)
	for i := range shards.Clusters {
		v := tableResult(t, rep, i, "App.visits")
		if !reflect.DeepEqual(v.Created, []string{"visits_p2026w03", "visits_p2026w04"}) || v.MovedRows != 1 || v.DefaultRows != 0 {
			t.Errorf("shard %d: %+v", i, v)
		}
		var twice int
		if err := connect(t, i).QueryRow(context.Background(), `SELECT twice FROM "App".visits_p2026w04`).Scan(&twice); err != nil || twice != 42 {
			t.Errorf("shard %d: moved row: %d, %v", i, twice, err)
		}
	}
}

// pgBin runs a Postgres binary as the server's OS user.
func pgBin(t *testing.T, name string, args ...string) {
	t.Helper()
	bin, err := localpg.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	// BinDir may be a folder of symlinks to a few binaries (initdb,
	// pg_ctl): look beside the real initdb.
	if real, err := filepath.EvalSymlinks(filepath.Join(bin, "initdb")); err == nil {
		bin = filepath.Dir(real)
	}
	path := filepath.Join(bin, name)
	cmd := osexec.Command(path, args...)
	if os.Geteuid() == 0 {
		cmd = osexec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	cmd.Dir = os.TempDir()
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

func TestReplicaIsSkipped(t *testing.T) {
	fresh(t)
	dir := filepath.Join(shards.Dir(), "replica")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if u, err := user.Lookup("postgres"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			os.Chown(dir, uid, gid)
		}
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	primary := shards.Clusters[0]
	pgBin(t, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port), "-U", "postgres", "-D", dir, "-R", "-X", "stream", "-c", "fast", "--no-sync")
	port, err := localpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	pgBin(t, "pg_ctl", "-D", dir, "-o", fmt.Sprintf("-p %d", port), "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "start")
	t.Cleanup(func() { pgBin(t, "pg_ctl", "-D", dir, "-m", "immediate", "-w", "stop") })

	r := &Runner{Config: deliveryConfig(), Now: func() time.Time { return ts("2026-01-15T00:00:00Z") },
		Shards: []router.ShardConfig{{Name: "replica", DSN: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/deliveryapp?sslmode=disable", port)}}}
	rep, err := r.Run(context.Background(), Apply)
	if err != nil {
		t.Fatal(err)
	}
	noFailures(t, rep)
	if s := rep.Shards[0]; s.Skipped == "" || len(s.Tables) > 0 {
		t.Fatalf("replica not skipped: %+v", s)
	}
	// status still reads a replica.
	rep, _ = r.Run(context.Background(), Inspect)
	noFailures(t, rep)
	if s := rep.Shards[0]; s.Skipped != "" || len(s.Tables) != 2 || s.Tables[0].Ahead != -1 {
		t.Fatalf("status on the replica: %+v", s)
	}
}

func TestLockTimeout(t *testing.T) {
	cfg := deliveryConfig()
	cfg.LockTimeout = 100 * time.Millisecond
	// hold starts a transaction on shard1 holding orders (and its
	// partitions) in mode; release ends it.
	hold := func(mode string) (release func()) {
		tx, err := connect(t, 1).Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(context.Background(), "LOCK TABLE orders IN "+mode+" MODE"); err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		return func() { once.Do(func() { tx.Rollback(context.Background()) }) }
	}
	cases := []struct {
		mode       string
		releaseIn  time.Duration // 0: held during the whole run
		wantPrefix string
	}{
		// Reading the bounds (pg_get_expr opens the partitions) already
		// waits for an ACCESS EXCLUSIVE lock, and gives up after lock_timeout.
		{"ACCESS EXCLUSIVE", 0, "shard shard1: table orders: read partitions of orders: "},
		// SHARE UPDATE EXCLUSIVE (a VACUUM, another ATTACH) lets reads
		// through and stops the DDL, which is retried 3 times, then fails.
		{"SHARE UPDATE EXCLUSIVE", 0, "shard shard1: table orders: create orders_p2026_01: "},
		// Released during the retries: the run succeeds.
		{"SHARE UPDATE EXCLUSIVE", 300 * time.Millisecond, ""},
	}
	for _, c := range cases {
		fresh(t)
		release := hold(c.mode)
		if c.releaseIn > 0 {
			time.AfterFunc(c.releaseIn, release)
		}
		start := time.Now()
		rep := runAt(t, cfg, "2026-01-15T00:00:00Z", "")
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("%s: run took %s behind the lock", c.mode, d)
		}
		release()
		f := rep.Failures()
		if c.wantPrefix == "" {
			noFailures(t, rep)
			if got := created(rep, 1, "orders"); len(got) != 5 {
				t.Errorf("shard1 orders after a retry: %v", got)
			}
			continue
		}
		if len(f) != 1 || !strings.HasPrefix(f[0], c.wantPrefix) || !strings.Contains(f[0], "lock timeout (SQLSTATE 55P03)") {
			t.Fatalf("%s: failures: %q", c.mode, f)
		}
		if got := created(rep, 1, "events"); len(got) != 5 {
			t.Errorf("%s: shard1 events still maintained: %v", c.mode, got)
		}
		if got := created(rep, 0, "orders"); len(got) != 5 {
			t.Errorf("%s: shard0 orders: %v", c.mode, got)
		}
	}
}
