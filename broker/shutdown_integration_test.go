package broker

import (
	"context"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"firehose/internal/testenv"
	"firehose/stream"
)

// publishResult is what one MQTT 5 publish of a shutdown test got.
type publishResult struct {
	client int
	value  float64
	code   byte
	err    error // no answer before the client was disconnected
}

// publishUntilDisconnected publishes a reading and waits for its answer
// until the client is disconnected.
func publishUntilDisconnected(c *v5Client, i int, qos byte, v float64) publishResult {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		select {
		case <-c.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	code, err := tryPublishV5WithContext(ctx, c, fmt.Sprintf("devices/sd-%d/readings", i), qos, fmt.Sprint(v))
	return publishResult{client: i, value: v, code: code, err: err}
}

// TestIntegrationShutdownLetsInFlightPublishesFinish holds many devices'
// QoS 1 and 2 publishes in the broker by pausing Redis (SIGSTOP), cancels Run's
// context, and resumes Redis: the broker stops accepting connections and
// refuses new readings at once, waits for the in-flight publishes to be
// stored and acknowledged, and Run returns nil within the shutdown timeout.
// Every acknowledged reading lands exactly once; the stalled Redis also shows
// that concurrent devices share XADD round trips, and that a QoS 0 reading
// does not wait for Redis.
func TestIntegrationShutdownLetsInFlightPublishesFinish(t *testing.T) {
	t.Parallel()
	rs := startRedisServer(t)
	const shutdownTimeout = 8 * time.Second
	s := newStack(t, stackOptions{rdb: rs.client(), prefix: "fhtest-" + testenv.ID(), bridge: true,
		producer: stream.ProducerConfig{Timeout: 20 * time.Second}, cfg: Config{ShutdownTimeout: shutdownTimeout}})
	const clients = 30
	cs := make([]*v5Client, clients)
	for i := range cs {
		cs[i] = mustConnectV5(t, s.tcpAddr(), fmt.Sprintf("sd-%d", i))
	}
	if got := publishV5(t, cs[0], "devices/sd-warm/readings", 1, "-1"); got != 0 {
		t.Fatalf("warm-up: reason code %#x", got)
	}
	trips := testenv.Metric(t, s.reg, "firehose_producer_xadd_batch_entries").GetHistogram().GetSampleCount()

	rs.signal(syscall.SIGSTOP)
	resumed := sync.OnceFunc(func() { rs.signal(syscall.SIGCONT) })
	t.Cleanup(resumed) // before the stack stops, even if the test fails

	// QoS 0: the reading is queued and the device's next packet is handled
	// at once, though Redis answers nothing.
	publishV5(t, cs[0], "devices/sd-q0/readings", 0, "0.5")
	if code, err := tryPublishV5(cs[0], "chat/after-qos0", 1, "x", 3*time.Second); err != nil || code != 0 {
		t.Fatalf("with Redis paused, the packet after a QoS 0 reading was not handled within 3s: %#x, %v", code, err)
	}

	// Two readings per device, at QoS 1 for even devices and QoS 2 for odd
	// ones: the broker handles a device's packets in order, so one per device
	// is in flight, waiting for Redis, and the other waits behind it.
	results := make(chan publishResult, 2*clients)
	for i, c := range cs {
		for k := range 2 {
			go func() { results <- publishUntilDisconnected(c, i, byte(1+i%2), float64(i*10+k)) }()
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return s.b.ingest.inflight.Load() == clients },
		"%d publishes in flight, want %d", s.b.ingest.inflight.Load(), clients)
	if n := len(results); n != 0 {
		t.Fatalf("%d publishes answered while Redis was paused", n)
	}

	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- s.stop() }()
	testenv.Eventually(t, 5*time.Second, func() bool { return s.b.ingest.draining.Load() }, "the broker did not start draining")
	testenv.Eventually(t, 5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", s.tcpAddr(), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, "the broker still accepts connections while draining")
	// Run must keep waiting for the in-flight publishes (up to the shutdown
	// timeout) while Redis stays paused; half a second of that is enough to
	// tell waiting from a fixed grace period.
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) with %d publishes in flight and Redis paused", err, s.b.ingest.inflight.Load())
	case <-time.After(500 * time.Millisecond):
	}
	if n := len(results); n != 0 {
		t.Fatalf("%d publishes answered before Redis resumed", n)
	}

	resumed()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if d := time.Since(start); d > shutdownTimeout {
			t.Errorf("Run returned %s after its context ended, over the shutdown timeout %s", d, shutdownTimeout)
		} else {
			t.Logf("Run returned nil %s after its context ended", d)
		}
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("Run did not return")
	}

	acked := map[float64]bool{}
	ackedPerClient := make([]int, clients)
	var refused, unanswered int
	for range 2 * clients {
		r := <-results
		switch {
		case r.err != nil:
			unanswered++
		case r.code == 0:
			acked[r.value] = true
			ackedPerClient[r.client]++
		case r.code == codeQuotaExceeded:
			refused++
		default:
			t.Errorf("device %d reading %v: reason code %#x", r.client, r.value, r.code)
		}
	}
	t.Logf("%d acknowledged, %d refused with 0x97 while shutting down, %d unanswered at disconnect", len(acked), refused, unanswered)
	for i, n := range ackedPerClient {
		if n == 0 {
			t.Errorf("device %d: its in-flight publish was not acknowledged", i)
		}
	}

	// -1 and 0.5 were written too.
	s.settle(len(acked)+2, 15*time.Second)
	landed := map[float64]int{}
	for _, r := range s.rows("") {
		landed[r.Value]++
	}
	for v := range acked {
		if landed[v] != 1 {
			t.Errorf("acknowledged reading %v landed %d times", v, landed[v])
		}
	}
	for v, n := range landed {
		if n > 1 {
			t.Errorf("reading %v landed %d times", v, n)
		}
		if !acked[v] && v != -1 && v != 0.5 {
			t.Logf("reading %v landed without an acknowledgement (its answer was lost in the disconnect)", v)
		}
	}
	if landed[0.5] != 1 {
		t.Errorf("the QoS 0 reading landed %d times", landed[0.5])
	}

	// Group commit: the in-flight readings of many devices went to Redis
	// in fewer round trips than readings.
	h := testenv.Metric(t, s.reg, "firehose_producer_xadd_batch_entries").GetHistogram()
	if n := h.GetSampleCount() - trips; n == 0 || float64(n) >= h.GetSampleSum()-1 {
		t.Errorf("%d round trips for %v readings after the pause: no round trip was shared", n, h.GetSampleSum()-1)
	}
}

// TestIntegrationShutdownTimeoutBoundsTheDrain keeps Redis paused past the
// shutdown timeout: Run still returns nil in time, and no publish is
// acknowledged, since none was stored.
func TestIntegrationShutdownTimeoutBoundsTheDrain(t *testing.T) {
	t.Parallel()
	rs := startRedisServer(t)
	const shutdownTimeout = 500 * time.Millisecond
	s := newStack(t, stackOptions{rdb: rs.client(), prefix: "fhtest-" + testenv.ID(),
		producer: stream.ProducerConfig{Timeout: 20 * time.Second}, cfg: Config{ShutdownTimeout: shutdownTimeout}})
	const clients = 5
	cs := make([]*v5Client, clients)
	for i := range cs {
		cs[i] = mustConnectV5(t, s.tcpAddr(), fmt.Sprintf("sdt-%d", i))
	}
	rs.signal(syscall.SIGSTOP)
	resumed := sync.OnceFunc(func() { rs.signal(syscall.SIGCONT) })
	t.Cleanup(resumed)

	results := make(chan publishResult, clients)
	for i, c := range cs {
		go func() { results <- publishUntilDisconnected(c, i, byte(1+i%2), float64(i)) }()
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return s.b.ingest.inflight.Load() == clients },
		"%d publishes in flight, want %d", s.b.ingest.inflight.Load(), clients)

	start := time.Now()
	if err := s.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > shutdownTimeout+2*time.Second {
		t.Errorf("Run returned %s after its context ended, shutdown timeout %s", d, shutdownTimeout)
	}
	for range clients {
		if r := <-results; r.err == nil && r.code == 0 {
			t.Errorf("device %d: acknowledged though Redis never confirmed the reading", r.client)
		}
	}
	resumed()
}
