package integration

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

// rawProxy opens a connection to the proxy driven with raw protocol
// messages.
func rawProxy(t *testing.T) *pgproto3.Frontend {
	t.Helper()
	hj := rawConn(t, proxyURL("app", "app"))
	hj.Conn.SetDeadline(time.Now().Add(60 * time.Second)) // a hang guard only
	return hj.Frontend
}

// replies sends msgs and records the replies up to ReadyForQuery.
func replies(t *testing.T, fe *pgproto3.Frontend, msgs ...pgproto3.FrontendMessage) string {
	t.Helper()
	for _, m := range msgs {
		fe.Send(m)
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	return readUntilReady(t, fe)
}

// readUntilReady records message types up to ReadyForQuery.
func readUntilReady(t *testing.T, fe *pgproto3.Frontend) string {
	t.Helper()
	var got []string
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("receive (the proxy does not answer): %v; so far %v", err, got)
		}
		switch x := m.(type) {
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
			continue
		case *pgproto3.ErrorResponse:
			got = append(got, "Error "+x.Code)
		case *pgproto3.ReadyForQuery:
			got = append(got, fmt.Sprintf("Z %c", x.TxStatus))
			return strings.Join(got, ", ")
		default:
			got = append(got, strings.TrimPrefix(fmt.Sprintf("%T", m), "*pgproto3."))
		}
	}
}

// TestExtendedBackendSwitchKeepsReplies: inside a transaction on two
// shards, one request (one Sync) runs a statement on the second shard and
// then one that may run anywhere (it goes to the transaction's first
// backend). The first part's messages must still reach its shard and its
// replies the client, in order, as one Postgres would answer; the proxy
// used to drop them when it switched backends, and the client missed
// replies (a pgx batch read the next statement's as its own).
func TestExtendedBackendSwitchKeepsReplies(t *testing.T) {
	uA, uB := userOn(0, 9_900_000), userOn(1, 9_900_000)
	count := &pgproto3.Parse{Name: "cnt", Query: "SELECT count(*) FROM orders WHERE user_id = $1", ParameterOIDs: []uint32{20}}
	bind := func(u int64) *pgproto3.Bind {
		return &pgproto3.Bind{PreparedStatement: "cnt", Parameters: [][]byte{[]byte(strconv.FormatInt(u, 10))}}
	}
	steps := []wireStep{
		{&pgproto3.Query{String: "BEGIN"}},
		{count, bind(uA), &pgproto3.Execute{}, &pgproto3.Sync{}}, // the transaction's first shard
		{bind(uB), &pgproto3.Execute{}, // joins the second shard
			&pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Bind{}, &pgproto3.Execute{}, // anywhere: the first shard's backend
			&pgproto3.Sync{}},
		{bind(uB), &pgproto3.Execute{}, &pgproto3.Parse{Query: "SELECT 2"}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'},
			&pgproto3.Flush{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		{&pgproto3.Query{String: "COMMIT"}},
	}
	want := transcript(t, env.shards.Clusters[0].DSN("deliveryapp"), steps)
	if got := transcript(t, proxyURL("app", "app"), steps); got != want {
		t.Fatalf("through the proxy:\n%s\nPostgres:\n%s", got, want)
	}
	// A statement described (on a backend outside the transaction, which
	// has no shard yet) and then run in the same request: the Describe's
	// replies come first, whichever shard the statement runs on.
	for sh := 0; sh < nShards; sh++ {
		u := userOn(sh, 9_900_000)
		steps := []wireStep{
			{&pgproto3.Query{String: "BEGIN"}},
			{&pgproto3.Parse{Name: "d", Query: "SELECT count(*) FROM orders WHERE user_id = $1", ParameterOIDs: []uint32{20}},
				&pgproto3.Describe{ObjectType: 'S', Name: "d"},
				&pgproto3.Bind{PreparedStatement: "d", Parameters: [][]byte{[]byte(strconv.FormatInt(u, 10))}}, &pgproto3.Execute{},
				&pgproto3.Sync{}},
			{&pgproto3.Query{String: "COMMIT"}},
		}
		want := transcript(t, env.shards.Clusters[sh].DSN("deliveryapp"), steps)
		if got := transcript(t, proxyURL("app", "app"), steps); got != want {
			t.Fatalf("described and run on shard %d: through the proxy:\n%s\nPostgres:\n%s", sh, got, want)
		}
	}
}

// TestBackendKilledMidDescribe: the shard backend running a request's
// Describe (its injected Parse waits for a lock) is terminated before it
// answers. The proxy notices the lost connection: the client gets the
// shard's error (once: the FATAL ends the backend's part, no read of the
// closed connection adds 08006) and ReadyForQuery instead of waiting, and
// its session goes on with a new backend.
func TestBackendKilledMidDescribe(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	if _, err := c.Exec(ctx, "CREATE TABLE relay_lock (a int)"); err != nil {
		t.Fatal(err)
	}
	defer c.Exec(ctx, "DROP TABLE relay_lock")
	// Every shard's copy is locked, whichever the Describe goes to. The
	// waiter is found in pg_locks: pg_stat_activity would be read once per
	// transaction of the locker.
	lockers := make([]pgx.Tx, nShards)
	for i := range lockers {
		d, err := shardConn(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close(ctx)
		if lockers[i], err = d.Begin(ctx); err != nil {
			t.Fatal(err)
		}
		defer lockers[i].Rollback(ctx)
		if _, err := lockers[i].Exec(ctx, "LOCK TABLE relay_lock IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
	}
	fe := rawProxy(t)
	fe.Send(&pgproto3.Parse{Name: "k", Query: "SELECT a FROM relay_lock"})
	fe.Send(&pgproto3.Describe{ObjectType: 'S', Name: "k"})
	fe.Send(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	killed := false
	for tries := 0; !killed; tries++ {
		if tries == 400 { // a hang guard
			// What did the proxy answer instead of waiting for the shard?
			done := make(chan string, 1)
			go func() {
				m, err := fe.Receive()
				done <- fmt.Sprintf("%T %+v %v", m, m, err)
			}()
			select {
			case got := <-done:
				t.Fatalf("no shard backend waits for the lock; the proxy answered: %s", got)
			case <-time.After(5 * time.Second):
				t.Fatal("no shard backend waits for the lock, and the proxy answers nothing")
			}
		}
		for i, l := range lockers {
			var n int
			err := l.Conn().QueryRow(ctx, `SELECT count(pg_terminate_backend(pid))::int FROM pg_locks
				WHERE relation = 'relay_lock'::regclass AND NOT granted`).Scan(&n)
			if err != nil {
				t.Fatalf("shard %d: %v", i, err)
			}
			killed = killed || n > 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := readUntilReady(t, fe)
	t.Logf("replies after the kill: %s", got)
	// The backend's answer to the Parse stands for the client's (the
	// Describe follows it: extskip.go), so the shard's error comes in
	// place of ParseComplete and the statement does not exist, as after
	// any failed Parse. A backend that had the statement already answers
	// the Parse itself no more: the client has its ParseComplete, then
	// the parameters (it waits in revalidating the statement, the table
	// having been made anew) and the error.
	parsed := false
	switch got {
	case "Error 57P01, Z I":
	case "ParseComplete, Error 57P01, Z I", "ParseComplete, ParameterDescription, Error 57P01, Z I":
		parsed = true
	default:
		t.Fatalf("describe on a killed backend: %s, want the shard's error (57P01) and ReadyForQuery", got)
	}
	for _, l := range lockers {
		l.Rollback(ctx)
	}
	if !parsed {
		if got := replies(t, fe, &pgproto3.Describe{ObjectType: 'S', Name: "k"}, &pgproto3.Sync{}); got != "Error 26000, Z I" {
			t.Fatalf("the statement whose Parse failed, described: %s", got)
		}
		if got := replies(t, fe, &pgproto3.Parse{Name: "k", Query: "SELECT a FROM relay_lock"}, &pgproto3.Sync{}); got != "ParseComplete, Z I" {
			t.Fatalf("the statement parsed again: %s", got)
		}
	}
	if got := replies(t, fe, &pgproto3.Describe{ObjectType: 'S', Name: "k"}, &pgproto3.Sync{}); got != "ParameterDescription, RowDescription, Z I" {
		t.Fatalf("the statement described again: %s", got)
	}
}

// TestSimpleScatterErrorThenExtended: a cross-shard statement that fails
// in the simple protocol (pgx sends Exec without arguments that way) does
// not spill into the session's next extended request: its messages used to
// be skipped as if that request had failed (pgx then read an empty
// statement description: "expected 0 arguments, got 1"), and a client
// waiting at Flush got nothing.
func TestSimpleScatterErrorThenExtended(t *testing.T) {
	ctx := context.Background()
	c, err := pgx.Connect(ctx, proxyURL("app", "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT $1::int", 3).Scan(&n); err != nil || n != 3 {
		t.Fatalf("extended before: %d %v", n, err)
	}
	if _, err := c.Exec(ctx, "SELECT count(*) / 0 FROM users"); pgCode(err) != "22012" {
		t.Fatalf("a cross-shard error in the simple protocol: %v", err)
	}
	if err := c.QueryRow(ctx, "SELECT $1::int + 1", 5).Scan(&n); err != nil || n != 6 {
		t.Fatalf("a new statement after it: %d %v", n, err)
	}
	if _, err := c.Exec(ctx, "SELECT count(*) / 0 FROM users"); pgCode(err) != "22012" {
		t.Fatalf("a cross-shard error in the simple protocol: %v", err)
	}
	if err := c.QueryRow(ctx, "SELECT $1::int", 7).Scan(&n); err != nil || n != 7 {
		t.Fatalf("a cached statement after it: %d %v", n, err)
	}
	fe := rawProxy(t)
	if got := replies(t, fe, &pgproto3.Query{String: "SELECT count(*) / 0 FROM users"}); got != "RowDescription, Error 22012, Z I" && got != "Error 22012, Z I" {
		t.Fatalf("simple: %s", got)
	}
	fe.Send(&pgproto3.Parse{Query: "SELECT 1"})
	fe.Send(&pgproto3.Bind{})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Flush{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"*pgproto3.ParseComplete", "*pgproto3.BindComplete", "*pgproto3.DataRow", "*pgproto3.CommandComplete"} {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("at Flush, waiting for %s: %v", want, err)
		}
		if got := fmt.Sprintf("%T", m); got != want {
			t.Fatalf("at Flush: %s, want %s", got, want)
		}
	}
	if got := replies(t, fe, &pgproto3.Sync{}); got != "Z I" {
		t.Fatalf("Sync: %s", got)
	}
}
