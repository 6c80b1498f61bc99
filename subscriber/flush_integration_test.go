package subscriber_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
	"firehose/subscriber"
)

// gatedProducer stores nothing: Add waits for open, except for a reading
// of value -1, which it refuses at once (after closing refused).
type gatedProducer struct {
	open, refused chan struct{}
}

func (p *gatedProducer) Add(ctx context.Context, rs []ingest.Reading) error {
	if rs[0].Value == -1 {
		close(p.refused)
		return fmt.Errorf("%w: refused by the test", ingest.ErrUnavailable)
	}
	select {
	case <-p.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *gatedProducer) Enqueue(ingest.Reading) error { return nil }
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
// fault scenario: 289 duplicates, over Receive Maximum).
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
	p := &gatedProducer{open: make(chan struct{}), refused: make(chan struct{})}
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
		for pid := uint16(1); pid <= before+1; pid++ {
			payload := fmt.Sprint(pid)
			if pid == before+1 {
				payload = "-1"
			}
			if err := b.publish(1, pid, false, payload); err != nil {
				script <- err
				return
			}
		}
		<-p.refused
		close(p.open) // the messages before it are stored now, after it failed
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
