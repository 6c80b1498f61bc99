package subscriber

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
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
	// Deduplicated says whether Add recognises r when it is stored again
	// (--dedup, and r has a key).
	Deduplicated(r *ingest.Reading) bool
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

// Rebirther is a Decoder that also asks Sparkplug B edge nodes for a
// rebirth (a DATA message before its birth, with an alias no birth gave, or
// after a gap in seq): the subscriber publishes each request it sends
// (NCMD "Node Control/Rebirth", QoS 0) to the broker, as firehose's own
// broker does to its clients.
type Rebirther interface {
	Rebirths() <-chan RebirthRequest
}

// RebirthRequest names the edge node to ask for a rebirth.
type RebirthRequest struct{ Group, EdgeNode string }

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
	retained                   // sent for a new subscription: not stored
)

// item is what a message becomes: its readings, or its dead letter.
type item struct {
	readings []ingest.Reading
	dead     *ingest.DeadLetter
}

// retry calls attempt until it succeeds, the retry timeout passes, or ctx
// (the session) ends, waiting with backoff between attempts and counting
// each failure retried by reason. The error says what was not done (what),
// and why.
func (s *Subscriber) retry(ctx context.Context, what string, reason func(error) string, attempt func() error) error {
	deadline := time.Now().Add(s.cfg.RetryTimeout)
	wait := s.retryWait()
	for {
		if err := ctx.Err(); err != nil {
			// The session ended: it acknowledges nothing more, and a
			// message stored now would be stored again when resent.
			return fmt.Errorf("%s: the session ended: %w", what, err)
		}
		err := attempt()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s within --subscribe-retry-timeout %s: %w", what, s.cfg.RetryTimeout, err)
		}
		s.m.retries.WithLabelValues(reason(err)).Inc()
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, err)
		case <-time.After(wait.Next()):
		}
	}
}

// decode turns m into its readings or its dead letter, retrying a
// transient failure (the Sparkplug B state unavailable) until the retry
// timeout or ctx (the session) ends. It runs in the read loop: messages
// are decoded in arrival order.
func (s *Subscriber) decode(ctx context.Context, m Message) (item, error) {
	it, err := s.decodeOnce(ctx, m)
	if err == nil {
		return it, nil
	}
	err = s.retry(ctx, "message on "+m.Topic+" not decoded", func(error) string { return "decode" }, func() (err error) {
		it, err = s.decodeOnce(ctx, m)
		return err
	})
	return it, err
}

// decodeOnce makes one attempt at decoding m.
func (s *Subscriber) decodeOnce(ctx context.Context, m Message) (item, error) {
	rs, err := s.dec.Decode(ctx, m)
	var inv *InvalidError
	if errors.As(err, &inv) {
		return item{dead: &ingest.DeadLetter{Source: ingest.SourceMQTT, Kind: inv.Kind, Topic: m.Topic, ClientID: s.cfg.ClientID,
			Device: inv.Device, Reason: inv.Error(), ReceivedAt: m.ReceivedAt, Payload: m.Payload}}, nil
	}
	return item{readings: rs}, err
}

// store writes one decoded message (QoS 2; o is its once key) and retries
// transient failures until the retry timeout or ctx (the session) ends; the
// error is then why the message stays unacknowledged.
func (s *Subscriber) store(ctx context.Context, topic string, it item, o *stream.Once) (outcome, error) {
	var out outcome
	err := s.retry(ctx, "message on "+topic+" not stored", ingest.RefusalReason, func() (err error) {
		out, err = s.storeOnce(it, o)
		return err
	})
	return out, err
}

// storeQoS1 stores a QoS 1 message as store does, with one difference on
// retries: an attempt that failed in doubt (ingest.ErrUnavailable: part of
// it may be in Redis, as when WAIT found no replica) makes the attempts
// after it once-calls under a key of their own, remembered in s.doubts
// until the message is acknowledged, so that retrying, and the broker's
// resend to a later session of this process, store it at most once more.
// The first attempt is a plain Add, which shares the round trips' batch
// entries; once is the key a resent message had, or nil.
func (s *Subscriber) storeQoS1(ctx context.Context, topic string, it item, pid uint16, once *stream.Once) (outcome, error) {
	var out outcome
	err := s.retry(ctx, "message on "+topic+" not stored", ingest.RefusalReason, func() (err error) {
		if once != nil && it.dead == nil {
			var again bool
			again, err = s.addInDoubt(it.readings, *once)
			out = pick(again, stored)
			return err
		}
		out, err = s.storeOnce(it, once)
		if err != nil && once == nil && inDoubt(err) {
			once = s.doubts.add(s.cfg.ClientID, pid)
			s.m.inDoubt.Inc()
		}
		return err
	})
	return out, err
}

// addInDoubt stores the readings of a QoS 1 message that may be in Redis
// already (stored in doubt before): those --dedup remembers with a plain
// Add, which recognises them if they are, and the others with a once-call
// under o (once-calls bypass --dedup, and a reading with a key stored
// there would not be recognised when the device sends it again).
func (s *Subscriber) addInDoubt(rs []ingest.Reading, o stream.Once) (redelivered bool, err error) {
	var keyed, rest []ingest.Reading
	for i := range rs {
		if s.p.Deduplicated(&rs[i]) {
			keyed = append(keyed, rs[i])
		} else {
			rest = append(rest, rs[i])
		}
	}
	if len(keyed) > 0 {
		if err := s.p.Add(s.storeCtx, keyed); err != nil {
			return false, err
		}
	}
	if len(rest) == 0 {
		return false, nil
	}
	return s.p.AddOnce(s.storeCtx, rest, o)
}

// doubts are the once keys of QoS 1 messages stored in doubt and not yet
// acknowledged, by packet id: they outlive a session, not the process.
type doubts struct {
	mu   sync.Mutex
	keys map[uint16]*stream.Once
	n    atomic.Int64 // len(keys): most acknowledgements find none to clear
}

// add makes pid's once key: the session of QoS 1 doubts (apart from QoS 2's
// epochs), the packet id, and a random epoch of this message alone.
func (d *doubts) add(clientID string, pid uint16) *stream.Once {
	o := &stream.Once{Session: clientID + "/qos1", PacketID: pid, Epoch: randomEpoch()}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.keys == nil {
		d.keys = map[uint16]*stream.Once{}
	}
	d.keys[pid] = o
	d.n.Store(int64(len(d.keys)))
	return o
}

func (d *doubts) get(pid uint16) *stream.Once {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.keys[pid]
}

// reset forgets every doubt: the broker kept no session, so it resends
// nothing.
func (d *doubts) reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.keys)
	d.n.Store(0)
}

func (d *doubts) clear(pid uint16) {
	if d.n.Load() == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.keys, pid)
	d.n.Store(int64(len(d.keys)))
}

// randomEpoch is a random epoch other than 0 (a record never written reads
// as 0).
func randomEpoch() uint64 {
	for {
		if e := rand.Uint64(); e != 0 {
			return e
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
