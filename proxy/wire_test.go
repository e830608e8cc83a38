package proxy

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/shardproxy/shardproxy/router"
)

func TestFrameReader(t *testing.T) {
	var in bytes.Buffer
	in.Write([]byte{'Q', 0, 0, 0, 9, 'a', 'b', 'c', 'd', 0})
	in.Write([]byte{'X', 0, 0, 0, 4})
	in.Write([]byte{'Q', 0, 0, 0, 2}) // length below 4: invalid
	fr := newFrameReader(&in, 64)
	typ, body, raw, err := fr.next()
	if err != nil || typ != 'Q' || string(body) != "abcd\x00" || len(raw) != 10 {
		t.Fatalf("first: %c %q %d %v", typ, body, len(raw), err)
	}
	if typ, body, _, err = fr.next(); err != nil || typ != 'X' || len(body) != 0 {
		t.Fatalf("second: %c %q %v", typ, body, err)
	}
	if _, _, _, err = fr.next(); err == nil {
		t.Fatal("invalid length accepted")
	}
}

// FuzzSession feeds arbitrary bytes to a session as a client would send
// them (startup packet first): the session must neither panic nor hang,
// and must end or answer. No shard is reachable, so nothing routes.
func FuzzSession(f *testing.F) {
	startup := func(params ...string) []byte {
		var b []byte
		b = binary.BigEndian.AppendUint32(b, 0)
		b = binary.BigEndian.AppendUint32(b, 196608)
		for _, p := range params {
			b = append(b, p...)
			b = append(b, 0)
		}
		b = append(b, 0)
		binary.BigEndian.PutUint32(b, uint32(len(b)))
		return b
	}
	ok := startup("user", "t", "database", "db")
	f.Add(ok)
	f.Add(append(ok, 'Q', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0))
	f.Add(append(ok, 'P', 0, 0, 0, 8, 0, 'x', 0, 0, 0))
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47}) // SSLRequest
	f.Add(startup("user", "t", "database", "db", "_pq_.x", "1"))
	topo, err := router.NewTopology(&router.Config{Shards: []router.ShardConfig{{Name: "s0", DSN: "postgres://x@127.0.0.1:1/db?connect_timeout=1"}}})
	if err != nil {
		f.Fatal(err)
	}
	srv, err := New(Config{Database: "db", Users: []User{{Name: "t", Auth: "trust"}},
		Pool: PoolConfig{Size: 1, ConnectTimeout: 50 * time.Millisecond, AcquireTimeout: 50 * time.Millisecond}}, topo, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) { fuzzSession(t, srv, data) })
}

// fuzzSession feeds data to a session of srv as a client that then hangs
// up, draining what the session answers: the session must end, whatever
// the bytes.
func fuzzSession(t *testing.T, srv *Server, data []byte) {
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.wg.Add(1)
		srv.handle(t.Context(), server)
	}()
	go func() {
		client.SetDeadline(time.Now().Add(2 * time.Second))
		client.Write(data)
		client.Close()
	}()
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := client.Read(buf); err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("session did not end for input %q", data)
	}
}
