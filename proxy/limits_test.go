package proxy

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

func TestMaxClientConnections(t *testing.T) {
	srv, addr := startTestServer(t, Config{
		Users:  []User{{Name: "a", Auth: "trust", MaxClientConnections: 1}, {Name: "b", Auth: "trust"}},
		Limits: Limits{MaxClientConnections: 2},
	})
	a1, err := dial(t, addr, "user=a&sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, addr, "user=a&sslmode=disable"); sqlstate(err) != "53300" || !strings.Contains(err.Error(), `too many connections for role "a"`) {
		t.Fatalf("second session of a: %v, want 53300", err)
	}
	if _, err := dial(t, addr, "user=b&sslmode=disable"); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, addr, "user=b&sslmode=disable"); sqlstate(err) != "53300" || !strings.Contains(err.Error(), "too many clients already") {
		t.Fatalf("third session: %v, want 53300", err)
	}
	if n := counterValue(srv.limits.hits[limitConnections]); n != 1 {
		t.Errorf("total limit hits %v, want 1", n)
	}
	if n := counterValue(srv.limits.hits[limitUserConnections]); n != 1 {
		t.Errorf("per-user limit hits %v, want 1", n)
	}
	// A session that ends frees its slot (once the proxy has seen it go:
	// attempts before that are refused and counted).
	a1.Close(context.Background())
	waitFor(t, func() bool { _, err := dial(t, addr, "user=a&sslmode=disable"); return err == nil })
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if ok() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("condition not met in 2s")
}

// TestMaxQueryBytes: an oversized Query, or Parse, gets 54000 and the
// session goes on; the message is skipped, not buffered.
func TestMaxQueryBytes(t *testing.T) {
	srv, addr := startTestServer(t, Config{Users: []User{{Name: "a", Auth: "trust"}}, Limits: Limits{MaxQueryBytes: 1000}})
	c, err := dial(t, addr, "user=a&sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	big := "SELECT '" + strings.Repeat("x", 5000) + "'"
	_, err = c.Exec(ctx, big).ReadAll()
	if sqlstate(err) != "54000" {
		t.Fatalf("simple: %v, want 54000", err)
	}
	if err := c.Exec(ctx, ";").Close(); err != nil {
		t.Fatalf("after the oversized query: %v", err)
	}
	rr := c.ExecParams(ctx, big, nil, nil, nil, nil).Read()
	if sqlstate(rr.Err) != "54000" {
		t.Fatalf("extended: %v, want 54000", rr.Err)
	}
	if err := c.Exec(ctx, ";").Close(); err != nil {
		t.Fatalf("after the oversized Parse: %v", err)
	}
	if c.TxStatus() != 'I' {
		t.Fatalf("status %c", c.TxStatus())
	}
	if n := counterValue(srv.limits.hits[limitQueryBytes]); n != 2 {
		t.Errorf("hits %v, want 2", n)
	}
}

// TestIdleTimeouts: an idle session ends with 57P05, an idle transaction
// with 25P03, each as a FATAL the client reads.
func TestIdleTimeouts(t *testing.T) {
	srv, addr := startTestServer(t, Config{Users: []User{{Name: "a", Auth: "trust"}},
		Limits: Limits{ClientIdleTimeout: 300 * time.Millisecond, IdleInTransactionTimeout: 200 * time.Millisecond}})
	for _, tc := range []struct {
		begin bool
		code  string
	}{{false, "57P05"}, {true, "25P03"}} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fe := pgproto3.NewFrontend(c, c)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "a", "database": "db"}})
		if tc.begin {
			fe.Send(&pgproto3.Query{String: "BEGIN"})
		}
		fe.Flush()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var got *pgproto3.ErrorResponse
		var status byte
		for got == nil {
			msg, err := fe.Receive()
			if err != nil {
				t.Fatalf("begin=%v: %v", tc.begin, err)
			}
			switch m := msg.(type) {
			case *pgproto3.ReadyForQuery:
				status = m.TxStatus
			case *pgproto3.ErrorResponse:
				got = m
			}
		}
		if got.Code != tc.code || got.Severity != "FATAL" {
			t.Fatalf("begin=%v (status %c): %s %s %s, want FATAL %s", tc.begin, status, got.Severity, got.Code, got.Message, tc.code)
		}
		if _, err := fe.Receive(); err == nil {
			t.Fatal("connection still open")
		}
	}
	if counterValue(srv.limits.hits[limitIdle]) != 1 || counterValue(srv.limits.hits[limitIdleInTx]) != 1 {
		t.Error("idle timeouts not counted")
	}
}

// TestBusySessionIsNotIdle: a session that keeps sending is not closed.
func TestBusySessionIsNotIdle(t *testing.T) {
	_, addr := startTestServer(t, Config{Users: []User{{Name: "a", Auth: "trust"}}, Limits: Limits{ClientIdleTimeout: 300 * time.Millisecond}})
	c, err := dial(t, addr, "user=a&sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		time.Sleep(100 * time.Millisecond)
		if err := c.Exec(context.Background(), ";").Close(); err != nil {
			t.Fatal(err)
		}
	}
	var _ *pgconn.PgConn = c
}
