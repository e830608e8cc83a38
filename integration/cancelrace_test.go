package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestCancelRaceScatterExtended: CancelRequests at random moments around
// the end of a cross-shard statement in the extended protocol (pgx caches
// the prepared statement). As with Postgres, a cancel whose CancelRequest
// has returned affects at most the statement it was sent during: the next
// statement (the cached Bind again) answers at once, not 57014, never hangs.
func TestCancelRaceScatterExtended(t *testing.T) {
	seedUsers(t)
	cc, err := pgx.ParseConfig(proxyURL("app", "app"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rounds, canceled := 200, 0
	for i := 0; i < rounds; i++ {
		// A new statement every few rounds: the shards' backends prepare
		// it (the proxy injects their Parse) while cancels fly.
		q := fmt.Sprintf("SELECT count(*) FROM users WHERE pg_sleep($1::float8) IS NULL AND id > -%d", i/3)
		done := make(chan error, 1)
		go func() {
			var n int
			done <- c.QueryRow(ctx, q, float64(1+rand.IntN(4))/1000).Scan(&n)
		}()
		time.Sleep(time.Duration(rand.IntN(10000)) * time.Microsecond)
		if err := c.PgConn().CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil && pgCode(err) != "57014" {
				t.Fatalf("round %d: canceled statement: %v", i, err)
			}
			if err != nil {
				canceled++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the canceled statement hangs", i)
		}
		next := make(chan error, 1)
		go func() {
			var n int
			next <- c.QueryRow(ctx, q, 0).Scan(&n)
		}()
		select {
		case err := <-next:
			if err != nil {
				t.Fatalf("round %d: the statement after the cancel: %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: the statement after the cancel hangs", i)
		}
	}
	t.Logf("%d of %d rounds canceled", canceled, rounds)
	if canceled == 0 || canceled == rounds {
		t.Fatalf("%d of %d rounds canceled: the cancels did not land at random moments", canceled, rounds)
	}
}
