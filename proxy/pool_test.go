package proxy

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestPoolWaiterGivingUpKeepsBackend: a waiter whose timeout or cancel
// comes just as a release hands it the backend must not lose it. One
// backend in the pool; a holder leases and releases it in a loop while
// waiters with very short timeouts come and go. Afterwards the backend
// is in the pool, not stranded in a waiter's channel.
func TestPoolWaiterGivingUpKeepsBackend(t *testing.T) {
	addr := fakeShard(t)
	p, err := newPool(0, "s0", "postgres://bench@"+addr+"/db?sslmode=disable", 1, 5*time.Second, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	ctx := context.Background()
	stop := make(chan struct{})
	holder := make(chan struct{})
	go func() {
		defer close(holder)
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := p.acquire(ctx)
			if err != nil {
				t.Errorf("holder: %v", err)
				return
			}
			time.Sleep(20 * time.Microsecond)
			p.release(b)
		}
	}()
	var waiters sync.WaitGroup
	for w := 0; w < 8; w++ {
		waiters.Add(1)
		go func() {
			defer waiters.Done()
			for i := 0; i < 2000; i++ {
				cctx, cancel := context.WithTimeout(ctx, time.Duration(i%50)*time.Microsecond)
				if b, err := p.acquire(cctx); err == nil {
					p.release(b)
				}
				cancel()
			}
		}()
	}
	waiters.Wait()
	close(stop)
	<-holder
	// Every lease has ended: the one backend must be idle in the pool
	// (a late handover goes back asynchronously: give it a moment).
	deadline := time.Now().Add(5 * time.Second)
	for {
		open, idle, _ := p.stats()
		if open == 1 && idle == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after every lease ended: open %d, idle %d; want the one backend idle (a waiter that gave up kept it)", open, idle)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	b, err := p.acquire(cctx)
	if err != nil {
		t.Fatalf("acquire after the race: %v", err)
	}
	p.release(b)
}
