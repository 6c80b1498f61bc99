package broker

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"firehose/ingest"
)

// Producer is what the broker needs of ingest.Producer.
//
// Add blocks until every reading of rs is durable in Redis and returns nil, or
// returns why not; the broker acknowledges a QoS 1/2 publish only after Add
// returned nil. Enqueue queues a QoS 0 reading without waiting. Neither
// retries: the device resends what was not acknowledged.
type Producer interface {
	Add(ctx context.Context, rs []ingest.Reading) error
	Enqueue(r ingest.Reading) error
}

// hook is the mochi hook that makes readings durable before mochi writes
// their acknowledgement: mochi calls OnPublish on the publishing client's
// own goroutine and writes the PUBACK/PUBREC after it returns, so blocking in
// Add holds back only that client's acknowledgement, while many clients' Adds
// share the producer's round trips.
type hook struct {
	mqtt.HookBase
	srv    *mqtt.Server
	topic  topic
	auth   *authenticator // nil: anonymous
	p      Producer
	limits ingest.Limits
	maxKA  uint16 // seconds
	maxPkt uint32 // bytes, announced in MQTT 5 CONNACK
	m      *metrics
	log    *slog.Logger
	ctx    context.Context // for Add; cancelled only after the drain

	draining atomic.Bool  // shutting down: refuse new readings
	inflight atomic.Int64 // OnPublish calls on readings topics under way
}

func (h *hook) ID() string { return "firehose" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnConnect, mqtt.OnPublish, mqtt.OnPacketEncode}, []byte{b})
}

// OnPacketEncode tells MQTT 5 clients in CONNACK the largest packet the
// broker accepts (Maximum Packet Size). mochi enforces the limit but does not
// announce it, and a client that is not told assumes there is none: its
// larger publish would cost it the connection without a reason.
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ProtocolVersion == 5 {
		pk.Properties.MaximumPacketSize = h.maxPkt
	}
	return pk
}

// OnConnectAuthenticate admits anonymous clients when auth is off, else a
// client whose username is a device id of the credentials file and whose
// password matches it.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.auth == nil {
		return true
	}
	ok := h.auth.check(string(pk.Connect.Username), pk.Connect.Password)
	if !ok {
		// The username is a device id, not a secret; the password never
		// appears in logs.
		h.log.Debug("mqtt connect refused: bad credentials", "device_id", string(pk.Connect.Username), "remote", cl.Net.Remote)
	}
	return ok
}

// OnACLCheck lets an authenticated device publish readings only under its own
// id (and only while its credentials stand); other topics and subscriptions
// are open to every connected client.
//
// A publish through an MQTT 5 topic alias arrives here with an empty topic
// name: mochi resolves the alias only after this check, so OnPublish checks
// the resolved topic.
func (h *hook) OnACLCheck(cl *mqtt.Client, topicName string, write bool) bool {
	if !write || h.auth == nil || topicName == "" {
		return true
	}
	dev, ok := h.topic.device(topicName)
	if !ok || h.mayPublish(cl, dev) {
		return true
	}
	h.m.refused.WithLabelValues("not_authorized").Inc()
	return false
}

// mayPublish reports whether an authenticated client may publish readings
// of device dev: under its own id only, and only while its credentials
// stand.
func (h *hook) mayPublish(cl *mqtt.Client, dev string) bool {
	user := string(cl.Properties.Username)
	_, known := h.auth.file.Get()[user]
	return dev == user && known
}

// OnConnect bounds the client's keep-alive: a client asking for none, or for
// more than the maximum, gets the maximum (MQTT 5 clients are told so in
// CONNACK).
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if h.maxKA > 0 && (cl.State.Keepalive == 0 || cl.State.Keepalive > h.maxKA) {
		cl.State.Keepalive = h.maxKA
		cl.State.ServerKeepalive = true
	}
	return nil
}

// OnPublish stores a reading before mochi acknowledges it. Publishes to other
// topics pass untouched.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	dev, ok := h.topic.device(pk.TopicName)
	if !ok {
		return pk, nil
	}
	if h.auth != nil && !h.mayPublish(cl, dev) {
		// Only a publish through a topic alias gets here: OnACLCheck
		// refused the others.
		return h.refuseUnauthorized(cl, pk)
	}
	qos := pk.FixedHeader.Qos
	h.m.publishes.WithLabelValues(qosLabel[qos&3]).Inc()
	h.inflight.Add(1)
	defer h.inflight.Add(-1)
	if h.draining.Load() {
		return h.refuseTransient(cl, pk, "shutting_down")
	}

	start := time.Now()
	r := ingest.Reading{DeviceID: dev, ReceivedAt: start}
	err := DecodePayload(pk.Payload, &r)
	if err == nil {
		r.Normalize()
		err = r.Validate(h.limits)
	}
	if err != nil {
		return h.refuseInvalid(cl, pk, err)
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

var qosLabel = [4]string{"0", "1", "2", "2"}

// refuseInvalid answers a payload that is not a valid reading: MQTT 5 gets
// 0x99 (payload format invalid); MQTT 3.1.1, which has no way to say why, gets
// its acknowledgement and the reading is dropped (it would never become
// valid, so withholding the ack would only make the device resend it
// forever). At QoS 0 it is dropped. Every case is counted, none stored and
// none delivered to subscribers.
func (h *hook) refuseInvalid(cl *mqtt.Client, pk packets.Packet, err error) (packets.Packet, error) {
	h.m.refused.WithLabelValues("invalid").Inc()
	h.log.Debug("mqtt reading refused", "device_id", cl.Properties.Username, "topic", pk.TopicName, "err", err)
	if pk.FixedHeader.Qos > 0 && cl.Properties.ProtocolVersion == 5 {
		return h.refuseV5(cl, pk, packets.ErrPayloadFormatInvalid)
	}
	return pk, packets.CodeSuccessIgnore
}

// refuseUnauthorized answers a reading its client may not publish as mochi
// answers a publish its ACL check refused: MQTT 5 gets 0x87 (not
// authorized), an MQTT 3.1.1 client is disconnected, QoS 0 is dropped.
func (h *hook) refuseUnauthorized(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
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
func (h *hook) refuseTransient(cl *mqtt.Client, pk packets.Packet, reason string) (packets.Packet, error) {
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
func (h *hook) refuseV5(cl *mqtt.Client, pk packets.Packet, code packets.Code) (packets.Packet, error) {
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
