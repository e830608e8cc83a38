package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestCursorEdgeCasesMatchPostgres: cross-shard cursors (DECLARE over
// orders on four shards) with savepoints, errors, COMMIT and writes in the
// same transaction, the same statements through the proxy and against one
// plain Postgres holding the same rows.
func TestCursorEdgeCasesMatchPostgres(t *testing.T) {
	seedCursorRows(t)
	q := func(sql string) wireStep { return wireStep{&pgproto3.Query{String: sql}} }
	cross := "SELECT id, status FROM orders " + curWhere + " ORDER BY id"
	scripts := map[string][]wireStep{
		"declared in a savepoint rolled back": {
			q("BEGIN"), q("SAVEPOINT a"),
			q("DECLARE c CURSOR FOR " + cross), q("FETCH 2 FROM c"),
			q("ROLLBACK TO SAVEPOINT a"), q("FETCH 1 FROM c"),
			q("ROLLBACK"),
			q("BEGIN"), q("SAVEPOINT a"),
			q("DECLARE c CURSOR FOR " + cross), q("FETCH 2 FROM c"),
			q("ROLLBACK TO SAVEPOINT a"), q("ROLLBACK TO SAVEPOINT a"), q("DECLARE c CURSOR FOR " + cross), q("FETCH 3 FROM c"),
			q("COMMIT"),
		},
		"declared before a savepoint rolled back": {
			q("BEGIN"),
			q("DECLARE c CURSOR FOR " + cross), q("FETCH 2 FROM c"),
			q("SAVEPOINT a"), q("FETCH 2 FROM c"), q("SELECT 1 / 0"),
			q("ROLLBACK TO SAVEPOINT a"), q("FETCH 2 FROM c"),
			q("SAVEPOINT b"), q("MOVE 5 IN c"), q("RELEASE SAVEPOINT b"), q("FETCH 1 FROM c"),
			q("CLOSE c"), q("COMMIT"),
		},
		"a transaction that errors": {
			q("BEGIN"),
			q("DECLARE c CURSOR FOR " + cross), q("FETCH 2 FROM c"),
			q("SELECT id FROM orders WHERE user_id = 960003 AND 1 / 0 = 1"),
			q("FETCH 1 FROM c"), q("CLOSE c"), q("SELECT 1"),
			q("ROLLBACK"), q("FETCH 1 FROM c"),
			q("SELECT count(*) FROM orders " + curWhere),
		},
		"one-shard cursors and savepoints": {
			q("BEGIN"),
			q("DECLARE k CURSOR FOR SELECT id FROM orders WHERE user_id = 960003"),
			q("SAVEPOINT a"),
			q("DECLARE k2 CURSOR FOR SELECT id FROM orders WHERE user_id = 960003"), q("FETCH 1 FROM k2"),
			q("ROLLBACK TO SAVEPOINT a"), q("FETCH 1 FROM k2"),
			q("ROLLBACK TO SAVEPOINT a"),
			q("DECLARE k2 CURSOR FOR SELECT id FROM orders WHERE user_id = 960003"), q("FETCH 1 FROM k2"),
			q("SAVEPOINT b"), q("DECLARE m CURSOR FOR " + cross), q("RELEASE SAVEPOINT b"),
			q("FETCH 1 FROM k"), q("FETCH 2 FROM m"),
			q("ROLLBACK TO SAVEPOINT a"), q("FETCH 1 FROM m"),
			q("ROLLBACK TO SAVEPOINT a"), q("FETCH 1 FROM k"),
			q("COMMIT"),
		},
		"COMMIT closes cursors": {
			q("BEGIN"),
			q("DECLARE c CURSOR FOR " + cross), q("DECLARE d CURSOR WITHOUT HOLD FOR SELECT status, count(*) FROM orders " + curWhere + " GROUP BY status ORDER BY status"),
			q("FETCH 1 FROM c"), q("FETCH 1 FROM d"),
			q("COMMIT"),
			q("FETCH 1 FROM c"), q("CLOSE d"),
			q("BEGIN"), q("FETCH 1 FROM d"), q("ROLLBACK"),
			q("BEGIN"), q("DECLARE c CURSOR FOR " + cross), q("FETCH 1 FROM c"), q("COMMIT"),
		},
		"cursors opened by functions": {
			q("CREATE OR REPLACE FUNCTION drivers3_declares(int) RETURNS void LANGUAGE sql AS 'DECLARE fc CURSOR FOR SELECT generate_series(1, $1)'"),
			q("CREATE OR REPLACE FUNCTION drivers3_opens(int) RETURNS refcursor LANGUAGE plpgsql AS " +
				"'DECLARE r refcursor := ''rc''; BEGIN OPEN r FOR SELECT g, g * 2 FROM generate_series(1, $1) g; RETURN r; END'"),
			q("BEGIN"), q("SELECT drivers3_declares(7)"), q("FETCH 2 FROM fc"), q("MOVE 2 IN fc"), q("FETCH ALL FROM fc"), q("CLOSE fc"), q("FETCH 1 FROM fc"), q("ROLLBACK"),
			q("BEGIN"), q("SELECT id FROM orders WHERE user_id = 960005"), q("SELECT drivers3_opens(5)"), q("FETCH 3 FROM rc"), q("FETCH ALL FROM rc"), q("CLOSE rc"), q("COMMIT"),
			q("FETCH 1 FROM rc"), q("CLOSE rc"),
		},
		"writes while a cursor is open": {
			q("BEGIN"),
			q("DECLARE c CURSOR FOR " + cross), q("FETCH 3 FROM c"),
			q("UPDATE orders SET status = 'cur' WHERE id BETWEEN 960000 AND 960010"),
			q("FETCH 3 FROM c"),
			q("UPDATE orders SET status = 'key' WHERE user_id = 960007"),
			q("DELETE FROM orders WHERE user_id = 960008"),
			q("FETCH 4 FROM c"),
			q("SELECT id, status FROM orders WHERE id BETWEEN 960000 AND 960010 ORDER BY id"),
			q("DECLARE d CURSOR FOR " + cross), q("FETCH 11 FROM d"),
			q("INSERT INTO orders (id, user_id, restaurant_id, total, status, created_at) VALUES (960299, 960299, 1, 1, 'dup', '2025-02-02 00:00:00+00')"),
			q("FETCH 1 FROM c"),
			q("ROLLBACK"),
			q("SELECT id, status FROM orders WHERE id BETWEEN 960000 AND 960010 ORDER BY id"),
		},
	}
	for name, steps := range scripts {
		t.Run(name, func(t *testing.T) {
			want := cursorTranscript(t, curPlain(), steps)
			got := cursorTranscript(t, proxyURL("app", "app"), steps)
			if got != want {
				t.Fatalf("through the proxy:\n%s\nplain Postgres:\n%s", got, want)
			}
			t.Logf("%d messages alike, %d rows", strings.Count(got, "\n"), strings.Count(got, "DataRow"))
		})
	}
}

// TestCrossShardCursorErrorFailsTransaction: a cross-shard cursor whose
// query fails on a row fails the transaction (25P02 until ROLLBACK) and
// the session goes on. The error comes at DECLARE or at a FETCH: the merge
// reads up to 1000 rows ahead on every shard, where one Postgres fails only
// when a FETCH reaches the row (docs/routing.md).
func TestCrossShardCursorErrorFailsTransaction(t *testing.T) {
	seedCursorRows(t)
	q := func(sql string) wireStep { return wireStep{&pgproto3.Query{String: sql}} }
	got := cursorTranscript(t, proxyURL("app", "app"), []wireStep{
		q("BEGIN"),
		q("DECLARE e CURSOR FOR SELECT id, 1 / (id - 960150) FROM orders " + curWhere + " ORDER BY id"),
		q("FETCH 3 FROM e"), q("FETCH 200 FROM e"),
		q("SELECT 1"), q("ROLLBACK"),
		q("SELECT count(*) FROM orders " + curWhere),
	})
	if strings.Count(got, "ErrorResponse 22012") != 1 || !strings.Contains(got, "ErrorResponse 25P02\nReadyForQuery E\nCommandComplete ROLLBACK\nReadyForQuery I\nRowDescription count:20:0\nDataRow 300\n") {
		t.Fatalf("want one 22012, then 25P02 until ROLLBACK, then a working session:\n%s", got)
	}
}

// TestCursorsLeaveNothingOnBackends: clients that leave cross-shard
// cursors and portals behind (half-read, in a transaction left open at
// disconnect, a portal suspended before Flush and never closed) leave no
// cursor on any pooled backend: the next clients can declare the same
// names, and pg_cursors on every backend of every shard is empty.
func TestCursorsLeaveNothingOnBackends(t *testing.T) {
	seedCursorRows(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cross := "SELECT id FROM orders " + curWhere + " ORDER BY id"
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				c, err := pgconn.Connect(ctx, proxyURL("app", "app"))
				if err != nil {
					errs <- err
					return
				}
				switch i % 3 {
				case 0: // declared and half read, then the client goes away in its transaction
					_, err = c.Exec(ctx, "BEGIN; DECLARE c CURSOR FOR "+cross+"; FETCH 5 FROM c").ReadAll()
				case 1: // committed with the cursor open
					_, err = c.Exec(ctx, "BEGIN; DECLARE c CURSOR FOR "+cross+"; FETCH 5 FROM c; COMMIT").ReadAll()
				case 2: // a portal read in part before Flush (pg-cursor), then gone
					hj, herr := c.Hijack()
					if herr != nil {
						errs <- herr
						return
					}
					fe := hj.Frontend
					fe.Send(&pgproto3.Parse{Query: cross})
					fe.Send(&pgproto3.Bind{DestinationPortal: "p"})
					fe.Send(&pgproto3.Execute{Portal: "p", MaxRows: 5})
					fe.Send(&pgproto3.Flush{})
					if err = fe.Flush(); err == nil {
						hj.Conn.SetDeadline(time.Now().Add(20 * time.Second))
						for {
							m, rerr := fe.Receive()
							if rerr != nil {
								err = rerr
								break
							}
							if _, ok := m.(*pgproto3.PortalSuspended); ok {
								break
							}
						}
					}
					hj.Conn.Close()
					if err != nil {
						errs <- fmt.Errorf("portal client: %w", err)
					}
					return
				}
				if err != nil {
					errs <- err
				}
				c.Close(ctx)
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	// The next clients: the same cursor name declared again, everywhere.
	for i := 0; i < 4; i++ {
		c := mustConnect(t)
		var n int
		res, err := c.PgConn().Exec(ctx, "BEGIN; DECLARE c CURSOR FOR "+cross+"; FETCH ALL FROM c; COMMIT").ReadAll()
		if err == nil && len(res) == 4 {
			n = len(res[2].Rows)
		}
		if err != nil || n != curN {
			t.Fatalf("next client's cursor: %d rows, %v", n, err)
		}
	}
	// pg_cursors on every backend of every shard: as many clients as the
	// pool has backends per shard hold a transaction there at once, so
	// each looks at a different backend.
	const poolSize = 8
	for shard := 0; shard < nShards; shard++ {
		var wg sync.WaitGroup
		found := make(chan string, poolSize)
		pids := make(chan int32, poolSize)
		start := make(chan struct{})
		for i := 0; i < poolSize; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := connect(ctx, "app", "app")
				if err != nil {
					found <- err.Error()
					return
				}
				defer c.Close(ctx)
				<-start
				tx, err := c.Begin(ctx)
				if err != nil {
					found <- err.Error()
					return
				}
				defer tx.Rollback(ctx)
				var names string
				var pid int32
				if err := tx.QueryRow(ctx, fmt.Sprintf("/* shard: s%d */ SELECT coalesce(string_agg(name, ','), ''), pg_backend_pid() FROM pg_cursors", shard)).Scan(&names, &pid); err != nil {
					found <- err.Error()
					return
				}
				pids <- pid
				time.Sleep(500 * time.Millisecond) // keep the backend while the others look
				if names != "" {
					found <- fmt.Sprintf("backend %d: cursors %s", pid, names)
				}
			}()
		}
		close(start)
		wg.Wait()
		close(found)
		close(pids)
		for f := range found {
			t.Errorf("shard s%d: %s", shard, f)
		}
		seen := map[int32]bool{}
		for p := range pids {
			seen[p] = true
		}
		if len(seen) != poolSize {
			t.Errorf("shard s%d: looked at %d backends, want every one of the pool's %d", shard, len(seen), poolSize)
		}
	}
}

// TestExplainDeclareCursor: EXPLAIN DECLARE ... CURSOR is routed like the
// cursor's query (one shard, or every shard for a cross-shard query) and
// answered with a plan, in and outside a transaction.
func TestExplainDeclareCursor(t *testing.T) {
	seedCursorRows(t)
	q := func(sql string) wireStep { return wireStep{&pgproto3.Query{String: sql}} }
	got := cursorTranscript(t, proxyURL("app", "app"), []wireStep{
		q("EXPLAIN (COSTS OFF) DECLARE c SCROLL CURSOR FOR SELECT id FROM orders WHERE user_id = 960003"),
		q("BEGIN"),
		q("EXPLAIN (COSTS OFF) DECLARE c CURSOR FOR SELECT id FROM orders WHERE user_id = 960003"),
		q("EXPLAIN (COSTS OFF) DECLARE c CURSOR FOR SELECT id FROM orders " + curWhere + " ORDER BY id"),
		q("DECLARE c CURSOR FOR SELECT id FROM orders WHERE user_id = 960003"), q("FETCH ALL FROM c"),
		q("COMMIT"),
	})
	if strings.Contains(got, "ErrorResponse") || strings.Count(got, "CommandComplete EXPLAIN") != 3 || !strings.Contains(got, "DataRow 960003\n") {
		t.Fatalf("want three plans and the cursor's row:\n%s", got)
	}
}
