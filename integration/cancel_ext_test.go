package integration

import (
	"context"
	"testing"
	"time"
)

// A CancelRequest during a cross-shard statement in the extended protocol
// (pgx caches the prepared statement) leaves the session usable: the same
// cached statement runs again on every shard.
func TestCancelExtendedScatterKeepsSession(t *testing.T) {
	seedUsers(t)
	c := mustConnect(t)
	const q = "SELECT count(*) FROM users WHERE pg_sleep($1::float8) IS NULL"
	for round := 0; round < 3; round++ {
		done := make(chan error, 1)
		go func() {
			_, err := c.Exec(context.Background(), q, 30)
			done <- err
		}()
		time.Sleep(500 * time.Millisecond)
		if err := c.PgConn().CancelRequest(context.Background()); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if pgCode(err) != "57014" {
				t.Fatalf("round %d: canceled statement: %v", round, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("cancel did not stop the fan-out")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var n int
		err := c.QueryRow(ctx, q, 0).Scan(&n)
		cancel()
		if err != nil {
			t.Fatalf("round %d: session after cancel: n=%d %v", round, n, err)
		}
	}
}
