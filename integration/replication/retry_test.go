package replication

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestRetry25006: the primary is stopped, its replica promoted, and the
// old primary rejoins as a replica of it, while the proxies' health
// checks are far apart and have seen none of it. A write then meets 25006
// on the old primary: the proxy re-probes, moves writes to the promoted
// server and runs the statement again there. Each case has a proxy of its
// own (each sees the failover once): an autocommit write in both
// protocols (the extended request replayed with its prepared statement),
// and the first statement of an explicit transaction in both protocols
// (the transaction opened again on the new primary with what it said
// before: its SET LOCAL). A read-only transaction keeps its 25006 and
// moves nothing.
func TestRetry25006(t *testing.T) {
	ctx := context.Background()
	prim, rep := primaryWithReplica(t, "retry-r1")
	const write = "SELECT nextval('seq')::int * 0 + inet_server_port() FROM one"
	type retryCase struct {
		name     string
		mode     pgx.QueryExecMode
		tx       bool
		readOnly bool
		addr     string
		c        *pgx.Conn
	}
	cases := []*retryCase{
		{name: "extended", mode: pgx.QueryExecModeCacheStatement},
		{name: "simple", mode: pgx.QueryExecModeSimpleProtocol},
		{name: "extended-tx", mode: pgx.QueryExecModeCacheStatement, tx: true},
		{name: "simple-tx", mode: pgx.QueryExecModeSimpleProtocol, tx: true},
		{name: "extended-readonly-tx", mode: pgx.QueryExecModeCacheStatement, tx: true, readOnly: true},
	}
	for _, tc := range cases {
		from := "replicas"
		if tc.readOnly {
			from = "primary" // the read-only transaction runs on the "primary"
		}
		tc.addr = startProxyHealth(t, "{interval: 1h, timeout: 2s, failures: 1, successes: 1}",
			"replicas: {read_from: "+from+", failover_buffer: 15s, read_your_writes: off}", dsnOf(prim), dsnOf(rep))
		if !tc.readOnly {
			waitRotation(t, tc.addr, "s0-r1")
		}
		// Both servers seen in their roles before the failover: a first
		// probe that ran only after it (a loaded machine) would find the
		// promoted server and move writes before the case's write meets
		// 25006 (the health checks are an hour apart after that).
		waitProbed(t, tc.addr, map[string]string{"s0": "primary", "s0-r1": "replica"})
		tc.c = connect(t, tc.addr, tc.mode)
		if p := port(t, tc.c, write); p != prim.Port {
			t.Fatalf("%s: write on port %d before the failover, want the primary %d", tc.name, p, prim.Port)
		}
	}
	if err := prim.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := rep.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := prim.Follow(ctx, rep); err != nil {
		t.Fatal(err)
	}
	// The old primary is up, read-only: a direct write there gets 25006.
	waitFor(t, 20*time.Second, "old primary in recovery", func() bool {
		c, err := pgx.Connect(ctx, prim.DSN(database))
		if err != nil {
			return false
		}
		defer c.Close(ctx)
		var rec bool
		return c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec) == nil && rec
	})
	direct, err := pgx.Connect(ctx, rep.DSN(database))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if r := showReplicas(t, tc.addr)["s0"]; !r.writes {
				t.Fatalf("the proxy already moved writes (no 25006 to retry): %+v", r)
			}
			start := time.Now()
			var p int
			switch {
			case tc.readOnly:
				tx, err := tc.c.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
				if err != nil {
					t.Fatal(err)
				}
				err = tx.QueryRow(ctx, write).Scan(&p)
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Code != "25006" {
					t.Fatalf("write in a read-only transaction: %v, want 25006", err)
				}
				if err := tx.Rollback(ctx); err != nil {
					t.Fatal(err)
				}
				if r := showReplicas(t, tc.addr)["s0"]; !r.writes {
					t.Fatalf("a read-only transaction's 25006 moved writes (it was retried): %+v", r)
				}
				// The next autocommit write is retried on the new primary.
				if p = port(t, tc.c, write); p != rep.Port {
					t.Fatalf("write on port %d, want the promoted server %d", p, rep.Port)
				}
				return
			case tc.tx:
				tx, err := tc.c.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = '31s'"); err != nil {
					t.Fatal(err)
				}
				if err := tx.QueryRow(ctx, write).Scan(&p); err != nil {
					t.Fatalf("first statement of a transaction after the failover: %v", err)
				}
				var timeout string
				if err := tx.QueryRow(ctx, "SHOW statement_timeout").Scan(&timeout); err != nil || timeout != "31s" {
					t.Fatalf("SET LOCAL before the retried statement: statement_timeout %q (%v), want 31s", timeout, err)
				}
				mark := fmt.Sprintf("retry-%s-%d", tc.name, time.Now().UnixNano())
				if _, err := tx.Exec(ctx, "INSERT INTO filler (b) VALUES ($1)", mark); err != nil {
					t.Fatal(err)
				}
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
				var n int
				if err := direct.QueryRow(ctx, "SELECT count(*) FROM filler WHERE b = $1", mark).Scan(&n); err != nil || n != 1 {
					t.Fatalf("the transaction's row on the new primary: %d (%v), want 1", n, err)
				}
			default:
				if err := tc.c.QueryRow(ctx, write).Scan(&p); err != nil {
					t.Fatalf("write after the failover: %v", err)
				}
			}
			if p != rep.Port {
				t.Fatalf("write on port %d, want the promoted server %d", p, rep.Port)
			}
			t.Logf("write on the new primary after %v", time.Since(start).Round(time.Millisecond))
			if r := showReplicas(t, tc.addr)["s0-r1"]; !r.writes {
				t.Fatalf("writes not on the promoted server: %+v", r)
			}
		})
	}
}
