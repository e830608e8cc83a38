package main

import (
	"fmt"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/router"
)

// TestDemoYAMLReplicas: `make demo REPLICAS=1` writes a config where each
// of the four shards has its streaming replica and reads go to replicas;
// without replicas the shards are single servers. Both pass the strict
// config check.
func TestDemoYAMLReplicas(t *testing.T) {
	set := &localpg.Set{}
	var replicas []*localpg.Cluster
	for i := 0; i < 4; i++ {
		set.Clusters = append(set.Clusters, &localpg.Cluster{Name: fmt.Sprintf("shard%d", i), Port: 20000 + i})
		replicas = append(replicas, &localpg.Cluster{Name: fmt.Sprintf("shard%d-r1", i), Port: 21000 + i})
	}
	for _, withReplicas := range []bool{false, true} {
		var rs []*localpg.Cluster
		if withReplicas {
			rs = replicas
		}
		out, err := yaml.Marshal(demoYAML(set, rs, "127.0.0.1:6432", "", nil))
		if err != nil {
			t.Fatal(err)
		}
		f, err := config.Parse(out)
		if err != nil {
			t.Fatalf("replicas %v: %v\n%s", withReplicas, err, out)
		}
		if _, err := router.NewTopology(&f.Topology); err != nil {
			t.Fatal(err)
		}
		for i, sh := range f.Topology.Shards {
			switch {
			case !withReplicas && len(sh.Replicas) != 0:
				t.Fatalf("shard %s has replicas without the flag", sh.Name)
			case withReplicas && (len(sh.Replicas) != 1 || sh.Replicas[0].DSN != replicas[i].DSN("deliveryapp")):
				t.Fatalf("shard %s: replicas %+v, want %s", sh.Name, sh.Replicas, replicas[i].DSN("deliveryapp"))
			}
		}
		if got := f.Proxy.Replicas.ReadFrom; withReplicas && got != "replicas" {
			t.Fatalf("read_from %q with replicas, want replicas", got)
		}
	}
}
