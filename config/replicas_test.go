package config

import (
	"strings"
	"testing"
	"time"
)

const withReplicas = `
users: [{name: app, password: app}, {name: reporting, password: r, read_from: any}]
replicas: {read_from: replicas, balance: weighted, max_lag: 5s, max_lag_bytes: 1048576, read_your_writes: 1s, failover_buffer: 5s}
shards:
  - name: s0
    dsn: "postgres://postgres@10.0.0.1/app"
    replicas:
      - {dsn: "postgres://postgres@10.0.0.2/app", weight: 3}
      - {name: s0-east, dsn: "postgres://postgres@10.0.0.3/app"}
  - {name: s1, dsn: "postgres://postgres@10.0.1.1/app"}
`

func TestParseReplicas(t *testing.T) {
	f, err := Parse([]byte(withReplicas))
	if err != nil {
		t.Fatal(err)
	}
	r := f.Proxy.Replicas
	if r.ReadFrom != "replicas" || r.Balance != "weighted" || r.MaxLag != 5*time.Second || r.MaxLagBytes != 1<<20 ||
		r.ReadYourWrites != "window" || r.ReadYourWritesWindow != time.Second || r.FailoverBuffer != 5*time.Second || f.Proxy.Users[1].ReadFrom != "any" {
		t.Fatalf("replicas section: %+v", r)
	}
	s0 := f.Topology.Shards[0]
	if len(s0.Replicas) != 2 || s0.Replicas[0].Weight != 3 || s0.ReplicaName(0) != "s0-r1" || s0.ReplicaName(1) != "s0-east" {
		t.Fatalf("shard s0: %+v", s0)
	}
	if len(f.Topology.Shards[1].Replicas) != 0 {
		t.Fatal("s1 has no replicas")
	}
}

// TestReadYourWritesModes: the modes, and the older duration form.
func TestReadYourWritesModes(t *testing.T) {
	for in, want := range map[string]struct {
		mode   string
		window time.Duration
	}{
		"read_your_writes: 1s, failover_buffer: 5s":                                  {"window", time.Second},
		"read_your_writes: -1s, failover_buffer: 5s":                                 {"off", 2 * time.Second},
		"read_your_writes: lsn, failover_buffer: 5s":                                 {"lsn", 2 * time.Second},
		"read_your_writes: off, failover_buffer: 5s":                                 {"off", 2 * time.Second},
		"read_your_writes: window, read_your_writes_window: 3s, failover_buffer: 5s": {"window", 3 * time.Second},
		"failover_buffer: 1s":                                                        {"window", 2 * time.Second},
	} {
		doc := strings.Replace(withReplicas, "read_your_writes: 1s, failover_buffer: 5s", in, 1)
		f, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if r := f.Proxy.Replicas; r.ReadYourWrites != want.mode || r.ReadYourWritesWindow != want.window {
			t.Errorf("%s: got %q %v, want %q %v", in, r.ReadYourWrites, r.ReadYourWritesWindow, want.mode, want.window)
		}
	}
}

func TestParseReplicasErrors(t *testing.T) {
	for name, c := range map[string]struct{ doc, want string }{
		"unknown key":   {strings.Replace(withReplicas, "weight: 3", "wieght: 3", 1), "wieght"},
		"no dsn":        {strings.Replace(withReplicas, `{dsn: "postgres://postgres@10.0.0.2/app", weight: 3}`, "{weight: 3}", 1), "replicas[0]: dsn is required"},
		"negative":      {strings.Replace(withReplicas, "weight: 3", "weight: -1", 1), "weight must be positive"},
		"duplicate":     {strings.Replace(withReplicas, "name: s0-east", "name: s0-r1", 1), "duplicate server name"},
		"bad balance":   {strings.Replace(withReplicas, "balance: weighted", "balance: random", 1), "replicas.balance"},
		"bad read_from": {strings.Replace(withReplicas, "read_from: any", "read_from: standby", 1), "user reporting: read_from"},
		"bad ryw":       {strings.Replace(withReplicas, "read_your_writes: 1s", "read_your_writes: always", 1), "replicas.read_your_writes"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse: %v, want %q", err, c.want)
			}
		})
	}
}
