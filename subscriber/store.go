package subscriber

import (
	"context"
	"errors"
	"fmt"
	"time"

	"firehose/ingest"
	"firehose/stream"
)

// Producer is what the subscriber needs of stream.Producer: each call
// blocks until Redis holds what it writes, or says why not.
type Producer interface {
	Add(ctx context.Context, rs []ingest.Reading) error
	Enqueue(r ingest.Reading) error
	AddDeadLetter(ctx context.Context, d ingest.DeadLetter) error
	// AddOnce and AddDeadLetterOnce write a QoS 2 message once per once
	// key: redelivered is true when Redis held it already.
	AddOnce(ctx context.Context, rs []ingest.Reading, o stream.Once) (redelivered bool, err error)
	AddDeadLetterOnce(ctx context.Context, d ingest.DeadLetter, o stream.Once) (redelivered bool, err error)
}

// Epochs keeps the epochs of the session's QoS 2 packet ids in Redis
// (stream.SessionState).
type Epochs interface {
	// Start returns the epochs of the session's packet ids; present is
	// what the broker said of the session: without one, the epochs of a
	// session that ended move on, so that no new message is taken for one
	// stored before.
	Start(ctx context.Context, present bool) (map[uint16]uint64, error)
	// Release moves packet id pid to its next epoch (on PUBREL) and
	// returns it.
	Release(ctx context.Context, pid uint16) (uint64, error)
}

// Message is a PUBLISH as the decoder sees it.
type Message struct {
	Topic      string
	Payload    []byte
	MessageID  string // the MQTT 5 user property msg_id, or ""
	QoS        byte
	ReceivedAt time.Time
}

// Decoder turns a message into readings as firehose's broker reads it.
type Decoder interface {
	// Decode returns m's readings: none for a topic firehose does not
	// store. A message that cannot become readings is an *InvalidError,
	// which the subscriber keeps as an edge dead letter; any other error
	// is transient (retried).
	Decode(ctx context.Context, m Message) ([]ingest.Reading, error)
}

// InvalidError is a message that cannot become readings: Kind is its decode
// path (ingest.KindTopic, KindRule, KindSparkplug) and Device its device, if
// known, for its dead letter.
type InvalidError struct {
	Kind, Device string
	Err          error
}

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

// outcome is how storing a message ended, for its acknowledgement.
type outcome int

const (
	stored      outcome = iota // its readings (or none) are in Redis
	deadLetter                 // it is in Redis as an edge dead letter
	redelivered                // QoS 2: Redis held it already
)

// item is what a message becomes: its readings, or its dead letter.
type item struct {
	readings []ingest.Reading
	dead     *ingest.DeadLetter
}

// decode turns m into its readings or its dead letter, retrying a
// transient failure (the Sparkplug B state unavailable) until the retry
// timeout or ctx (the session) ends. It runs in the read loop: messages
// are decoded in arrival order.
func (s *Subscriber) decode(ctx context.Context, m Message) (item, error) {
	deadline := time.Now().Add(s.cfg.RetryTimeout)
	wait := s.retryWait()
	for {
		rs, err := s.dec.Decode(ctx, m)
		var inv *InvalidError
		if errors.As(err, &inv) {
			return item{dead: &ingest.DeadLetter{Source: ingest.SourceMQTT, Kind: inv.Kind, Topic: m.Topic, ClientID: s.cfg.ClientID,
				Device: inv.Device, Reason: inv.Error(), ReceivedAt: m.ReceivedAt, Payload: m.Payload}}, nil
		}
		if err == nil {
			return item{readings: rs}, nil
		}
		if time.Now().After(deadline) {
			return item{}, fmt.Errorf("message on %s not decoded within --subscribe-retry-timeout %s: %w", m.Topic, s.cfg.RetryTimeout, err)
		}
		s.m.retries.WithLabelValues("decode").Inc()
		select {
		case <-ctx.Done():
			return item{}, fmt.Errorf("message on %s not decoded: %w", m.Topic, err)
		case <-time.After(wait.Next()):
		}
	}
}

// store writes one decoded message (QoS 1 or 2; o is its once key at QoS 2)
// and retries transient failures until the retry timeout or ctx (the
// session) ends; the error is then why the message stays unacknowledged.
func (s *Subscriber) store(ctx context.Context, topic string, it item, o *stream.Once) (outcome, error) {
	deadline := time.Now().Add(s.cfg.RetryTimeout)
	wait := s.retryWait()
	for {
		if err := ctx.Err(); err != nil {
			// The session ended: it acknowledges nothing more, and a
			// message stored now would be stored again when resent.
			return stored, fmt.Errorf("message on %s not stored: the session ended: %w", topic, err)
		}
		out, err := s.storeOnce(it, o)
		if err == nil {
			return out, nil
		}
		if time.Now().After(deadline) {
			return out, fmt.Errorf("message on %s not stored within --subscribe-retry-timeout %s: %w", topic, s.cfg.RetryTimeout, err)
		}
		s.m.retries.WithLabelValues(ingest.RefusalReason(err)).Inc()
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("message on %s not stored: %w", topic, err)
		case <-time.After(wait.Next()):
		}
	}
}

// storeOnce makes one attempt at storing it.
func (s *Subscriber) storeOnce(it item, o *stream.Once) (outcome, error) {
	ctx := s.storeCtx
	switch {
	case it.dead != nil && o != nil:
		again, err := s.p.AddDeadLetterOnce(ctx, *it.dead, *o)
		return pick(again, deadLetter), err
	case it.dead != nil:
		return deadLetter, s.p.AddDeadLetter(ctx, *it.dead)
	case len(it.readings) == 0:
		return stored, nil
	case o != nil:
		again, err := s.p.AddOnce(ctx, it.readings, *o)
		return pick(again, stored), err
	}
	return stored, s.p.Add(ctx, it.readings)
}

func pick(again bool, out outcome) outcome {
	if again {
		return redelivered
	}
	return out
}
