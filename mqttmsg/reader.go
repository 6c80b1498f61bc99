package mqttmsg

import (
	"context"
	"errors"
	"fmt"
	"time"

	"firehose/ingest"
	"firehose/mapping"
	"firehose/sparkplug"
)

// PropertyMessageID is the MQTT 5 user property of a message's id: with
// --dedup id a publish sent again with the same id (a QoS 1 resend after a
// lost PUBACK, or a device's own retry) is acknowledged and not stored
// again. It wins over a msg_id in the payload or a rule's id.
const PropertyMessageID = "msg_id"

// ErrStateUnavailable is matched (errors.Is) by the error of Read for a
// Sparkplug B message whose edge node's state could not be read or written
// (the store, Redis, failed): transient, the message may be sent again.
var ErrStateUnavailable = errors.New("sparkplug state unavailable")

// Kind is what a topic is to firehose: the decode path of its messages.
// Apart from Pass, each is the ingest.DeadLetter Kind of the messages that
// take it.
type Kind string

// Kinds of topic.
const (
	// Pass: not a topic firehose stores; its messages are plain MQTT.
	Pass Kind = ""
	// Topic: the readings topic (--mqtt-topic): one reading a message.
	Topic Kind = ingest.KindTopic
	// Rule: a topic a mapping rule matches: the rows the rule maps.
	Rule Kind = ingest.KindRule
	// Sparkplug: the Sparkplug B namespace (spBv1.0/..., STATE/...).
	Sparkplug Kind = ingest.KindSparkplug
)

// Config says which topics a Reader reads and how.
type Config struct {
	// Topic is the readings topic template (--mqtt-topic); "{device_id}"
	// marks the level that names the device. Empty: DefaultTopic.
	Topic string
	// Rules map the messages of other topics (and shapes) to readings; a
	// topic is matched against them, in order, before Topic. Nil: none.
	Rules *mapping.Mapper
	// Sparkplug reads the Sparkplug B namespace, keeping each edge node's
	// state; it wins over Rules and Topic there. Nil: Sparkplug B off, its
	// topics are matched as any other.
	Sparkplug *sparkplug.Tracker
	// Limits validate the readings.
	Limits ingest.Limits
}

// Reader turns MQTT messages into readings. Safe for concurrent use; the
// Sparkplug B messages of one edge node's connection must be read in the
// order they arrived (see sparkplug.Tracker).
type Reader struct {
	tmpl   Template
	rules  *mapping.Mapper    // nil: none
	spb    *sparkplug.Tracker // nil: Sparkplug B off
	limits ingest.Limits
}

// New returns a Reader for c, or the error of a template that cannot work
// (naming --mqtt-topic).
func New(c Config) (*Reader, error) {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	t, err := ParseTemplate(c.Topic)
	if err != nil {
		return nil, err
	}
	return &Reader{tmpl: t, rules: c.Rules, spb: c.Sparkplug, limits: c.Limits}, nil
}

// Template is the readings topic template.
func (r *Reader) Template() Template { return r.tmpl }

// Route is what a topic name is to firehose, from the name alone.
type Route struct {
	// Kind is the decode path; Pass for a topic firehose does not store.
	Kind Kind
	// Sparkplug is the parsed topic of a Sparkplug route, unless Err.
	Sparkplug sparkplug.Topic
	// Err is set for a Sparkplug B topic that is malformed (it matches
	// sparkplug.ErrMalformed); Read returns it.
	Err error

	device string        // Topic: the device level
	match  mapping.Match // Rule: the rule
}

// Device is the device the message is of, as far as its topic says: the
// device level of the readings topic (maybe "", which validation refuses),
// or a Sparkplug B message's group/edge_node[/device]; "" for a rule's
// topic, a Sparkplug B STATE or a malformed one. An edge dead letter names
// it.
func (rt Route) Device() string {
	if rt.Kind == Sparkplug && rt.Err == nil && rt.Sparkplug.Type != sparkplug.STATE {
		return rt.Sparkplug.DeviceID() // not kept: it costs a string per message
	}
	return rt.device
}

// Command reports whether rt is a Sparkplug B NCMD, DCMD or STATE topic:
// plain MQTT, whose messages Read stores nothing of.
func (rt Route) Command() bool {
	if rt.Kind != Sparkplug || rt.Err != nil {
		return false
	}
	t := rt.Sparkplug.Type
	return t == sparkplug.NCMD || t == sparkplug.DCMD || t == sparkplug.STATE
}

// Rule is the name of the mapping rule of a Rule route, else "".
func (rt Route) Rule() string {
	if rt.Kind != Rule {
		return ""
	}
	return rt.match.Rule()
}

// Route says what topic is: in the Sparkplug B namespace (with Sparkplug B
// on), matched by a mapping rule, the readings topic, or none of these
// (Pass), in that order.
func (r *Reader) Route(topic string) Route {
	if r.spb != nil && sparkplug.IsTopic(topic) {
		tp, err := sparkplug.ParseTopic(topic)
		return Route{Kind: Sparkplug, Sparkplug: tp, Err: err}
	}
	if r.rules.Len() > 0 {
		if mt, ok := r.rules.MatchTopic(topic); ok {
			return Route{Kind: Rule, match: mt}
		}
	}
	if dev, ok := r.tmpl.Device(topic); ok {
		return Route{Kind: Topic, device: dev}
	}
	return Route{}
}

// Message is one MQTT message, as Read needs it.
type Message struct {
	// Topic is the topic name the message was published to.
	Topic string
	// Payload is the message's bytes; Read keeps no reference to them
	// beyond the readings' own (a reading's Payload may share them).
	Payload []byte
	// MessageID is its PropertyMessageID user property (MQTT 5), or "".
	MessageID string
	// QoS is the message's QoS: at 0 a Sparkplug B message that does not
	// wholly resolve lands what did (at most once); at 1 and 2 it is
	// Result.Unresolved.
	QoS byte
	// ReceivedAt is when the edge received it: the readings' time of
	// receipt.
	ReceivedAt time.Time
	// Owner is the credential a Sparkplug B NBIRTH counts against
	// (sparkplug.Tracker.MaxNodes): the broker's per-connection owner, the
	// subscriber's own id.
	Owner string
}

// Result is what Read made of a message.
type Result struct {
	// Readings are the readings to store, all together or none: validated,
	// normalized, received at Message.ReceivedAt, their ids named after
	// Message.MessageID (ingest.NameRows). Empty for a message that stores
	// nothing (a Pass or Command route; a Sparkplug B message at QoS 0
	// whose metrics did not resolve).
	Readings []ingest.Reading
	// Unresolved is set (the *sparkplug.RebirthError) for a Sparkplug B
	// message at QoS 1 or 2 that does not resolve now (a DATA before its
	// birth, an alias or name no birth gave): none of it is in Readings,
	// and the caller keeps the whole message as an edge dead letter
	// (ingest.DeadLetter, Reason Unresolved.Error()), which a replay after
	// the rebirth lands whole, once.
	Unresolved error
	// Rebirth is set when the edge node is to be asked for a rebirth:
	// send sparkplug.RebirthRequest(Rebirth.Group, Rebirth.EdgeNode, now)
	// (not set while a request for the node went out recently).
	Rebirth *sparkplug.RebirthError
	// Session is the session a Sparkplug B NBIRTH started: the caller
	// ends it (sparkplug.Tracker.EndSession) when the connection that
	// published the NBIRTH ends, so that the node's state expires.
	Session string
}

// Read turns m, whose topic rt routes (rt = r.Route(m.Topic), after any
// check of the client's), into what is to be stored. Its error says why
// nothing is stored, in three classes:
//
//   - errors.Is ErrStateUnavailable: the Sparkplug B state store failed;
//     transient.
//   - errors.Is sparkplug.ErrQuota or sparkplug.ErrStateTooLarge: a
//     Sparkplug B birth past the state bounds.
//   - anything else: the message is invalid, now and when sent again
//     (errors.Is ingest.ErrInvalidReading, *mapping.Error,
//     sparkplug.ErrMalformed, or a Sparkplug B value that has no JSON).
//
// For a Sparkplug B message Result.Session and Result.Rebirth are set even
// with an invalid-message error: the edge node's state changed already.
// Read stores nothing itself.
func (r *Reader) Read(ctx context.Context, rt Route, m Message) (Result, error) {
	switch rt.Kind {
	case Topic:
		rd, err := r.Reading(rt, m)
		if err != nil {
			return Result{}, err
		}
		return Result{Readings: []ingest.Reading{rd}}, nil
	case Rule:
		rs, err := mapRule(rt.match, m.Payload, m.MessageID, m.ReceivedAt, r.limits)
		return Result{Readings: rs}, err
	case Sparkplug:
		return r.readSparkplug(ctx, rt, m)
	}
	return Result{}, nil
}

// Reading is Read for a message on the readings topic (rt.Kind Topic),
// returning its one reading without a slice to hold it: at QoS 0 the
// broker queues it by value, allocating nothing.
func (r *Reader) Reading(rt Route, m Message) (ingest.Reading, error) {
	if rt.Kind != Topic {
		return ingest.Reading{}, fmt.Errorf("topic %q is not a readings topic (%s): %w", m.Topic, r.tmpl.Filter(), ingest.ErrInvalidReading)
	}
	return decodeTopic(rt.device, m.Payload, m.MessageID, m.ReceivedAt, r.limits)
}

// decodeTopic is the reading of a message on the readings topic of device
// dev, with id (if not "") as its id.
func decodeTopic(dev string, payload []byte, id string, receivedAt time.Time, lim ingest.Limits) (ingest.Reading, error) {
	rd := ingest.Reading{DeviceID: dev, ReceivedAt: receivedAt}
	err := DecodePayload(payload, &rd)
	if err == nil {
		rd.Normalize()
		err = rd.Validate(lim)
	}
	if err != nil {
		return ingest.Reading{}, err
	}
	if id != "" {
		rd.ID = id
	}
	return rd, nil
}

// mapRule is the rows rule mt maps a message to, their ids named after id.
func mapRule(mt mapping.Match, payload []byte, id string, receivedAt time.Time, lim ingest.Limits) ([]ingest.Reading, error) {
	rs, err := mt.Map(payload, receivedAt, lim)
	if err != nil {
		return nil, err
	}
	ingest.NameRows(rs, id)
	return rs, nil
}

// readSparkplug hands a Sparkplug B message to the tracker, which updates
// the edge node's state, and makes its rows.
func (r *Reader) readSparkplug(ctx context.Context, rt Route, m Message) (Result, error) {
	if rt.Err != nil {
		return Result{}, rt.Err
	}
	if rt.Command() {
		return Result{}, nil
	}
	msg, err := r.spb.HandleFrom(ctx, m.Owner, m.Topic, m.Payload)
	switch {
	case errors.Is(err, sparkplug.ErrMalformed), errors.Is(err, sparkplug.ErrQuota), errors.Is(err, sparkplug.ErrStateTooLarge):
		return Result{}, err
	case err != nil:
		return Result{}, fmt.Errorf("%w: %w", ErrStateUnavailable, err)
	}
	res := Result{Session: msg.Session}
	if rb := msg.Rebirth; rb != nil && !rb.Duplicate {
		res.Rebirth = rb
	}
	if unresolved(msg) && m.QoS > 0 {
		// Nothing partial: the whole message is the dead letter.
		res.Unresolved = msg.Rebirth
		return res, nil
	}
	res.Readings, err = spbReadings(msg, m.ReceivedAt, spbLimits(r.limits))
	return res, err
}
