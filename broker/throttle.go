package broker

import (
	"context"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// loginThrottle limits failed logins per source address, so that the
// deliberately slow bcrypt check cannot be used to burn the broker's CPU.
//
// Each address has a token bucket: burst tokens, one more every interval;
// a failed login takes a token, and an address without a token is refused
// before its password is checked. IPv6 addresses count by /64, the block
// one subscriber usually holds. At most maxAddrs addresses are tracked (an
// entry whose bucket is full again carries no information and is dropped);
// when the table is full, the addresses not in it share one bucket, so an
// attacker rotating addresses is held to one failed login per interval in
// all. Connects whose password passed before (the remembered check) do not
// consult the throttle: a fleet behind the same NAT as an attacker keeps
// connecting.
type loginThrottle struct {
	burst    float64
	interval time.Duration
	maxAddrs int
	now      func() time.Time

	mu        sync.Mutex
	addrs     map[string]*bucket
	overflow  bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLoginThrottle(burst int, interval time.Duration, maxAddrs int) *loginThrottle {
	t := &loginThrottle{burst: float64(burst), interval: interval, maxAddrs: maxAddrs, now: time.Now, addrs: map[string]*bucket{}}
	t.overflow = bucket{tokens: t.burst, at: t.now()}
	return t
}

// refill brings b's tokens up to now.
func (t *loginThrottle) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(t.burst, b.tokens+float64(d)/float64(t.interval))
	}
	b.at = now
}

// bucketLocked returns key's bucket, or the shared one when key is not
// tracked and the table is full; create tracks key when there is room.
func (t *loginThrottle) bucketLocked(key string, now time.Time, create bool) *bucket {
	if b, ok := t.addrs[key]; ok {
		return b
	}
	if len(t.addrs) >= t.maxAddrs && now.Sub(t.lastSweep) >= time.Second {
		t.lastSweep = now
		for k, b := range t.addrs {
			if t.refill(b, now); b.tokens >= t.burst {
				delete(t.addrs, k)
			}
		}
	}
	if len(t.addrs) >= t.maxAddrs {
		return &t.overflow
	}
	if !create {
		return nil
	}
	b := &bucket{tokens: t.burst, at: now}
	t.addrs[key] = b
	return b
}

// allow reports whether key may have a password checked now.
func (t *loginThrottle) allow(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	b := t.bucketLocked(key, now, false)
	if b == nil {
		return true // untracked: a full bucket
	}
	t.refill(b, now)
	return b.tokens >= 1
}

// failed takes a token from key's bucket.
func (t *loginThrottle) failed(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	b := t.bucketLocked(key, now, true)
	t.refill(b, now)
	b.tokens = max(0, b.tokens-1)
}

// tracked is the number of addresses in the table.
func (t *loginThrottle) tracked() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.addrs)
}

// sourceKey is the throttle's key for a remote address "host:port": the IP
// for IPv4, its /64 for IPv6, else the address as given.
func sourceKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return host
	case ip.To4() != nil:
		return ip.To4().String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// checkSlots bounds the bcrypt checks running at once, whoever asks: half
// the CPUs (at least one), so that even a flood of logins from many
// addresses leaves the other half to the readings. A connect waits for a
// slot (its client waits for the CONNACK), but only so many wait: past
// waitPerSlot a slot, a connect is refused at once as busy rather than
// queued behind checks that would end after its client gave up (a client
// waits about 10 s for its CONNACK; a check at bcrypt's default cost takes
// 60-80 ms of one core). Unbounded, a fleet reconnecting at once spends the
// slots on clients that are gone, and almost no one gets in.
type checkSlots struct {
	run     chan struct{}
	waiting atomic.Int64
	maxWait int64
}

// waitPerSlot is how many connects may wait for each slot: 64 checks of
// ~70 ms are 4.5 s, within the CONNACK timeout of the last in line.
const waitPerSlot = 64

func newCheckSlots() *checkSlots {
	n := max(1, runtime.GOMAXPROCS(0)/2)
	return &checkSlots{run: make(chan struct{}, n), maxWait: int64(n) * waitPerSlot}
}

// acquire waits for a slot: ok once it holds one; busy (at once) when too
// many wait already; neither when ctx ended first.
func (s *checkSlots) acquire(ctx context.Context) (ok, busy bool) {
	if s.waiting.Add(1) > s.maxWait {
		s.waiting.Add(-1)
		return false, true
	}
	defer s.waiting.Add(-1)
	select {
	case s.run <- struct{}{}:
		return true, false
	case <-ctx.Done():
		return false, false
	}
}

func (s *checkSlots) release() { <-s.run }
