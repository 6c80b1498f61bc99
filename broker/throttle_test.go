package broker

import (
	"context"
	"runtime"
	"testing"
)

// TestCheckSlotsBoundWaiters: past waitPerSlot connects waiting a slot, a
// connect is refused at once as busy; one that waits gets the slot once it
// is released; ctx ending frees a waiter.
func TestCheckSlotsBoundWaiters(t *testing.T) {
	s := &checkSlots{run: make(chan struct{}, 1), maxWait: 2}
	if ok, busy := s.acquire(context.Background()); !ok || busy {
		t.Fatalf("first acquire: ok %v busy %v", ok, busy)
	}
	ctx, cancel := context.WithCancel(context.Background())
	type result struct{ ok, busy bool }
	got := make(chan result, 2)
	for range 2 { // two wait: the bound
		go func() {
			ok, busy := s.acquire(ctx)
			got <- result{ok, busy}
		}()
	}
	for s.waiting.Load() != 2 {
		runtime.Gosched() // both waiting: a condition, not a sleep
	}
	if ok, busy := s.acquire(context.Background()); ok || !busy {
		t.Fatalf("third waiter: ok %v busy %v, want refused busy", ok, busy)
	}
	s.release()
	if r := <-got; !r.ok || r.busy {
		t.Fatalf("a waiter after the release: %+v, want the slot", r)
	}
	cancel()
	if r := <-got; r.ok || r.busy {
		t.Fatalf("a waiter whose ctx ended: %+v, want neither", r)
	}
	if n := s.waiting.Load(); n != 0 {
		t.Errorf("%d still counted waiting", n)
	}
}
