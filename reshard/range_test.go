package reshard_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/reshard"
	"github.com/shardproxy/shardproxy/router"
	"github.com/shardproxy/shardproxy/topology"
)

// TestReshardRange moves one month of a range table (monthly partitions,
// on s1) to a new shard s2 while a client inserts into that month and
// the next through one proxy and another updates rows of the month in
// transactions through the other: no client error, every acknowledged
// row exactly once with its updates, the month only on s2 after cleanup,
// the reference table copied to s2 by start (a join on s2 is right after
// the cutover), scatter reads exact between cutover and cleanup, no slot
// left, and the new range map served by both proxies.
func TestReshardRange(t *testing.T) {
	set := localpg.StartT(t, localpg.Options{N: 3, Database: "app", Settings: map[string]string{"wal_level": "logical"}})
	meta := set.Clusters[0].DSN("app")
	var sb strings.Builder
	sb.WriteString("database: app\nbackend_roles: shared\nusers: [{name: trusty, auth: trust}]\npool: {size: 8, acquire_timeout: 5s}\nshards:\n")
	for i, dsn := range set.DSNs() {
		fmt.Fprintf(&sb, "  - {name: s%d, dsn: %q}\n", i, dsn)
	}
	fmt.Fprintf(&sb, `buckets: 4
bucket_map:
  - {shard: s0, buckets: "0,2"}
  - {shard: s1, buckets: "1,3"}
tables:
  events:
    strategy: range
    key: created_at
    ranges:
      - {to: "2026-11-01", shard: s0}
      - {from: "2026-11-01", shard: s1}
  kinds: {strategy: reference}
metadata: {dsn: %q, poll: 200ms}
`, meta)
	f, err := config.Parse([]byte(sb.String()))
	if err != nil {
		t.Fatal(err)
	}
	topo, err := router.NewTopology(&f.Topology)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	months := []string{"2026-09-01", "2026-10-01", "2026-11-01", "2026-12-01", "2027-01-01", "2027-02-01"}
	for i := 0; i < 2; i++ {
		sqls := []string{
			"CREATE TABLE events (id bigint NOT NULL, created_at timestamptz NOT NULL, kind int NOT NULL, v int NOT NULL DEFAULT 0, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)",
			"CREATE TABLE kinds (id int PRIMARY KEY, name text NOT NULL)",
			// Written on the shards directly: through the proxy a
			// reference write goes to s2 too, which has no kinds
			// before start (docs/resharding.md).
			"INSERT INTO kinds (id, name) SELECT k, 'kind ' || k FROM generate_series(0, 9) k",
		}
		for j := 0; j+1 < len(months); j++ {
			sqls = append(sqls, fmt.Sprintf("CREATE TABLE events_p%s PARTITION OF events FOR VALUES FROM ('%s+00') TO ('%s+00')",
				strings.ReplaceAll(months[j][:7], "-", "_"), months[j], months[j+1]))
		}
		if _, err := exec(ctx, set.Clusters[i].DSN("app"), sqls...); err != nil {
			t.Fatal(err)
		}
	}
	var addrs []string
	var proxies []*proxy.Server
	for i := 0; i < 2; i++ {
		tp, _ := router.NewTopology(&f.Topology)
		srv, err := proxy.New(f.Proxy, tp, nil)
		if err != nil {
			t.Fatal(err)
		}
		pctx, cancel := context.WithCancel(ctx)
		mc := *f.Metadata
		mc.ProxyID = fmt.Sprintf("proxy-%d", i)
		if _, err := topology.Start(pctx, mc, mc.DSN, tp, srv, nil); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(pctx, ln)
		t.Cleanup(func() { cancel(); srv.Close() })
		proxies = append(proxies, srv)
		addrs = append(addrs, ln.Addr().String())
	}
	conn := func(i int) *pgx.Conn {
		c, err := pgx.Connect(ctx, "postgres://trusty@"+addrs[i]+"/app?sslmode=disable")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	// Data: 300 rows in each of October (s0), November and December
	// (s1); kinds 0-9. Row id i is at day (i mod 30) of its month.
	at := func(id int64) string {
		month := []string{"2026-10", "2026-11", "2026-12"}[id%3]
		return fmt.Sprintf("%s-%02d %02d:%02d:00+00", month, 1+id/3%28, id%24, id%60)
	}
	inNov := func(id int64) bool { return id%3 == 1 }
	c0 := conn(0)
	const base = 900
	for i := int64(0); i < base; i += 100 {
		var vals []string
		for j := i; j < i+100; j++ {
			vals = append(vals, fmt.Sprintf("(%d, '%s', %d)", j, at(j), j%10))
		}
		if _, err := c0.Exec(ctx, "INSERT INTO events (id, created_at, kind) VALUES "+strings.Join(vals, ", ")); err != nil {
			t.Fatal(err)
		}
	}
	shardInt := func(i int, sql string) int64 {
		t.Helper()
		c, err := pgx.Connect(ctx, set.Clusters[i].DSN("app"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var n int64
		if err := c.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatalf("shard %d: %s: %v", i, sql, err)
		}
		return n
	}
	if a, b := shardInt(0, "SELECT count(*) FROM events"), shardInt(1, "SELECT count(*) FROM events"); a != base/3 || b != 2*base/3 {
		t.Fatalf("initial placement %d + %d", a, b)
	}
	const nov = "created_at >= '2026-11-01+00' AND created_at < '2026-12-01+00'"

	var out bytes.Buffer
	defer func() { t.Log("tool output:\n" + out.String()) }()
	tool := &reshard.Tool{Topo: topo, Store: topology.NewStore(meta, nil), Out: &out, Hold: 10 * time.Second}
	if _, err := tool.PlanRange(ctx, "events", "2026-10-15", "2026-11-15", "s2"); err == nil || !strings.Contains(err.Error(), "more than one interval") {
		t.Fatalf("a range across two intervals of the map: %v, want refused", err)
	}
	if _, err := tool.PlanRange(ctx, "events", "2026-11-01", "2026-12-01", "s2"); err != nil {
		t.Fatal(err)
	}

	// The workload: inserts into November and December through proxy 0,
	// updates of November rows in transactions through proxy 1.
	var mu sync.Mutex
	acked := map[int64]int64{}
	for i := int64(0); i < base; i++ {
		acked[i] = 0
	}
	var lat, latNov, latDec []time.Duration // all, the moving month, the next (stays on s1)
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	ins, upd := conn(0), conn(1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for id := int64(base); ; id++ {
			select {
			case <-done:
				return
			default:
			}
			if id%3 == 0 {
				continue // October: not moving, not needed here
			}
			t0 := time.Now()
			if _, err := ins.Exec(ctx, "INSERT INTO events (id, created_at, kind) VALUES ($1, $2, $3)", id, at(id), id%10); err != nil {
				fail(fmt.Errorf("insert %d: %w", id, err))
				return
			}
			d := time.Since(t0)
			mu.Lock()
			acked[id] = 0
			lat = append(lat, d)
			if inNov(id) {
				latNov = append(latNov, d)
			} else {
				latDec = append(latDec, d)
			}
			mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewSource(9))
		for {
			select {
			case <-done:
				return
			default:
			}
			id := 3*rng.Int63n(base/3) + 1 // a November row of the initial data
			tx, err := upd.Begin(ctx)
			if err != nil {
				fail(err)
				return
			}
			tag, err := tx.Exec(ctx, "UPDATE events SET v = v + 1 WHERE id = $1 AND created_at = $2", id, at(id))
			if err == nil {
				err = tx.Commit(ctx)
			}
			if err != nil {
				fail(fmt.Errorf("update %d: %w", id, err))
				return
			}
			if tag.RowsAffected() != 1 {
				fail(fmt.Errorf("update of event %d changed %d rows", id, tag.RowsAffected()))
				return
			}
			mu.Lock()
			acked[id]++
			mu.Unlock()
		}
	}()
	stop := func() {
		close(done)
		wg.Wait()
		if firstErr != nil {
			t.Fatalf("client error: %v", firstErr)
		}
	}
	expected := func() map[int64]int64 {
		mu.Lock()
		defer mu.Unlock()
		m := make(map[int64]int64, len(acked))
		for k, v := range acked {
			m[k] = v
		}
		return m
	}

	if err := tool.Start(ctx); err != nil {
		stop()
		t.Fatal(err)
	}
	if n := shardInt(2, "SELECT count(*) FROM kinds"); n != 10 {
		t.Errorf("start copied %d kinds to s2, want 10", n)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := tool.WaitSynced(wctx); err != nil {
		stop()
		t.Fatal(err)
	}
	// A reference write while the move runs reaches the new shard too.
	if _, err := c0.Exec(ctx, "INSERT INTO kinds (id, name) VALUES (10, 'kind 10')"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	pause, err := tool.Cutover(wctx)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	want := expected()
	if !strings.Contains(out.String(), "verify: 1 table ranges") || !strings.Contains(out.String(), ", 0 differ") {
		t.Fatalf("the cutover did not compare the moved range:\n%s", out.String())
	}
	for i, p := range proxies {
		if v := p.TopologyVersion(); v < 2 {
			t.Errorf("proxy %d serves version %d", i, v)
		}
	}
	// Between cutover and cleanup s1 still holds the November rows: reads
	// across shards hide them; reads of November go to s2 alone.
	var wantNov, sum int64
	for id, v := range want {
		if inNov(id) {
			wantNov++
		}
		sum += v
	}
	checkReads := func(stage string) {
		t.Helper()
		for i := range proxies {
			c := conn(i)
			for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
				var n, s int64
				if err := c.QueryRow(ctx, "SELECT count(*), sum(v) FROM events", mode).Scan(&n, &s); err != nil || n != int64(len(want)) || s != sum {
					t.Errorf("%s: proxy %d (mode %v): count %d sum %d (%v), want %d and %d", stage, i, mode, n, s, err, len(want), sum)
				}
				if err := c.QueryRow(ctx, "SELECT count(*) FROM events WHERE "+nov, mode).Scan(&n); err != nil || n != wantNov {
					t.Errorf("%s: proxy %d (mode %v): November %d (%v), want %d", stage, i, mode, n, err, wantNov)
				}
				// A join with the reference table, on the new shard alone.
				if err := c.QueryRow(ctx, "SELECT count(*) FROM events e JOIN kinds k ON k.id = e.kind WHERE k.name <> '' AND e."+nov, mode).Scan(&n); err != nil || n != wantNov {
					t.Errorf("%s: proxy %d (mode %v): November joined with kinds %d (%v), want %d", stage, i, mode, n, err, wantNov)
				}
			}
			var k int64
			if err := c.QueryRow(ctx, "SELECT count(*) FROM kinds").Scan(&k); err != nil || k != 11 {
				t.Errorf("%s: proxy %d: %d kinds (%v), want 11", stage, i, k, err)
			}
		}
	}
	if shardInt(1, "SELECT count(*) FROM events WHERE "+nov) == 0 {
		t.Fatal("s1 holds no November rows before cleanup: nothing to hide")
	}
	checkReads("before cleanup")
	// The shard-side guard on s1 (a partitioned table: the trigger is on
	// every partition): a direct write of a November row fails with
	// 55000; a December row is written (and rolled back).
	func() {
		src, err := pgx.Connect(ctx, set.Clusters[1].DSN("app"))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close(ctx)
		_, err = src.Exec(ctx, "INSERT INTO events (id, created_at, kind) VALUES (-1, '2026-11-15 00:00:00+00', 1)")
		if pe := new(pgconn.PgError); !errors.As(err, &pe) || pe.Code != "55000" {
			t.Errorf("direct insert of a moved November row on s1: %v, want SQLSTATE 55000", err)
		}
		_, err = src.Exec(ctx, "UPDATE events SET v = v WHERE "+nov)
		if pe := new(pgconn.PgError); !errors.As(err, &pe) || pe.Code != "55000" {
			t.Errorf("direct update of moved November rows on s1: %v, want SQLSTATE 55000", err)
		}
		tx, err := src.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO events (id, created_at, kind) VALUES (-1, '2026-12-15 00:00:00+00', 1)"); err != nil {
			t.Errorf("direct insert of a December row on s1: %v", err)
		}
		tx.Rollback(ctx)
	}()
	if err := tool.Cleanup(ctx, 100); err != nil {
		t.Fatal(err)
	}
	checkReads("after cleanup")
	for i, p := range proxies {
		deadline := time.Now().Add(10 * time.Second)
		for p.StaleRangeCount() > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if n := p.StaleRangeCount(); n > 0 {
			t.Errorf("proxy %d still hides %d stale ranges after cleanup", i, n)
		}
	}
	if left, err := tool.Leftovers(ctx); err != nil || len(left) > 0 {
		t.Fatalf("leftovers %v %v", left, err)
	}
	for i := range set.Clusters {
		if n := shardInt(i, "SELECT count(*) FROM pg_replication_slots"); n != 0 {
			t.Errorf("shard %d keeps %d replication slots", i, n)
		}
	}
	// Placement by the new map: October on s0, November on s2 only,
	// December on s1.
	if n := shardInt(1, "SELECT count(*) FROM events WHERE "+nov); n != 0 {
		t.Errorf("s1 still holds %d November rows", n)
	}
	if n := shardInt(2, "SELECT count(*) FROM events WHERE NOT ("+nov+")"); n != 0 {
		t.Errorf("s2 holds %d rows outside November", n)
	}
	if n := shardInt(2, "SELECT count(*) FROM events_p2026_11"); n != wantNov {
		t.Errorf("s2's November partition holds %d rows, want %d", n, wantNov)
	}
	got := map[int64]int64{}
	for i := range set.Clusters {
		c, err := pgx.Connect(ctx, set.Clusters[i].DSN("app"))
		if err != nil {
			t.Fatal(err)
		}
		rows, _ := c.Query(ctx, "SELECT id, v FROM events")
		for rows.Next() {
			var id, v int64
			if err := rows.Scan(&id, &v); err != nil {
				t.Fatal(err)
			}
			if _, dup := got[id]; dup {
				t.Errorf("event %d is on two shards", id)
			}
			got[id] = v
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		c.Close(ctx)
	}
	if len(got) != len(want) {
		t.Errorf("%d events on the shards, %d acknowledged", len(got), len(want))
	}
	for id, v := range want {
		if g, ok := got[id]; !ok {
			t.Errorf("acknowledged event %d lost", id)
		} else if g != v {
			t.Errorf("event %d: v = %d, %d updates acknowledged", id, g, v)
		}
	}
	// The new range map is in the metadata, and a proxy started now
	// routes by it.
	st, err := tool.Load(ctx)
	if err != nil || st.Phase != reshard.Cleaned {
		t.Fatalf("after cleanup: %+v %v", st, err)
	}
	for i, p := range proxies {
		ivs := p.Ranges("events")
		if len(ivs) != 3 || topo.Shards[ivs[1].Shard].Name != "s2" {
			t.Errorf("proxy %d routes events by %v", i, ivs)
		}
	}
	mu.Lock()
	q, qn, qd := quantiles(lat), quantiles(latNov), quantiles(latDec)
	nn, nd := len(latNov), len(latDec)
	mu.Unlock()
	t.Logf("inserts during the move: %d; latency p50 %s p99 %s max %s", len(lat), q[0], q[1], q[2])
	t.Logf("inserts to the moving month: %d; latency p50 %s p99 %s max %s", nn, qn[0], qn[1], qn[2])
	t.Logf("inserts to the next month (stays on the source): %d; latency p50 %s p99 %s max %s", nd, qd[0], qd[1], qd[2])
	t.Logf("cutover: writes held %s (fence %s, drain %s, catch-up %s, publish %s, proxies %s); before: catch-up %s; after: verify %s",
		pause.Total, pause.Fence, pause.Drain, pause.CatchUp, pause.Publish, pause.Ack, pause.PreCatchUp, pause.Verify)
}

func quantiles(lat []time.Duration) [3]time.Duration {
	s := append([]time.Duration(nil), lat...)
	if len(s) == 0 {
		return [3]time.Duration{}
	}
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return [3]time.Duration{s[len(s)/2], s[int(0.99*float64(len(s)-1))], s[len(s)-1]}
}
