package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestClientGoneCancelsShardQueries: a client whose connection drops while
// its statement runs on one or several shards does not leave the shards
// working for nobody. Postgres notices a dead client only when it writes to
// it, so the proxy must cancel (or close) the busy backends itself: within
// a few seconds of the disconnect no shard still runs the statement, no
// shard keeps a transaction open for it, and the pools have every backend
// back (in_use 0).
func TestClientGoneCancelsShardQueries(t *testing.T) {
	seedUsers(t)
	cases := []struct {
		name   string
		shards int // shards the statement runs on
		extended,
		inTx bool
		match string // what pg_stat_activity shows, when not the marker
		run   func(ctx context.Context, c *pgx.Conn, marker string) error
	}{
		{name: "one shard", shards: 1, run: func(ctx context.Context, c *pgx.Conn, m string) error {
			_, err := c.Exec(ctx, fmt.Sprintf("SELECT '%s', pg_sleep(30)", m))
			return err
		}},
		{name: "scatter", shards: nShards, run: func(ctx context.Context, c *pgx.Conn, m string) error {
			_, err := c.Exec(ctx, fmt.Sprintf("SELECT count(*) FROM users WHERE pg_sleep(30) IS NULL AND '%s' <> ''", m))
			return err
		}},
		{name: "extended one shard", shards: 1, extended: true, run: func(ctx context.Context, c *pgx.Conn, m string) error {
			_, err := c.Exec(ctx, fmt.Sprintf("SELECT count(*) FROM users WHERE id = $1 AND pg_sleep($2::float8) IS NULL AND '%s' <> ''", m), 3, 30)
			return err
		}},
		{name: "extended scatter", shards: nShards, extended: true, run: func(ctx context.Context, c *pgx.Conn, m string) error {
			_, err := c.Exec(ctx, fmt.Sprintf("SELECT count(*) FROM users WHERE pg_sleep($1::float8) IS NULL AND '%s' <> ''", m), 30)
			return err
		}},
		{name: "transaction", shards: 1, inTx: true, run: func(ctx context.Context, c *pgx.Conn, m string) error {
			if _, err := c.Exec(ctx, "BEGIN"); err != nil {
				return err
			}
			if _, err := c.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (970001, 97001, 1, 1, 'gone')"); err != nil {
				return err
			}
			_, err := c.Exec(ctx, fmt.Sprintf("SELECT count(*) FROM orders WHERE user_id = 97001 AND pg_sleep(30) IS NULL AND '%s' <> ''", m))
			return err
		}},
		{name: "transaction scatter", shards: nShards, inTx: true, run: func(ctx context.Context, c *pgx.Conn, m string) error {
			if _, err := c.Exec(ctx, "BEGIN"); err != nil {
				return err
			}
			if _, err := c.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (970002, 97002, 1, 1, 'gone')"); err != nil {
				return err
			}
			_, err := c.Exec(ctx, fmt.Sprintf("SELECT count(*) FROM users WHERE pg_sleep(30) IS NULL AND '%s' <> ''", m))
			return err
		}},
		{name: "copy to", shards: nShards, run: func(ctx context.Context, c *pgx.Conn, m string) error {
			_, err := c.PgConn().CopyTo(ctx, io.Discard, fmt.Sprintf("COPY (SELECT id FROM users WHERE pg_sleep(30) IS NULL AND '%s' <> '') TO STDOUT", m))
			return err
		}},
		{name: "copy from", shards: 1, match: "FROM STDIN", run: func(ctx context.Context, c *pgx.Conn, m string) error {
			// The rows stop coming: the shard waits in COPY for data that
			// never arrives.
			r, w := io.Pipe()
			go func() {
				io.WriteString(w, "970003\t97003\t1\t1\tgone\n")
				<-ctx.Done()
				w.Close()
			}()
			_, err := c.PgConn().CopyFrom(ctx, r, "COPY orders (id, user_id, restaurant_id, total, status) FROM STDIN")
			return err
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			marker := fmt.Sprintf("gone-%d-%d", i, time.Now().UnixNano())
			// Backends other tests' sessions still hold are not this case's.
			inUse := func() float64 {
				n := 0.0
				for k, v := range listenMetrics(t) {
					if strings.HasPrefix(k, "shardproxy_pool_connections/") && strings.HasSuffix(k, "/in_use") {
						n += v
					}
				}
				return n
			}
			before := inUse()
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			cc, err := pgx.ParseConfig(proxyURL("app", "app"))
			if err != nil {
				t.Fatal(err)
			}
			// A client that dies sends no CancelRequest; pgx sends one when
			// its read fails, so every dial after the first fails here.
			dials := 0
			var d net.Dialer
			cc.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
				if dials++; dials > 1 {
					return nil, errors.New("this client is dead")
				}
				return d.DialContext(ctx, network, addr)
			}
			if !tc.extended {
				cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
			}
			c, err := pgx.ConnectConfig(ctx, cc)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- tc.run(ctx, c, marker) }()

			match := marker
			if tc.match != "" {
				match = tc.match
			}
			// Wait until the statement runs on its shards.
			running := func() (int, int) {
				active, inTx := 0, 0
				for s := 0; s < nShards; s++ {
					active += int(shardInt(t, s, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%'||$1||'%' AND pid <> pg_backend_pid() AND state = 'active'", match))
					inTx += int(shardInt(t, s, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'deliveryapp' AND state LIKE 'idle in transaction%'"))
				}
				return active, inTx
			}
			deadline := time.Now().Add(10 * time.Second)
			for n, _ := running(); n < tc.shards; n, _ = running() {
				if time.Now().After(deadline) {
					t.Fatalf("statement not running on %d shards (%d)", tc.shards, n)
				}
				select {
				case err := <-done:
					t.Fatalf("statement ended before the disconnect: %v", err)
				case <-time.After(50 * time.Millisecond):
				}
			}

			c.PgConn().Conn().Close() // the client vanishes without a word
			gone := time.Now()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("the client's own read did not end")
			}
			for {
				active, inTx := running()
				busy := inUse() - before
				if active == 0 && inTx == 0 && busy <= 0 {
					t.Logf("shards and pools clean %v after the disconnect", time.Since(gone).Round(10*time.Millisecond))
					break
				}
				if time.Since(gone) > 5*time.Second {
					t.Fatalf("5s after the client left: %d shard queries still active, %d transactions open, %v backends in use", active, inTx, busy)
				}
				time.Sleep(100 * time.Millisecond)
			}
			// Nothing it wrote stays, and the proxy serves the next client.
			c2 := mustConnect(t)
			var n int64
			if err := c2.QueryRow(context.Background(), "SELECT count(*) FROM orders WHERE user_id IN (97001, 97002, 97003)").Scan(&n); err != nil || n != 0 {
				t.Fatalf("after the disconnect: %d rows of the vanished client, %v", n, err)
			}
		})
	}
}
