package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestSyntaxErrorsMatchPostgres: statements the proxy's parser rejects get
// Postgres's own error (code, message, hint, position), in both
// protocols, and the session stays usable; a statement the proxy cannot
// read but Postgres would run is refused, never run unrouted.
func TestSyntaxErrorsMatchPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	direct, err := shardConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	simple := mustConnect(t)
	ext, err := connectExec(ctx, pgx.QueryExecModeExec)
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close(ctx)
	pgErr := func(c *pgx.Conn, sql string) *pgconn.PgError {
		_, err := c.Exec(ctx, sql)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			t.Fatalf("%s: %v, want an ErrorResponse", sql, err)
		}
		return pe
	}
	for _, sql := range []string{
		"drop operator === (int4)",
		"selec 1",
		"SELECT 1 +",
		"SELECT U&'wrong: +0061' UESCAPE '+'",
		"create table t (a int,, b int)",
		"SELECT 1; SELEC 2",
	} {
		want := pgErr(direct, sql)
		for name, c := range map[string]*pgx.Conn{"simple": simple, "extended": ext} {
			if name == "extended" && sql == "SELECT 1; SELEC 2" {
				continue
			}
			got := pgErr(c, sql)
			if got.Code != want.Code || got.Message != want.Message || got.Hint != want.Hint || got.Position != want.Position {
				t.Errorf("%s (%s): got %s %q hint %q at %d; Postgres %s %q hint %q at %d", sql, name,
					got.Code, got.Message, got.Hint, got.Position, want.Code, want.Message, want.Hint, want.Position)
			}
			var one int
			if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Fatalf("after %s (%s): %v", sql, name, err)
			}
		}
	}
	// With standard_conforming_strings off, Postgres reads 'a\'b' as one
	// string; the proxy's parser cannot: refused, not run.
	for _, c := range []*pgx.Conn{simple, direct} {
		if _, err := c.Exec(ctx, "SET standard_conforming_strings = off"); err != nil {
			t.Fatal(err)
		}
	}
	if got := pgErr(simple, `SELECT count(*) FROM users WHERE name = 'a\'b'`); got.Code != "0A000" || !strings.Contains(got.Hint, "standard_conforming_strings") {
		t.Errorf("a backslash-quoted string with standard_conforming_strings off: %s %q %q, want 0A000 with a hint", got.Code, got.Message, got.Hint)
	}
	// What only the proxy's newer grammar rejects (Postgres 15 fails it
	// when it runs): refused, with a hint that says so.
	if got := pgErr(simple, "CREATE TABLE zz_magic (a int) PARTITION BY MAGIC (a)"); got.Code != "0A000" || strings.Contains(got.Hint, "standard_conforming_strings") || got.Hint == "" {
		t.Errorf("PARTITION BY MAGIC: %s %q %q, want 0A000 with a hint about the grammar", got.Code, got.Message, got.Hint)
	}
	// The session's setting reaches the shard that words the error.
	sql := `SELECT U&'d\0061t\+000061' , 'x`
	want, got := pgErr(direct, sql), pgErr(simple, sql)
	if got.Code != want.Code || got.Message != want.Message || got.Position != want.Position {
		t.Errorf("%s with standard_conforming_strings off: got %s %q at %d; Postgres %s %q at %d", sql, got.Code, got.Message, got.Position, want.Code, want.Message, want.Position)
	}
	if _, err := simple.Exec(ctx, "RESET standard_conforming_strings"); err != nil {
		t.Fatal(err)
	}
}

// TestEveryShardErrorsMatchPostgres: an error of DDL sent to every shard
// (in a transaction of the proxy's, or shard by shard for statements
// that cannot run in one) is the statement's error as one Postgres gives
// it: no CONTEXT naming a shard, no prefix.
func TestEveryShardErrorsMatchPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	direct, err := shardConn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	c := mustConnect(t)
	for _, sql := range []string{
		"CREATE TABLE users (x int)",
		"ALTER TABLE users ADD COLUMN id int",
		"DROP TABLE no_such_table",
		"CREATE INDEX CONCURRENTLY ON no_such_table (x)",
		"CREATE DATABASE deliveryapp",
	} {
		_, derr := direct.Exec(ctx, sql)
		_, perr := c.Exec(ctx, sql)
		var want, got *pgconn.PgError
		if !errors.As(derr, &want) || !errors.As(perr, &got) {
			t.Fatalf("%s: Postgres %v, proxy %v; want errors", sql, derr, perr)
		}
		if got.Code != want.Code || got.Message != want.Message || got.Where != want.Where || got.Detail != want.Detail || got.Hint != want.Hint {
			t.Errorf("%s: proxy %s %q (where %q, detail %q, hint %q); Postgres %s %q (where %q, detail %q, hint %q)", sql,
				got.Code, got.Message, got.Where, got.Detail, got.Hint, want.Code, want.Message, want.Where, want.Detail, want.Hint)
		}
	}
}
