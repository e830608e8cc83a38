package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKnexMatchesPostgres runs knex (query builder over node-postgres)
// through the proxy to four shards and against one plain Postgres holding
// the same rows, and compares what it prints: selects by key, IN and
// ORDER BY with LIMIT/OFFSET as parameters across shards, inserts (one
// shard and many), update and delete by key, a committed transaction over
// several shards, two rolled-back ones, .stream() over a cross-shard
// ORDER BY read to the end, and .stream() closed early (outside and inside
// a transaction) with the same session used afterwards.
func TestKnexMatchesPostgres(t *testing.T) {
	seedCursorRows(t)
	mods, _ := filepath.Abs("testdata/clients/node_modules")
	_, err := exec.LookPath("node")
	requireTool(t, "node and npm package knex (npm install in integration/testdata/clients)",
		err == nil && exists(filepath.Join(mods, "knex")) && exists(filepath.Join(mods, "pg-query-stream")))
	run := func(url string) string {
		return clientOutput(t, "node", []string{"NODE_PATH=" + mods}, "testdata/clients/knex_check.js", url)
	}
	want := run(curPlain())
	got := run(proxyURL("app", "app"))
	if got != want || !strings.Contains(got, "OK") {
		t.Fatalf("through the proxy:\n%s\nplain Postgres:\n%s", got, want)
	}
	// The rows are where the proxy says: each on the shard of its user id.
	c := mustConnect(t)
	var n int64
	if err := c.QueryRow(t.Context(), "SELECT count(*) FROM orders WHERE id BETWEEN 961000 AND 961099").Scan(&n); err != nil {
		t.Fatal(err)
	}
	var onShards int64
	for i := 0; i < nShards; i++ {
		onShards += shardInt(t, i, "SELECT count(*) FROM orders WHERE id BETWEEN 961000 AND 961099")
	}
	if n != onShards || n == 0 {
		t.Fatalf("through the proxy %d rows, on the shards %d", n, onShards)
	}
	t.Logf("%d lines alike", strings.Count(got, "\n"))
}
