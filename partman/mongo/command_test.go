package mongo

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestCommand(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		mongod  bool
		setup   []string
		code    int
		stdout  []string // substrings
		stderr  string
		nWrites int // commands other than reads the fake must have seen
		// noConfig runs without a mongo section.
		noConfig bool
	}{
		{name: "usage", args: []string{"drop"}, code: 2, stderr: "usage: partman mongo plan|apply"},
		{name: "extra argument", args: []string{"plan", "now"}, code: 2, stderr: "usage"},
		{name: "no mongo section", args: []string{"plan"}, code: 1, stderr: "no mongo: section", noConfig: true},
		{
			name: "plan prints mongosh commands and changes nothing",
			args: []string{"plan"},
			code: 0,
			stdout: []string{
				`db.adminCommand({ shardCollection: "deliveryapp.orders", key: { userId: "hashed" } })  // shard deliveryapp.orders on { userId: "hashed" }`,
				`db.getSiblingDB("deliveryapp").runCommand({ createIndexes: "orders", indexes: [ { key: { userId: 1, createdAt: -1 }, name: "userId_1_createdAt_-1" }, `,
				"plan: 8 to create, 0 already matched, 0 conflicts",
			},
		},
		{
			name:    "apply",
			args:    []string{"apply", "-config", "ignored.yaml"},
			code:    0,
			stdout:  []string{"created:  shard deliveryapp.orders on { userId: \"hashed\" }", "summary: 8 created, 0 already matched, 0 conflicts"},
			nWrites: 8,
		},
		{
			name:   "apply with a conflict changes nothing",
			args:   []string{"apply"},
			setup:  []string{`{"db":"admin","cmd":{"shardCollection":"deliveryapp.orders","key":{"userId":1}}}`},
			code:   1,
			stdout: []string{"conflict: deliveryapp.orders is sharded on { userId: 1 }", "not run:  6 of 6 commands", "summary: 0 created, 1 already matched, 1 conflicts"},
		},
		{
			name:   "plan with a conflict exits non-zero",
			args:   []string{"plan"},
			setup:  []string{`{"db":"admin","cmd":{"shardCollection":"deliveryapp.orders","key":{"userId":1}}}`},
			code:   1,
			stdout: []string{"// conflicts: apply will change nothing until they are resolved", "plan: 6 to create, 1 already matched, 1 conflicts"},
		},
		{name: "not a mongos", args: []string{"apply"}, mongod: true, code: 1, stderr: "not a mongos: the server is a standalone mongod"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, f := fakeCluster(t)
			cl.run(t, c.setup)
			f.setMongod(c.mongod)
			var cfg Config
			if err := yaml.Unmarshal([]byte(cl.expand(scenarioYAML)), &cfg); err != nil {
				t.Fatal(err)
			}
			if c.noConfig {
				cfg = Config{}
			}
			var out, errb bytes.Buffer
			args := append(append([]string{}, c.args...), "-uri", f.URI())
			if c.code == 2 {
				args = c.args
			}
			code := Command(context.Background(), args, cfg, nil, &out, &errb)
			if code != c.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, c.code, out.String(), errb.String())
			}
			for _, s := range c.stdout {
				if !strings.Contains(out.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, out.String())
				}
			}
			if !strings.Contains(errb.String(), c.stderr) {
				t.Errorf("stderr lacks %q:\n%s", c.stderr, errb.String())
			}
			writes := 0
			for _, cmd := range f.commands() {
				switch cmd[0].Key {
				case "hello", "find", "listCollections", "listIndexes", "listShards":
				default:
					writes++
				}
			}
			if writes != c.nWrites {
				t.Errorf("the fake saw %d writes, want %d", writes, c.nWrites)
			}
		})
	}
}
