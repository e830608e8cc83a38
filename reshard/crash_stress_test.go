//go:build stress

package reshard_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/reshard"
	"github.com/shardproxy/shardproxy/topology"
)

// TestReshardCrashResume stops the tool (its context cancelled, as an
// interrupt does) at chosen points of start, cutover and cleanup, runs the
// step again, and checks that every row is on exactly one shard, where the
// map says, and that no replication slot, publication, subscription,
// fence or stale bucket is left. A copy stopped midway is also aborted,
// leaving the sources as they were. Built with -tags stress (make
// stress-reshard); TestReshardTwoToFour stops the tool at three points in
// make test. SHARDPROXY_RESHARD_CRASH=all runs every point of
// reshard.Points, resharding 2 -> 4 -> 2 -> ... shards; without it, three.
func TestReshardCrashResume(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	n := rowsScale() / 4
	load := c.proxyConn(t, 0)
	for i := 0; i < n; i += 500 {
		var vals []string
		for j := i; j < i+500 && j < n; j++ {
			vals = append(vals, fmt.Sprintf("(%d, %d, %d)", j, userOf(j), j%7))
		}
		if _, err := load.Exec(ctx, "INSERT INTO orders (id, user_id, v) VALUES "+strings.Join(vals, ",")); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 100; i++ {
		if _, err := load.Exec(ctx, "INSERT INTO carts (session_id, n) VALUES ($1, $2)", fmt.Sprintf("s-%d", i), i); err != nil {
			t.Fatal(err)
		}
	}
	want := c.allRows(t)
	if len(want) != n+100 {
		t.Fatalf("%d rows loaded, want %d", len(want), n+100)
	}

	var starts, cutovers, cleanups []string
	points := []string{"start:subscribed", "cutover:published", "cleanup:batch"}
	if os.Getenv("SHARDPROXY_RESHARD_CRASH") == "all" {
		points = reshard.Points
	}
	for _, p := range points {
		switch {
		case strings.HasPrefix(p, "start:"):
			starts = append(starts, p)
		case strings.HasPrefix(p, "cutover:"):
			cutovers = append(cutovers, p)
		default:
			cleanups = append(cleanups, p)
		}
	}
	rounds := max(len(starts), len(cutovers), len(cleanups))
	var out bytes.Buffer
	defer func() { t.Log("tool output:\n" + out.String()) }()
	for r := 0; r < rounds; r++ {
		to := []string{"s0", "s1", "s2", "s3"}
		if r%2 == 1 {
			to = []string{"s0", "s1"}
		}
		pick := func(ps []string) string {
			if len(ps) == 0 {
				return ""
			}
			return ps[r%len(ps)]
		}
		crash := &crasher{}
		tool := c.tool(&out)
		tool.Hook = crash.hook
		if _, err := tool.Plan(ctx, to); err != nil {
			t.Fatal(err)
		}
		// start, stopped at a point, then again.
		if p := pick(starts); p != "" {
			cctx := crash.arm(p)
			err := tool.Start(cctx)
			if !crash.hit {
				t.Fatalf("round %d: start never reached %s (%v)", r, p, err)
			}
			if err == nil {
				t.Fatalf("round %d: start stopped at %s reported success", r, p)
			}
			t.Logf("round %d: start stopped at %s: %v", r, p, err)
			if r == 0 {
				// Abort the stopped copy: the sources stay whole, nothing left.
				if err := tool.Abort(ctx); err != nil {
					t.Fatalf("abort after a stopped start: %v", err)
				}
				c.checkRows(t, want, nil)
				if _, err := tool.Plan(ctx, to); err != nil {
					t.Fatal(err)
				}
				crash.arm(p) // and stop at the same point again
				if err := tool.Start(crash.ctx); err == nil || !crash.hit {
					t.Fatalf("round %d: start after abort: stopped %v, err %v", r, crash.hit, err)
				}
			}
		}
		crash.arm("")
		if err := tool.Start(ctx); err != nil {
			t.Fatalf("round %d: start again: %v", r, err)
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		if err := tool.WaitSynced(wctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		// cutover, stopped at a point, then again (or cleanup, when the
		// stopped run had recorded the cutover).
		if p := pick(cutovers); p != "" {
			_, err := tool.Cutover(crash.arm(p))
			if !crash.hit || err == nil {
				t.Fatalf("round %d: cutover stopped at %s: hit %v, err %v", r, p, crash.hit, err)
			}
			t.Logf("round %d: cutover stopped at %s: %v", r, p, err)
		}
		crash.arm("")
		st, err := tool.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Phase == reshard.Copying {
			if _, err := tool.Cutover(ctx); err != nil {
				t.Fatalf("round %d: cutover again: %v", r, err)
			}
		}
		// Between cutover and cleanup: a scatter read counts each row once.
		var cnt int64
		if err := c.proxyConn(t, 1).QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&cnt); err != nil || cnt != int64(n) {
			t.Errorf("round %d: count through the proxy before cleanup %d (%v), want %d", r, cnt, err, n)
		}
		if p := pick(cleanups); p != "" {
			err := tool.Cleanup(crash.arm(p), 100)
			if !crash.hit || err == nil {
				t.Fatalf("round %d: cleanup stopped at %s: hit %v, err %v", r, p, crash.hit, err)
			}
			t.Logf("round %d: cleanup stopped at %s: %v", r, p, err)
			crash.arm("")
			if err := c.proxyConn(t, 0).QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&cnt); err != nil || cnt != int64(n) {
				t.Errorf("round %d: count through the proxy mid-cleanup %d (%v), want %d", r, cnt, err, n)
			}
		}
		if err := tool.Cleanup(ctx, 100); err != nil {
			t.Fatalf("round %d: cleanup again: %v", r, err)
		}
		c.checkRows(t, want, to)
	}
}

type rowKey struct {
	table string
	id    string
}

// allRows reads every order and cart from every shard.
func (c *cluster) allRows(t *testing.T) map[rowKey][]string {
	t.Helper()
	ctx := context.Background()
	out := map[rowKey][]string{}
	for i := range c.set.Clusters {
		conn, err := pgx.Connect(ctx, c.set.Clusters[i].DSN("app"))
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range [][2]string{{"orders", "SELECT 'orders', id::text, v::text FROM orders"}, {"carts", "SELECT 'carts', session_id, n::text FROM carts"}} {
			var exists bool
			if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", q[0]).Scan(&exists); err != nil {
				t.Fatal(err)
			}
			if !exists {
				continue
			}
			rows, err := conn.Query(ctx, q[1])
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var tb, id, v string
				if err := rows.Scan(&tb, &id, &v); err != nil {
					t.Fatal(err)
				}
				k := rowKey{tb, id}
				out[k] = append(out[k], fmt.Sprintf("s%d:%s", i, v))
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
		}
		conn.Close(ctx)
	}
	return out
}

// checkRows compares the shards with want: every row once, with its value,
// on a shard of on (nil: anywhere); and nothing of a reshard left behind.
func (c *cluster) checkRows(t *testing.T, want map[rowKey][]string, on []string) {
	t.Helper()
	ctx := context.Background()
	got := c.allRows(t)
	for k, w := range want {
		g := got[k]
		if len(g) != 1 {
			t.Errorf("%s %s is on %d shards: %v", k.table, k.id, len(g), g)
			continue
		}
		if v := g[0][strings.Index(g[0], ":")+1:]; v != w[0][strings.Index(w[0], ":")+1:] {
			t.Errorf("%s %s: %s, want %s", k.table, k.id, g[0], w[0])
		}
		if on != nil && !containsShard(on, g[0]) {
			t.Errorf("%s %s is on %s, not on %v", k.table, k.id, g[0], on)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d rows on the shards, want %d", len(got), len(want))
	}
	tool := c.tool(nil)
	if left, err := tool.Leftovers(ctx); err != nil || len(left) > 0 {
		t.Errorf("left behind: %v %v", left, err)
	}
	store := topology.NewStore(c.meta, nil)
	conn, err := store.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	st, err := store.Load(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if st.Fence != nil || len(st.Stale) > 0 {
		t.Errorf("left behind: fence %+v, stale buckets %v", st.Fence, st.Stale)
	}
}

func containsShard(on []string, loc string) bool {
	for _, s := range on {
		if strings.HasPrefix(loc, s+":") {
			return true
		}
	}
	return false
}
