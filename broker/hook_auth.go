package broker

import (
	"context"
	"log/slog"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// authHook is the mochi hook that decides who connects and what each client
// may publish and read: it bounds the keep-alive and, under --mqtt-auth,
// checks the password, the client id and the will at CONNECT (admit),
// every publish and subscription against the credentials file (acl.go), and
// each will again when its client goes.
//
// mochi asks OnACLCheck and OnConnectAuthenticate of each hook that provides
// them, in the order added, until one says yes: only this hook provides
// them, so its no is final. For the same reason the bound on messages queued
// for disconnected sessions (sessions.mayQueue), which must hold together
// with the read permission, is answered here too.
type authHook struct {
	mqtt.HookBase
	srv   *mqtt.Server
	acl   *acl           // nil: anonymous
	fails *loginThrottle // failed logins by source address; with acl
	slots *checkSlots    // bcrypt checks at once, and those waiting; with acl
	queue *sessions      // the bound on messages queued for disconnected sessions
	maxKA uint16         // seconds
	m     *metrics
	log   *slog.Logger
	ctx   context.Context // for the wait for a bcrypt slot; cancelled after the drain
}

func (h *authHook) ID() string { return "firehose-auth" }

// Provides is a switch, not mochi's bytes.Contains: mochi asks every hook
// for every event, several times per publish.
func (h *authHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnSessionEstablished, mqtt.OnACLCheck, mqtt.OnSubscribed, mqtt.OnWill:
		return true
	}
	return false
}

// OnConnectAuthenticate admits every client that OnConnect let through:
// mochi calls OnConnect first, and only OnConnect can answer with the reason
// codes the checks need (see admit).
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
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
// name: mochi resolves the alias only after this check, so the ingest
// hook's OnPublish checks the resolved topic.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topicName string, write bool) bool {
	if !write {
		if h.acl != nil && !h.acl.mayRead(cl, topicName) {
			return false
		}
		return h.queue.mayQueue(cl)
	}
	if h.acl == nil || topicName == "" || h.acl.mayWrite(cl, topicName) {
		return true
	}
	h.m.refused.WithLabelValues("not_authorized").Inc()
	return false
}

// OnSubscribed counts the filters refused because the client may not read
// them (mochi answered 0x87 not authorized to MQTT 5, 0x80 failure to 3.1.1).
func (h *authHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if h.acl == nil {
		return
	}
	for i, sub := range pk.Filters {
		if i < len(codes) && codes[i] >= packets.ErrUnspecifiedError.Code && mqtt.IsValidFilter(sub.Filter, false) && !h.acl.mayRead(cl, sub.Filter) {
			h.m.subsRefused.Inc()
			h.log.Debug("mqtt subscribe refused: not authorized", "device_id", string(cl.Properties.Username), "filter", sub.Filter)
		}
	}
}

// OnConnect bounds the client's keep-alive: a client asking for none, or for
// more than the maximum, gets the maximum (MQTT 5 clients are told so in
// CONNACK, a refusing one included, so the bound comes first). Under
// --mqtt-auth it admits the client or refuses it with its CONNACK (see
// admit).
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if h.maxKA > 0 && (cl.State.Keepalive == 0 || cl.State.Keepalive > h.maxKA) {
		cl.State.Keepalive = h.maxKA
		cl.State.ServerKeepalive = true
	}
	if h.acl == nil || h.acl.open(cl) {
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

// OnSessionEstablished, under --mqtt-auth, tells the credential source of
// the admitted device and checks its password once more against the
// credentials in use now: mochi lists a client among its clients only after
// admit, so a change revoking it that came in between (revoke found no
// client to disconnect) is caught here, and the client disconnected. A client
// admitted without a password (by other means) is left alone.
func (h *authHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if h.acl == nil || h.acl.auth == nil || cl.Net.Inline {
		return
	}
	user := string(cl.Properties.Username)
	h.acl.auth.src.Connected(user)
	if h.acl.certified(cl) || len(pk.Connect.Password) == 0 || h.acl.auth.stillValid(user, pk.Connect.Password) {
		return // a certificate is its device's credential, not the password
	}
	h.log.Debug("mqtt client disconnected: its credentials changed while it connected", "device_id", user)
	_ = h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
}

// revoke disconnects the live clients of the devices whose credentials the
// change from old to cur revoked (see revoked): removed or disabled, a new
// secret, a grant gone. Their sessions stay, for them to come back with
// what now stands. It runs on the credential source's goroutine.
func (h *authHook) revoke(old, cur Credentials) int {
	gone := revoked(old, cur)
	if len(gone) == 0 {
		return 0
	}
	n := 0
	for _, cl := range h.srv.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() || !gone[string(cl.Properties.Username)] {
			continue
		}
		_ = h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		n++
	}
	return n
}

// Reasons a CONNECT is refused under auth (the reason label of
// firehose_mqtt_connects_refused_total).
const (
	refusedCredentials = "bad_credentials"
	refusedThrottled   = "throttled"
	refusedClientID    = "client_id"
	refusedWill        = "will_not_authorized"
	refusedClosing     = "shutting_down"
	// A client certificate that stands no more at CONNECT (revoked since
	// the handshake), and a username that is not the certificate's device.
	refusedCertificate = "certificate"
	refusedUsername    = "username"
	refusedNotLoaded   = "credentials_not_loaded"
	// Too many connects wait for a bcrypt check already (checkSlots).
	refusedBusy = "busy"
	// Its client closed the connection while the connect waited for a
	// bcrypt slot: not checked, and no CONNACK reaches anyone.
	refusedGone = "client_gone"
)

var connectRefusals = []string{refusedCredentials, refusedThrottled, refusedClientID, refusedWill, refusedClosing, refusedCertificate, refusedUsername, refusedNotLoaded, refusedBusy, refusedGone}

// admit checks an authenticating client, in this order:
//
//  0. that the credentials were ever loaded (the registry, when PostgreSQL
//     was down since the start): else 0x88 server unavailable, 3.1.1 code 3;
//     a client of the certificate listener is the device its certificate
//     names, and needs no password (admitCertificate): a username naming
//     another device -> 0x87 not authorized, 3.1.1 code 5;
//  1. any other client's password: a device secret (fh1$ hash) and a bcrypt
//     password that passed before are checked in microseconds, wrong ->
//     0x86, neither throttled nor taking a slot (a 128-bit secret cannot be
//     guessed); else, unless its address is throttled, bcrypt runs in one of
//     a few slots: wrong -> MQTT 5 0x86 bad user name or password, 3.1.1
//     return code 5 not authorized, and the address loses a token; throttled
//     -> 0x9F connection rate exceeded, 3.1.1 code 3 server unavailable,
//     before any bcrypt; too many connects waiting for a slot already ->
//     0x89 server busy, 3.1.1 code 3, at once (the client comes back later);
//     a connect whose client closed its connection while it waited for a
//     slot is dropped before bcrypt (client_gone);
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
func (h *authHook) admit(cl *mqtt.Client, pk packets.Packet) (packets.Code, string) {
	v5 := cl.Properties.ProtocolVersion == 5
	pick := func(c5, c3 packets.Code) packets.Code {
		if v5 {
			return c5
		}
		return c3 // mochi turns it into the 3.1.1 return code
	}
	auth := h.acl.auth // nil: certificates without --mqtt-auth
	if auth != nil && auth.creds() == nil {
		return packets.ErrServerUnavailable, refusedNotLoaded
	}
	user := string(pk.Connect.Username)
	certified := h.acl.certified(cl)
	if certified {
		id, code, reason := h.admitCertificate(cl, pk)
		if code != packets.CodeSuccess {
			return code, reason
		}
		user = id
	}
	ok, decided := false, certified
	if !certified {
		ok, decided = auth.quick(user, pk.Connect.Password)
		if decided && !ok {
			return packets.ErrBadUsernameOrPassword, refusedCredentials
		}
	}
	if !decided {
		key := sourceKey(cl.Net.Remote)
		if !h.fails.allow(key) {
			return pick(packets.ErrConnectionRateExceeded, packets.ErrServerUnavailable), refusedThrottled
		}
		switch got, busy := h.slots.acquire(h.ctx); {
		case busy:
			return pick(packets.ErrServerBusy, packets.ErrServerUnavailable), refusedBusy
		case !got:
			return packets.ErrServerUnavailable, refusedClosing
		}
		if clientGone(cl.Net.Conn) {
			// It waited past its client's patience: no bcrypt for no one.
			h.slots.release()
			return packets.ErrServerUnavailable, refusedGone
		}
		// Re-check after the wait: the logins queued behind a flood of
		// failures from the same address are refused without bcrypt.
		allowed := h.fails.allow(key)
		if allowed {
			ok = auth.check(user, pk.Connect.Password)
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
	case strings.HasPrefix(id, user+"/") && h.acl.readsOthers(cl, user):
	default:
		return packets.ErrClientIdentifierNotValid, refusedClientID
	}
	if pk.Connect.WillFlag && !h.acl.mayWill(cl, user, pk.Connect.WillTopic, pk.Connect.WillPayload) {
		// mochi publishes a will past OnACLCheck and OnPublish.
		return pick(packets.ErrNotAuthorized, packets.ErrBadUsernameOrPassword), refusedWill
	}
	return packets.CodeSuccess, ""
}

// OnWill checks a will again under --mqtt-auth (admit checked it at
// CONNECT): one its client may no longer leave, its credentials changed
// since, is sent empty and not retained to refusedWillTopic instead, and
// counted refused (not_authorized). This hook comes before the bounds hook,
// whose OnWill then has no retained will to account for.
func (h *authHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if h.acl != nil && !cl.Net.Inline && !h.acl.mayWill(cl, string(cl.Properties.Username), will.TopicName, will.Payload) {
		h.m.refused.WithLabelValues("not_authorized").Inc()
		h.log.Debug("mqtt will refused: not authorized", "device_id", string(cl.Properties.Username), "topic", will.TopicName)
		return mqtt.Will{TopicName: refusedWillTopic, Flag: will.Flag}, nil
	}
	return will, nil
}
