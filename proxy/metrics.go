package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, all prefixed shardproxy_. Labels are bounded: shard (from
// the topology), route (local, single, multi), outcome (ok, error), state
// (a fixed set), limit (a fixed set, limits.go). No user, table, query text
// or fingerprint label: the per-fingerprint table is served by SHOW QUERIES
// (see docs/operations.md).

var (
	durationBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	waitBuckets     = []float64{.00001, .00005, .0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5, 10}
)

// metrics holds the proxy's instruments. Children are resolved once so the
// hot path never looks labels up.
type metrics struct {
	queriesVec       *prometheus.CounterVec
	durationVec      *prometheus.HistogramVec
	shardDurationVec *prometheus.HistogramVec
	poolWaitVec      *prometheus.HistogramVec
	reloadsVec       *prometheus.CounterVec

	queries       [nRouteKinds][2]prometheus.Counter
	duration      [nRouteKinds]prometheus.Observer
	shardDuration []prometheus.Observer
	poolWait      []prometheus.Observer
	reloads       [2]prometheus.Counter

	slow       prometheus.Counter
	logDropped prometheus.Counter
	fanout     prometheus.Histogram
	rowsMerged prometheus.Counter
}

func newMetrics(shards []string) *metrics {
	m := &metrics{
		queriesVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardproxy_queries_total",
			Help: "Statements answered, by route (local: answered by the proxy, single: one shard, multi: several) and outcome (ok, error).",
		}, []string{"route", "outcome"}),
		durationVec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shardproxy_query_duration_seconds",
			Help:    "Time from receiving a statement to sending its ReadyForQuery, by route.",
			Buckets: durationBuckets,
		}, []string{"route"}),
		shardDurationVec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shardproxy_shard_query_duration_seconds",
			Help:    "Time a shard took on a statement, from sending it to the shard's ReadyForQuery.",
			Buckets: durationBuckets,
		}, []string{"shard"}),
		poolWaitVec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shardproxy_pool_wait_seconds",
			Help:    "Time spent leasing a backend connection (waiting for a free one or dialing).",
			Buckets: waitBuckets,
		}, []string{"shard"}),
		reloadsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardproxy_config_reloads_total",
			Help: "Config reloads (SIGHUP or RELOAD), by outcome.",
		}, []string{"outcome"}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardproxy_slow_queries_total",
			Help: "Statements at least as slow as the slow-query threshold.",
		}),
		logDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardproxy_log_lines_dropped_total",
			Help: "Slow-query or error log lines dropped by the rate limit.",
		}),
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shardproxy_fanout_shards",
			Help:    "Number of shards a multi-shard statement ran on.",
			Buckets: prometheus.LinearBuckets(2, 1, max(len(shards)-1, 1)),
		}),
		rowsMerged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardproxy_fanout_rows_merged_total",
			Help: "Rows (or affected rows) returned by shards to multi-shard statements.",
		}),
	}
	for k := range nRouteKinds {
		for o := range outcomeNames {
			m.queries[k][o] = m.queriesVec.WithLabelValues(routeKindNames[k], outcomeNames[o])
		}
		m.duration[k] = m.durationVec.WithLabelValues(routeKindNames[k])
	}
	for _, sh := range shards {
		m.shardDuration = append(m.shardDuration, m.shardDurationVec.WithLabelValues(sh))
		m.poolWait = append(m.poolWait, m.poolWaitVec.WithLabelValues(sh))
	}
	m.reloads[0] = m.reloadsVec.WithLabelValues("ok")
	m.reloads[1] = m.reloadsVec.WithLabelValues("error")
	return m
}

// RegisterMetrics registers the server's metrics on reg (never the global
// registry, unless the caller passes it). Call it once, before serving.
func (s *Server) RegisterMetrics(reg prometheus.Registerer) error {
	m := s.obs.m
	for _, c := range []prometheus.Collector{m.queriesVec, m.durationVec, m.shardDurationVec, m.poolWaitVec,
		m.reloadsVec, m.slow, m.logDropped, m.fanout, m.rowsMerged, &stateCollector{s},
		s.repl.retries, s.repl.failovers, s.repl.lsnReads, s.repl.lsnChecks, &serverCollector{s}, s.limits.hitsVec, reserveCollector{s}, notifyCollector{s}} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return s.results.Register(reg)
}

// stateCollector reads pools, sessions, the parse cache and shard health
// at scrape time, so none of them pay for metrics on the hot path.
type stateCollector struct{ s *Server }

var (
	descClients = prometheus.NewDesc("shardproxy_client_connections",
		"Client connections by state (startup covers the handshake and authentication).", []string{"state"}, nil)
	descPoolSize = prometheus.NewDesc("shardproxy_pool_size",
		"Most backend connections the pool may open to a shard (pool.size), by backend role.", []string{"shard", "user"}, nil)
	descPoolConns = prometheus.NewDesc("shardproxy_pool_connections",
		"Open backend connections by state (idle, in_use) and backend role.", []string{"shard", "state", "user"}, nil)
	descPoolWaiting = prometheus.NewDesc("shardproxy_pool_waiting_clients",
		"Clients waiting for a free backend connection, by backend role.", []string{"shard", "user"}, nil)
	descConnects = prometheus.NewDesc("shardproxy_backend_connects_total",
		"Backend connections opened, by backend role.", []string{"shard", "user"}, nil)
	descConnectErrors = prometheus.NewDesc("shardproxy_backend_connect_errors_total",
		"Backend connection attempts that failed, by backend role.", []string{"shard", "user"}, nil)
	descShardUp = prometheus.NewDesc("shardproxy_shard_up",
		"1 when the health checker considers the shard up, 0 when down.", []string{"shard"}, nil)
	descCacheHits = prometheus.NewDesc("shardproxy_parse_cache_hits_total",
		"Statements found in the parse cache.", nil, nil)
	descCacheMisses = prometheus.NewDesc("shardproxy_parse_cache_misses_total",
		"Statements parsed with pg_query (parse cache misses).", nil, nil)
	desc2PC = prometheus.NewDesc("shardproxy_twophase_transactions_total",
		"Transactions on several shards ended with two-phase commit, by outcome (commit, abort), and prepared transactions resolved by recovery (recovered).", []string{"outcome"}, nil)
	desc2PCInDoubt = prometheus.NewDesc("shardproxy_twophase_in_doubt",
		"Prepared transactions of this deployment left for recovery, as last counted.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClients, descPoolSize, descPoolConns, descPoolWaiting,
		descConnects, descConnectErrors, descShardUp, descCacheHits, descCacheMisses, desc2PC, desc2PCInDoubt} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	var states [nClientStates]int
	logged := 0
	s.sessions.Range(func(_, v any) bool {
		states[v.(*session).q.state.Load()]++
		logged++
		return true
	})
	s.mu.Lock()
	all := len(s.conns)
	s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descClients, prometheus.GaugeValue, float64(max(all-logged, 0)), "startup")
	for i, n := range states {
		ch <- prometheus.MustNewConstMetric(descClients, prometheus.GaugeValue, float64(n), clientStateNames[i])
	}
	for _, f := range s.poolFigures() { // roles.go: one series per shard and backend role
		ch <- prometheus.MustNewConstMetric(descPoolSize, prometheus.GaugeValue, float64(f.size), f.shard, f.user)
		ch <- prometheus.MustNewConstMetric(descPoolConns, prometheus.GaugeValue, float64(f.idle), f.shard, "idle", f.user)
		ch <- prometheus.MustNewConstMetric(descPoolConns, prometheus.GaugeValue, float64(f.open-f.idle), f.shard, "in_use", f.user)
		ch <- prometheus.MustNewConstMetric(descPoolWaiting, prometheus.GaugeValue, float64(f.waiting), f.shard, f.user)
		ch <- prometheus.MustNewConstMetric(descConnects, prometheus.CounterValue, float64(f.connects), f.shard, f.user)
		ch <- prometheus.MustNewConstMetric(descConnectErrors, prometheus.CounterValue, float64(f.connectErrors), f.shard, f.user)
	}
	for _, p := range s.pools {
		up := 1.0
		if p.downErr.Load() != nil {
			up = 0
		}
		ch <- prometheus.MustNewConstMetric(descShardUp, prometheus.GaugeValue, up, p.name)
	}
	tp := s.TwoPhaseStats()
	ch <- prometheus.MustNewConstMetric(desc2PC, prometheus.CounterValue, float64(tp.Commits), "commit")
	ch <- prometheus.MustNewConstMetric(desc2PC, prometheus.CounterValue, float64(tp.Aborts), "abort")
	ch <- prometheus.MustNewConstMetric(desc2PC, prometheus.CounterValue, float64(tp.Recovered), "recovered")
	ch <- prometheus.MustNewConstMetric(desc2PCInDoubt, prometheus.GaugeValue, float64(tp.InDoubt))
	hits, misses := s.cache.Stats()
	ch <- prometheus.MustNewConstMetric(descCacheHits, prometheus.CounterValue, float64(hits))
	ch <- prometheus.MustNewConstMetric(descCacheMisses, prometheus.CounterValue, float64(misses))
}
