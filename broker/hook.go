package broker

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"firehose/ingest"
	"firehose/mapping"
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

// hook is the mochi hook that makes readings durable before mochi writes
// their acknowledgement: mochi calls OnPublish on the publishing client's
// own goroutine and writes the PUBACK/PUBREC after it returns, so blocking in
// Add holds back only that client's acknowledgement, while many clients' Adds
// share the producer's round trips.
type hook struct {
	mqtt.HookBase
	srv   *mqtt.Server
	topic topic
	rules *mapping.Mapper    // nil: none
	spb   *sparkplug.Tracker // nil: Sparkplug B off
	// spbLive: the Sparkplug sessions each connection's NBIRTHs started.
	spbLive *spbSessions
	// rebirths queues Rebirth requests for sendRebirths: group, edge node.
	rebirths chan [2]string
	// wills queues the wills mochi published, for storeWills.
	wills  chan will
	auth   *authenticator // nil: anonymous
	fails  *loginThrottle // failed logins by source address; with auth
	slots  checkSlots     // bcrypt checks at once; with auth
	sess   *sessions
	ret    *retained
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
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnConnect, mqtt.OnPublish, mqtt.OnPacketEncode,
		mqtt.OnSubscribed, mqtt.OnSessionEstablish, mqtt.OnDisconnect, mqtt.OnClientExpired,
		mqtt.OnWill, mqtt.OnWillSent, mqtt.OnRetainMessage, mqtt.OnRetainedExpired}, []byte{b})
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

// OnConnectAuthenticate admits every client that OnConnect let through:
// mochi calls OnConnect first, and only OnConnect can answer with the reason
// codes the checks need (see admit).
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return true
}

// OnACLCheck decides, under --mqtt-auth, what a client may publish and
// read: it publishes (write true) only what mayWrite allows, retained
// messages included, and only while its credentials stand; it reads (write
// false: mochi asks with the filter at SUBSCRIBE, and with the topic name
// before each delivery) only what mayRead allows. With or without auth, a
// message is not queued for a disconnected session past the bound on queued
// messages (sessions.mayQueue).
//
// A publish through an MQTT 5 topic alias arrives here with an empty topic
// name: mochi resolves the alias only after this check, so OnPublish checks
// the resolved topic.
func (h *hook) OnACLCheck(cl *mqtt.Client, topicName string, write bool) bool {
	if !write {
		if h.auth != nil && !h.mayRead(cl, topicName) {
			return false
		}
		return h.sess.mayQueue(cl)
	}
	if h.auth == nil || topicName == "" || h.mayWrite(cl, topicName) {
		return true
	}
	h.m.refused.WithLabelValues("not_authorized").Inc()
	return false
}

// OnSubscribed counts the filters refused because the client may not read
// them (mochi answered 0x87 not authorized to MQTT 5, 0x80 failure to 3.1.1).
func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if h.auth == nil {
		return
	}
	for i, sub := range pk.Filters {
		if i < len(codes) && codes[i] >= packets.ErrUnspecifiedError.Code && mqtt.IsValidFilter(sub.Filter, false) && !h.mayRead(cl, sub.Filter) {
			h.m.subsRefused.Inc()
			h.log.Debug("mqtt subscribe refused: not authorized", "device_id", string(cl.Properties.Username), "filter", sub.Filter)
		}
	}
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
// CONNACK). Under --mqtt-auth it admits the client or refuses it with its
// CONNACK (see admit).
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if h.maxKA > 0 && (cl.State.Keepalive == 0 || cl.State.Keepalive > h.maxKA) {
		cl.State.Keepalive = h.maxKA
		cl.State.ServerKeepalive = true
	}
	if h.auth == nil {
		return nil
	}
	code, reason := h.admit(cl, pk)
	if code == packets.CodeSuccess {
		return nil
	}
	h.m.connectsRefused.WithLabelValues(reason).Inc()
	// The username is a device id, not a secret; the password never
	// appears in logs.
	h.log.Debug("mqtt connect refused: "+strings.ReplaceAll(reason, "_", " "), "device_id", string(pk.Connect.Username), "client_id", pk.Connect.ClientIdentifier, "remote", cl.Net.Remote)
	if err := h.srv.SendConnack(cl, code, false, nil); err != nil {
		h.log.Debug("write connack", "err", err)
	}
	return code
}

// Reasons a CONNECT is refused under auth (the reason label of
// firehose_mqtt_connects_refused_total).
const (
	refusedCredentials = "bad_credentials"
	refusedThrottled   = "throttled"
	refusedClientID    = "client_id"
	refusedWill        = "will_not_authorized"
	refusedClosing     = "shutting_down"
)

var connectRefusals = []string{refusedCredentials, refusedThrottled, refusedClientID, refusedWill, refusedClosing}

// admit checks an authenticating client, in this order:
//
//  1. its password (a password that passed before is checked in
//     microseconds; else, unless its address is throttled, bcrypt runs in one
//     of a few slots): wrong -> MQTT 5 0x86 bad user name or password, 3.1.1
//     return code 5 not authorized, and the address loses a token;
//     throttled -> 0x9F connection rate exceeded, 3.1.1 code 3 server
//     unavailable, before any bcrypt;
//  2. its client id: the username, or username/anything for a user whose
//     line grants read filters (a dashboard per browser tab); an empty id
//     becomes the username (MQTT 5 is told so in CONNACK) -> else 0x85
//     client identifier not valid, 3.1.1 code 2 identifier rejected. So no
//     one can take over, or read, another device's session;
//  3. its will: only a publish it may make (mayWill: its own topics, or
//     granted; rows of its own device), as mochi publishes wills without
//     the ACL check -> 0x87 not authorized, 3.1.1 code 5.
//
// The password comes first so that a wrong one is always answered 0x86,
// whatever the client id.
func (h *hook) admit(cl *mqtt.Client, pk packets.Packet) (packets.Code, string) {
	v5 := cl.Properties.ProtocolVersion == 5
	pick := func(c5, c3 packets.Code) packets.Code {
		if v5 {
			return c5
		}
		return c3 // mochi turns it into the 3.1.1 return code
	}
	user := string(pk.Connect.Username)
	if !h.auth.remembered(user, pk.Connect.Password) {
		key := sourceKey(cl.Net.Remote)
		if !h.fails.allow(key) {
			return pick(packets.ErrConnectionRateExceeded, packets.ErrServerUnavailable), refusedThrottled
		}
		if !h.slots.acquire(h.ctx) {
			return packets.ErrServerUnavailable, refusedClosing
		}
		// Re-check after the wait: the logins queued behind a flood of
		// failures from the same address are refused without bcrypt.
		ok := false
		allowed := h.fails.allow(key)
		if allowed {
			ok = h.auth.check(user, pk.Connect.Password)
		}
		h.slots.release()
		if !allowed {
			return pick(packets.ErrConnectionRateExceeded, packets.ErrServerUnavailable), refusedThrottled
		}
		if !ok {
			h.fails.failed(key)
			return packets.ErrBadUsernameOrPassword, refusedCredentials
		}
	}
	switch id := pk.Connect.ClientIdentifier; {
	case id == "":
		cl.ID = user
		cl.Properties.Props.AssignedClientID = user
	case id == user:
	case strings.HasPrefix(id, user+"/") && len(h.auth.file.Get()[user].Read) > 0:
	default:
		return packets.ErrClientIdentifierNotValid, refusedClientID
	}
	if pk.Connect.WillFlag && !h.mayWill(user, pk.Connect.WillTopic, pk.Connect.WillPayload) {
		// mochi publishes a will past OnACLCheck and OnPublish.
		return pick(packets.ErrNotAuthorized, packets.ErrBadUsernameOrPassword), refusedWill
	}
	return packets.CodeSuccess, ""
}

// OnSessionEstablish: a client of this id is connecting; its disconnected
// session, if any, is about to be resumed or replaced, not evicted.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	h.sess.resumed(cl.ID)
}

// OnDisconnect records a session kept for a client that went away.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.endSparkplugSessions(cl)
	if expire || cl.IsTakenOver() {
		return
	}
	h.sess.disconnected(cl)
}

// OnClientExpired drops the subscriptions and queued messages of an
// expired session, which mochi leaves behind.
func (h *hook) OnClientExpired(cl *mqtt.Client) {
	h.sess.expired(cl)
}

// OnWill drops the retain flag of a will past the retained bounds. Under
// --mqtt-auth it checks the will again (admit checked it at CONNECT): one
// its client may no longer leave, its credentials changed since, is sent
// empty to refusedWillTopic instead, and counted refused (not_authorized).
func (h *hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if h.auth != nil && !cl.Net.Inline && !h.mayWill(string(cl.Properties.Username), will.TopicName, will.Payload) {
		h.m.refused.WithLabelValues("not_authorized").Inc()
		h.log.Debug("mqtt will refused: not authorized", "device_id", string(cl.Properties.Username), "topic", will.TopicName)
		return mqtt.Will{TopicName: refusedWillTopic, Flag: will.Flag}, nil
	}
	if will.Retain && !h.ret.admit(will.TopicName, len(will.Payload)) {
		will.Retain = false
		h.m.retainDropped.Inc()
	}
	return will, nil
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
func (h *hook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if pk.TopicName == refusedWillTopic {
		return // OnWill refused it: nothing to store
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
func (h *hook) storeWills(ctx context.Context) {
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

// OnRetainMessage and OnRetainedExpired keep the account of retained
// messages.
func (h *hook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	h.ret.kept(pk.TopicName, len(pk.Payload))
}

func (h *hook) OnRetainedExpired(filter string) { h.ret.kept(filter, 0) }

// OnPublish stores a reading before mochi acknowledges it, and keeps a
// retained message within the retained bounds. Publishes to other topics
// pass untouched.
//
// Under --mqtt-auth a publish through an MQTT 5 topic alias is checked here
// (mayWrite), on the topic mochi resolved: OnACLCheck saw no topic for it.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.auth != nil && pk.Properties.TopicAlias > 0 && !h.mayWrite(cl, pk.TopicName) {
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

func (h *hook) publish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	spb := h.spb != nil && sparkplug.IsTopic(pk.TopicName)
	var mt mapping.Match
	mapped := false
	if h.rules.Len() > 0 && !spb {
		mt, mapped = h.rules.MatchTopic(pk.TopicName)
	}
	var dev string
	if !mapped && !spb {
		var ok bool
		if dev, ok = h.topic.device(pk.TopicName); !ok {
			return pk, nil
		}
		if h.auth != nil && !h.mayPublish(cl, dev) {
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
	switch {
	case spb:
		return h.publishSparkplug(cl, pk)
	case mapped:
		return h.publishMapped(cl, pk, mt)
	}

	start := time.Now()
	r := ingest.Reading{DeviceID: dev, ReceivedAt: start}
	err := DecodePayload(pk.Payload, &r)
	if err == nil {
		r.Normalize()
		err = r.Validate(h.limits)
	}
	if err != nil {
		return h.refuseInvalid(cl, pk, err, ingest.KindTopic, dev, start)
	}
	if id := messageID(pk); id != "" {
		r.ID = id
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
func (h *hook) publishMapped(cl *mqtt.Client, pk packets.Packet, mt mapping.Match) (packets.Packet, error) {
	start := time.Now()
	rs, err := mt.Map(pk.Payload, start, h.limits)
	if err != nil {
		return h.refuseInvalid(cl, pk, err, ingest.KindRule, "", start)
	}
	if h.auth != nil {
		for i := range rs {
			if !h.mayPublish(cl, rs[i].DeviceID) {
				return h.refuseUnauthorized(cl, pk)
			}
		}
	}
	ingest.NameRows(rs, messageID(pk))
	return h.store(cl, pk, rs, start)
}

// PropertyMessageID is the MQTT 5 user property of a message's id: with
// --dedup id a publish sent again with the same id (a QoS 1 resend after a
// lost PUBACK, or a device's own retry) is acknowledged and not stored
// again. It wins over a msg_id in the payload or a rule's id.
const PropertyMessageID = "msg_id"

// messageID is pk's PropertyMessageID, or "".
func messageID(pk packets.Packet) string {
	for _, p := range pk.Properties.User {
		if p.Key == PropertyMessageID {
			return p.Val
		}
	}
	return ""
}

// store writes the readings of one publish: at QoS 0 queued without
// waiting (at most once), at QoS 1 and 2 all in one producer call before
// the acknowledgement, or refused together.
func (h *hook) store(cl *mqtt.Client, pk packets.Packet, rs []ingest.Reading, start time.Time) (packets.Packet, error) {
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
func (h *hook) refuseInvalid(cl *mqtt.Client, pk packets.Packet, err error, kind, dev string, start time.Time) (packets.Packet, error) {
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
