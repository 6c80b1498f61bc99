package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"firehose/ingest"
	"firehose/mapping"
	"firehose/sparkplug"
)

// Edge dead letters. A QoS 1/2 publish on an ingest topic (the readings
// topic, a topic a mapping rule matches, the Sparkplug B namespace) that is
// acknowledged must be stored: as readings, or, when it cannot become
// readings now, whole as an edge dead letter (ingest.DeadLetter) written
// before the acknowledgement, which `firehose rejected replay` resolves
// later. That is:
//
//   - an invalid payload from an MQTT 3.1.1 client, which cannot be refused
//     (MQTT 5 clients get 0x99 payload format invalid instead, and no dead
//     letter);
//   - a Sparkplug B message its edge node's state cannot resolve yet: a DATA
//     (or DBIRTH) before its birth certificate, a DATA with an alias or name
//     no birth gave. The whole message is the dead letter, none of its values
//     lands as a row (a replay lands them all, once), and the edge node is
//     asked for a rebirth as before.
//
// Publishes to any other topic are plain MQTT (commands, status): delivered
// to subscribers, which is all their acknowledgement promises. At QoS 0
// nothing is written (at most once).

// storeDeadLetter writes pk whole as an edge dead letter of the decode path
// kind, of device dev (if known), for reason, received at start. It returns
// the producer's refusal, if any: the caller must then not acknowledge.
func (h *ingestHook) storeDeadLetter(cl *mqtt.Client, pk packets.Packet, kind, dev, reason string, start time.Time) error {
	d := ingest.DeadLetter{
		Source:     ingest.SourceMQTT,
		Kind:       kind,
		Topic:      pk.TopicName,
		ClientID:   cl.ID,
		Username:   string(cl.Properties.Username),
		Device:     dev,
		Reason:     truncateReason(reason),
		ReceivedAt: start,
		Payload:    pk.Payload,
	}
	if err := h.p.AddDeadLetter(h.ctx, d); err != nil {
		return err
	}
	h.m.deadLetters.WithLabelValues(kind).Inc()
	h.m.ack.Observe(time.Since(start).Seconds())
	return nil
}

// unresolved reports whether a Sparkplug B message handled by the tracker
// cannot be stored as rows now: its birth is not known, or one of its
// aliases or names is not.
func unresolved(msg *sparkplug.Message) bool {
	rb := msg.Rebirth
	return rb != nil && (rb.Reason == sparkplug.NotBorn || rb.Reason == sparkplug.UnknownAlias)
}

// ErrUnresolved is returned by Resolver.Resolve for a dead letter that still
// cannot become readings (a Sparkplug B DATA whose birth is still unknown).
var ErrUnresolved = errors.New("still unresolved")

// Resolver turns the broker's edge dead letters back into readings through
// the decode path a live publish takes (for `firehose rejected replay`): the
// readings topic's payload decoding, the mapping rules, or the Sparkplug B
// tracker with the edge node's state as it is now, so that a DATA
// dead-lettered before its birth resolves once the birth arrived. It changes
// no Sparkplug state.
type Resolver struct {
	spb    *sparkplug.Tracker // nil: Sparkplug dead letters cannot be resolved
	rules  *mapping.Mapper    // nil: no rules
	limits ingest.Limits
}

// NewResolver returns a Resolver reading Sparkplug B state from store (the
// broker's: stream.NewSparkplugStore on the deployment's Redis and prefix;
// nil: none) and mapping with rules (nil: none).
func NewResolver(store sparkplug.Store, rules *mapping.Mapper, lim ingest.Limits) *Resolver {
	r := &Resolver{rules: rules, limits: lim}
	if store != nil {
		r.spb = sparkplug.NewTracker(store)
	}
	return r
}

// Resolve returns the readings of d, validated as the broker validates
// them, with d's time of receipt. An error says why d still cannot become
// readings: an invalid payload stays invalid (errors.Is
// ingest.ErrInvalidReading, *mapping.Error or sparkplug.ErrMalformed), a
// Sparkplug message still lacks its birth (ErrUnresolved).
func (r *Resolver) Resolve(ctx context.Context, d ingest.DeadLetter) ([]ingest.Reading, error) {
	switch d.Kind {
	case ingest.KindTopic:
		rd := ingest.Reading{DeviceID: d.Device, ReceivedAt: d.ReceivedAt}
		if err := DecodePayload(d.Payload, &rd); err != nil {
			return nil, err
		}
		rd.Normalize()
		if err := rd.Validate(r.limits); err != nil {
			return nil, err
		}
		return []ingest.Reading{rd}, nil
	case ingest.KindRule:
		mt, ok := r.rules.MatchTopic(d.Topic)
		if !ok {
			return nil, fmt.Errorf("%w: no mapping rule matches topic %q (give the rules the broker runs with: --config)", ErrUnresolved, d.Topic)
		}
		return mt.Map(d.Payload, d.ReceivedAt, r.limits)
	case ingest.KindSparkplug:
		if r.spb == nil {
			return nil, fmt.Errorf("%w: Sparkplug B state unavailable", ErrUnresolved)
		}
		msg, err := r.spb.Resolve(ctx, d.Topic, d.Payload)
		if err != nil {
			return nil, err
		}
		if unresolved(msg) {
			return nil, fmt.Errorf("%w: %v", ErrUnresolved, msg.Rebirth)
		}
		return spbReadings(msg, d.ReceivedAt, spbLimits(r.limits))
	}
	return nil, fmt.Errorf("%w: unknown decode path %q", ErrUnresolved, d.Kind)
}
