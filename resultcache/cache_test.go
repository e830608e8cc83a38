package resultcache

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/localredis"
	"github.com/shardproxy/shardproxy/parser"
)

var testRedis *localredis.Server

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	s, err := localredis.Start(context.Background())
	if err != nil {
		if localpg.InCI() {
			fmt.Fprintln(os.Stderr, "FAIL: cannot start redis-server in CI:", err)
			return 1
		}
		fmt.Fprintln(os.Stderr, "redis tests will skip:", err)
	} else {
		testRedis = s
		defer s.Close()
	}
	return m.Run()
}

var users = []parser.Table{{Name: "users"}}

func key(s string) []byte { return []byte("app\x00db\x00\x00\x00" + s) }

// read runs one Read whose query "returns" answer, counting executions.
func read(c *Cache, k string, r *Rule, answer string, runs *atomic.Int64) string {
	got, _ := c.Read(context.Background(), key(k), users, r, func() ([]byte, error) {
		runs.Add(1)
		return []byte(answer), nil
	})
	if got == nil {
		return answer // run's reply went to the client
	}
	return string(got)
}

func newCache(t *testing.T, cfg Config) *Cache {
	t.Helper()
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c := New(cfg, nil)
	t.Cleanup(c.Close)
	return c
}

func TestConsolidateBurst(t *testing.T) {
	c := newCache(t, Config{})
	release := make(chan struct{})
	started := make(chan struct{})
	var runs atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the leader: blocks until the followers queue up
		defer wg.Done()
		c.Read(context.Background(), key("q"), users, nil, func() ([]byte, error) {
			runs.Add(1)
			close(started)
			<-release
			return []byte("rows"), nil
		})
	}()
	<-started
	const followers = 20
	got := make([]string, followers)
	for i := range followers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = read(c, "q", nil, "own", &runs)
		}()
	}
	for c.waiting(key("q")) < followers {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if n := runs.Load(); n != 1 {
		t.Errorf("the query ran %d times, want 1", n)
	}
	for i, g := range got {
		if g != "rows" {
			t.Errorf("follower %d got %q", i, g)
		}
	}
	if n := c.Stats().Consolidated; n != followers {
		t.Errorf("consolidated = %d, want %d", n, followers)
	}
	// Nothing in flight now: the next read runs.
	if read(c, "q", nil, "again", &runs); runs.Load() != 2 {
		t.Errorf("a read after the flight did not run")
	}
}

func TestConsolidateNotAcrossWrite(t *testing.T) {
	c := newCache(t, Config{})
	release, started := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	var runs atomic.Int64
	go func() {
		defer close(done)
		c.Read(context.Background(), key("q"), users, nil, func() ([]byte, error) {
			runs.Add(1)
			close(started)
			<-release
			return []byte("before"), nil
		})
	}()
	<-started
	c.Invalidate(context.Background(), []parser.Table{{Schema: "public", Name: "users"}})
	// A client that committed a write must not get the older flight's answer.
	if got := read(c, "q", nil, "after", &runs); got != "after" || runs.Load() != 2 {
		t.Errorf("read after a write got %q (runs %d), want its own read", got, runs.Load())
	}
	// Another table's write does not matter.
	close(release)
	<-done
}

func TestUnsharedReply(t *testing.T) {
	c := newCache(t, Config{})
	release, started := make(chan struct{}), make(chan struct{})
	var runs atomic.Int64
	go c.Read(context.Background(), key("q"), users, nil, func() ([]byte, error) {
		runs.Add(1)
		close(started)
		<-release
		return nil, nil // an error, or too large: not shared
	})
	<-started
	res := make(chan string)
	go func() { res <- read(c, "q", nil, "own", &runs) }()
	for c.waiting(key("q")) < 1 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	if got := <-res; got != "own" || runs.Load() != 2 {
		t.Errorf("follower got %q after %d runs, want its own read", got, runs.Load())
	}
}

func memRule(ttl time.Duration) Config {
	return Config{Rules: []Rule{{Name: "users", Tables: []string{"users"}, TTL: ttl}}}
}

func TestMemoryCache(t *testing.T) {
	c := newCache(t, memRule(time.Minute))
	r := c.rules[0]
	var runs atomic.Int64
	if got := read(c, "q", r, "v1", &runs); got != "v1" {
		t.Fatalf("first read %q", got)
	}
	if got := read(c, "q", r, "v2", &runs); got != "v1" || runs.Load() != 1 {
		t.Fatalf("second read %q after %d runs, want the cached v1", got, runs.Load())
	}
	if got := read(c, "other", r, "o", &runs); got != "o" {
		t.Fatalf("another key got %q", got)
	}
	c.Invalidate(context.Background(), []parser.Table{{Name: "orders"}})
	if got := read(c, "q", r, "v2", &runs); got != "v1" {
		t.Fatalf("a write on another table invalidated the entry (%q)", got)
	}
	c.Invalidate(context.Background(), []parser.Table{{Schema: "public", Name: "users"}})
	if got := read(c, "q", r, "v3", &runs); got != "v3" {
		t.Fatalf("read after a write on users got %q, want v3", got)
	}
	if got := read(c, "q", r, "v4", &runs); got != "v3" {
		t.Fatalf("refilled entry: %q", got)
	}
	c.Clear(context.Background())
	if got := read(c, "q", r, "v5", &runs); got != "v5" {
		t.Fatalf("read after CLEAR got %q", got)
	}
	rs := c.Rules()[0]
	if rs.Hits != 3 || rs.Misses != 4 || rs.Fills != 4 || rs.Entries != 1 {
		t.Errorf("rule stats %+v, want 3 hits, 4 misses, 4 fills, 1 entry", rs)
	}
}

func TestMemoryTTLAndRefresh(t *testing.T) {
	c := newCache(t, memRule(200*time.Millisecond))
	r := c.rules[0]
	var runs atomic.Int64
	read(c, "q", r, "v1", &runs)
	time.Sleep(170 * time.Millisecond) // in the last 20 %: one client refreshes
	if got := read(c, "q", r, "v2", &runs); got != "v2" || runs.Load() != 2 {
		t.Fatalf("refresh ahead: got %q after %d runs", got, runs.Load())
	}
	if got := read(c, "q", r, "v3", &runs); got != "v2" {
		t.Fatalf("after refresh got %q", got)
	}
	time.Sleep(250 * time.Millisecond)
	c.cfg.RefreshAhead = -1
	if got := read(c, "q", r, "v4", &runs); got != "v4" {
		t.Fatalf("expired entry served: %q", got)
	}
}

func TestMemoryLRU(t *testing.T) {
	cfg := memRule(time.Minute)
	cfg.MemoryMB = 1
	c := newCache(t, cfg)
	r := c.rules[0]
	var runs atomic.Int64
	big := string(make([]byte, 60<<10))
	for i := range 40 {
		read(c, fmt.Sprint(i), r, big, &runs)
	}
	st := c.Stats()
	if st.Bytes > 1<<20 || st.Entries >= 40 || st.Entries < 10 {
		t.Errorf("memory backend holds %d entries, %d bytes; want under 1 MiB", st.Entries, st.Bytes)
	}
	if got := read(c, "39", r, "x", &runs); got != big {
		t.Errorf("most recent entry evicted")
	}
	if got := read(c, "0", r, "x", &runs); got != "x" {
		t.Errorf("oldest entry kept")
	}
}

func redisConfig(t *testing.T) Config {
	if testRedis == nil {
		t.Skip("no redis-server")
	}
	return Config{Backend: "redis", Redis: RedisConfig{Addr: testRedis.Addr(), Prefix: t.Name() + ":"},
		Rules: []Rule{{Name: "users", Tables: []string{"users"}, TTL: time.Minute}}}
}

func TestRedisSharedAndInvalidated(t *testing.T) {
	cfg := redisConfig(t)
	a, b := newCache(t, cfg), newCache(t, cfg)
	var runs atomic.Int64
	if got := read(a, "q", a.rules[0], "v1", &runs); got != "v1" {
		t.Fatal(got)
	}
	if got := read(b, "q", b.rules[0], "v2", &runs); got != "v1" || runs.Load() != 1 {
		t.Fatalf("proxy b got %q after %d runs, want a's v1", got, runs.Load())
	}
	b.Invalidate(context.Background(), users)
	if got := read(a, "q", a.rules[0], "v3", &runs); got != "v3" {
		t.Fatalf("proxy a after b's write got %q, want v3", got)
	}
	// b's invalidation reached a's consolidation through pub/sub.
	deadline := time.Now().Add(5 * time.Second)
	for {
		a.mu.Lock()
		g := a.gens[parser.Table{Name: "users"}]
		a.mu.Unlock()
		if g > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the invalidation message did not reach proxy a")
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.Clear(context.Background())
	if got := read(b, "q", b.rules[0], "v4", &runs); got != "v4" {
		t.Fatalf("after CACHE CLEAR on a, b got %q", got)
	}
}

func TestRedisFillLock(t *testing.T) {
	cfg := redisConfig(t)
	a, b := newCache(t, cfg), newCache(t, cfg)
	release, started := make(chan struct{}), make(chan struct{})
	var runs atomic.Int64
	go a.Read(context.Background(), key("q"), users, a.rules[0], func() ([]byte, error) {
		runs.Add(1)
		close(started)
		<-release
		return []byte("filled"), nil
	})
	<-started
	res := make(chan string)
	go func() { res <- read(b, "q", b.rules[0], "own", &runs) }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if got := <-res; got != "filled" || runs.Load() != 1 {
		t.Errorf("proxy b got %q after %d runs, want a's fill", got, runs.Load())
	}
}

func TestRedisDown(t *testing.T) {
	cfg := redisConfig(t)
	c := newCache(t, cfg)
	r := c.rules[0]
	var runs atomic.Int64
	read(c, "q", r, "v1", &runs)
	testRedis.Stop()
	for i := range 5 {
		if got := read(c, "q", r, fmt.Sprint("pg", i), &runs); got != fmt.Sprint("pg", i) {
			t.Fatalf("with redis down got %q", got)
		}
	}
	c.Invalidate(context.Background(), users) // pending until Redis is back
	st := c.Stats()
	if st.BackendErrors == 0 || st.BackendUp {
		t.Errorf("redis down: errors %d, up %v", st.BackendErrors, st.BackendUp)
	}
	if err := testRedis.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(downFor + 300*time.Millisecond)
	read(c, "q", r, "v2", &runs)
	if got := read(c, "q", r, "v3", &runs); got != "v2" {
		t.Errorf("after redis came back got %q, want the cached v2", got)
	}
	if !c.Stats().BackendUp {
		t.Error("backend not up again")
	}
}

func TestLeaderPanics(t *testing.T) {
	c := newCache(t, Config{})
	release, started := make(chan struct{}), make(chan struct{})
	go func() {
		defer func() { recover() }()
		c.Read(context.Background(), key("q"), users, nil, func() ([]byte, error) {
			close(started)
			<-release
			panic("boom")
		})
	}()
	<-started
	var runs atomic.Int64
	res := make(chan string)
	go func() { res <- read(c, "q", nil, "own", &runs) }()
	for c.waiting(key("q")) < 1 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	select {
	case got := <-res:
		if got != "own" {
			t.Errorf("follower got %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follower still waits for a leader that panicked")
	}
}

// TestConsolidateNoAlloc: a read that meets no other read in flight and no
// rule costs no allocation (flights are reused).
func TestConsolidateNoAlloc(t *testing.T) {
	c := newCache(t, Config{})
	k := key("SELECT name FROM users WHERE id = 1")
	reply := []byte("reply")
	run := func() ([]byte, error) { return reply, nil }
	c.Read(context.Background(), k, users, nil, run)
	if n := testing.AllocsPerRun(1000, func() {
		c.Read(context.Background(), k, users, nil, run)
	}); n != 0 {
		t.Errorf("%v allocations per read, want 0", n)
	}
}

func BenchmarkConsolidateAlone(b *testing.B) {
	c := New(Config{}.WithDefaults(), nil)
	k := key("SELECT name FROM users WHERE id = 1")
	reply := []byte("reply")
	run := func() ([]byte, error) { return reply, nil }
	b.ReportAllocs()
	for b.Loop() {
		c.Read(context.Background(), k, users, nil, run)
	}
}

func BenchmarkMemoryHit(b *testing.B) {
	c := New(memRule(time.Hour).WithDefaults(), nil)
	k := key("SELECT name FROM users WHERE id = 1")
	reply := make([]byte, 200)
	run := func() ([]byte, error) { return reply, nil }
	c.Read(context.Background(), k, users, c.rules[0], run)
	b.ReportAllocs()
	for b.Loop() {
		c.Read(context.Background(), k, users, c.rules[0], run)
	}
}
