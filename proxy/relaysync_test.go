package proxy

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestRelayEndsAtEarlyReadyForQuery: a backend whose ReadyForQuery comes
// before the replies the proxy queued for its group (its replies no longer
// line up with the queue) ends the relay at once with 08006 and is not
// reused; the relay used to read on for replies that never come.
func TestRelayEndsAtEarlyReadyForQuery(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// The server reads the request and answers only ReadyForQuery, then
		// keeps the connection open without a word.
		var buf [4096]byte
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
		c.Write([]byte{'Z', 0, 0, 0, 5, 'I'})
		io.Copy(io.Discard, c)
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second)) // a hang guard only
	b := &backend{conn: nc, rd: newFrameReader(nc, 4096), pool: &pool{name: "s0"}, txStatus: 'I'}
	s := &session{srv: &Server{}}
	x := s.ext()
	x.cur = b
	x.wbuf = appendMsg(nil, &pgproto3.Parse{Name: "sp_1", Query: "SELECT 1"})
	x.wbuf = appendMsg(x.wbuf, &pgproto3.Describe{ObjectType: 'S', Name: "sp_1"})
	x.wbuf = appendMsg(x.wbuf, &pgproto3.Sync{})
	x.queue = []reply{{kind: rDrop, parsed: "sp_1"}, {kind: rDescribe}, {kind: rSync}}
	if err := s.relayQueue(); err != nil {
		t.Fatal(err)
	}
	if !b.broken || !x.errored {
		t.Fatalf("broken %v, errored %v: want both", b.broken, x.errored)
	}
	var codes []string
	for out := s.out; len(out) >= 5; {
		n := int(binary.BigEndian.Uint32(out[1:5]))
		if out[0] == 'E' {
			var e pgproto3.ErrorResponse
			if err := e.Decode(out[5 : 1+n]); err != nil {
				t.Fatal(err)
			}
			codes = append(codes, e.Code+" "+e.Message)
		}
		out = out[1+n:]
	}
	if len(codes) != 1 || !strings.HasPrefix(codes[0], "08006 ") || !strings.Contains(codes[0], "out of sync") {
		t.Fatalf("errors for the client: %q, want one 08006 naming the lost sync", codes)
	}
}

func TestFatalError(t *testing.T) {
	for _, c := range []struct {
		e    pgproto3.ErrorResponse
		want bool
	}{
		{pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"}, true},
		{pgproto3.ErrorResponse{Severity: "PANIC", Code: "XX000", Message: "x"}, true},
		{pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "57014", Message: "FATAL"}, false},
		{pgproto3.ErrorResponse{Severity: "ERREUR", SeverityUnlocalized: "ERROR", Code: "22012", Message: "division par zéro"}, false},
	} {
		raw := appendMsg(nil, &c.e)
		if got := fatalError(raw[5:]); got != c.want {
			t.Errorf("%+v: fatal %v, want %v", c.e, got, c.want)
		}
	}
}
