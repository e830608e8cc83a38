package main

import (
	"fmt"
	"io"
	"os"
	"strings"
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

// TestDemoYAMLTLS: `make demo TLS=1` writes a config that requires TLS
// from clients with the demo's certificate and verifies every shard's
// certificate (verify-full against the demo CA); users reach the shards as
// their own roles. It passes the strict config check, and the files it
// names exist.
func TestDemoYAMLTLS(t *testing.T) {
	set := &localpg.Set{}
	var replicas []*localpg.Cluster
	for i := 0; i < 4; i++ {
		set.Clusters = append(set.Clusters, &localpg.Cluster{Name: fmt.Sprintf("shard%d", i), Port: 20000 + i})
		replicas = append(replicas, &localpg.Cluster{Name: fmt.Sprintf("shard%d-r1", i), Port: 21000 + i})
	}
	files, err := demoCerts(t.TempDir(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(demoYAML(set, replicas, "127.0.0.1:6432", "", files))
	if err != nil {
		t.Fatal(err)
	}
	f, err := config.Parse(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if tc := f.Proxy.TLS; tc.Mode != "require" || tc.Cert != files.Cert || tc.Key != files.Key {
		t.Fatalf("tls %+v, want require with the demo's certificate", tc)
	}
	for _, p := range []string{files.CA, files.Cert, files.Key} {
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, sh := range f.Topology.Shards {
		dsns := []string{sh.DSN}
		for _, r := range sh.Replicas {
			dsns = append(dsns, r.DSN)
		}
		for _, dsn := range dsns {
			if !strings.Contains(dsn, "sslmode=verify-full") || !strings.Contains(dsn, "sslrootcert="+files.CA) {
				t.Fatalf("shard %s: dsn %s does not verify the shard's certificate", sh.Name, dsn)
			}
		}
	}
	if f.Proxy.BackendRoles != "per_user" {
		t.Fatalf("backend_roles %q, want per_user", f.Proxy.BackendRoles)
	}
}
