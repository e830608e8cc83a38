package proxy

import (
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// testSet builds a replica set over unreachable DSNs (nothing dials): a
// primary and replicas with the given weights, all up and in rotation.
func testSet(t testing.TB, weights ...int) *replicaSet {
	t.Helper()
	sh := router.ShardConfig{Name: "s0", DSN: "postgres://x@127.0.0.1:1/db", Weight: weights[0]}
	for _, w := range weights[1:] {
		sh.Replicas = append(sh.Replicas, router.ReplicaConfig{DSN: "postgres://x@127.0.0.1:1/db", Weight: w})
	}
	topo, err := router.NewTopology(&router.Config{Shards: []router.ShardConfig{sh}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Users: []User{{Name: "u", Auth: "trust"}}}.WithDefaults()
	p, err := newPool(0, "s0", sh.DSN, 4, time.Second, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sets, err := newReplicaSets(cfg, topo, []*pool{p})
	if err != nil {
		t.Fatal(err)
	}
	rs := sets[0]
	for _, sv := range rs.servers[1:] {
		sv.role.Store(uint32(roleReplica))
	}
	return rs
}

func TestPickDistribution(t *testing.T) {
	const n = 20000
	count := func(rs *replicaSet, b balance, any bool) map[string]int {
		got := map[string]int{}
		for i := 0; i < n; i++ {
			p := rs.pick(b, any, 0)
			if p == rs.write {
				got["primary"]++
			} else {
				got[p.name]++
			}
		}
		return got
	}
	t.Run("round_robin", func(t *testing.T) {
		got := count(testSet(t, 1, 1, 1), balanceRoundRobin, false)
		if got["s0-r1"] != n/2 || got["s0-r2"] != n/2 {
			t.Fatalf("round robin: %v", got)
		}
	})
	t.Run("weighted", func(t *testing.T) {
		got := count(testSet(t, 2, 1, 3), balanceWeighted, true)
		for name, want := range map[string]float64{"primary": 2.0 / 6, "s0-r1": 1.0 / 6, "s0-r2": 3.0 / 6} {
			if share := float64(got[name]) / n; math.Abs(share-want) > 0.02 {
				t.Errorf("%s: share %.3f, want %.3f (%v)", name, share, want, got)
			}
		}
	})
	t.Run("least_connections", func(t *testing.T) {
		rs := testSet(t, 1, 1, 1)
		rs.servers[1].read.load.busy.Store(3)
		got := count(rs, balanceLeastConnections, false)
		if got["s0-r2"] != n {
			t.Fatalf("least connections with r1 busy: %v", got)
		}
	})
	t.Run("fastest_response", func(t *testing.T) {
		rs := testSet(t, 1, 1, 1)
		for i := 0; i < 20; i++ {
			rs.servers[1].read.observe(20 * time.Millisecond)
			rs.servers[2].read.observe(2 * time.Millisecond)
		}
		if got := count(rs, balanceFastest, false); got["s0-r2"] != n {
			t.Fatalf("fastest response: %v", got)
		}
		// r2 slows down: the average moves, and so do the reads.
		for i := 0; i < 30; i++ {
			rs.servers[2].read.observe(50 * time.Millisecond)
		}
		if got := count(rs, balanceFastest, false); got["s0-r1"] != n {
			t.Fatalf("fastest response after r2 slowed: %v", got)
		}
	})
	t.Run("out_of_rotation", func(t *testing.T) {
		rs := testSet(t, 1, 1, 1)
		rs.servers[1].up.Store(false)
		rs.servers[2].lagging.Store(true)
		if got := count(rs, balanceRoundRobin, false); got["primary"] != n {
			t.Fatalf("every replica out: %v", got)
		}
		rs.servers[2].lagging.Store(false)
		if got := count(rs, balanceRoundRobin, false); got["s0-r2"] != n {
			t.Fatalf("r1 down: %v", got)
		}
		// A promoted replica (role primary) serves no replica reads.
		rs.servers[2].role.Store(uint32(rolePrimary))
		if got := count(rs, balanceWeighted, false); got["primary"] != n {
			t.Fatalf("no replica left: %v", got)
		}
	})
}

// TestPickAllocs: choosing a server allocates nothing.
func TestPickAllocs(t *testing.T) {
	rs := testSet(t, 1, 1, 2)
	for _, b := range []balance{balanceRoundRobin, balanceLeastConnections, balanceWeighted, balanceFastest} {
		if a := testing.AllocsPerRun(1000, func() { rs.pick(b, true, 0) }); a != 0 {
			t.Errorf("%v: %v allocations per pick", b, a)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	rs := testSet(b, 1, 1, 1)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		rs.pick(balanceRoundRobin, false, 0)
	}
}

func TestEvaluateFailover(t *testing.T) {
	rs := testSet(t, 1, 1, 1)
	h := newHealthChecker(nil, HealthConfig{}, []*pool{rs.write})
	h.log = slog.New(slog.DiscardHandler)
	sh := h.shards[0]
	rp := newReadPolicy(Config{Users: []User{{Name: "u"}}}.WithDefaults())
	for _, sv := range rs.servers {
		sv.checks.Store(1)
	}
	rs.servers[0].lsn.Store(100 << 20)
	rs.servers[1].lsn.Store(100<<20 - 100)
	rs.servers[2].lsn.Store(100<<20 - 20<<20)
	rs.evaluate(h.log, rp, sh)
	if rs.servers[1].lagging.Load() || !rs.servers[2].lagging.Load() || rs.servers[2].lagBytes.Load() != 20<<20 {
		t.Fatalf("lag: r1 %v r2 %v (%d bytes)", rs.servers[1].lagging.Load(), rs.servers[2].lagging.Load(), rs.servers[2].lagBytes.Load())
	}
	// The primary dies: no writable primary until a replica says it is one.
	rs.servers[0].up.Store(false)
	rs.evaluate(h.log, rp, sh)
	if rs.write.downErr.Load() == nil || rs.primary.Load() != 0 {
		t.Fatal("primary down: the write pool should refuse")
	}
	gen := rs.write.gen.Load()
	rs.servers[2].role.Store(uint32(rolePrimary))
	rs.evaluate(h.log, rp, sh)
	if rs.primary.Load() != 2 || rs.write.downErr.Load() != nil || rs.write.gen.Load() != gen+1 ||
		!rs.servers[0].fenced.Load() || rs.write.config().Port != rs.servers[2].cfg.Port {
		t.Fatalf("failover: primary %d, gen %d, fenced %v", rs.primary.Load(), rs.write.gen.Load(), rs.servers[0].fenced.Load())
	}
	// The old primary comes back still a primary: it stays fenced.
	rs.servers[0].up.Store(true)
	rs.evaluate(h.log, rp, sh)
	if rs.primary.Load() != 2 || !rs.servers[0].fenced.Load() {
		t.Fatal("the old primary was used again")
	}
}

func TestParseLSN(t *testing.T) {
	for in, want := range map[string]uint64{"0/0": 0, "16/B374D848": 0x16<<32 | 0xB374D848, "FFFFFFFF/FFFFFFFF": math.MaxUint64} {
		if got, err := parseLSN(in); err != nil || got != want {
			t.Errorf("parseLSN(%q) = %x, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "12", "x/1", "1/y"} {
		if _, err := parseLSN(in); err == nil {
			t.Errorf("parseLSN(%q): no error", in)
		}
	}
}

func TestReplicasConfig(t *testing.T) {
	base := func() Config { return Config{Users: []User{{Name: "u", Auth: "trust"}}} }
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"defaults":      {func(*Config) {}, ""},
		"read_from":     {func(c *Config) { c.Replicas.ReadFrom = "standby" }, "replicas.read_from"},
		"balance":       {func(c *Config) { c.Replicas.Balance = "random" }, "replicas.balance"},
		"user":          {func(c *Config) { c.Users[0].ReadFrom = "nowhere" }, "user u: read_from"},
		"user_ok":       {func(c *Config) { c.Users[0].ReadFrom = "any" }, ""},
		"buffer":        {func(c *Config) { c.Replicas.FailoverBuffer = -time.Second }, "failover_buffer"},
		"no_lag_limits": {func(c *Config) { c.Replicas.MaxLag, c.Replicas.MaxLagBytes = -1, -1 }, ""},
	} {
		t.Run(name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			err := c.WithDefaults().Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestReadOnly(t *testing.T) {
	for sql, want := range map[string]bool{
		"SELECT * FROM t WHERE id = 1":                                     true,
		"SELECT count(*) FROM t JOIN u USING (id)":                         true,
		"SELECT * FROM t FOR UPDATE":                                       false,
		"SELECT nextval('s')":                                              false,
		"SELECT * FROM t, pg_advisory_xact_lock(1)":                        false,
		"SELECT lo_create(0)":                                              false,
		"WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x":            false,
		"INSERT INTO t VALUES (1)":                                         false,
		"SELECT set_config('a.b', 'c', false)":                             false,
		"SELECT pg_advisory_lock(1)":                                       false,
		"SELECT now(), random(), upper(name) FROM t WHERE id IN (1, 2, 3)": true,
	} {
		sts, err := parser.Parse(sql)
		if err != nil {
			t.Fatal(err)
		}
		if got := readOnly(sts[0]); got != want {
			t.Errorf("readOnly(%s) = %v, want %v", sql, got, want)
		}
	}
}
