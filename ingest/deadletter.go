package ingest

import (
	"encoding/binary"
	"fmt"
	"time"
)

// CodecDeadLetter is the encoding (version 5) of an edge dead letter: a
// message an edge acknowledged that could not become readings yet (see
// DeadLetter). Its entry carries FieldCount 1, so it counts in the shard's
// backlog (and toward the high-water mark) like one reading. A bridge that
// predates it records the entry in readings_rejected as an unknown
// encoding, body and all: nothing acknowledged is lost across an upgrade.
const CodecDeadLetter = "5"

// Sources of a dead letter (DeadLetter.Source).
const (
	// SourceMQTT is a message an MQTT client published to the embedded
	// broker.
	SourceMQTT = "mqtt"
)

// Kinds of a dead letter: the decode path its message took, which a replay
// takes again (DeadLetter.Kind).
const (
	// KindTopic: a message on the readings topic; DeadLetter.Device is the
	// device its topic names.
	KindTopic = "topic"
	// KindRule: a message on a topic a mapping rule matches; Device is "".
	KindRule = "rule"
	// KindSparkplug: a Sparkplug B message; Device is its edge node
	// (group/edge_node), or the device (group/edge_node/device).
	KindSparkplug = "sparkplug"
)

// DeadLetter is an edge dead letter: a message an edge acknowledges although
// it cannot become readings now, kept whole so that the operator sees it and
// can replay it (`firehose rejected replay`) through the same decode path
// once it can resolve: an invalid payload from an MQTT 3.1.1 client (which
// cannot be told that it was refused), a Sparkplug B DATA before its birth
// certificate or with an alias no birth gave.
//
// A dead letter is written by stream.Producer.AddDeadLetter in the same
// pipelined round trips as readings, into the shard stream of Device (or
// ClientID), before the edge acknowledges; the bridge lands it in readings_rejected
// with source 'edge'. Later edges (an upstream subscriber, typed tables) use
// the same store for what they acknowledge and cannot store as rows.
type DeadLetter struct {
	// Source is the edge that received the message (SourceMQTT).
	Source string
	// Kind is the decode path (KindTopic, KindRule, KindSparkplug).
	Kind string
	// Topic is the MQTT topic of the message.
	Topic string
	// ClientID and Username identify the client that sent it ("" if none).
	ClientID, Username string
	// Device is the device (or Sparkplug edge node) the message is of, if
	// known: it routes the dead letter to that device's shard.
	Device string
	// Reason says why the message did not become readings.
	Reason string
	// ReceivedAt is when the edge received the message; a replay's
	// readings keep it as their time of receipt.
	ReceivedAt time.Time
	// Payload is the message's raw bytes.
	Payload []byte
}

// AppendDeadLetter appends the version-5 encoding of d to dst: uvarint
// length and bytes of Source, Kind, Topic, ClientID, Username, Device and
// Reason, varint ReceivedAt in Unix nanoseconds, uvarint length and bytes of
// Payload.
func AppendDeadLetter(dst []byte, d *DeadLetter) []byte {
	for _, s := range []string{d.Source, d.Kind, d.Topic, d.ClientID, d.Username, d.Device, d.Reason} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	dst = binary.AppendVarint(dst, d.ReceivedAt.UnixNano())
	dst = binary.AppendUvarint(dst, uint64(len(d.Payload)))
	return append(dst, d.Payload...)
}

// DecodeDeadLetter decodes a version-5 body. Errors wrap ErrCorruptEntry.
func DecodeDeadLetter(body string) (DeadLetter, error) {
	dec := decoder{s: body}
	var d DeadLetter
	for _, f := range []*string{&d.Source, &d.Kind, &d.Topic, &d.ClientID, &d.Username, &d.Device, &d.Reason} {
		*f = dec.str()
	}
	d.ReceivedAt = time.Unix(0, dec.varint()).UTC()
	d.Payload = []byte(dec.str())
	if dec.err != nil {
		return DeadLetter{}, fmt.Errorf("dead letter: %w", dec.err)
	}
	if len(dec.s) != 0 {
		return DeadLetter{}, fmt.Errorf("%w: dead letter: %d bytes after the end", ErrCorruptEntry, len(dec.s))
	}
	return d, nil
}
