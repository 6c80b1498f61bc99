package broker

import (
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"firehose/ingest"
)

// Edge dead letters. A QoS 1/2 publish on an ingest topic (the readings
// topic, a topic a mapping rule matches, the Sparkplug B namespace) that is
// acknowledged must be stored: as readings, or, when it cannot become
// readings now, whole as an edge dead letter (ingest.DeadLetter) written
// before the acknowledgement, which `firehose rejected replay` resolves
// later (mqttmsg.Resolver). That is:
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
