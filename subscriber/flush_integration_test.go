package subscriber_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
	"firehose/subscriber"
)

// gatedProducer stores nothing: a call waits for open (closing entered
// first, once), except a call with a reading of value -1, which it refuses
// at once.
type gatedProducer struct {
	open, entered chan struct{}
	once          sync.Once
}

func (p *gatedProducer) Add(ctx context.Context, rs []ingest.Reading) error {
	if hasValue(rs, -1) {
		return fmt.Errorf("%w: refused by the test", ingest.ErrUnavailable)
	}
	p.once.Do(func() { close(p.entered) })
	select {
	case <-p.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func hasValue(rs []ingest.Reading, v float64) bool {
	return slices.ContainsFunc(rs, func(r ingest.Reading) bool { return r.Value == v })
}

func (p *gatedProducer) Enqueue(ingest.Reading) error      { return nil }
func (p *gatedProducer) Deduplicated(*ingest.Reading) bool { return false }
func (p *gatedProducer) AddDeadLetter(context.Context, ingest.DeadLetter) error {
	return nil
}
func (p *gatedProducer) AddOnce(context.Context, []ingest.Reading, stream.Once) (bool, error) {
	return false, nil
}
func (p *gatedProducer) AddDeadLetterOnce(context.Context, ingest.DeadLetter, stream.Once) (bool, error) {
	return false, nil
}

// TestIntegrationSubscriberAcksBeforeAFailureReachTheBroker: a message
// that cannot be stored ends the session, but the acknowledgements of the
// messages before it, which were stored, must reach the broker first. The
// acker used to close the connection with them still in its buffer: the
// broker resent those messages, stored twice at QoS 1 (the Redis-stall
// fault scenario: 289 duplicates, over Receive Maximum). Here the first
// nine are one batch, held in the producer until the tenth arrived; the
// tenth, a batch of its own, fails as soon as the nine are stored.
func TestIntegrationSubscriberAcksBeforeAFailureReachTheBroker(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rdb, prefix := testenv.Redis(t)
	cfg := subscriber.Config{Brokers: []string{"tcp://" + ln.Addr().String()}, Protocol: subscriber.Protocol311,
		RetryTimeout: 1} // a refused message fails at its first attempt
	withDefaults(&cfg)
	p := &gatedProducer{open: make(chan struct{}), entered: make(chan struct{})}
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	sub, err := subscriber.New(cfg, p, stream.NewSessionState(rdb, stream.Streams{Prefix: prefix, Count: 1}, cfg.ClientID),
		numberDecoder{}, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	const before = 9 // messages stored before the one refused
	script := make(chan error, 1)
	go func() {
		b, err := acceptSession(ln, false)
		if err != nil {
			script <- err
			return
		}
		defer b.conn.Close()
		for pid := uint16(1); pid <= before; pid++ {
			if err := b.publish(1, pid, false, fmt.Sprint(pid)); err != nil {
				script <- err
				return
			}
		}
		<-p.entered // the nine are being stored
		if err := b.publish(1, before+1, false, "-1"); err != nil {
			script <- err
			return
		}
		close(p.open)
		for i := 1; i <= before; i++ {
			pk, err := b.read(packets.Puback)
			if err != nil {
				script <- fmt.Errorf("PUBACK %d of %d: %w", i, before, err)
				return
			}
			if pk.PacketID != uint16(i) {
				script <- fmt.Errorf("PUBACK of %d, want %d", pk.PacketID, i)
				return
			}
		}
		script <- nil
	}()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := sub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- sub.Run(ctx) }()
	if err := <-script; err != nil {
		t.Fatalf("fake broker: %v", err)
	}
	cancel()
	<-ran
}

// recordingProducer records the values it stores, and refuses a call with
// a reading of value -1 once fail is closed (closing entered first).
type recordingProducer struct {
	gatedProducer
	mu     sync.Mutex
	stored []float64
	fail   chan struct{}
}

func (p *recordingProducer) Add(ctx context.Context, rs []ingest.Reading) error {
	if hasValue(rs, -1) {
		close(p.entered)
		<-p.fail
		return fmt.Errorf("%w: refused by the test", ingest.ErrUnavailable)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rs {
		p.stored = append(p.stored, r.Value)
	}
	return nil
}

func (p *recordingProducer) values() []float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.stored)
}

// TestIntegrationSubscriberTakesNothingAfterItsSessionEnded: once a
// message's failure ended the session, the read loop must not take the
// messages it still finds in its buffer. It used to, whenever the acker,
// draining, freed a place in Receive Maximum: they were stored and never
// acknowledged, and at QoS 1 stored again when the broker resent them (the
// Redis-stall fault scenario: 324 duplicates from one connection with
// Receive Maximum 200). The first message's batch fails once the broker
// sent everything: the messages after it wait for the batcher, and the
// rest in the subscriber's buffers, over Receive Maximum.
func TestIntegrationSubscriberTakesNothingAfterItsSessionEnded(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rdb, prefix := testenv.Redis(t)
	const window, sent = 10, 300
	cfg := subscriber.Config{Brokers: []string{"tcp://" + ln.Addr().String()}, Protocol: subscriber.Protocol311,
		ReceiveMaximum: window, RetryTimeout: 1} // the refused message fails at its first attempt
	withDefaults(&cfg)
	p := &recordingProducer{fail: make(chan struct{}), gatedProducer: gatedProducer{entered: make(chan struct{})}}
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	sub, err := subscriber.New(cfg, p, stream.NewSessionState(rdb, stream.Streams{Prefix: prefix, Count: 1}, cfg.ClientID),
		numberDecoder{}, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	script := make(chan error, 1)
	go func() {
		b, err := acceptSession(ln, false)
		if err != nil {
			script <- err
			return
		}
		defer b.conn.Close()
		for pid := uint16(1); pid <= sent; pid++ {
			payload := fmt.Sprint(pid)
			if pid == 1 {
				payload = "-1"
			}
			if err := b.publish(1, pid, false, payload); err != nil {
				script <- err
				return
			}
		}
		script <- nil
		_, _ = b.read(packets.Disconnect) // until the subscriber hangs up
	}()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := sub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- sub.Run(ctx) }()
	if err := <-script; err != nil {
		t.Fatalf("fake broker: %v", err)
	}
	<-p.entered
	close(p.fail)
	// The session is over once the subscriber reports it so: every store
	// of that session has returned by then.
	testenv.Await(t, func() bool { st := sub.State(); return !st.Connected && st.LastError != "" }, "the session did not end: %+v", sub.State())
	for _, v := range p.values() {
		if v > window {
			t.Errorf("stored %v: message %v came after the session ended (the first %d were in flight)", p.values(), v, window)
			break
		}
	}
	cancel()
	<-ran
}
