package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/delivery"
	"github.com/shardproxy/shardproxy/localpg"
)

var shards *localpg.Set

func TestMain(m *testing.M) {
	localpg.Main(m, localpg.Options{N: 2, Database: "deliveryapp"}, func(set *localpg.Set) int {
		shards = set
		return m.Run()
	})
}

// writeConfig writes a config for the running shards plus, when extra is
// set, a shard nobody listens on.
func writeConfig(t *testing.T, extra bool) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("backend_roles: shared\nusers: [{name: app, auth: trust}]\nshards:\n")
	for _, c := range shards.Clusters {
		fmt.Fprintf(&b, "  - {name: %s, dsn: %q}\n", c.Name, c.DSN("deliveryapp"))
	}
	if extra {
		port, _ := localpg.FreePort()
		fmt.Fprintf(&b, "  - {name: gone, dsn: \"postgres://postgres@127.0.0.1:%d/deliveryapp?connect_timeout=2\"}\n", port)
	}
	b.WriteString(`tables: {orders: {strategy: hash, key: user_id}}
partman:
  tables:
    orders: {column: created_at, premake: 2}
    events: {column: created_at, premake: 2}
`)
	path := filepath.Join(t.TempDir(), "partman.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestCommands(t *testing.T) {
	for _, c := range shards.Clusters {
		conn, err := pgx.Connect(context.Background(), c.DSN("deliveryapp"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(context.Background(), "DROP SCHEMA public CASCADE; CREATE SCHEMA public; "+delivery.Schema); err != nil {
			t.Fatal(err)
		}
		conn.Close(context.Background())
	}
	cfg := writeConfig(t, false)
	now := "-now=2024-12-20T10:00:00Z"

	code, out, errs := runCmd(t, "plan", "-config", cfg, now, "-table", "orders")
	if code != 0 || errs != "" || strings.Count(out, "ATTACH PARTITION") != 6 || // 3 months x 2 shards
		!strings.Contains(out, `ALTER TABLE "public"."orders" ATTACH PARTITION "public"."orders_p2025_02" FOR VALUES FROM ('2025-02-01 00:00:00+00') TO ('2025-03-01 00:00:00+00');`) ||
		strings.Contains(out, "events") {
		t.Fatalf("plan: %d\n%s\n%s", code, out, errs)
	}

	code, out, errs = runCmd(t, "run", "-config", cfg, now)
	if code != 0 || errs != "" || !strings.Contains(out, "shard0  orders  3        0         0        0                   0                2      ok") {
		t.Fatalf("run: %d\n%s\n%s", code, out, errs)
	}
	code, out, _ = runCmd(t, "run", "-config", cfg, now)
	if code != 0 || strings.Contains(out, "shard1  events  3") || !strings.Contains(out, "shard1  events  0") {
		t.Fatalf("second run: %d\n%s", code, out)
	}

	t.Logf("run:\n%s", out)
	code, out, _ = runCmd(t, "status", "-config", cfg, now)
	t.Logf("status:\n%s", out)
	if code != 0 || !strings.Contains(out, "shard shard1 table orders: 4 partitions, months ahead 2, rows in default 0") ||
		!strings.Contains(out, "orders_p2025_01  FOR VALUES FROM ('2025-01-01 00:00:00+00') TO ('2025-02-01 00:00:00+00')") {
		t.Fatalf("status: %d\n%s", code, out)
	}

	code, out, errs = runCmd(t, "run", "-config", writeConfig(t, true), "-now=2025-01-10")
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	if code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "partman: shard gone: connect:") ||
		!strings.Contains(out, "shard0  orders  1") || !strings.Contains(out, "FAILED (shard)") {
		t.Fatalf("run with a dead shard: %d\n%s\n%s", code, out, errs)
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, "usage: partman"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"mongo", "plan", "-config", "/nonexistent.yaml"}, "no such file"},
		{[]string{"mongo", "frobnicate", "-config", "../../delivery/example.yaml"}, "usage: partman mongo plan|apply"},
		{[]string{"run", "-config", "/nonexistent.yaml"}, "no such file"},
		{[]string{"run", "-now", "tomorrow", "-config", "../../delivery/example.yaml"}, "-now:"},
		{[]string{"run", "-config", "../../delivery/example.yaml", "-table", "users"}, `table "users" is not configured`},
		{[]string{"run", "extra"}, `unexpected argument "extra"`},
	}
	for _, c := range cases {
		code, _, errs := runCmd(t, c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%q: exit %d, stderr %q, want %q", c.args, code, errs, c.want)
		}
	}
}

// TestMongoHelpAndOfflinePlan: partman mongo -h prints usage without a
// config file; plan -offline prints every command for an empty cluster
// without a mongos (none runs here: -uri points nowhere).
func TestMongoHelpAndOfflinePlan(t *testing.T) {
	for _, h := range []string{"-h", "--help", "help"} {
		code, out, _ := runCmd(t, "mongo", h)
		if code != 0 || !strings.Contains(out, "usage: partman mongo") || !strings.Contains(out, "-offline") {
			t.Errorf("mongo %s: exit %d, stdout %q", h, code, out)
		}
	}
	code, out, errs := runCmd(t, "mongo", "plan", "-offline", "-uri", "mongodb://127.0.0.1:1", "-config", "../../delivery/example.yaml")
	if code != 0 {
		t.Fatalf("offline plan: exit %d: %s", code, errs)
	}
	for _, want := range []string{`enableSharding: "deliveryapp"`, `shardCollection: "deliveryapp.orders", key: { userId: "hashed" }`,
		`addShardToZone: "shard1", zone: "s0"`, `updateZoneKeyRange: "deliveryapp.analytics"`, "0 conflicts"} {
		if !strings.Contains(out, want) {
			t.Errorf("offline plan lacks %q:\n%s", want, out)
		}
	}
	if code, _, errs := runCmd(t, "mongo", "apply", "-offline", "-config", "../../delivery/example.yaml"); code != 2 || !strings.Contains(errs, "plan only") {
		t.Errorf("apply -offline: exit %d, %q", code, errs)
	}
}
