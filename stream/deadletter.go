package stream

import (
	"context"

	"firehose/ingest"
)

// AddDeadLetter writes d to its shard stream as one entry
// (ingest.CodecDeadLetter) and returns nil once Redis confirmed it: the edge
// may then acknowledge the message. It shares the round trips of Add (group commit), counts toward
// the high-water mark as one reading, and is refused as Add is (backlog
// full, Redis unavailable, overloaded, closed): then the edge must not
// acknowledge.
func (p *Producer) AddDeadLetter(ctx context.Context, d ingest.DeadLetter) error {
	c := &call{dead: &d, done: make(chan error, 1)}
	if err := p.enqueue(c); err != nil {
		return err
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// deadLetterRoute is what picks the shard of dead letter d.
func deadLetterRoute(d *ingest.DeadLetter) string {
	if d.Device != "" {
		return d.Device
	}
	if d.ClientID != "" {
		return d.ClientID
	}
	return d.Topic
}
