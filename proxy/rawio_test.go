package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection, the server end
// wrapped in rawConn.
func tcpPair(t *testing.T) (raw net.Conn, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	raw = newRawConn(c)
	if _, ok := raw.(*rawConn); !ok {
		t.Fatalf("a TCP connection was not wrapped: %T", raw)
	}
	t.Cleanup(func() { raw.Close(); peer.Close() })
	return raw, peer
}

// Large writes meet a full socket buffer (EAGAIN) and wait for the reader;
// every byte arrives in order, both ways.
func TestRawConnLargeTransfers(t *testing.T) {
	raw, peer := tcpPair(t)
	big := make([]byte, 8<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	for _, dir := range []struct {
		name string
		w, r net.Conn
	}{{"raw writes", raw, peer}, {"raw reads", peer, raw}} {
		errc := make(chan error, 1)
		go func() {
			n, err := dir.w.Write(big)
			if err == nil && n != len(big) {
				err = io.ErrShortWrite
			}
			errc <- err
		}()
		got := make([]byte, len(big))
		if _, err := io.ReadFull(dir.r, got); err != nil {
			t.Fatalf("%s: read: %v", dir.name, err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("%s: write: %v", dir.name, err)
		}
		if !bytes.Equal(got, big) {
			t.Fatalf("%s: bytes differ", dir.name)
		}
	}
}

// Deadlines, EOF, Close during a blocked read, and writes to a closed
// peer behave as the net package's do.
func TestRawConnErrors(t *testing.T) {
	raw, peer := tcpPair(t)
	buf := make([]byte, 16)

	raw.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := raw.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	raw.SetReadDeadline(time.Time{})

	// A message sent before the read starts is read at once.
	peer.Write([]byte("hello"))
	time.Sleep(20 * time.Millisecond)
	if n, err := raw.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read = %q, %v", buf[:n], err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := raw.Read(buf)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	raw.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed conn: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a blocked read")
	}

	raw2, peer2 := tcpPair(t)
	peer2.Close()
	if n, err := raw2.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer closed: %d, %v", n, err)
	}
	var err error
	for i := 0; i < 100 && err == nil; i++ { // the first write may still be accepted
		_, err = raw2.Write(make([]byte, 1<<16))
		time.Sleep(time.Millisecond)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "write" {
		t.Fatalf("write to a closed peer: %v", err)
	}
}

// Reads and writes on the per-call fields do not allocate.
func TestRawConnNoAllocs(t *testing.T) {
	raw, peer := tcpPair(t)
	msg := []byte("0123456789")
	buf := make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := raw.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(raw, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Fatalf("%.1f allocations per round trip through rawConn", allocs)
	}
}
