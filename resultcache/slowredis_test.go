package resultcache

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// slowRelay forwards TCP connections to Redis, holding every chunk a
// client sends for the current delay: a Redis that answers slowly, as on
// a loaded machine.
type slowRelay struct {
	ln    net.Listener
	delay atomic.Int64 // ns
}

func newSlowRelay(t *testing.T, target string) *slowRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &slowRelay{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(c, s); c.Close() }()
			go func() {
				defer s.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						time.Sleep(time.Duration(r.delay.Load()))
						if _, werr := s.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return r
}

func (r *slowRelay) addr() string { return r.ln.Addr().String() }

// TestRedisSlowInvalidationNotStale: proxy b's Redis answers slower than
// redis.timeout when b takes a write. b's commit waits for the
// invalidation (invalidate_timeout), so a read through proxy a right
// after it does not get the entry from before the write. (With the read
// timeout on invalidations, b gave up first and a served the old entry:
// the stale read TestCacheTwoProxiesInvalidate saw under load.)
func TestRedisSlowInvalidationNotStale(t *testing.T) {
	cfg := redisConfig(t)
	a := newCache(t, cfg)
	relay := newSlowRelay(t, testRedis.Addr())
	cfgB := cfg
	cfgB.Redis.Addr = relay.addr()
	b := newCache(t, cfgB)
	var runs atomic.Int64
	if got := read(a, "q", a.rules[0], "old", &runs); got != "old" {
		t.Fatal(got)
	}
	if got := read(b, "q", b.rules[0], "b", &runs); got != "old" {
		t.Fatalf("b got %q, want a's entry", got)
	}
	relay.delay.Store(int64(3 * cfg.WithDefaults().Redis.Timeout / 2))
	start := time.Now()
	b.Invalidate(context.Background(), users)
	waited := time.Since(start)
	if got := read(a, "q", a.rules[0], "new", &runs); got != "new" {
		t.Fatalf("a read %q after b's write committed (b waited %v for Redis), want the new answer", got, waited)
	}
	if st := b.Stats(); st.BackendErrors != 0 {
		t.Errorf("b counted %d Redis errors for a slow but successful invalidation", st.BackendErrors)
	}
}

// TestRedisOneTimeoutNotDown: one Redis operation slower than
// redis.timeout is a miss for that read only; the next read is a hit
// again (Redis is not left alone for a second, which on a loaded machine
// made a second of misses after every slow answer). Timeouts for
// downAfter without an answer mark Redis down.
func TestRedisOneTimeoutNotDown(t *testing.T) {
	cfg := redisConfig(t)
	relay := newSlowRelay(t, testRedis.Addr())
	cfg.Redis.Addr = relay.addr()
	c := newCache(t, cfg)
	r := c.rules[0]
	var runs atomic.Int64
	read(c, "q", r, "v1", &runs)
	if got := read(c, "q", r, "v2", &runs); got != "v1" {
		t.Fatalf("got %q, want the entry", got)
	}
	slow := int64(3 * c.cfg.Redis.Timeout / 2)
	relay.delay.Store(slow)
	if got := read(c, "q", r, "pg", &runs); got != "pg" {
		t.Fatalf("a read past redis.timeout got %q, want its own answer", got)
	}
	relay.delay.Store(0)
	if got := read(c, "q", r, "v3", &runs); got != "v1" {
		t.Fatalf("after one slow operation got %q, want the entry (Redis is not down)", got)
	}
	if st := c.Stats(); st.BackendErrors != 1 || !st.BackendUp {
		t.Errorf("after one timeout: errors %d, up %v; want 1, up", st.BackendErrors, st.BackendUp)
	}
	// Timeouts for downAfter without an answer: Redis is down.
	relay.delay.Store(slow)
	for start := time.Now(); time.Since(start) < downAfter+c.cfg.Redis.Timeout; {
		read(c, "q", r, "pg", &runs)
	}
	relay.delay.Store(0)
	if st := c.Stats(); st.BackendUp {
		t.Errorf("timeouts for %v: Redis still counted up", downAfter)
	}
	if got := read(c, "q", r, "pg2", &runs); got != "pg2" {
		t.Errorf("Redis down: got %q, want a read from Postgres", got)
	}
}
