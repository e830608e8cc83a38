package integration

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Differential tests for differences Postgres's own regression suite
// found (docs/compatibility.md): each runs through the proxy and on one
// plain Postgres (the default shard's server) and must answer alike.

// TestChainOutsideTransactionMatchesPostgres: COMMIT AND CHAIN and
// ROLLBACK AND CHAIN outside a transaction block are errors (25P01), where
// a plain COMMIT only warns (the `transactions` regression test); in the
// extended protocol the error skips the rest of the request.
func TestChainOutsideTransactionMatchesPostgres(t *testing.T) {
	matchPostgresScript(t, []string{
		"COMMIT AND CHAIN",
		"ROLLBACK AND CHAIN",
		"COMMIT",
		"COMMIT AND NO CHAIN",
		"BEGIN",
		"COMMIT AND CHAIN",
		"SHOW transaction_isolation",
		"ROLLBACK AND CHAIN",
		"ROLLBACK",
		"SELECT 1",
	})
	steps := []wireStep{
		{&pgproto3.Parse{Query: "COMMIT AND CHAIN"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		{&pgproto3.Parse{Query: "SELECT 2"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
	}
	want := transcript(t, env.shards.Clusters[0].DSN("deliveryapp"), steps)
	if got := transcript(t, proxyURL("app", "app"), steps); got != want {
		t.Fatalf("through the proxy:\n%s\nstraight to Postgres:\n%s", got, want)
	}
}

// TestExecuteErrorPositionMatchesPostgres: an error of an EXECUTE has the
// position Postgres gives it: in an argument, there in the client's
// EXECUTE; in the prepared query itself, none (the proxy runs the bound
// statement, whose positions are its own). Postgres's regression tests
// functional_deps and xml show these.
func TestExecuteErrorPositionMatchesPostgres(t *testing.T) {
	script := []string{
		"DROP TABLE IF EXISTS pos_t",
		"CREATE TABLE pos_t (a int PRIMARY KEY, b text)",
		"PREPARE pos_g AS SELECT a, b FROM pos_t GROUP BY a",
		"ALTER TABLE pos_t DROP CONSTRAINT pos_t_pkey",
		"EXECUTE pos_g",
		"PREPARE pos_i(int, int) AS SELECT $1 + $2",
		"EXECUTE pos_i(1, 'x')",
		"EXECUTE pos_i(1, 2 + 'y')",
		"EXECUTE pos_i(1, 2)",
		"PREPARE pos_d(date) AS SELECT a FROM pos_t WHERE b::date = $1",
		"EXECUTE pos_d('2020-13-45')",
		"DEALLOCATE ALL",
		"DROP TABLE pos_t",
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(url string) []string {
		c, err := pgconn.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		out := make([]string, len(script))
		for i, sql := range script {
			_, err := c.Exec(ctx, sql).ReadAll()
			var pe *pgconn.PgError
			if errors.As(err, &pe) {
				out[i] = fmt.Sprintf("%s %s at %d", pe.Code, pe.Message, pe.Position)
			} else if err != nil {
				out[i] = err.Error()
			}
		}
		return out
	}
	want := run(env.shards.Clusters[0].DSN("deliveryapp"))
	got := run(proxyURL("app", "app"))
	for i := range script {
		if got[i] != want[i] {
			t.Errorf("%q:\nproxy:    %s\npostgres: %s", script[i], got[i], want[i])
		}
	}
}

// TestSkippedParseMatchesPostgres: after an error in a pipeline, Postgres
// skips the rest until Sync, Parse and Close included: a statement a
// skipped Parse names does not exist (Bind: 26000), one a skipped Close
// names still does, and a skipped unnamed Parse leaves the previous
// unnamed statement in place. The proxy answers Parse and Close itself
// and once kept the skipped Parse's statement.
func TestSkippedParseMatchesPostgres(t *testing.T) {
	run := func(name, query string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Parse{Name: name, Query: query},
			&pgproto3.Bind{PreparedStatement: name}, &pgproto3.Execute{}}
	}
	sync := &pgproto3.Sync{}
	steps := []wireStep{
		{&pgproto3.Parse{Name: "sk_keep", Query: "SELECT 'kept'"}, sync},
		append(append(run("sk_bad", "INSERT INTO sk_t VALUES (1/0)"), &pgproto3.Parse{Name: "sk_new", Query: "SELECT 'new'"},
			&pgproto3.Close{ObjectType: 'S', Name: "sk_keep"}, &pgproto3.Parse{Query: "SELECT 'unnamed'"}), sync),
		{&pgproto3.Bind{PreparedStatement: "sk_new"}, &pgproto3.Execute{}, sync},
		{&pgproto3.Bind{PreparedStatement: "sk_keep"}, &pgproto3.Execute{}, sync},
		{&pgproto3.Bind{PreparedStatement: ""}, &pgproto3.Execute{}, sync},
		{&pgproto3.Parse{Name: "sk_new", Query: "SELECT 'new again'"}, &pgproto3.Bind{PreparedStatement: "sk_new"}, &pgproto3.Execute{}, sync},
		// A Parse answered before the error stands.
		append(append([]pgproto3.FrontendMessage{&pgproto3.Parse{Name: "sk_first", Query: "SELECT 'first'"}}, run("", "INSERT INTO sk_t VALUES (1/0)")...), sync),
		{&pgproto3.Bind{PreparedStatement: "sk_first"}, &pgproto3.Execute{}, sync},
	}
	// A write on one shard (the default, which holds sk_t): its error
	// comes back while the proxy has already answered what follows.
	exec := mustConnect(t)
	if _, err := exec.Exec(context.Background(), "CREATE TABLE IF NOT EXISTS sk_t (a int)"); err != nil {
		t.Fatal(err)
	}
	defer exec.Exec(context.Background(), "DROP TABLE sk_t")
	want := transcript(t, env.shards.Clusters[0].DSN("deliveryapp"), steps)
	if got := transcript(t, proxyURL("app", "app"), steps); got != want {
		t.Fatalf("through the proxy:\n%s\nstraight to Postgres:\n%s", got, want)
	}
}

// TestMergedErrorRowDescriptionMatchesPostgres: a cross-shard query whose
// shards fail computing their rows (division by zero in an aggregate's
// argument) answers RowDescription then the error, as Postgres does (it
// describes the rows before computing them); the merged statements
// (aggregates, groups) once answered the error alone. The queries are
// ones whose rows before the error cannot depend on the shards' order.
func TestMergedErrorRowDescriptionMatchesPostgres(t *testing.T) {
	seedCursorRows(t)
	for _, sql := range []string{
		"SELECT count(*), sum(1/(id - 960150)) FROM orders " + curWhere,
		"SELECT status, sum(1/(id - 960150)) FROM orders " + curWhere + " GROUP BY status",
		"SELECT status, sum(1/(id - 960150)) FROM orders " + curWhere + " GROUP BY status ORDER BY status",
		"SELECT avg(total / (id - 960150)) FROM orders " + curWhere,
		"SELECT id, 1/(id - 960150) FROM orders " + curWhere + " ORDER BY id",
		"SELECT id, 1/(id - 960150) FROM orders " + curWhere + " ORDER BY id LIMIT 200",
		"SELECT count(*), sum(1/0) FROM orders " + curWhere,
	} {
		steps := []wireStep{{&pgproto3.Query{String: sql}}}
		want := cursorTranscript(t, curPlain(), steps)
		if got := cursorTranscript(t, proxyURL("app", "app"), steps); got != want {
			t.Errorf("%s\nthrough the proxy:\n%s\nplain Postgres:\n%s", sql, got, want)
		}
	}
}

// TestParseErrorAtParseMatchesPostgres: a statement the server rejects at
// Parse (a missing table or column) gets its error in place of
// ParseComplete, as from Postgres, when its Bind or Describe follows the
// Parse (the drivers' order): not the proxy's ParseComplete and then the
// error. After it the statement does not exist (26000), a failed unnamed
// Parse leaves no unnamed statement, and inside a transaction the
// transaction is failed. The statements run on one shard (tables not
// listed live on the default shard). Without proxy/extskip.go's
// parseInPlace the proxy answered ParseComplete, then the error.
func TestParseErrorAtParseMatchesPostgres(t *testing.T) {
	sync := &pgproto3.Sync{}
	// bad writes: a read would go through the result cache's shared
	// portals, which still answer the Parse first (docs/pooling.md).
	bad, good := "INSERT INTO pe_c_t SELECT a FROM pe_no_such_table", "SELECT count(*) FROM pe_c_t"
	run := func(name, query string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Parse{Name: name, Query: query},
			&pgproto3.Bind{PreparedStatement: name}, &pgproto3.Execute{}}
	}
	steps := []wireStep{
		append(run("", bad), sync),
		append(run("pc_bad", bad), sync),
		{&pgproto3.Bind{PreparedStatement: "pc_bad"}, &pgproto3.Execute{}, sync},
		// pgx's prepare: Parse, Describe, Sync.
		{&pgproto3.Parse{Name: "pc_d", Query: "SELECT nope FROM pe_c_t WHERE a = $1"}, &pgproto3.Describe{ObjectType: 'S', Name: "pc_d"}, sync},
		{&pgproto3.Parse{Name: "pc_d", Query: "SELECT a FROM pe_c_t WHERE a = $1"}, &pgproto3.Describe{ObjectType: 'S', Name: "pc_d"}, sync},
		// A good statement, then the failing one, in one pipeline.
		append(append(run("", good), run("pc_bad2", bad)...), sync),
		{&pgproto3.Bind{PreparedStatement: "pc_bad2"}, &pgproto3.Execute{}, sync},
		// The unnamed statement before a failed unnamed Parse is gone.
		append(run("", good), sync),
		append(run("", bad), sync),
		{&pgproto3.Bind{}, &pgproto3.Execute{}, sync},
		{&pgproto3.Query{String: "BEGIN"}},
		append(run("pc_tx", bad), sync),
		append(run("", good), sync),
		{&pgproto3.Query{String: "ROLLBACK"}},
		// A statement parsed once stays good.
		append(run("pc_good", good), sync),
		{&pgproto3.Bind{PreparedStatement: "pc_good"}, &pgproto3.Execute{}, sync},
	}
	exec := mustConnect(t)
	if _, err := exec.Exec(context.Background(), "CREATE TABLE IF NOT EXISTS pe_c_t (a int)"); err != nil {
		t.Fatal(err)
	}
	defer exec.Exec(context.Background(), "DROP TABLE pe_c_t")
	want := transcript(t, env.shards.Clusters[0].DSN("deliveryapp"), steps)
	if got := transcript(t, proxyURL("app", "app"), steps); got != want {
		t.Fatalf("through the proxy:\n%s\nstraight to Postgres:\n%s", got, want)
	}
}
