package broker

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"firehose/ingest"
	"firehose/mapping"
	"firehose/mqttmsg"
	"firehose/sparkplug"
)

// Producer is what the broker needs of stream.Producer.
//
// Add blocks until every reading of rs is durable in Redis and returns nil, or
// returns why not; the broker acknowledges a QoS 1/2 publish only after Add
// returned nil. Enqueue queues a QoS 0 reading without waiting. Neither
// retries: the device resends what was not acknowledged.
type Producer interface {
	Add(ctx context.Context, rs []ingest.Reading) error
	Enqueue(r ingest.Reading) error
	// AddDeadLetter blocks, as Add does, until the edge dead letter d is
	// durable in Redis, or returns why not (see storeDeadLetter).
	AddDeadLetter(ctx context.Context, d ingest.DeadLetter) error
}

// ingestHook is the mochi hook that makes readings durable before mochi
// writes their acknowledgement: mochi calls OnPublish on the publishing
// client's own goroutine and writes the PUBACK/PUBREC after it returns, so
// blocking in Add holds back only that client's acknowledgement, while many
// clients' Adds share the producer's round trips. It reads the readings
// topic, the mapping rules' topics and the Sparkplug B namespace through
// mqttmsg (Route, then the client's checks, then Read; sparkplug.go keeps
// each connection's Sparkplug B sessions), answers what cannot be stored
// with its reason code, and stores the wills mochi published.
//
// It is the only hook that provides OnPublish, so mochi makes one hook call
// per publish: the retained bounds and, for a publish through a topic alias,
// the ACL are consulted from here (ret, acl).
type ingestHook struct {
	mqtt.HookBase
	srv *mqtt.Server
	// read turns publishes into readings: the readings topic, the mapping
	// rules and Sparkplug B.
	read *mqttmsg.Reader
	spb  *sparkplug.Tracker // read's; nil: Sparkplug B off
	// spbLive: the Sparkplug sessions each connection's NBIRTHs started.
	spbLive *spbSessions
	// rebirths queues Rebirth requests for sendRebirths: group, edge node.
	rebirths chan [2]string
	// wills queues the wills mochi published, for storeWills.
	wills chan will
	acl   *acl      // nil: anonymous
	ret   *retained // the retained bounds, kept by the bounds hook
	p     Producer
	m     *metrics
	log   *slog.Logger
	ctx   context.Context // for Add; cancelled only after the drain

	draining atomic.Bool  // shutting down: refuse new readings
	inflight atomic.Int64 // OnPublish calls on readings topics under way
}

func (h *ingestHook) ID() string { return "firehose" }

// Provides is a switch, not mochi's bytes.Contains: mochi asks every hook
// for every event, several times per publish.
func (h *ingestHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnWillSent, mqtt.OnDisconnect:
		return true
	}
	return false
}

// OnDisconnect starts the expiry of the Sparkplug B state of the edge nodes
// the client's NBIRTHs started. It runs before the bounds hook's
// OnDisconnect, as it did when they were one hook.
func (h *ingestHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.endSparkplugSessions(cl)
}

// will is a will mochi published, and the client it was the will of.
type will struct {
	cl *mqtt.Client
	pk packets.Packet
}

// OnWillSent queues a will that mochi published for storeWills: mochi
// publishes wills past OnPublish, so without this a Sparkplug B NDEATH (the
// death certificate an edge node registers as its will) or a reading a
// device left as its will would reach subscribers and never land. It does
// not wait: mochi calls it from its event loop for delayed wills. A full
// queue drops the will, counted as refused (overloaded).
func (h *ingestHook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if pk.TopicName == refusedWillTopic {
		return // the auth hook's OnWill refused it: nothing to store
	}
	select {
	case h.wills <- will{cl: cl, pk: pk}:
	default:
		h.m.refused.WithLabelValues("overloaded").Inc()
		h.log.Warn("mqtt will not stored: too many wills queued", "client", cl.ID, "topic", pk.TopicName)
	}
}

// storeWills stores the queued wills until ctx ends, each as a QoS 1
// publish of its topic would be (rules, Sparkplug B, the readings topic;
// other topics pass), counted like one; nobody is there to answer.
func (h *ingestHook) storeWills(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case w := <-h.wills:
			w.pk.FixedHeader.Qos = 1
			w.pk.PacketID = 0
			if _, err := h.publish(w.cl, w.pk); err != nil {
				h.log.Debug("mqtt will not stored", "client", w.cl.ID, "topic", w.pk.TopicName, "err", err)
			}
		}
	}
}

// OnPublish stores a reading before mochi acknowledges it, and keeps a
// retained message within the retained bounds. Publishes to other topics
// pass untouched.
//
// Under --mqtt-auth a publish through an MQTT 5 topic alias is checked here
// (mayWrite), on the topic mochi resolved: OnACLCheck saw no topic for it.
func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.acl != nil && pk.Properties.TopicAlias > 0 && !h.acl.mayWrite(cl, pk.TopicName) {
		return h.refuseUnauthorized(cl, pk)
	}
	pk, err := h.publish(cl, pk)
	if err == nil && pk.FixedHeader.Retain && !h.ret.admit(pk.TopicName, len(pk.Payload)) {
		// mochi retains what OnPublish passes with the flag set.
		pk.FixedHeader.Retain = false
		h.m.retainDropped.Inc()
	}
	return pk, err
}

func (h *ingestHook) publish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	rt := h.read.Route(pk.TopicName)
	switch rt.Kind {
	case mqttmsg.Pass:
		return pk, nil
	case mqttmsg.Topic:
		if h.acl != nil && !h.acl.mayPublish(cl, rt.Device()) {
			// Only a publish through a topic alias gets here: OnACLCheck
			// refused the others.
			return h.refuseUnauthorized(cl, pk)
		}
	}
	qos := pk.FixedHeader.Qos
	h.m.byQoS[qos&3].Inc()
	h.inflight.Add(1)
	defer h.inflight.Add(-1)
	if h.draining.Load() {
		return h.refuseTransient(cl, pk, "shutting_down")
	}
	switch rt.Kind {
	case mqttmsg.Sparkplug:
		return h.publishSparkplug(cl, pk, rt)
	case mqttmsg.Rule:
		return h.publishMapped(cl, pk, rt)
	}

	start := time.Now()
	r, err := h.read.Reading(rt, mqttmsg.Message{Topic: pk.TopicName, Payload: pk.Payload, MessageID: messageID(pk), QoS: qos, ReceivedAt: start})
	if err != nil {
		return h.refuseInvalid(cl, pk, err, ingest.KindTopic, rt.Device(), start)
	}
	if qos == 0 {
		if err := h.p.Enqueue(r); err != nil {
			h.m.refused.WithLabelValues(ingest.RefusalReason(err)).Inc()
			return pk, packets.CodeSuccessIgnore // at most once: dropped
		}
		h.m.accepted.Inc()
		return pk, nil
	}
	if err := h.p.Add(h.ctx, []ingest.Reading{r}); err != nil {
		return h.refuseTransient(cl, pk, ingest.RefusalReason(err))
	}
	h.m.ack.Observe(time.Since(start).Seconds())
	h.m.accepted.Inc()
	return pk, nil
}

// publishMapped stores the readings a mapping rule makes of a publish: all of
// them in one call, acknowledged together or refused together. A message the
// rule cannot map is refused as an invalid reading is, with the rule and the
// path as MQTT 5's reason string. Under --mqtt-auth every reading must be of
// the client's own device, as on the readings topic.
func (h *ingestHook) publishMapped(cl *mqtt.Client, pk packets.Packet, rt mqttmsg.Route) (packets.Packet, error) {
	start := time.Now()
	res, err := h.read.Read(h.ctx, rt, mqttmsg.Message{Topic: pk.TopicName, Payload: pk.Payload, MessageID: messageID(pk), QoS: pk.FixedHeader.Qos, ReceivedAt: start})
	if err != nil {
		return h.refuseInvalid(cl, pk, err, ingest.KindRule, "", start)
	}
	if h.acl != nil {
		for i := range res.Readings {
			if !h.acl.mayPublish(cl, res.Readings[i].DeviceID) {
				return h.refuseUnauthorized(cl, pk)
			}
		}
	}
	return h.store(cl, pk, res.Readings, start)
}

// messageID is pk's mqttmsg.PropertyMessageID, or "".
func messageID(pk packets.Packet) string {
	for _, p := range pk.Properties.User {
		if p.Key == mqttmsg.PropertyMessageID {
			return p.Val
		}
	}
	return ""
}

// store writes the readings of one publish: at QoS 0 queued without
// waiting (at most once), at QoS 1 and 2 all in one producer call before
// the acknowledgement, or refused together.
func (h *ingestHook) store(cl *mqtt.Client, pk packets.Packet, rs []ingest.Reading, start time.Time) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 {
		for i := range rs {
			if err := h.p.Enqueue(rs[i]); err != nil {
				h.m.refused.WithLabelValues(ingest.RefusalReason(err)).Add(float64(len(rs) - i))
				return pk, packets.CodeSuccessIgnore // at most once: dropped
			}
		}
		h.m.accepted.Add(float64(len(rs)))
		return pk, nil
	}
	if err := h.p.Add(h.ctx, rs); err != nil {
		return h.refuseTransient(cl, pk, ingest.RefusalReason(err))
	}
	h.m.ack.Observe(time.Since(start).Seconds())
	h.m.accepted.Add(float64(len(rs)))
	return pk, nil
}

// refuseInvalid answers a payload that is not a valid reading (of decode
// path kind, device dev if known, received at start): MQTT 5 gets 0x99
// (payload format invalid). MQTT 3.1.1 has no way to be told why, and
// withholding the ack would only make the device resend it forever: the
// message is written whole as an edge dead letter (storeDeadLetter) and
// then acknowledged, or, if the dead letter cannot be written, refused as
// transient. At QoS 0 it is dropped. Every case is counted as refused
// (invalid); none is delivered to subscribers.
func (h *ingestHook) refuseInvalid(cl *mqtt.Client, pk packets.Packet, err error, kind, dev string, start time.Time) (packets.Packet, error) {
	h.m.refused.WithLabelValues("invalid").Inc()
	h.log.Debug("mqtt reading refused", "device_id", cl.Properties.Username, "topic", pk.TopicName, "err", err)
	switch {
	case pk.FixedHeader.Qos == 0:
		return pk, packets.CodeSuccessIgnore
	case cl.Properties.ProtocolVersion == 5:
		code := packets.ErrPayloadFormatInvalid
		var me *mapping.Error
		if errors.As(err, &me) {
			code.Reason = truncateReason(me.Error())
		}
		return h.refuseV5(cl, pk, code)
	}
	if derr := h.storeDeadLetter(cl, pk, kind, dev, err.Error(), start); derr != nil {
		return h.refuseTransient(cl, pk, ingest.RefusalReason(derr))
	}
	return pk, packets.CodeSuccessIgnore
}

// truncateReason keeps a reason string short: MQTT 5 allows 65,535 bytes,
// and a client should not get back a large part of its payload.
func truncateReason(s string) string {
	const max = 256
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// refuseUnauthorized answers a reading its client may not publish as mochi
// answers a publish its ACL check refused: MQTT 5 gets 0x87 (not
// authorized), an MQTT 3.1.1 client is disconnected, QoS 0 is dropped.
func (h *ingestHook) refuseUnauthorized(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h.m.refused.WithLabelValues("not_authorized").Inc()
	switch {
	case pk.FixedHeader.Qos == 0:
		return pk, packets.CodeSuccessIgnore
	case cl.Properties.ProtocolVersion == 5:
		return h.refuseV5(cl, pk, packets.ErrNotAuthorized)
	}
	cl.Stop(packets.ErrNotAuthorized)
	return pk, packets.ErrRejectPacket
}

// refuseTransient answers a reading that could not be stored now (backlog
// over the high-water mark, Redis down, shutting down): MQTT 5 gets 0x97
// (quota exceeded); an MQTT 3.1.1 client gets no acknowledgement and is
// disconnected, so that it reconnects and resends the publish as 3.1.1
// clients do only on a new connection. At QoS 0 the reading is dropped.
func (h *ingestHook) refuseTransient(cl *mqtt.Client, pk packets.Packet, reason string) (packets.Packet, error) {
	h.m.refused.WithLabelValues(reason).Inc()
	switch {
	case pk.FixedHeader.Qos == 0:
		return pk, packets.CodeSuccessIgnore
	case cl.Properties.ProtocolVersion == 5:
		return h.refuseV5(cl, pk, packets.ErrQuotaExceeded)
	}
	cl.Stop(errors.New("reading not stored: " + reason))
	return pk, packets.ErrRejectPacket
}

// refuseV5 acknowledges a QoS 1/2 publish with a failure reason code. mochi
// answers a refused QoS 2 publish with a PUBACK, which a QoS 2 flow does not
// allow, so the PUBREC is written here.
func (h *ingestHook) refuseV5(cl *mqtt.Client, pk packets.Packet, code packets.Code) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 1 {
		return pk, code
	}
	rec := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
		PacketID:    pk.PacketID,
		ReasonCode:  code.Code,
		Properties:  packets.Properties{ReasonString: code.Reason},
	}
	if err := cl.WritePacket(rec); err != nil {
		h.log.Debug("write pubrec", "err", err)
	}
	return pk, packets.ErrRejectPacket
}
