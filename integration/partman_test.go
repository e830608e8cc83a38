package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shardproxy/shardproxy/partman"
)

// TestPartmanThenInsertThroughProxy runs partman over the shards, then
// inserts through the proxy into every month of the premake window: each row
// must land in its month's partition on its hash shard.
func TestPartmanThenInsertThroughProxy(t *testing.T) {
	ctx := context.Background()
	premake := 4
	cfg := partman.Config{Tables: map[string]partman.TableConfig{
		"orders": {Column: "created_at", Interval: partman.Month, Premake: &premake},
	}}
	now := time.Now().UTC()
	runner := &partman.Runner{Config: cfg, Shards: env.topo.Shards, Now: func() time.Time { return now }}
	rep, err := runner.Run(ctx, partman.Apply)
	if err != nil {
		t.Fatal(err)
	}
	if f := rep.Failures(); len(f) > 0 {
		t.Fatalf("partman: %v", f)
	}
	c := mustConnect(t)
	first := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	for m := 0; m <= premake; m++ {
		at := first.AddDate(0, m, 14)
		uid := int64(950000 + m)
		if _, err := c.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status, created_at) VALUES ($1, $2, 1, 1, 'pm', $3)",
			uid, uid, at); err != nil {
			t.Fatalf("insert for %s: %v", at.Format("2006-01"), err)
		}
		var part string
		if err := c.QueryRow(ctx, "SELECT tableoid::regclass::text FROM orders WHERE user_id = $1", uid).Scan(&part); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("orders_p%04d_%02d", at.Year(), at.Month()); part != want {
			t.Fatalf("row for %s landed in %s, want %s", at.Format("2006-01"), part, want)
		}
	}
	// A second run changes nothing.
	rep, err = runner.Run(ctx, partman.Apply)
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range rep.Shards {
		for _, tr := range sh.Tables {
			if len(tr.Created)+len(tr.Detached)+len(tr.Dropped) > 0 {
				t.Fatalf("second run changed %s on %s: %+v", tr.Table, sh.Shard, tr)
			}
		}
	}
}
