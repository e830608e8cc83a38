package resultcache

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetrics: a miss with its fill, a hit, an invalidation and a clear
// show in the cache's Prometheus metrics.
func TestMetrics(t *testing.T) {
	c := newCache(t, memRule(10*time.Minute))
	reg := prometheus.NewRegistry()
	if err := c.Register(reg); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	r := c.rules[0]
	read(c, "q", r, "answer", &runs) // miss, fill
	read(c, "q", r, "other", &runs)  // hit
	c.Invalidate(context.Background(), users)
	c.Clear(context.Background())
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			got[mf.GetName()] = v
		}
	}
	for name, want := range map[string]float64{
		"shardproxy_cache_misses_total":         1,
		"shardproxy_cache_fills_total":          1,
		"shardproxy_cache_hits_total":           1,
		"shardproxy_cache_invalidations_total":  2, // one table, one clear
		"shardproxy_cache_entries":              0, // the clear dropped it
		"shardproxy_cache_bytes":                0,
		"shardproxy_cache_consolidated_total":   0,
		"shardproxy_cache_backend_errors_total": 0,
		"shardproxy_cache_backend_up":           1,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (reported %v), want %v", name, v, ok, want)
		}
	}
	if runs.Load() != 1 {
		t.Errorf("the query ran %d times, want once", runs.Load())
	}
}
