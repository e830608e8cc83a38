package integration

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestCancelWhileWaitingForLease: a statement waiting for a backend of an
// exhausted pool (no backend yet) ends with 57014 as soon as its client
// sends a CancelRequest, not with 53300 at acquire_timeout (5s), and the
// session is usable afterwards.
func TestCancelWhileWaitingForLease(t *testing.T) {
	seedUsers(t)
	ctx := context.Background()
	const q = "SELECT count(*) FROM users WHERE id = 1"
	// Hold every backend of the shard of user 1 (pool size 8) in open
	// transactions.
	var holders []pgx.Tx
	for i := 0; i < env.cfg.Pool.Size; i++ {
		tx, err := mustConnect(t).Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := tx.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("holder %d: %v", i, err)
		}
		holders = append(holders, tx)
	}
	c := mustConnect(t)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		var n int
		done <- c.QueryRow(ctx, q).Scan(&n)
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the statement did not wait for a backend: %v", err)
	default:
	}
	if err := c.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if pgCode(err) != "57014" {
			t.Fatalf("canceled while waiting for a backend: %v after %v, want 57014", err, time.Since(start))
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the cancel ended the wait after %v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the canceled statement still waits")
	}
	for _, tx := range holders {
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := c.QueryRow(ctx, q).Scan(&n); err != nil || n != 1 {
		t.Fatalf("session after the cancel: %d %v", n, err)
	}
}
