package replication

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestFailoverBufferDeadPrimaryDial: the primary dies and the health checks
// are far apart, so nothing has marked it down yet when the next writes
// come: their dial of the primary fails at once. Like writes to a primary
// marked down, they wait within failover_buffer (1s: then 08006, not at
// once; 60s: they complete on the replica once it is promoted), and the
// other shard's writes are not delayed meanwhile.
func TestFailoverBufferDeadPrimaryDial(t *testing.T) {
	ctx := context.Background()
	b := newBufferCase(t, "deaddial-r1", "{interval: 60s, timeout: 1s, failures: 2, successes: 1}")
	for _, c := range append(append([]*pgx.Conn(nil), b.cs...), b.cl...) {
		if p := port(t, c, bufferWrite); p != b.prim.Port { // the pools hold primary backends
			t.Fatalf("write before the kill on port %d, want %d", p, b.prim.Port)
		}
	}
	if err := b.prim.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{b.short, b.long} {
		if st := showReplicas(t, addr)["s0"].state; st == "down" {
			t.Fatalf("the primary is marked down already (%s): the case needs an unmarked dead primary", st)
		}
	}
	waiting := b.startWaiting(ctx)
	b.shortWritesFail(t, ctx, nil)
	b.promoteAndFinish(t, ctx, waiting)
}
