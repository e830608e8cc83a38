package replication

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// step is one statement of a script: its SQLSTATE ("" for success) is
// compared between the proxy and a plain Postgres; port says whether it
// returns inet_server_port() (the server that ran it).
type step struct {
	sql  string
	port bool
}

// runScript runs steps on c and returns each step's SQLSTATE and, for
// port steps, the port.
func runScript(t *testing.T, c *pgx.Conn, steps []step) (codes []string, ports []int) {
	t.Helper()
	ctx := context.Background()
	for _, s := range steps {
		var p int
		var err error
		if s.port {
			err = c.QueryRow(ctx, s.sql).Scan(&p)
		} else {
			_, err = c.Exec(ctx, s.sql)
		}
		code := ""
		if err != nil {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				t.Fatalf("%s: %v", s.sql, err)
			}
			code = pe.Code
		}
		codes = append(codes, code)
		ports = append(ports, p)
	}
	return codes, ports
}

// TestReadOnlyTransactions: a transaction read-only from its start runs
// on one replica (the same for all its statements); a write in it gets
// 25006 as from Postgres; read-write and serializable transactions stay
// on the primary. SQLSTATEs are compared with a plain Postgres.
func TestReadOnlyTransactions(t *testing.T) {
	addr := startProxy(t, "replicas: {read_from: replicas, read_your_writes: off, failover_buffer: 20s}",
		dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	waitRotation(t, addr, "s0-r1", "s0-r2")
	const who = "SELECT inet_server_port() FROM one"
	replica := func(p int) bool { return p == env.r1.Port || p == env.r2.Port }
	cases := []struct {
		name  string
		steps []step
		// onReplica says, per port step, whether it must run on a replica.
		onReplica []bool
	}{
		{"begin read only", []step{{"BEGIN READ ONLY", false}, {who, true}, {who, true},
			{"INSERT INTO one VALUES (2)", false}, {"ROLLBACK", false}}, []bool{true, true}},
		{"start transaction read only", []step{{"START TRANSACTION READ ONLY, ISOLATION LEVEL REPEATABLE READ", false},
			{who, true}, {"SELECT count(*)::int FROM kv WHERE id = 1", true}, {who, true}, {"COMMIT", false}}, []bool{true, true}},
		{"set transaction read only", []step{{"BEGIN", false}, {"SET TRANSACTION READ ONLY", false}, {who, true},
			{"SELECT nextval('seq')::int", true}, {"ROLLBACK", false}}, []bool{true}},
		{"set local transaction_read_only", []step{{"BEGIN", false}, {"SET LOCAL transaction_read_only = on", false},
			{who, true}, {"COMMIT", false}}, []bool{true}},
		{"read write", []step{{"BEGIN READ WRITE", false}, {who, true}, {"COMMIT", false}}, []bool{false}},
		{"plain begin", []step{{"BEGIN", false}, {who, true}, {"COMMIT", false}}, []bool{false}},
		{"serializable read only", []step{{"BEGIN READ ONLY ISOLATION LEVEL SERIALIZABLE", false}, {who, true},
			{"COMMIT", false}}, []bool{false}},
		{"session characteristics", []step{{"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", false},
			{"BEGIN", false}, {who, true}, {"UPDATE one SET x = x", false}, {"ROLLBACK", false},
			{"BEGIN READ WRITE", false}, {who, true}, {"COMMIT", false},
			{"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", false},
			{"BEGIN", false}, {who, true}, {"COMMIT", false}}, []bool{true, false, false}},
		{"default_transaction_read_only", []step{{"SET default_transaction_read_only = on", false},
			{"BEGIN", false}, {who, true}, {"COMMIT", false},
			// Autocommit: the primary's own 25006, at once (no failover wait).
			{"INSERT INTO one VALUES (2)", false},
			{"RESET default_transaction_read_only", false},
			{"BEGIN", false}, {who, true}, {"COMMIT", false}}, []bool{true, false}},
	}
	for _, m := range modes {
		for _, tc := range cases {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				c := connect(t, addr, m.mode)
				start := time.Now()
				got, ports := runScript(t, c, tc.steps)
				if took := time.Since(start); took > 10*time.Second {
					t.Fatalf("script took %v: a 25006 waited for a failover", took)
				}
				ref, err := pgx.ConnectConfig(context.Background(), directConfig(t, m.mode))
				if err != nil {
					t.Fatal(err)
				}
				defer ref.Close(context.Background())
				want, _ := runScript(t, ref, tc.steps)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("SQLSTATEs through the proxy %q, from Postgres %q", got, want)
				}
				// The who steps that ran, in order: on a replica or not as
				// listed, and within one transaction on one server.
				k, txPort := 0, 0
				for i, st := range tc.steps {
					if strings.HasPrefix(st.sql, "BEGIN") || strings.HasPrefix(st.sql, "START") {
						txPort = 0
					}
					if st.sql != who || got[i] != "" {
						continue
					}
					p := ports[i]
					if replica(p) != tc.onReplica[k] {
						t.Fatalf("step %d ran on port %d; on a replica: %v, want %v", i, p, replica(p), tc.onReplica[k])
					}
					if txPort != 0 && p != txPort {
						t.Fatalf("the transaction moved from port %d to %d", txPort, p)
					}
					txPort = p
					k++
				}
				if k != len(tc.onReplica) {
					t.Fatalf("%d reads ran, want %d", k, len(tc.onReplica))
				}
			})
		}
	}
}

// directConfig connects to shard 0's primary directly (the reference).
func directConfig(t *testing.T, mode pgx.QueryExecMode) *pgx.ConnConfig {
	cc, err := pgx.ParseConfig(env.primary.DSN(database))
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = mode
	return cc
}

// TestReadYourWritesLSN: with read_your_writes: lsn, a read right after a
// write sees it even while the replicas' replay is paused (it goes to the
// primary); a session that did not write reads the replica (and does not
// see it yet); once replay resumes, the writer's reads return to the
// replicas.
func TestReadYourWritesLSN(t *testing.T) {
	addr := startProxy(t, "replicas: {read_from: replicas, read_your_writes: lsn, max_lag: -1s}",
		dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	waitRotation(t, addr, "s0-r1", "s0-r2")
	resume := func() {
		exec(t, env.r1, "SELECT pg_wal_replay_resume()")
		exec(t, env.r2, "SELECT pg_wal_replay_resume()")
	}
	t.Cleanup(resume)
	ctx := context.Background()
	const read = "SELECT count(*)::int * 0 + inet_server_port() FROM filler WHERE b = $1"
	const seen = "SELECT count(*)::int FROM filler WHERE b = $1"
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := connect(t, addr, m.mode)
			other := connect(t, addr, m.mode)
			v := fmt.Sprintf("ryw-lsn-%s-%d", m.name, time.Now().UnixNano())
			// Before any write: the replicas.
			if p := port(t, c, read, v); p == env.primary.Port {
				t.Fatal("a read before any write ran on the primary")
			}
			exec(t, env.r1, "SELECT pg_wal_replay_pause()")
			exec(t, env.r2, "SELECT pg_wal_replay_pause()")
			if _, err := c.Exec(ctx, "INSERT INTO filler VALUES ($1)", v); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				if n := port(t, c, seen, v); n != 1 {
					t.Fatalf("read %d after the write saw %d rows, want 1", i, n)
				}
				if p := port(t, c, read, v); p != env.primary.Port {
					t.Fatalf("read after the write ran on port %d, want the primary (replay paused)", p)
				}
			}
			// A read-only transaction follows the same rule.
			tx, err := c.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
			if err != nil {
				t.Fatal(err)
			}
			var n int
			if err := tx.QueryRow(ctx, seen, v).Scan(&n); err != nil || n != 1 {
				t.Fatalf("read-only transaction after the write: %d rows, %v", n, err)
			}
			tx.Rollback(ctx)
			// Another session has not written: a replica, which has not
			// replayed the write.
			if n := port(t, other, seen, v); n != 0 {
				t.Fatalf("a session that never wrote saw the write on a paused replica (%d rows)", n)
			}
			resume()
			caughtUp(t)
			waitFor(t, 10*time.Second, "reads back on the replicas", func() bool {
				return port(t, c, read, v) != env.primary.Port
			})
			if n := port(t, c, seen, v); n != 1 {
				t.Fatalf("read on a replica after replay resumed saw %d rows", n)
			}
		})
	}
}
