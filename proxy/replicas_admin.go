package proxy

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// replicaMetrics are the replica routing counters; per-server figures are
// read at scrape time by serverCollector.
type replicaMetrics struct {
	retries   prometheus.Counter
	failovers prometheus.Counter
	// lsnReads and lsnChecks count read-your-writes by LSN's round trips:
	// primary positions read after writes, replica positions checked on
	// lease (ryw.go).
	lsnReads, lsnChecks prometheus.Counter
}

func newReplicaMetrics() *replicaMetrics {
	return &replicaMetrics{
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardproxy_replica_retries_total",
			Help: "Statements refused with 25006 (read-only) and run again on the primary.",
		}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardproxy_failovers_total",
			Help: "Times a shard's writes moved to a newly promoted primary.",
		}),
		lsnReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardproxy_ryw_primary_lsn_reads_total",
			Help: "Primary WAL positions read after a session's writes (read_your_writes: lsn).",
		}),
		lsnChecks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardproxy_ryw_replica_lsn_checks_total",
			Help: "Replica replay positions checked on lease for read-your-writes (read_your_writes: lsn).",
		}),
	}
}

// serverStatus is one server of a replicated shard (SHOW REPLICAS, metrics).
type serverStatus struct {
	shard, name, host string
	port              int
	role              role
	state             string // up, down, lagging, fenced
	writes            bool   // the shard's write target
	inRotation        bool
	lagBytes          int64
	lagSeconds        float64
	inFlight          int64
	ewmaSeconds       float64
	routed            uint64
	checks            uint64
	generation        uint64
	lastErr           string
}

// serverStatuses reads every replicated shard's servers.
func (s *Server) serverStatuses() []serverStatus {
	var out []serverStatus
	for _, rs := range s.sets {
		if rs == nil {
			continue
		}
		prim := rs.servers[rs.primary.Load()]
		for _, sv := range rs.servers {
			st := serverStatus{shard: rs.name, name: sv.name, host: sv.cfg.Host, port: int(sv.cfg.Port),
				role: role(sv.role.Load()), writes: sv == prim, inRotation: sv.inRotation(),
				lagBytes: sv.lagBytes.Load(), lagSeconds: float64(sv.lagMicro.Load()) / 1e6,
				inFlight: sv.read.load.busy.Load(), ewmaSeconds: sv.read.latency(), routed: sv.read.load.routed.Load(),
				checks: sv.checks.Load(), generation: rs.write.gen.Load()}
			if st.writes {
				st.inFlight += rs.write.load.busy.Load()
				st.routed += rs.write.load.routed.Load()
				if l := rs.write.latency(); l != 0 {
					st.ewmaSeconds = l
				}
			}
			switch {
			case sv.fenced.Load():
				st.state = "fenced"
			case !sv.up.Load():
				st.state = "down"
			case sv.lagging.Load():
				st.state = "lagging"
			default:
				st.state = "up"
			}
			if e := sv.lastErr.Load(); e != nil {
				st.lastErr = *e
			}
			out = append(out, st)
		}
	}
	return out
}

// showReplicas answers SHOW REPLICAS on the admin console.
func (s *session) showReplicas() {
	var data [][]string
	for _, st := range s.srv.serverStatuses() {
		data = append(data, []string{st.shard, st.name, st.host, itoa(st.port), st.role.String(), st.state,
			strconv.FormatBool(st.writes), strconv.FormatBool(st.inRotation), strconv.FormatInt(st.lagBytes, 10),
			strconv.FormatFloat(st.lagSeconds, 'f', 3, 64), strconv.FormatInt(st.inFlight, 10),
			strconv.FormatFloat(st.ewmaSeconds*1000, 'f', 3, 64), strconv.FormatUint(st.routed, 10),
			strconv.FormatUint(st.checks, 10), strconv.FormatUint(st.generation, 10), st.lastErr})
	}
	cols := textCols("shard", "server", "host", "port", "role", "state", "writes", "in_rotation", "lag_bytes",
		"lag_seconds", "in_flight", "ewma_ms", "routed", "checks", "generation", "last_error")
	for _, i := range []int{3, 8, 10, 12, 13, 14} {
		cols[i].oid = oidInt8
	}
	cols[9].oid, cols[11].oid = oidNumeric, oidNumeric
	s.rows(cols, data)
}

// serverCollector reads the replicated shards' servers at scrape time.
// Labels: shard and server (names from the topology).
type serverCollector struct{ s *Server }

var (
	descServerUp = prometheus.NewDesc("shardproxy_server_up",
		"1 when the server passed its health checks and is not fenced.", []string{"shard", "server"}, nil)
	descServerRole = prometheus.NewDesc("shardproxy_server_primary",
		"1 when the server reported it is not in recovery at its last check.", []string{"shard", "server"}, nil)
	descServerWrites = prometheus.NewDesc("shardproxy_server_write_target",
		"1 for the server the shard's writes go to.", []string{"shard", "server"}, nil)
	descServerRotation = prometheus.NewDesc("shardproxy_server_in_rotation",
		"1 when reads may go to the replica (up, in recovery, lag within limits).", []string{"shard", "server"}, nil)
	descServerLagBytes = prometheus.NewDesc("shardproxy_server_replay_lag_bytes",
		"WAL bytes the replica has yet to replay, behind the primary.", []string{"shard", "server"}, nil)
	descServerLagSeconds = prometheus.NewDesc("shardproxy_server_replay_lag_seconds",
		"Time since the last replayed transaction while replay is behind.", []string{"shard", "server"}, nil)
	descServerInFlight = prometheus.NewDesc("shardproxy_server_in_flight",
		"Backend connections to the server leased by clients now.", []string{"shard", "server"}, nil)
	descServerLatency = prometheus.NewDesc("shardproxy_server_latency_ewma_seconds",
		"Moving average of the server's query latency (fastest_response).", []string{"shard", "server"}, nil)
	descServerRouted = prometheus.NewDesc("shardproxy_server_routed_total",
		"Backend leases served by the server (statements and transactions routed to it).", []string{"shard", "server"}, nil)
)

func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descServerUp, descServerRole, descServerWrites, descServerRotation,
		descServerLagBytes, descServerLagSeconds, descServerInFlight, descServerLatency, descServerRouted} {
		ch <- d
	}
}

func (c *serverCollector) Collect(ch chan<- prometheus.Metric) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, st := range c.s.serverStatuses() {
		l := []string{st.shard, st.name}
		ch <- prometheus.MustNewConstMetric(descServerUp, prometheus.GaugeValue, b(st.state == "up" || st.state == "lagging"), l...)
		ch <- prometheus.MustNewConstMetric(descServerRole, prometheus.GaugeValue, b(st.role == rolePrimary), l...)
		ch <- prometheus.MustNewConstMetric(descServerWrites, prometheus.GaugeValue, b(st.writes), l...)
		ch <- prometheus.MustNewConstMetric(descServerRotation, prometheus.GaugeValue, b(st.inRotation), l...)
		ch <- prometheus.MustNewConstMetric(descServerLagBytes, prometheus.GaugeValue, float64(st.lagBytes), l...)
		ch <- prometheus.MustNewConstMetric(descServerLagSeconds, prometheus.GaugeValue, st.lagSeconds, l...)
		ch <- prometheus.MustNewConstMetric(descServerInFlight, prometheus.GaugeValue, float64(st.inFlight), l...)
		ch <- prometheus.MustNewConstMetric(descServerLatency, prometheus.GaugeValue, st.ewmaSeconds, l...)
		ch <- prometheus.MustNewConstMetric(descServerRouted, prometheus.CounterValue, float64(st.routed), l...)
	}
}

// closeReplicas closes the replicas' read pools.
func (s *Server) closeReplicas() {
	for _, rs := range s.sets {
		if rs == nil {
			continue
		}
		for _, sv := range rs.servers {
			sv.read.close()
		}
	}
}

// applyReplicas takes a reloaded config's read policy and failover buffer.
// Adding or removing replicas needs a restart.
func (s *Server) applyReplicas(cfg Config) {
	s.readPolicy.Store(newReadPolicy(cfg))
	for _, p := range s.pools {
		p.buffer.Store(int64(cfg.Replicas.FailoverBuffer))
	}
}
