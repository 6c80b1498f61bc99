package broker

import (
	"crypto/tls"
	"errors"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"firehose/internal/clientcert"
)

// Client certificates (--mqtt-tls-client-ca): the TLS listener requires a
// certificate of the operator's CA at the handshake (clientcert checks the
// chain, the clientAuth usage and the CRL), and each of its clients is the
// device its certificate names. That identity flows through the ACL as a
// username does: admitCertificate makes it the client's username, and the
// ACL treats every client of this listener as checked (acl.certified), with
// the grants of the device's credentials line if it has one.

// tlsListener is the id of the TLS listener (--mqtt-tls-addr), the only
// one that asks for client certificates.
const tlsListener = "tls"

// crlCheckInterval is how often the CRL file is checked for changes.
const crlCheckInterval = 2 * time.Second

// certs is the client certificate verifier, or nil.
func (b *Broker) certs() *clientcert.Verifier {
	if b.auth.acl == nil {
		return nil
	}
	return b.auth.acl.certs
}

// peerState returns the TLS state of client cl's connection.
func peerState(cl *mqtt.Client) (tls.ConnectionState, bool) {
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return tls.ConnectionState{}, false
	}
	return tc.ConnectionState(), true
}

// admitCertificate makes a client of the certificate listener the device
// its certificate names: that device id becomes its username, which the
// client id check, the will check and the ACL then use. A username given in
// the CONNECT must be that id (0x87 not authorized, 3.1.1 code 5); a
// password is not needed, and not checked. A certificate revoked since the
// handshake is refused (0x87).
func (h *authHook) admitCertificate(cl *mqtt.Client, pk packets.Packet) (string, packets.Code, string) {
	notAuthorized := packets.ErrNotAuthorized
	if cl.Properties.ProtocolVersion != 5 {
		notAuthorized = packets.ErrBadUsernameOrPassword // mochi answers 3.1.1 code 5 not authorized
	}
	cs, ok := peerState(cl)
	if !ok {
		return "", notAuthorized, refusedCertificate
	}
	id, err := h.acl.certs.Device(cs)
	if err != nil {
		h.log.Debug("mqtt connect refused: certificate", "err", err, "remote", cl.Net.Remote)
		return "", notAuthorized, refusedCertificate
	}
	if u := pk.Connect.Username; len(u) > 0 && string(u) != id {
		return "", notAuthorized, refusedUsername
	}
	cl.Properties.Username = []byte(id)
	return id, packets.CodeSuccess, ""
}

// certRevoked reports whether client cl came with a certificate the CRL in
// use now revokes.
func (a *acl) certRevoked(cl *mqtt.Client) bool {
	if !a.certified(cl) || !a.certs.HasCRL() {
		return false
	}
	cs, ok := peerState(cl)
	return ok && a.certs.Revoked(cs)
}

// errRevoked ends the connection of an MQTT 3.1.1 client whose certificate
// was revoked (3.1.1 has no DISCONNECT from the server).
var errRevoked = errors.New("client certificate revoked")

// disconnectRevoked disconnects the clients connected with a certificate
// the CRL now revokes: an MQTT 5 client gets DISCONNECT 0x87 not
// authorized, saying why; an MQTT 3.1.1 client's connection is closed. Its
// will is not sent (mayWill). Run calls it after each new CRL.
func (b *Broker) disconnectRevoked() {
	a := b.auth.acl
	n := 0
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Closed() || !a.certRevoked(cl) {
			continue
		}
		n++
		b.log.Info("mqtt client disconnected: its certificate was revoked", "device_id", string(cl.Properties.Username), "client_id", cl.ID, "remote", cl.Net.Remote)
		if cl.Properties.ProtocolVersion == 5 {
			code := packets.ErrNotAuthorized
			code.Reason = errRevoked.Error()
			_ = b.srv.DisconnectClient(cl, code) // returns code: the client is gone
			continue
		}
		cl.Stop(errRevoked)
	}
	b.auth.m.certRevoked.Add(float64(n))
}
