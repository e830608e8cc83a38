package resultcache

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descHits          = prometheus.NewDesc("shardproxy_cache_hits_total", "Reads answered from the result cache (or a fill they waited for), by rule.", []string{"rule"}, nil)
	descMisses        = prometheus.NewDesc("shardproxy_cache_misses_total", "Reads of a cache rule that ran on the shards, by rule.", []string{"rule"}, nil)
	descFills         = prometheus.NewDesc("shardproxy_cache_fills_total", "Entries stored in the result cache, by rule.", []string{"rule"}, nil)
	descEntries       = prometheus.NewDesc("shardproxy_cache_entries", "Entries in the memory backend.", nil, nil)
	descBytes         = prometheus.NewDesc("shardproxy_cache_bytes", "Bytes held by the memory backend.", nil, nil)
	descInvalidations = prometheus.NewDesc("shardproxy_cache_invalidations_total", "Tables invalidated by writes through this proxy (and clears).", nil, nil)
	descConsolidated  = prometheus.NewDesc("shardproxy_cache_consolidated_total", "Reads answered by an identical read in flight: queries the shards did not run.", nil, nil)
	descErrors        = prometheus.NewDesc("shardproxy_cache_backend_errors_total", "Redis operations that failed (the query read from Postgres).", nil, nil)
	descUp            = prometheus.NewDesc("shardproxy_cache_backend_up", "1 when the Redis backend answered its last operation.", nil, nil)
)

// Register adds the cache's metrics to reg.
func (c *Cache) Register(reg prometheus.Registerer) error {
	return reg.Register(collector{c})
}

type collector struct{ c *Cache }

func (x collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHits, descMisses, descFills, descEntries, descBytes, descInvalidations, descConsolidated, descErrors, descUp} {
		ch <- d
	}
}

func (x collector) Collect(ch chan<- prometheus.Metric) {
	c := x.c
	for _, r := range c.rules {
		ch <- prometheus.MustNewConstMetric(descHits, prometheus.CounterValue, float64(r.stats.hits.Load()), r.Name)
		ch <- prometheus.MustNewConstMetric(descMisses, prometheus.CounterValue, float64(r.stats.misses.Load()), r.Name)
		ch <- prometheus.MustNewConstMetric(descFills, prometheus.CounterValue, float64(r.stats.fills.Load()), r.Name)
	}
	st := c.Stats()
	ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(st.Entries))
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(descInvalidations, prometheus.CounterValue, float64(st.Invalidations))
	ch <- prometheus.MustNewConstMetric(descConsolidated, prometheus.CounterValue, float64(st.Consolidated))
	ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(st.BackendErrors))
	up := 1.0
	if !st.BackendUp {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up)
}

// Stats is a snapshot of the cache as a whole.
type Stats struct {
	Backend                                    string
	Consolidate, BackendUp                     bool
	Entries, Bytes                             int64
	Consolidated, Invalidations, BackendErrors uint64
}

// Stats returns a snapshot of the cache's counters.
func (c *Cache) Stats() Stats {
	st := Stats{Backend: c.cfg.Backend, Consolidate: c.consolidate, BackendUp: true,
		Consolidated: c.consolidated.Load(), Invalidations: c.invalidations.Load(), BackendErrors: c.backendErrors.Load()}
	if len(c.rules) == 0 {
		st.Backend = "none"
	}
	if c.mem != nil {
		c.mu.Lock()
		st.Entries, st.Bytes = int64(len(c.mem.entries)), c.mem.bytes
		c.mu.Unlock()
	}
	if c.rds != nil {
		st.BackendUp = c.rds.up.Load()
	}
	return st
}

// RuleStats is a snapshot of one rule.
type RuleStats struct {
	Name, Selector string
	TTL            time.Duration
	// Entries is -1 when the backend cannot count them (Redis).
	Entries             int64
	Hits, Misses, Fills int64
}

// Rules returns a snapshot of every rule, in config order.
func (c *Cache) Rules() []RuleStats {
	out := make([]RuleStats, 0, len(c.rules))
	for _, r := range c.rules {
		sel := "fingerprint " + r.Fingerprint
		if r.Fingerprint == "" {
			sel = "tables " + strings.Join(r.Tables, ",")
		}
		rs := RuleStats{Name: r.Name, Selector: sel, TTL: r.TTL, Entries: r.stats.entries.Load(),
			Hits: r.stats.hits.Load(), Misses: r.stats.misses.Load(), Fills: r.stats.fills.Load()}
		if c.rds != nil {
			rs.Entries = -1
		}
		out = append(out, rs)
	}
	return out
}
