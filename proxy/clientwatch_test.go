package proxy

import (
	"context"
	"testing"
	"time"
)

// hungUp sees a peer that closed, also when its last bytes are still
// unread, and reads nothing: the bytes stay for the session.
func TestHungUp(t *testing.T) {
	srv, cli := tcpPair(t)
	if hungUp(srv) {
		t.Fatal("an open connection looks hung up")
	}
	if _, err := cli.Write([]byte("Q")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if hungUp(srv) {
		t.Fatal("a connection with unread bytes looks hung up")
	}
	cli.Close()
	deadline := time.Now().Add(2 * time.Second)
	for !hungUp(srv) {
		if time.Now().After(deadline) {
			t.Fatal("a closed peer (with a byte unread) not seen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 4)
	if n, _ := srv.Read(buf); n != 1 || buf[0] != 'Q' {
		t.Fatalf("the unread byte was consumed: %q", buf[:n])
	}
}

// A lease wait ends when interrupted, and the next one starts afresh.
func TestLeaseWaitInterrupt(t *testing.T) {
	var w leaseWait
	if w.interrupt() {
		t.Fatal("interrupted with no wait in progress")
	}
	ctx := w.begin(context.Background())
	if !w.interrupt() || ctx.Err() == nil {
		t.Fatal("a wait in progress was not ended")
	}
	if !w.end() {
		t.Fatal("end did not report the cancel")
	}
	ctx = w.begin(context.Background())
	if ctx.Err() != nil || w.end() {
		t.Fatal("the next wait starts canceled")
	}
}

// BenchmarkLeaseWait is what every lease pays for being cancelable.
func BenchmarkLeaseWait(b *testing.B) {
	var w leaseWait
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		w.begin(ctx)
		w.end()
	}
}
