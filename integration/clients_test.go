package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shardproxy/shardproxy/localpg"
)

// requireTool finds a client toolchain; in CI a missing one fails the test.
func requireTool(t *testing.T, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if localpg.InCI() {
		t.Fatalf("%s is missing: .ci/run installs it (scripts/deps.sh)", what)
	}
	t.Skipf("%s not installed (scripts/deps.sh installs it)", what)
}

func runClient(t *testing.T, name string, env []string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

func TestPsycopg(t *testing.T) {
	py := "/usr/bin/python3"
	requireTool(t, "python3-psycopg (Debian)", exists(py) && exec.Command(py, "-c", "import psycopg").Run() == nil)
	runClient(t, py, nil, "testdata/clients/psycopg_check.py",
		fmt.Sprintf("host=127.0.0.1 port=%s dbname=deliveryapp user=app password=app", portOf(env.addr)), "800000")
}

// TestJDBCPreparedAfterErrors: server-prepared statements stay usable
// after failing statements, in autocommit and in transactions, on several
// connections at once (#13: "prepared statement "S_n" does not exist").
func TestJDBCPreparedAfterErrors(t *testing.T) {
	jar := "/usr/share/java/postgresql.jar"
	_, err := exec.LookPath("java")
	requireTool(t, "java and libpostgresql-jdbc-java (Debian)", err == nil && exists(jar))
	url := fmt.Sprintf("jdbc:postgresql://127.0.0.1:%s/deliveryapp?user=app&password=app&prepareThreshold=1&sslmode=disable", portOf(env.addr))
	runClient(t, "java", nil, "-cp", jar, "testdata/clients/JdbcPrepareErrors.java", url, "870000") // ids of its own: Django uses 830000
}

// TestJDBCParseFailure: a server-prepared statement whose Parse fails on
// the shard keeps failing with the shard's error when executed again (not
// "prepared statement does not exist"), in autocommit and in a
// transaction.
func TestJDBCParseFailure(t *testing.T) {
	jar := "/usr/share/java/postgresql.jar"
	_, err := exec.LookPath("java")
	requireTool(t, "java and libpostgresql-jdbc-java (Debian)", err == nil && exists(jar))
	url := fmt.Sprintf("jdbc:postgresql://127.0.0.1:%s/deliveryapp?user=app&password=app&prepareThreshold=1&sslmode=disable", portOf(env.addr))
	runClient(t, "java", nil, "-cp", jar, "testdata/clients/JdbcParseFail.java", url)
}

func TestJDBC(t *testing.T) {
	jar := "/usr/share/java/postgresql.jar"
	_, err := exec.LookPath("java")
	requireTool(t, "java and libpostgresql-jdbc-java (Debian)", err == nil && exists(jar))
	url := fmt.Sprintf("jdbc:postgresql://127.0.0.1:%s/deliveryapp?user=app&password=app&prepareThreshold=1&sslmode=disable", portOf(env.addr))
	runClient(t, "java", nil, "-cp", jar, "testdata/clients/JdbcCheck.java", url, "810000")
}

func TestNodePostgres(t *testing.T) {
	mods, _ := filepath.Abs("testdata/clients/node_modules")
	_, err := exec.LookPath("node")
	requireTool(t, "node and npm package pg (npm install in integration/testdata/clients)", err == nil && exists(filepath.Join(mods, "pg")))
	runClient(t, "node", []string{"NODE_PATH=" + mods}, "testdata/clients/node_check.js", proxyURL("app", "app"), "820000")
}

// TestPgbenchAllProtocols runs pgbench with a sharded custom script (orders
// keyed by :uid) in every protocol mode, several clients, and checks the
// final counts.
func TestPgbenchAllProtocols(t *testing.T) {
	_, err := exec.LookPath("pgbench")
	requireTool(t, "pgbench", err == nil)
	script := filepath.Join(t.TempDir(), "sharded.sql")
	os.WriteFile(script, []byte(`\set uid random(900000, 900099)
BEGIN;
UPDATE orders SET total = total + 1 WHERE user_id = :uid AND id = :uid;
SELECT total FROM orders WHERE user_id = :uid;
END;
`), 0o644)
	c := mustConnect(t)
	insertOrders(t, c, "orders", 900000, 100)
	before := sumTotal(t, 900000, 900100)
	tx := 0
	for _, mode := range []string{"simple", "extended", "prepared"} {
		cmd := exec.Command("pgbench", "-n", "-M", mode, "-c", "4", "-j", "2", "-t", "50", "-f", script, proxyURL("app", "app"))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "number of failed transactions: 0") {
			t.Fatalf("pgbench -M %s: %v\n%s", mode, err, out)
		}
		tx += 4 * 50
	}
	if after := sumTotal(t, 900000, 900100); after-before != float64(tx) {
		t.Fatalf("sum of totals moved by %v, want %d (one per transaction)", after-before, tx)
	}
}

// sumTotal adds the orders' totals for a user range, shard by shard.
func sumTotal(t *testing.T, from, to int) float64 {
	t.Helper()
	var s float64
	for i := 0; i < nShards; i++ {
		s += float64(shardInt(t, i, "SELECT coalesce(sum(total), 0)::bigint FROM orders WHERE user_id >= $1 AND user_id < $2", from, to))
	}
	return s
}

func portOf(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

// TestSQLAlchemy runs SQLAlchemy's Core and ORM (Debian's python3-sqlalchemy,
// psycopg2) through the proxy: create_all, a unit of work over several
// shards, updates and deletes by the mapped key (id, created_at), a failed
// unit of work rolled back everywhere.
func TestSQLAlchemy(t *testing.T) {
	py := "/usr/bin/python3"
	requireTool(t, "python3-sqlalchemy and python3-psycopg2 (Debian)", exists(py) && exec.Command(py, "-c", "import sqlalchemy, psycopg2").Run() == nil)
	runClient(t, py, nil, "testdata/orm/sqlalchemy_check.py",
		fmt.Sprintf("postgresql+psycopg2://app:app@127.0.0.1:%s/deliveryapp", portOf(env.addr)), "840000")
}

// TestDjango runs Django's migrate (the contrib apps' migrations), save(),
// delete(), bulk_create and an atomic block over several shards through the
// proxy (Debian's python3-django, psycopg2).
func TestDjango(t *testing.T) {
	py := "/usr/bin/python3"
	requireTool(t, "python3-django and python3-psycopg2 (Debian)", exists(py) && exec.Command(py, "-c", "import django, psycopg2").Run() == nil)
	runClient(t, py, nil, "testdata/orm/django_check.py", "127.0.0.1", portOf(env.addr), "830000")
}

// TestSequelize runs Sequelize 6 with its default options through the
// proxy: its connect string of two SETs, sync, create/update/destroy,
// managed transactions over several shards and upsert; findOrCreate fails
// without leaving anything behind (its pg_temp function's INSERT cannot be
// routed).
func TestSequelize(t *testing.T) {
	mods, _ := filepath.Abs("testdata/clients/node_modules")
	_, err := exec.LookPath("node")
	requireTool(t, "node and npm package sequelize (npm install in integration/testdata/clients)", err == nil && exists(filepath.Join(mods, "sequelize")))
	runClient(t, "node", []string{"NODE_PATH=" + mods}, "testdata/clients/sequelize_check.js", proxyURL("app", "app"), "850000")
}

// TestGORM runs GORM (a module of its own in testdata/gormcheck, so the
// proxy's module does not depend on it) through the proxy: AutoMigrate,
// CreateInBatches and FindInBatches over several shards, Save, Update and
// Delete in GORM's own transactions, and a rolled-back transaction.
func TestGORM(t *testing.T) {
	goBin, err := exec.LookPath("go")
	requireTool(t, "go", err == nil)
	bin := filepath.Join(t.TempDir(), "gormcheck")
	build := exec.Command(goBin, "build", "-o", bin, ".")
	build.Dir = "testdata/gormcheck"
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build gormcheck: %v\n%s", err, out)
	}
	runClient(t, bin, nil, proxyURL("app", "app"), "860000")
}
