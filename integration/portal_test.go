package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestCrossShardLimitOffsetParameters: LIMIT and OFFSET given as untyped
// parameters (node-postgres, knex, pgx's exec mode) in a cross-shard query
// are read from the bound values; the answer is the same as with literals.
func TestCrossShardLimitOffsetParameters(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	if _, err := c.Exec(ctx, "DELETE FROM orders WHERE id BETWEEN 730000 AND 730099"); err != nil {
		t.Fatal(err)
	}
	insertOrders(t, c, "orders", 730000, 40)
	const where = "WHERE id BETWEEN 730000 AND 730099"
	want := func(limit, offset int) []int64 {
		rows, err := c.Query(ctx, fmt.Sprintf("SELECT id FROM orders %s ORDER BY created_at DESC, id LIMIT %d OFFSET %d", where, limit, offset))
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeExec, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeCacheStatement} {
		e, err := connectExec(ctx, mode)
		if err != nil {
			t.Fatal(err)
		}
		for _, lo := range [][2]int{{3, 2}, {5, 0}, {0, 4}, {10, 35}} {
			rows, err := e.Query(ctx, "SELECT id FROM orders "+where+" ORDER BY created_at DESC, id LIMIT $1 OFFSET $2", lo[0], lo[1])
			if err != nil {
				t.Fatalf("mode %v: %v", mode, err)
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
			if err != nil {
				t.Fatalf("mode %v LIMIT %d OFFSET %d: %v", mode, lo[0], lo[1], err)
			}
			if w := want(lo[0], lo[1]); fmt.Sprint(got) != fmt.Sprint(w) {
				t.Fatalf("mode %v LIMIT %d OFFSET %d: %v, want %v", mode, lo[0], lo[1], got, w)
			}
		}
		e.Close(ctx)
	}
}

// TestCrossShardPortalErrorHonoursFlush: pg-cursor's Execute(maxRows) +
// Flush on a cross-shard portal gets its answer at once, before any Sync.
func TestCrossShardPortalErrorHonoursFlush(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := connectPgconn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hj, err := conn.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hj.Conn.Close()
	fe := hj.Frontend
	fe.Send(&pgproto3.Parse{Query: "SELECT id FROM orders ORDER BY id"})
	fe.Send(&pgproto3.Bind{})
	fe.Send(&pgproto3.Describe{ObjectType: 'P'})
	fe.Send(&pgproto3.Execute{MaxRows: 100})
	fe.Send(&pgproto3.Flush{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	hj.Conn.SetDeadline(time.Now().Add(10 * time.Second))
	var seen []string
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("no answer before Sync (got %v): %v", seen, err)
		}
		seen = append(seen, fmt.Sprintf("%T", m))
		if _, ok := m.(*pgproto3.ErrorResponse); ok {
			break
		}
		if _, ok := m.(*pgproto3.PortalSuspended); ok {
			break
		}
		if _, ok := m.(*pgproto3.CommandComplete); ok {
			break
		}
	}
	fe.Send(&pgproto3.Sync{})
	fe.Send(&pgproto3.Query{String: "SELECT 1"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	rfq := 0
	for rfq < 2 {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("after Sync: %v", err)
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			rfq++
		}
	}
}

func connectPgconn(ctx context.Context) (*pgconn.PgConn, error) {
	return pgconn.Connect(ctx, proxyURL("app", "app"))
}
