package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// boundsHook is the mochi hook that keeps what the broker holds for its
// clients within bounds: it announces the largest packet accepted, keeps
// the account of disconnected sessions (sessions.go) and of retained
// messages (retained.go), and drops the retain flag of a will past the
// retained bounds.
//
// What it shares with the other hooks goes through the two accounts: the
// auth hook asks sess whether a message may be queued for a disconnected
// client (OnACLCheck), the ingest hook asks ret whether a publish may be
// retained (OnPublish, which only the ingest hook provides).
type boundsHook struct {
	mqtt.HookBase
	sess   *sessions
	ret    *retained
	maxPkt uint32 // bytes, announced in MQTT 5 CONNACK
	m      *metrics
}

func (h *boundsHook) ID() string { return "firehose-bounds" }

// Provides is a switch, not mochi's bytes.Contains: mochi asks every hook
// for every event, several times per publish.
func (h *boundsHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnPacketEncode, mqtt.OnSessionEstablish, mqtt.OnDisconnect, mqtt.OnClientExpired,
		mqtt.OnWill, mqtt.OnRetainMessage, mqtt.OnRetainedExpired:
		return true
	}
	return false
}

// OnPacketEncode tells MQTT 5 clients in CONNACK the largest packet the
// broker accepts (Maximum Packet Size). mochi enforces the limit but does not
// announce it, and a client that is not told assumes there is none: its
// larger publish would cost it the connection without a reason.
func (h *boundsHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ProtocolVersion == 5 {
		pk.Properties.MaximumPacketSize = h.maxPkt
	}
	return pk
}

// OnSessionEstablish: a client of this id is connecting; its disconnected
// session, if any, is about to be resumed or replaced, not evicted.
func (h *boundsHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	h.sess.resumed(cl.ID)
}

// OnDisconnect records a session kept for a client that went away. It runs
// after the ingest hook's OnDisconnect, as it did when they were one hook.
func (h *boundsHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if expire || cl.IsTakenOver() {
		return
	}
	h.sess.disconnected(cl)
}

// OnClientExpired drops the subscriptions and queued messages of an
// expired session, which mochi leaves behind.
func (h *boundsHook) OnClientExpired(cl *mqtt.Client) {
	h.sess.expired(cl)
}

// OnWill drops the retain flag of a will past the retained bounds. The auth
// hook's OnWill runs first: a will it refused is no longer retained.
func (h *boundsHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if will.Retain && !h.ret.admit(will.TopicName, len(will.Payload)) {
		will.Retain = false
		h.m.retainDropped.Inc()
	}
	return will, nil
}

// OnRetainMessage and OnRetainedExpired keep the account of retained
// messages.
func (h *boundsHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	h.ret.kept(pk.TopicName, len(pk.Payload))
}

func (h *boundsHook) OnRetainedExpired(filter string) { h.ret.kept(filter, 0) }
