package partman

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics exports the outcome of maintenance passes to Prometheus. The
// proxy creates one with its registry and passes Observe as Loop's report
// function. Labels are bounded: shard names and configured table names.
type Metrics struct {
	created     *prometheus.CounterVec
	removed     *prometheus.CounterVec
	moved       *prometheus.CounterVec
	failures    *prometheus.CounterVec
	ahead       *prometheus.GaugeVec
	defaultRows *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec
}

// NewMetrics registers partman's metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	const ns, sub = "shardproxy", "partman"
	m := &Metrics{
		created: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "partitions_created_total", Help: "Partitions created by maintenance."}, []string{"shard", "table"}),
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "partitions_removed_total", Help: "Partitions detached or dropped by retention."}, []string{"shard", "table", "mode"}),
		moved: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "default_rows_moved_total", Help: "Rows moved out of DEFAULT into new partitions."}, []string{"shard", "table"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "failures_total", Help: "Maintenance passes that failed, per shard and table (table is empty when the shard failed)."}, []string{"shard", "table"}),
		ahead: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "periods_ahead", Help: "Periods (months for monthly tables) covered after the current one; -1 when the current one has no partition."}, []string{"shard", "table"}),
		defaultRows: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "default_rows", Help: "Rows in the DEFAULT partition after the last pass; should be 0."}, []string{"shard", "table"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "last_success_timestamp_seconds", Help: "Unix time of the last pass that left the table in order."}, []string{"shard", "table"}),
	}
	for _, c := range []prometheus.Collector{m.created, m.removed, m.moved, m.failures, m.ahead, m.defaultRows, m.lastSuccess} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Observe records one Report. It is safe for concurrent use.
func (m *Metrics) Observe(rep Report) {
	for _, s := range rep.Shards {
		if s.Err != nil {
			m.failures.WithLabelValues(s.Shard, "").Inc()
			continue
		}
		for _, t := range s.Tables {
			m.created.WithLabelValues(s.Shard, t.Table).Add(float64(len(t.Created)))
			m.removed.WithLabelValues(s.Shard, t.Table, string(Detach)).Add(float64(len(t.Detached)))
			m.removed.WithLabelValues(s.Shard, t.Table, string(Drop)).Add(float64(len(t.Dropped)))
			m.moved.WithLabelValues(s.Shard, t.Table).Add(float64(t.MovedRows))
			if t.Failed() {
				m.failures.WithLabelValues(s.Shard, t.Table).Inc()
			}
			if t.Locked || t.Partitions == nil {
				continue // nothing was read: keep the last values
			}
			m.ahead.WithLabelValues(s.Shard, t.Table).Set(float64(t.Ahead))
			if t.DefaultRows >= 0 {
				m.defaultRows.WithLabelValues(s.Shard, t.Table).Set(float64(t.DefaultRows))
			}
			if !t.Failed() {
				m.lastSuccess.WithLabelValues(s.Shard, t.Table).Set(float64(rep.Now.Unix()))
			}
		}
	}
}
