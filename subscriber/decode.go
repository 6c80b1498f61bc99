package subscriber

import (
	"context"
	"errors"

	"firehose/ingest"
	"firehose/mqttmsg"
)

// readerDecoder decodes with an mqttmsg.Reader, as firehose's broker does.
type readerDecoder struct {
	rd    *mqttmsg.Reader
	owner string // the Sparkplug B session owner: the subscriber's client id
	// rebirths queues the Rebirth requests for the session to publish; a
	// full queue drops one (the edge node's next unresolvable message asks
	// again).
	rebirths chan RebirthRequest
}

// NewDecoder is the Decoder of rd: the readings topic, the mapping rules and
// Sparkplug B, exactly as the embedded broker reads them, Rebirth requests
// included (it is a Rebirther). Sparkplug B state is owned by clientID. The
// subscriber decodes in arrival order (Sparkplug B's sequence numbers need
// it).
func NewDecoder(rd *mqttmsg.Reader, clientID string) Decoder {
	return readerDecoder{rd: rd, owner: clientID, rebirths: make(chan RebirthRequest, 64)}
}

// Rebirths are the Rebirth requests Decode asked for.
func (d readerDecoder) Rebirths() <-chan RebirthRequest { return d.rebirths }

func (d readerDecoder) Decode(ctx context.Context, m Message) ([]ingest.Reading, error) {
	rt := d.rd.Route(m.Topic)
	if rt.Kind == mqttmsg.Pass || rt.Command() {
		return nil, nil
	}
	invalid := func(err error) error { return &InvalidError{Kind: string(rt.Kind), Device: rt.Device(), Err: err} }
	if rt.Err != nil {
		return nil, invalid(rt.Err)
	}
	res, err := d.rd.Read(ctx, rt, mqttmsg.Message{Topic: m.Topic, Payload: m.Payload, MessageID: m.MessageID, QoS: m.QoS,
		ReceivedAt: m.ReceivedAt, Owner: d.owner})
	if errors.Is(err, mqttmsg.ErrStateUnavailable) {
		return nil, err // transient: retried
	}
	if rb := res.Rebirth; rb != nil {
		select {
		case d.rebirths <- RebirthRequest{Group: rb.Group, EdgeNode: rb.EdgeNode}:
		default:
		}
	}
	switch {
	case err != nil:
		// Invalid, or over the Sparkplug B state bounds: the broker
		// refuses those to the device; here nobody can be told, so the
		// message is kept whole as a dead letter.
		return nil, invalid(err)
	case res.Unresolved != nil:
		// A Sparkplug B message before its birth or with an unknown
		// alias: whole, a dead letter a replay lands after the rebirth.
		return nil, invalid(res.Unresolved)
	}
	return res.Readings, nil
}
