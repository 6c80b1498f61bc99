package subscriber

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"firehose/ingest"
	"firehose/stream"
)

// Batching. The broker's acknowledgements do not reach the devices (the
// broker acknowledged them already), so a message may wait a little before
// it is stored: the session's batcher gathers the QoS 1 and 2 messages the
// read loop decoded for up to linger (less when the broker sent nothing for
// lingerIdle, or the batch is full) and stores the QoS 1 ones in one
// producer call, one Redis round trip, where a goroutine and a round trip
// each cost more than the reading itself (BENCHMARKS.md, the subscriber
// section). The acknowledgements of a batch leave together, in arrival
// order, in one write. The batcher looks at what arrived every lingerIdle,
// not at each message: a wake-up for each would cost more than the batch
// saves.
const (
	// linger is the longest a message waits for others to share its
	// store: at 5,000 messages a second, up to 100 share a round trip,
	// and as many more wait in flight (see --subscribe-receive-maximum).
	linger = 20 * time.Millisecond
	// lingerIdle ends the wait early when the broker sent nothing for
	// that long: a broker that caps the messages in flight below
	// Receive Maximum (Mosquitto's max_inflight_messages) sends no more
	// until they are acknowledged.
	lingerIdle = 5 * time.Millisecond
	// batchReadings bounds a batch's readings: the producer's round trip
	// (stream.ProducerConfig.MaxBatch's default).
	batchReadings = 1024
)

// pending is a decoded QoS 1 or 2 message waiting to be stored, and the
// acknowledgement it settles.
type pending struct {
	o     *owed
	topic string
	it    item
	qos   byte
	once  *stream.Once // QoS 2: its once key; QoS 1: a resent message's doubt key
}

// plain says whether p can share a batch's producer call: a QoS 1 message
// with readings, not stored in doubt before.
func (p *pending) plain() bool {
	return p.qos == 1 && p.once == nil && p.it.dead == nil && len(p.it.readings) > 0
}

// batcher stores the messages of ss.pend in batches until the read loop
// closes it, and settles each message's acknowledgement.
func (ss *session) batcher() {
	maxMessages := max(1, ss.s.cfg.ReceiveMaximum/2)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var batch []pending
	for {
		p, ok := <-ss.pend
		if !ok {
			return
		}
		// Wait while the broker sends, up to the first message's linger.
		deadline := p.o.received.Add(linger)
		for seen := len(ss.pend); seen < maxMessages; {
			wait := min(time.Until(deadline), lingerIdle)
			if wait <= 0 {
				break
			}
			t.Reset(wait)
			<-t.C
			now := len(ss.pend)
			if now == seen {
				break
			}
			seen = now
		}
		batch = append(batch[:0], p)
		for n := len(p.it.readings); n < batchReadings && len(batch) < maxMessages; {
			p, ok := ss.take()
			if !ok {
				break
			}
			batch = append(batch, p)
			n += len(p.it.readings)
		}
		ss.s.m.batch.Observe(float64(len(batch)))
		ss.storeBatch(batch)
		clear(batch) // let the readings go
	}
}

// take returns a message waiting in ss.pend, if one does.
func (ss *session) take() (pending, bool) {
	select {
	case p, ok := <-ss.pend:
		return p, ok
	default:
		return pending{}, false
	}
}

// storeBatch stores batch: its plain QoS 1 messages in one producer call,
// the others (QoS 2, dead letters, doubts) each in a call of its own, at
// once; it returns when every message is settled.
func (ss *session) storeBatch(batch []pending) {
	var wg sync.WaitGroup
	var plain []*pending
	for i := range batch {
		p := &batch[i]
		switch {
		case p.plain():
			plain = append(plain, p)
		case p.it.dead == nil && len(p.it.readings) == 0:
			p.o.outcome = stored // nothing firehose stores
			close(p.o.settled)
		default:
			wg.Go(func() { ss.storeOne(p) })
		}
	}
	if len(plain) > 0 {
		ss.storePlain(plain)
	}
	wg.Wait()
}

// storeOne stores one message with its own producer call.
func (ss *session) storeOne(p *pending) {
	s := ss.s
	if p.qos == 1 {
		p.o.outcome, p.o.err = s.storeQoS1(ss.ctx, p.topic, p.it, p.o.pid, p.once)
	} else {
		p.o.outcome, p.o.err = s.store(ss.ctx, p.topic, p.it, p.once)
	}
	close(p.o.settled)
}

// storePlain stores plain QoS 1 messages in one producer call, retried
// while it fails, until the retry timeout or the session ends. After a
// failure in doubt (part of the call may be in Redis) the call is not made
// again: each message is then stored on its own under a doubt key
// (addInDoubt), so that none lands more than twice, and none twice that
// --dedup remembers.
func (ss *session) storePlain(plain []*pending) {
	s := ss.s
	var rs []ingest.Reading
	if len(plain) == 1 {
		rs = plain[0].it.readings
	} else {
		for _, p := range plain {
			rs = append(rs, p.it.readings...)
		}
	}
	for _, p := range plain {
		p.o.outcome = stored
	}
	doubt := false
	done := make([]bool, len(plain)) // after a doubt: stored once-calls
	err := s.retry(ss.ctx, fmt.Sprintf("%d messages (the first on %s) not stored", len(plain), plain[0].topic), ingest.RefusalReason, func() error {
		if !doubt {
			err := s.p.Add(s.storeCtx, rs)
			if err != nil && inDoubt(err) {
				doubt = true
				for _, p := range plain {
					p.once = s.doubts.add(s.cfg.ClientID, p.o.pid)
				}
				s.m.inDoubt.Add(float64(len(plain)))
			}
			return err
		}
		return ss.storeEach(plain, done)
	})
	for _, p := range plain {
		p.o.err = err
		close(p.o.settled)
	}
}

// storeEach stores each message of plain not done yet on its own under its
// doubt key (addInDoubt), at once, and returns the failures.
func (ss *session) storeEach(plain []*pending, done []bool) error {
	s := ss.s
	errs := make([]error, len(plain))
	var wg sync.WaitGroup
	for i, p := range plain {
		if done[i] {
			continue
		}
		wg.Go(func() {
			again, err := s.addInDoubt(p.it.readings, *p.once)
			if err == nil {
				done[i], p.o.outcome = true, pick(again, stored)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// inDoubt says whether a failed producer call may have written part of
// what it was given: every failure but the refusals that write nothing.
func inDoubt(err error) bool {
	return !errors.Is(err, ingest.ErrBacklogFull) && !errors.Is(err, ingest.ErrOverloaded) && !errors.Is(err, ingest.ErrClosed)
}
