package main

// The coordinator measure (issue #17): reads the proxy's merge cannot
// answer, which it sends to a coordinator database (postgres_fdw over the
// shards, provisioned by the proxy itself), timed against the same query on
// one plain Postgres holding every shard's rows.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/localpg"
)

const (
	// nUsers users, spread over the shards by the hash of their id.
	nUsers = 100000
	// countries is users.country's domain (a constant SQL array).
	countries = `'{AR,AU,BR,CA,CN,DE,EG,ES,FR,GB,ID,IN,IT,JP,KR,MX,NG,PL,TR,US}'::text[]`
	// plainDB (every row in one Postgres) and coordDB (the proxy's
	// coordinator) live on a fifth cluster.
	plainDB = "plain"
	coordDB = "shardproxy_coordinator"
)

// coordQuery is one read the router refuses to merge.
type coordQuery struct {
	name, sql string
}

func coordQueries() []coordQuery {
	return []coordQuery{
		{name: "join not on the key: orders x users ON users.referrer_id = orders.user_id, one month, grouped by country",
			sql: `SELECT u.country, count(*), sum(o.total) FROM orders o JOIN users u ON u.referrer_id = o.user_id
WHERE o.created_at >= '2025-06-01 00:00:00+00' AND o.created_at < '2025-07-01 00:00:00+00'
GROUP BY u.country ORDER BY u.country`},
		{name: "percentile: percentile_cont(0.5) WITHIN GROUP (ORDER BY total)",
			sql: `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders`},
		{name: "global window: rank() OVER (ORDER BY total DESC, id) LIMIT 100",
			sql: `SELECT id, total, rank() OVER (ORDER BY total DESC, id) FROM orders ORDER BY total DESC, id LIMIT 100`},
		{name: "grouped subquery: count(*) FROM (... GROUP BY user_id HAVING count(*) > 12) t",
			sql: `SELECT count(*) FROM (SELECT user_id FROM orders GROUP BY user_id HAVING count(*) > 12) t`},
	}
}

// startPlain starts the fifth cluster: shared_buffers 1GB, four times a
// shard's, for four times the rows (all in memory, as on the shards).
func startPlain(ctx context.Context, o options) (*localpg.Set, error) {
	dir := ""
	if o.dir != "" {
		dir = filepath.Join(o.dir, "plain")
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	settings := map[string]string{"shared_buffers": "1GB", "max_wal_size": "4GB"}
	set, err := localpg.Start(ctx, localpg.Options{N: 1, Dir: dir, Ports: ports, Database: plainDB, Settings: settings})
	if err != nil {
		return nil, fmt.Errorf("plain cluster: %w", err)
	}
	if err := set.Clusters[0].CreateDatabase(ctx, coordDB); err != nil {
		set.Stop()
		return nil, fmt.Errorf("coordinator database: %w", err)
	}
	return set, nil
}

// loadPlain fills the plain database with the union of the shards' orders
// and users (binary COPY from each shard straight into it), unless a
// previous -keep run left exactly that many rows.
func loadPlain(ctx context.Context, shards []string, dsn string, rows int) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var have, haveUsers int64
	if err := c.QueryRow(ctx, `SELECT coalesce((SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass('orders')), -1),
  coalesce((SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass('users')), -1)`).Scan(&have, &haveUsers); err != nil {
		return fmt.Errorf("plain: %w", err)
	}
	if have == int64(rows*len(shards)) && haveUsers == nUsers {
		if err := c.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&have); err != nil {
			return fmt.Errorf("plain: %w", err)
		}
		if have == int64(rows*len(shards)) {
			fmt.Printf("  plain: reusing %d rows\n", have)
			return nil
		}
	}
	for _, sql := range []string{
		"DROP TABLE IF EXISTS orders",
		"DROP TABLE IF EXISTS users",
		"CREATE TABLE orders (id bigint NOT NULL, user_id bigint NOT NULL, total numeric(10,2) NOT NULL, " +
			"created_at timestamptz NOT NULL, status text NOT NULL)",
		"CREATE TABLE users (id bigint PRIMARY KEY, country text NOT NULL, referrer_id bigint NOT NULL)",
	} {
		if _, err := c.Exec(ctx, sql); err != nil {
			return fmt.Errorf("plain: %s: %w", sql, err)
		}
	}
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i, sdsn := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = copyShard(ctx, sdsn, dsn)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, sql := range []string{
		"CREATE INDEX orders_created_at_idx ON orders (created_at)",
		"VACUUM ANALYZE orders",
		"VACUUM ANALYZE users",
	} {
		if _, err := c.Exec(ctx, sql); err != nil {
			return fmt.Errorf("plain: %s: %w", sql, err)
		}
	}
	return nil
}

// copyShard copies one shard's orders and users into the plain database.
func copyShard(ctx context.Context, from, to string) error {
	src, err := pgconn.Connect(ctx, from)
	if err != nil {
		return err
	}
	defer src.Close(ctx)
	dst, err := pgconn.Connect(ctx, to)
	if err != nil {
		return err
	}
	defer dst.Close(ctx)
	for _, table := range []string{"orders", "users"} {
		t := pgx.Identifier{table}.Sanitize()
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			_, err := src.CopyTo(ctx, pw, "COPY "+t+" TO STDOUT (FORMAT binary)")
			pw.CloseWithError(err)
			done <- err
		}()
		_, err := dst.CopyFrom(ctx, pr, "COPY "+t+" FROM STDIN (FORMAT binary)")
		pr.CloseWithError(err)
		if err2 := <-done; err == nil {
			err = err2
		}
		if err != nil {
			return fmt.Errorf("copy %s to the plain database: %w", table, err)
		}
	}
	return nil
}

// coordBench times coordQueries through the proxy and on the plain
// Postgres, interleaved, in pgx's default extended protocol (answers are
// checked in both protocols).
type coordBench struct {
	px  *proxyProc
	n   int
	qs  []coordQuery
	res []coordResult
	// proxy memory around the measure
	rssBefore, maxRSS, hwmAfter, heapAfter int64
}

type coordResult struct {
	route   string // the proxy's NOTICE for EXPLAIN, or the top of its plan
	refused string
	rows    int
	proxy   series
	plain   series
}

func (cb *coordBench) run(ctx context.Context, plainDSN string) error {
	fmt.Printf("coordinator: %d queries, %d timed runs each through the proxy and on the plain Postgres\n", len(cb.qs), cb.n)
	proxyURL := fmt.Sprintf("postgres://bench@%s/%s?sslmode=disable", cb.px.addr, database)
	conns := map[string][2]*pgx.Conn{} // protocol -> proxy, plain
	for _, p := range protocols {
		pc, err := dial(ctx, proxyURL, p.mode)
		if err != nil {
			return fmt.Errorf("connect through the proxy: %w", err)
		}
		defer pc.Close(ctx)
		dc, err := dial(ctx, plainDSN, p.mode)
		if err != nil {
			return fmt.Errorf("connect to the plain Postgres: %w", err)
		}
		defer dc.Close(ctx)
		conns[p.name] = [2]*pgx.Conn{pc, dc}
	}
	cb.res = make([]coordResult, len(cb.qs))
	if err := cb.routes(ctx, proxyURL); err != nil {
		return err
	}
	// Check: the same rows, byte for byte on the wire (text in the simple
	// protocol, binary in the extended one), as the plain Postgres's.
	for qi, q := range cb.qs {
		r := &cb.res[qi]
		for _, p := range protocols {
			want, err := rawRows(ctx, conns[p.name][1], q.sql)
			if err != nil {
				return fmt.Errorf("plain Postgres: %s: %w", q.name, err)
			}
			got, err := rawRows(ctx, conns[p.name][0], q.sql)
			if err != nil {
				r.refused = err.Error()
				fmt.Printf("check %s %s: refused: %v\n", q.name, p.name, err)
				break
			}
			if !slices2DEqual(got, want) {
				fmt.Printf("check %s %s: WRONG ANSWER (%d rows, want %d)\n", q.name, p.name, len(got), len(want))
				os.Exit(1)
			}
			r.rows = len(got)
			fmt.Printf("check %s %s: ok (%d rows, equal to the plain Postgres's)\n", q.name, p.name, len(got))
		}
	}
	// Time, sampling the proxy's RSS meanwhile.
	cb.rssBefore, _ = procMem(cb.px.pid)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, _ := procMem(cb.px.pid); rss > cb.maxRSS {
				cb.maxRSS = rss
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() {
		close(done)
		wg.Wait()
		_, cb.hwmAfter = procMem(cb.px.pid)
		cb.heapAfter = metric(cb.px.admin, "go_memstats_heap_inuse_bytes")
	}()
	t0 := time.Now()
	cs := conns["extended"]
	for qi, q := range cb.qs {
		r := &cb.res[qi]
		if r.refused != "" {
			continue
		}
		// One untimed round, then n rounds, the targets' order alternating.
		for round := -1; round < cb.n; round++ {
			for k := 0; k < 2; k++ {
				t := (max(round, 0) + k) % 2
				c0 := procCPU(cb.px.pid)
				d, _, err := timeQuery(ctx, cs[t], q.sql)
				cpu := procCPU(cb.px.pid) - c0
				if err != nil {
					return fmt.Errorf("%s (target %d): %w", q.name, t, err)
				}
				if round < 0 {
					continue
				}
				if t == 0 {
					r.proxy.d = append(r.proxy.d, d)
					r.proxy.cpu += cpu
				} else {
					r.plain.d = append(r.plain.d, d)
				}
			}
		}
		fmt.Printf("  %s: %d rounds done (%.0fs)\n", q.name, cb.n, time.Since(t0).Seconds())
	}
	return nil
}

// routes records how the proxy runs each query: its EXPLAIN's NOTICE when
// the statement goes to the coordinator, else the top of the plan.
func (cb *coordBench) routes(ctx context.Context, url string) error {
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		return err
	}
	var notices []string
	cc.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	for qi, q := range cb.qs {
		notices = nil
		rows, err := rawRows(ctx, c, "EXPLAIN (COSTS OFF) "+q.sql)
		r := &cb.res[qi]
		switch {
		case err != nil:
			r.route = "EXPLAIN: " + err.Error()
		case slicesContainsSub(notices, "coordinator"):
			r.route = "coordinator"
		case len(rows) > 0:
			r.route = "proxy: " + strings.TrimSpace(string(rows[0][0]))
		}
		fmt.Printf("route %s: %s\n", q.name, r.route)
		for _, l := range rows {
			fmt.Printf("    %s\n", l[0])
		}
	}
	return nil
}

func slicesContainsSub(ss []string, sub string) bool {
	for _, s := range ss {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// rawRows runs sql and returns every row's values as sent on the wire.
func rawRows(ctx context.Context, c *pgx.Conn, sql string) ([][][]byte, error) {
	rows, err := c.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	var out [][][]byte
	for rows.Next() {
		var row [][]byte
		for _, v := range rows.RawValues() {
			row = append(row, bytes.Clone(v))
		}
		out = append(out, row)
	}
	rows.Close()
	return out, rows.Err()
}

func slices2DEqual(a, b [][][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if !bytes.Equal(a[i][j], b[i][j]) || (a[i][j] == nil) != (b[i][j] == nil) {
				return false
			}
		}
	}
	return true
}

func (cb *coordBench) report(rows int) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/1e6) }
	fmt.Printf("\n### Coordinator reads, ms (median / p95 of %d runs, extended protocol), %d shards x %d rows vs one Postgres with all %d\n\n",
		cb.n, nShards, rows, nShards*rows)
	fmt.Printf("| query | route | rows | through the proxy | one plain Postgres | ratio (medians) | proxy CPU per query |\n|---|---|---|---|---|---|---|\n")
	for qi, q := range cb.qs {
		r := cb.res[qi]
		if r.refused != "" {
			fmt.Printf("| %s | refused: %s | | | | | |\n", q.name, strings.ReplaceAll(r.refused, "|", "/"))
			continue
		}
		pm, pp := percentiles(r.proxy.d)
		dm, dp := percentiles(r.plain.d)
		cpu := float64(r.proxy.cpu) / float64(max(len(r.proxy.d), 1)) / 1e6
		fmt.Printf("| %s | %s | %d | %s / %s | %s / %s | %.2fx | %.1f ms |\n", q.name, strings.ReplaceAll(r.route, "|", "/"), r.rows,
			ms(pm), ms(pp), ms(dm), ms(dp), ratio(pm, dm), cpu)
	}
	fmt.Printf("\nproxy memory over the coordinator measure: VmRSS %s before, at most %s during (sampled every 20 ms), VmHWM %s after, Go heap in use %s after\n",
		mib(cb.rssBefore), mib(cb.maxRSS), mib(cb.hwmAfter), mib(cb.heapAfter))
}
