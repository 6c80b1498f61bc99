package sparkplug

import (
	"context"
	"fmt"
	"strconv"
)

// Resolve decodes a message as Handle does, against the edge node's state as
// it is now, without changing that state (no seq is recorded, no rebirth
// throttled): for replaying a message that did not resolve when it arrived
// (a DATA before its birth, or with an alias no birth gave yet), once the
// birth is known. A DATA resolves its metrics against the live births, and
// Message.Rebirth says if it still does not (NotBorn, UnknownAlias; its seq
// is not checked). A BIRTH gives its metrics, whatever the state. Other
// types give no values.
func (t *Tracker) Resolve(ctx context.Context, topic string, payload []byte) (*Message, error) {
	tp, err := ParseTopic(topic)
	if err != nil {
		return nil, err
	}
	msg := &Message{Topic: tp}
	if tp.Type == STATE {
		return msg, nil
	}
	p, err := DecodePayload(payload)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", topic, err)
	}
	msg.Payload = p
	switch tp.Type {
	case NBIRTH, DBIRTH:
		if _, err := birthFields(tp.Device, p); err != nil {
			return nil, fmt.Errorf("%s: %w", topic, err)
		}
		for i := range p.Metrics {
			values(msg, i, &p.Metrics[i], p.Metrics[i].Name, p.Metrics[i].Datatype)
		}
	case NDATA, DDATA:
		got, err := t.store.Get(ctx, tp.Node(), dataFields(msg))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", topic, err)
		}
		if _, born := got[fieldSeq]; !born {
			t.rebirth(msg, NotBorn)
			return msg, nil
		}
		if _, devBorn := got[deviceField(tp.Device)]; tp.Device != "" && !devBorn {
			t.rebirth(msg, NotBorn)
			return msg, nil
		}
		t.resolveMetrics(msg, got)
	}
	return msg, nil
}

// dataFields are the state fields a DATA message's metrics need.
func dataFields(msg *Message) []string {
	dev := msg.Topic.Device
	fields := []string{fieldSeq, fieldSession}
	if dev != "" {
		fields = append(fields, deviceField(dev))
	}
	for _, m := range msg.Payload.Metrics {
		if m.HasAlias {
			fields = append(fields, aliasField(m.Alias))
		} else if m.HasName {
			fields = append(fields, nameField(dev, m.Name))
		}
	}
	return fields
}

// resolveMetrics converts the metrics of a DATA message against got, the
// state fields dataFields named; an alias or name no birth gave sets an
// UnknownAlias rebirth, which outranks a seq gap.
func (t *Tracker) resolveMetrics(msg *Message, got map[string]string) {
	p, dev := msg.Payload, msg.Topic.Device
	var unknownAliases []uint64
	var unknownNames []string
	for i := range p.Metrics {
		m := &p.Metrics[i]
		var (
			name string
			dt   DataType
			ok   bool
		)
		switch {
		case m.HasAlias:
			var d string
			dt, d, name, ok = parseAliasEntry(got[aliasField(m.Alias)])
			// An alias born by another device of the node is not this one's.
			ok = ok && d == dev
			if !ok {
				unknownAliases = append(unknownAliases, m.Alias)
			}
		case m.HasName:
			s, found := got[nameField(dev, m.Name)]
			n, perr := strconv.ParseUint(s, 10, 32)
			name, dt, ok = m.Name, DataType(n), found && perr == nil
			if !ok {
				unknownNames = append(unknownNames, m.Name)
			}
		default:
			msg.Invalid = append(msg.Invalid, MetricError{Index: i, Err: fmt.Errorf("neither name nor alias: %w", ErrValue)})
			continue
		}
		if ok {
			values(msg, i, m, name, dt)
		}
	}
	if len(unknownAliases) > 0 || len(unknownNames) > 0 {
		// Unknown aliases outrank a seq gap: both ask for the same rebirth.
		msg.Rebirth = nil
		rb := t.rebirth(msg, UnknownAlias)
		rb.Aliases, rb.Names = unknownAliases, unknownNames
	}
}
