package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

var execModes = []pgx.QueryExecMode{
	pgx.QueryExecModeCacheStatement,
	pgx.QueryExecModeCacheDescribe,
	pgx.QueryExecModeDescribeExec,
	pgx.QueryExecModeExec,
	pgx.QueryExecModeSimpleProtocol,
}

func connectMode(t *testing.T, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(proxyURL("app", "app"))
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = mode
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func TestPgxAllExecModes(t *testing.T) {
	seed := mustConnect(t)
	insertOrders(t, seed, "orders", 600000, 40)
	for mi, mode := range execModes {
		t.Run(mode.String(), func(t *testing.T) {
			ctx := context.Background()
			c := connectMode(t, mode)
			// Point query with the key as a parameter (text or binary).
			for _, uid := range []int64{600001, 600017, 600039} {
				var id int64
				var total pgtype.Numeric
				if err := c.QueryRow(ctx, "SELECT id, total FROM orders WHERE user_id = $1", uid).Scan(&id, &total); err != nil {
					t.Fatalf("point query %d: %v", uid, err)
				}
				if id != uid {
					t.Fatalf("got order %d for user %d", id, uid)
				}
			}
			// Keyless aggregates over every shard, combined in the client's format.
			var n, maxID int64
			var sum pgtype.Numeric
			var minAt time.Time
			err := c.QueryRow(ctx, "SELECT count(*), sum(total), max(id), min(created_at) FROM orders WHERE id >= $1 AND id < $2",
				600000, 600040).Scan(&n, &sum, &maxID, &minAt)
			if err != nil {
				t.Fatal(err)
			}
			f, _ := sum.Float64Value()
			// totals are i + 0.50 for i in 0..39: 780 + 20.
			if n != 40 || f.Float64 != 800 || maxID != 600039 || !minAt.Equal(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)) {
				t.Fatalf("aggregates: count %d sum %v max %d min %v", n, f.Float64, maxID, minAt)
			}
			// Keyless rows, concatenated.
			rows, err := c.Query(ctx, "SELECT id FROM orders WHERE id >= $1 AND id < $2", 600000, 600040)
			if err != nil {
				t.Fatal(err)
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
			if err != nil || len(ids) != 40 {
				t.Fatalf("keyless rows: %d %v", len(ids), err)
			}
			// Writes routed by a parameter, and a transaction with rollback.
			uid := int64(610000 + mi)
			if _, err := c.Exec(ctx, "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES ($1, $2, 1, 9.99, 'new')", uid, uid); err != nil {
				t.Fatal(err)
			}
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "UPDATE orders SET status = 'gone' WHERE user_id = $1", uid); err != nil {
				t.Fatal(err)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			var status string
			if err := c.QueryRow(ctx, "SELECT status FROM orders WHERE user_id = $1", uid).Scan(&status); err != nil || status != "new" {
				t.Fatalf("after rollback: %q %v", status, err)
			}
			// An error, then the connection goes on.
			if _, err := c.Exec(ctx, "SELECT 1/0 FROM orders WHERE user_id = $1", uid); pgCode(err) != "22012" {
				t.Fatalf("division by zero: %v", err)
			}
			if _, err := c.Exec(ctx, "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders"); pgCode(err) != "0A000" {
				t.Fatalf("refusal: %v", err)
			}
			if err := c.QueryRow(ctx, "SELECT count(*) FROM orders WHERE user_id = $1", uid).Scan(&n); err != nil || n != 1 {
				t.Fatalf("after errors: %d %v", n, err)
			}
		})
	}
}

func TestPgxBatchPipelines(t *testing.T) {
	ctx := context.Background()
	c := connectMode(t, pgx.QueryExecModeCacheStatement)
	seed := mustConnect(t)
	insertOrders(t, seed, "orders", 620000, 20)
	// Reads for keys on different shards in one pipeline.
	b := &pgx.Batch{}
	for i := 0; i < 20; i++ {
		b.Queue("SELECT id FROM orders WHERE user_id = $1", int64(620000+i))
	}
	br := c.SendBatch(ctx, b)
	for i := 0; i < 20; i++ {
		var id int64
		if err := br.QueryRow().Scan(&id); err != nil || id != int64(620000+i) {
			t.Fatalf("batch read %d: %d %v", i, id, err)
		}
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	// Writes in one pipeline on one shard key: atomic, like Postgres.
	b = &pgx.Batch{}
	b.Queue("UPDATE orders SET status = 'batched' WHERE user_id = $1", int64(620003))
	b.Queue("SELECT count(*) FROM orders WHERE user_id = $1 AND status = 'batched'", int64(620003))
	br = c.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := br.QueryRow().Scan(&n); err != nil || n != 1 {
		t.Fatalf("read own write in pipeline: %d %v", n, err)
	}
	br.Close()
	// An error mid-pipeline: later statements are skipped, the connection goes on.
	b = &pgx.Batch{}
	b.Queue("SELECT 1/0 FROM orders WHERE user_id = $1", int64(620004))
	b.Queue("UPDATE orders SET status = 'never' WHERE user_id = $1", int64(620004))
	br = c.SendBatch(ctx, b)
	if _, err := br.Exec(); pgCode(err) != "22012" {
		t.Fatalf("first in failing pipeline: %v", err)
	}
	br.Close()
	if err := c.QueryRow(ctx, "SELECT count(*) FROM orders WHERE user_id = $1 AND status = 'never'", int64(620004)).Scan(&n); err != nil || n != 0 {
		t.Fatalf("statement after error in pipeline ran: %d %v", n, err)
	}
}

func TestPreparedStatementsShareBackends(t *testing.T) {
	// Many clients preparing the same and different statements over a
	// small pool: names never collide, statements follow clients.
	ctx := context.Background()
	seed := mustConnect(t)
	insertOrders(t, seed, "orders", 630000, 16)
	errs := make(chan error, 16)
	for w := 0; w < 16; w++ {
		go func() {
			c, err := connect(ctx, "app", "app")
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(ctx)
			for i := 0; i < 30; i++ {
				uid := int64(630000 + (w+i)%16)
				var id int64
				q := "SELECT id FROM orders WHERE user_id = $1"
				if w%2 == 1 {
					q = "SELECT id FROM orders WHERE user_id = $1 AND id > -1"
				}
				if err := c.QueryRow(ctx, q, pgx.QueryExecModeCacheStatement, uid).Scan(&id); err != nil || id != uid {
					errs <- fmt.Errorf("worker %d: %d %v", w, id, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < 16; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestDeallocateRemovesOnlyTheClientsView(t *testing.T) {
	ctx := context.Background()
	a := connectMode(t, pgx.QueryExecModeCacheStatement)
	b := connectMode(t, pgx.QueryExecModeCacheStatement)
	if _, err := a.Prepare(ctx, "mine", "SELECT count(*) FROM restaurants WHERE id > $1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Prepare(ctx, "mine", "SELECT count(*) FROM restaurants WHERE id > $1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "DEALLOCATE mine", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "DEALLOCATE mine", pgx.QueryExecModeSimpleProtocol); pgCode(err) != "26000" {
		t.Fatalf("second DEALLOCATE: %v", err)
	}
	var n int64
	if err := b.QueryRow(ctx, "mine", 0).Scan(&n); err != nil { // b's statement lives on
		t.Fatalf("other client's statement: %v", err)
	}
	if _, err := a.Exec(ctx, "DEALLOCATE ALL", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
}
