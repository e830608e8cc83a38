package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// Differential transaction scripts: random sequences of transaction
// control, writes and reads on one or several shards, savepoints, errors
// from the shards, SETs, and multi-statement strings run through the proxy
// (4 shards) and against one plain Postgres holding the same data. Every
// step's command tags, SQLSTATEs and transaction status, and the final
// data, must be equal.

// txScripts is how many scripts run per protocol: SHARDPROXY_TX_SCRIPTS
// raises it (make stress).
func txScripts() int {
	if n, err := strconv.Atoi(os.Getenv("SHARDPROXY_TX_SCRIPTS")); err == nil && n > 0 {
		return n
	}
	return 120
}

// stepResult is what one step answered: each statement's tag or SQLSTATE,
// then the transaction status.
type stepResult string

func runStep(ctx context.Context, c *pgconn.PgConn, sql string, extended bool) stepResult {
	var parts []string
	record := func(tag pgconn.CommandTag, err error) {
		if err != nil {
			if pe, ok := err.(*pgconn.PgError); ok {
				parts = append(parts, "ERROR "+pe.Code)
				return
			}
			parts = append(parts, "FAIL "+err.Error())
			return
		}
		parts = append(parts, tag.String())
	}
	if extended {
		r := c.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
		record(r.CommandTag, r.Err)
	} else {
		rs, err := c.Exec(ctx, sql).ReadAll()
		for _, r := range rs {
			record(r.CommandTag, r.Err)
		}
		if err != nil && (len(rs) == 0 || rs[len(rs)-1].Err == nil) {
			record(pgconn.CommandTag{}, err)
		}
	}
	return stepResult(strings.Join(parts, "; ") + " [" + string(c.TxStatus()) + "]")
}

// scriptGen makes random steps over keys 1..keys of table kv.
type scriptGen struct {
	rng      *rand.Rand
	keys     int
	extended bool
}

func (g *scriptGen) key() int { return 1 + g.rng.IntN(g.keys) }

func (g *scriptGen) step() string {
	sp := []string{"a", "b"}[g.rng.IntN(2)]
	steps := []string{
		"BEGIN", "BEGIN", "BEGIN ISOLATION LEVEL REPEATABLE READ", "START TRANSACTION",
		"COMMIT", "COMMIT", "ROLLBACK", "END", "ABORT",
		fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, %d)", g.key(), g.rng.IntN(100)),
		fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, %d)", g.key(), g.rng.IntN(100)),
		fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, 1), (%d, 2), (%d, 3)", g.key(), g.key(), g.key()),
		fmt.Sprintf("UPDATE kv SET v = v + 1 WHERE k = %d", g.key()),
		"UPDATE kv SET v = v + 1",
		fmt.Sprintf("UPDATE kv SET v = 5000 WHERE k = %d", g.key()), // violates the CHECK where the key exists
		"UPDATE kv SET v = v + 1000 WHERE v > 50",                   // violates it on some shards only
		fmt.Sprintf("DELETE FROM kv WHERE k = %d", g.key()),
		// The shard key changed: the row moves shards (or 23505 where the
		// new key exists), as an ordinary UPDATE in Postgres.
		fmt.Sprintf("UPDATE kv SET k = %d WHERE k = %d", g.key(), g.key()),
		fmt.Sprintf("UPDATE kv SET k = %d, v = v + 1 WHERE v = %d RETURNING k, v", g.key(), g.rng.IntN(100)),
		fmt.Sprintf("DELETE FROM kv WHERE v = %d", g.rng.IntN(100)),
		"SELECT count(*) FROM kv",
		fmt.Sprintf("SELECT v FROM kv WHERE k = %d", g.key()),
		"SELECT 1/0",
		fmt.Sprintf("SELECT 1/(v - v) FROM kv WHERE k = %d", g.key()),
		"SAVEPOINT " + sp, "ROLLBACK TO SAVEPOINT " + sp, "RELEASE SAVEPOINT " + sp,
		"/* undo */ ROLLBACK TO " + sp,
		fmt.Sprintf("SET lock_timeout = '%dms'", 1000+g.rng.IntN(5)),
		"SET LOCAL lock_timeout = '777ms'",
		"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
		"SET TRANSACTION READ ONLY",
		"SHOW transaction_isolation",
		"SHOW lock_timeout",
		"RESET lock_timeout",
	}
	if !g.extended {
		steps = append(steps,
			fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, 7); INSERT INTO kv (k, v) VALUES (%d, 8)", g.key(), g.key()),
			fmt.Sprintf("UPDATE kv SET v = v + 1 WHERE k = %d; SELECT 1/0", g.key()),
			fmt.Sprintf("BEGIN; DELETE FROM kv WHERE k = %d; COMMIT", g.key()),
			fmt.Sprintf("SELECT count(*) FROM kv WHERE k = %d; SELECT count(*) FROM kv WHERE k = %d", g.key(), g.key()),
		)
	}
	return steps[g.rng.IntN(len(steps))]
}

func TestTransactionScriptsMatchPostgres(t *testing.T) {
	ctx := context.Background()
	oc := startOracleCluster(t, "txscripts", "  kv: {strategy: hash, key: k}\n")
	schema := "CREATE TABLE kv (k bigint PRIMARY KEY, v int NOT NULL CHECK (v < 1000))"
	connect := func(url string) *pgconn.PgConn {
		t.Helper()
		c, err := pgconn.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		return c
	}
	px, plain := connect(oc.proxyURL()), connect(oc.plainURL())
	for _, c := range []*pgconn.PgConn{px, plain} {
		if _, err := c.Exec(ctx, schema).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	data := func(c *pgconn.PgConn) string {
		t.Helper()
		rs, err := c.Exec(ctx, "SELECT k, v FROM kv ORDER BY k").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		for _, r := range rs[0].Rows {
			fmt.Fprintf(&sb, "%s=%s,", r[0], r[1])
		}
		return sb.String()
	}
	n := txScripts()
	steps := 0
	for _, extended := range []bool{false, true} {
		rng := rand.New(rand.NewPCG(7, uint64(len(fmt.Sprint(extended)))))
		g := &scriptGen{rng: rng, keys: 12, extended: extended}
		for i := 0; i < n; i++ {
			var script []string
			for j := 0; j < 4+rng.IntN(10); j++ {
				sql := g.step()
				script = append(script, sql)
				got, want := runStep(ctx, px, sql, extended), runStep(ctx, plain, sql, extended)
				steps++
				if got == want && got[len(got)-2] == 'I' {
					// Idle on both sides: what is committed must agree
					// now, not only at the end (a string that half
					// commits can still end with equal tags).
					if dg, dw := data(px), data(plain); dg != dw {
						t.Fatalf("extended=%v script %d step %d: data differs:\n%s\nproxy:    %s\npostgres: %s", extended, i, j,
							strings.Join(script, "\n"), dg, dw)
					}
				}
				if got != want {
					t.Fatalf("extended=%v script %d step %d differs:\n%s\nproxy:    %s\npostgres: %s", extended, i, j,
						strings.Join(script, "\n"), got, want)
				}
			}
			// End the script's transaction; the data must then agree.
			for _, c := range []*pgconn.PgConn{px, plain} {
				if c.TxStatus() != 'I' {
					runStep(ctx, c, "ROLLBACK", extended)
				}
			}
			if got, want := data(px), data(plain); got != want {
				t.Fatalf("extended=%v script %d: data differs:\n%s\nproxy:    %s\npostgres: %s", extended, i,
					strings.Join(script, "\n"), got, want)
			}
			// A session SET must not leak into the next script.
			for _, c := range []*pgconn.PgConn{px, plain} {
				runStep(ctx, c, "RESET lock_timeout", extended)
			}
		}
	}
	for i := 0; i < 4; i++ {
		c, err := pgconn.Connect(ctx, oc.set.Clusters[i].DSN(oc.database))
		if err != nil {
			t.Fatal(err)
		}
		rs, err := c.Exec(ctx, "SELECT count(*) FROM pg_prepared_xacts").ReadAll()
		c.Close(ctx)
		if err != nil || string(rs[0].Rows[0][0]) != "0" {
			t.Fatalf("shard %d keeps prepared transactions: %v %v", i, rs, err)
		}
	}
	t.Logf("%d scripts per protocol, %d steps compared", n, steps)
}
