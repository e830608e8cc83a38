package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/router"
)

const reloadBase = `backend_roles: shared
users: [{name: app, password: app}]
shards:
  - {name: s0, dsn: "postgres://postgres@127.0.0.1:1/db"}
  - {name: s1, dsn: "postgres://postgres@127.0.0.1:2/db"}
tables:
  orders: {strategy: hash, key: user_id}
log: {level: info, slow_query: 1s}
`

func TestReloaderAppliesLiveSettingsAndRefusesTopology(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shardproxy.yaml")
	write := func(doc string) {
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(reloadBase)
	f, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	topo, err := router.NewTopology(&f.Topology)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var level slog.LevelVar
	level.Set(logLevel(f.Log.Level))
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: &level}))
	srv, err := proxy.New(f.Proxy, topo, log)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetReloader(reloader(path, f, srv, &level, log))

	cases := []struct {
		name, doc, wantErr, wantLog string
		wantLevel                   slog.Level
	}{
		{"log level and users change live",
			strings.Replace(strings.Replace(reloadBase, "level: info", "level: debug", 1),
				"users: [{name: app, password: app}]", "users: [{name: app, password: app}, {name: ops, password: x}]\nadmins: [ops]", 1),
			"", "config reloaded", slog.LevelDebug},
		{"a restart-only key is kept and logged",
			strings.Replace(reloadBase, "users:", "listen: 127.0.0.1:7777\nusers:", 1),
			"", "key=listen", slog.LevelInfo},
		{"a new shard is refused",
			strings.Replace(reloadBase, "tables:", "  - {name: s2, dsn: \"postgres://postgres@127.0.0.1:3/db\"}\ntables:", 1),
			"topology", "restart shardproxy to change the topology", slog.LevelInfo},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			level.Set(slog.LevelInfo)
			logs.Reset()
			write(c.doc)
			err := srv.Reload()
			if c.wantErr == "" && err != nil {
				t.Fatalf("reload: %v", err)
			}
			if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("reload error %v, want %q", err, c.wantErr)
			}
			if !strings.Contains(logs.String(), c.wantLog) {
				t.Errorf("log lacks %q:\n%s", c.wantLog, logs.String())
			}
			if level.Level() != c.wantLevel {
				t.Errorf("level %v, want %v", level.Level(), c.wantLevel)
			}
		})
	}
	write("users: [")
	if err := srv.Reload(); err == nil {
		t.Error("a broken file reloaded")
	}
}
