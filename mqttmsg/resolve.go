package mqttmsg

import (
	"context"
	"errors"
	"fmt"

	"firehose/ingest"
	"firehose/mapping"
	"firehose/sparkplug"
)

// ErrUnresolved is returned by Resolver.Resolve for a dead letter that still
// cannot become readings (a Sparkplug B DATA whose birth is still unknown).
var ErrUnresolved = errors.New("still unresolved")

// Resolver turns the MQTT edges' dead letters back into readings through
// the decode path a live message takes (for `firehose rejected replay`):
// the readings topic's payload decoding, the mapping rules, or the
// Sparkplug B tracker with the edge node's state as it is now, so that a
// DATA dead-lettered before its birth resolves once the birth arrived. It
// changes no Sparkplug state.
type Resolver struct {
	spb    *sparkplug.Tracker // nil: Sparkplug dead letters cannot be resolved
	rules  *mapping.Mapper    // nil: no rules
	limits ingest.Limits
}

// NewResolver returns a Resolver reading Sparkplug B state from store (the
// edges': stream.NewSparkplugStore on the deployment's Redis and prefix;
// nil: none) and mapping with rules (nil: none).
func NewResolver(store sparkplug.Store, rules *mapping.Mapper, lim ingest.Limits) *Resolver {
	r := &Resolver{rules: rules, limits: lim}
	if store != nil {
		r.spb = sparkplug.NewTracker(store)
	}
	return r
}

// Resolve returns the readings of d, validated as a live message's are,
// with d's time of receipt. An error says why d still cannot become
// readings: an invalid payload stays invalid (errors.Is
// ingest.ErrInvalidReading, *mapping.Error or sparkplug.ErrMalformed), a
// Sparkplug message still lacks its birth (ErrUnresolved).
func (r *Resolver) Resolve(ctx context.Context, d ingest.DeadLetter) ([]ingest.Reading, error) {
	switch d.Kind {
	case ingest.KindTopic:
		rd, err := decodeTopic(d.Device, d.Payload, "", d.ReceivedAt, r.limits)
		if err != nil {
			return nil, err
		}
		return []ingest.Reading{rd}, nil
	case ingest.KindRule:
		mt, ok := r.rules.MatchTopic(d.Topic)
		if !ok {
			return nil, fmt.Errorf("%w: no mapping rule matches topic %q (give the rules the broker runs with: --config)", ErrUnresolved, d.Topic)
		}
		return mapRule(mt, d.Payload, "", d.ReceivedAt, r.limits)
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
