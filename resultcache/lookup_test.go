package resultcache

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestLookup: the hit-only lookup that reads inside a transaction use
// (until_write) sees what Read filled, never fills, and stops seeing an
// entry once its table is written, with both backends.
func TestLookup(t *testing.T) {
	on, off := true, false
	for _, backend := range []string{"memory", "redis"} {
		t.Run(backend, func(t *testing.T) {
			cfg := memRule(time.Minute)
			if backend == "redis" {
				cfg = redisConfig(t)
			}
			cfg.UntilWrite = true
			cfg.Rules = append(cfg.Rules, Rule{Name: "off", Tables: []string{"orders"}, TTL: time.Minute, UntilWrite: &off},
				Rule{Name: "on", Fingerprint: "0123456789abcdef", TTL: time.Minute, UntilWrite: &on})
			c := newCache(t, cfg)
			r := c.rules[0]
			if !r.ServesUntilWrite() || c.rules[1].ServesUntilWrite() || !c.rules[2].ServesUntilWrite() {
				t.Fatalf("until_write per rule: %v %v %v", r.ServesUntilWrite(), c.rules[1].ServesUntilWrite(), c.rules[2].ServesUntilWrite())
			}
			ctx := context.Background()
			if got := c.Lookup(ctx, key("lq"), users, r); got != nil {
				t.Fatalf("lookup before a fill: %q", got)
			}
			if got := c.Lookup(ctx, key("lq"), users, r); got != nil {
				t.Fatalf("a lookup filled: %q", got)
			}
			var runs atomic.Int64
			read(c, "lq", r, "v1", &runs)
			if got := c.Lookup(ctx, key("lq"), users, r); string(got) != "v1" {
				t.Fatalf("lookup after the fill: %q, want v1", got)
			}
			c.Invalidate(ctx, users)
			if got := c.Lookup(ctx, key("lq"), users, r); got != nil {
				t.Fatalf("lookup after a write: %q", got)
			}
		})
	}
}
