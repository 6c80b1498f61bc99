package faults

// The campaign's clients: they send each operation the way a device or a
// gateway would (HTTP with net/http, MQTT 3.1.1 as raw packets so no library
// resends on its own, MQTT 5 and Sparkplug B with eclipse/paho.golang) and
// record the answer as the client saw it: acked, refused, or unknown (a
// timeout, a lost connection, a 503 or 0x97 that may follow a write Redis
// did apply, and every QoS 0 publish). A worker owns the connections of the
// clients routed to it, so each client's operations go out in order. The
// subscribed class's devices publish to the upstream Mosquitto over
// connections of their own: there acked means PUBACK, or at QoS 2 PUBCOMP.
// The identity class's devices talk to the identity edge: over MQTT TLS
// with their client certificate, or with their registry secret over plain
// MQTT and HTTP Basic auth.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqttpk "github.com/eclipse/paho.mqtt.golang/packets"
	"google.golang.org/protobuf/encoding/protowire"

	"firehose/internal/mqtttest"
)

// Outcomes of one message as its client saw it.
const (
	ansAcked   = "acked"
	ansRefused = "refused"
	ansUnknown = "unknown"
)

// cOpTimeout bounds the wait for one answer; past it the outcome is unknown.
const cOpTimeout = 3 * time.Second

// cAnswer is what the client of an op saw: one outcome per message sent
// (two for twins), the time the last answer came.
type cAnswer struct {
	Op       int       `json:"op"`
	Outcomes []string  `json:"outcomes"`
	Detail   string    `json:"detail,omitempty"`
	Sent     time.Time `json:"sent"` // when the client started sending
	At       time.Time `json:"at"`   // when the last answer came
	// Denied: the identity edge refused the credentials of a device it
	// loaded (a CONNACK refusal or a TLS alert for a valid certificate or
	// secret, HTTP 401, or 503 "not loaded"), which it never may once it
	// loaded them, PostgreSQL down or not.
	Denied string `json:"denied,omitempty"`
}

// cTargets are the addresses the clients use; Epoch counts Redis restores
// (a Sparkplug node births again after one: Redis forgot its birth).
type cTargets struct {
	HTTP, MQTT string
	Auth       bool
	// Upstream is the Mosquitto the subscriber reads (host:port), "" without
	// the subscribed class; it lets anyone in.
	Upstream string
	Epoch    *atomic.Int64
	// Commands records what subscribers to devices/ID/commands received.
	Commands *cInbox
	// Ident is the identity class's edge and its devices' credentials (nil
	// without the class).
	Ident *cIdentity
}

// cIdentity is the identity edge (serve --mqtt-auth postgres
// --mqtt-tls-client-ca --http-device-auth mqtt) and the credentials of the
// identity class's devices: registry devices log in on its plain MQTT
// listener with their secret as password and post to its gateway with HTTP
// Basic auth; certificate devices connect to its TLS listener with their
// client certificate and no password.
type cIdentity struct {
	MQTT, TLS, HTTP string                 // HTTP: the gateway, serving HTTPS
	Secrets         map[string]string      // registry device -> its secret
	Certs           map[string]*tls.Config // certificate device -> its TLS client configuration
	clients         map[string]*http.Client
}

// httpClient is the HTTPS client identity device dev posts with: its
// client certificate, or none ("" and registry devices: a secret).
func (id *cIdentity) httpClient(dev string) *http.Client {
	if c, ok := id.clients[dev]; ok {
		return c
	}
	return id.clients[""]
}

// login is how identity device dev connects.
func (id *cIdentity) login(dev string) cLogin {
	if cIdentCert(dev) {
		return cLogin{Addr: id.TLS, TLS: id.Certs[dev]}
	}
	return cLogin{Addr: id.MQTT, User: dev, Password: id.Secrets[dev]}
}

// cLogin is how an MQTT client connects: where, over TLS (with its client
// certificate) or plain TCP, and with which username and password ("":
// none).
type cLogin struct {
	Addr           string
	TLS            *tls.Config
	User, Password string
}

// login is how client user connects to the edge (with its password under
// --mqtt-auth).
func (tg cTargets) login(user string) cLogin {
	l := cLogin{Addr: tg.MQTT}
	if tg.Auth {
		l.User, l.Password = user, cPassword(user)
	}
	return l
}

// dial opens the connection, the TLS handshake included.
func (l cLogin) dial(ctx context.Context) (net.Conn, error) {
	d := &net.Dialer{}
	if l.TLS == nil {
		return d.DialContext(ctx, "tcp", l.Addr)
	}
	return (&tls.Dialer{NetDialer: d, Config: l.TLS}).DialContext(ctx, "tcp", l.Addr)
}

// cConnackError is a CONNECT the broker refused in its CONNACK: the MQTT
// 3.1.1 return code or the MQTT 5 reason code.
type cConnackError struct{ Code byte }

func (e *cConnackError) Error() string { return fmt.Sprintf("CONNACK refused 0x%02x", e.Code) }

// cServerRefused says whether err is the broker refusing a login: a
// CONNACK code, or a TLS alert it sent (a certificate it did not take),
// not a timeout or a lost connection. crypto/tls gives a received alert
// only as text ("remote error: tls: ...").
func cServerRefused(err error) bool {
	var ce *cConnackError
	return errors.As(err, &ce) || err != nil && strings.Contains(err.Error(), "remote error: tls:")
}

// cInbox collects received command messages.
type cInbox struct {
	mu  sync.Mutex
	Got []cReceived
}

// cReceived is a message a subscriber got.
type cReceived struct {
	Subscriber string `json:"subscriber"`
	Topic      string `json:"topic"`
	Payload    string `json:"payload"`
}

func (in *cInbox) add(r cReceived) {
	in.mu.Lock()
	in.Got = append(in.Got, r)
	in.mu.Unlock()
}

// cPassword is device id's MQTT password under --mqtt-auth.
func cPassword(id string) string { return "pw-" + id }

// cWorker runs the ops routed to it, one at a time, with its clients'
// connections.
type cWorker struct {
	tg   cTargets
	http *http.Client
	v3   map[string]*c311
	v5   map[string]*paho.Client
	spb  map[string]*cSpbNode
	// up3 and up5 are the clients' connections to the upstream Mosquitto.
	up3 map[string]*c311
	up5 map[string]*paho.Client
	// id3 and id5 are the identity devices' connections to the identity edge.
	id3 map[string]*c311
	id5 map[string]*paho.Client
}

func newWorker(tg cTargets) *cWorker {
	return &cWorker{tg: tg, http: &http.Client{Timeout: cOpTimeout},
		v3: map[string]*c311{}, v5: map[string]*paho.Client{}, spb: map[string]*cSpbNode{},
		up3: map[string]*c311{}, up5: map[string]*paho.Client{},
		id3: map[string]*c311{}, id5: map[string]*paho.Client{}}
}

// close ends every connection of the worker.
func (w *cWorker) close() {
	for _, c := range w.v3 {
		c.conn.Close()
	}
	for _, c := range w.up3 {
		c.conn.Close()
	}
	for _, c := range w.id3 {
		c.conn.Close()
	}
	for _, c := range w.v5 {
		cClose5(c)
	}
	for _, c := range w.up5 {
		cClose5(c)
	}
	for _, c := range w.id5 {
		cClose5(c)
	}
	for _, n := range w.spb {
		if n.c != nil {
			cClose5(n.c)
		}
	}
	w.http.CloseIdleConnections()
}

// run sends op and returns what its client saw.
func (w *cWorker) run(op *cOp) cAnswer {
	a := cAnswer{Op: op.ID, Sent: time.Now()}
	var out, detail string
	switch op.Kind {
	case "fast", "v1", "v1-array", "v1-ndjson", "typed-http":
		out, detail = w.post(op.Path, op.Header, op.Body)
		a.Outcomes = []string{out}
	case "fast-twins":
		out, detail = w.post(op.Path, op.Header, op.Body)
		out2, detail2 := w.post(op.Path, op.Header, op.Body2)
		a.Outcomes, detail = []string{out, out2}, detail+" "+detail2
	case "mqtt", "mapped", "auth-cmd", "auth-reading", "typed":
		out, detail = w.publish(op.Client, op.Proto, op.Topic, op.QoS, []byte(op.Body))
		a.Outcomes = []string{out}
	case "mapped-twins":
		out, detail = w.publish(op.Client, op.Proto, op.Topic, op.QoS, []byte(op.Body))
		out2, detail2 := w.publish(op.Client, op.Proto, op.Topic2, op.QoS, []byte(op.Body2))
		a.Outcomes, detail = []string{out, out2}, detail+" "+detail2
	case "spb-data", "spb-death", "spb-takeover", "spb-early", "spb-probe-group", "spb-probe-node":
		out, detail = w.sparkplug(op)
		a.Outcomes = []string{out}
	case "spb-probe-state":
		out, detail = w.publishRetained(op.Client, op.Topic, op.QoS, []byte(op.Body))
		a.Outcomes = []string{out}
	case "spb-probe-will":
		out, detail = w.connectWithWill(op)
		a.Outcomes = []string{out}
	case "subscribed":
		out, detail = w.publishUpstream(op.Client, op.Proto, op.Topic, op.QoS, []byte(op.Body))
		a.Outcomes = []string{out}
	case "ident-mqtt", "ident-probe":
		out, detail = w.publishIdent(op, &a)
		a.Outcomes = []string{out}
	case "ident-http", "ident-probe-http":
		out, detail = w.postIdent(op, &a)
		a.Outcomes = []string{out}
	default:
		a.Outcomes, detail = []string{ansRefused}, "unknown kind "+op.Kind
	}
	a.Detail, a.At = strings.TrimSpace(detail), time.Now()
	return a
}

// post sends one HTTP request to the edge: 200 acked, another 4xx refused
// (nothing was stored), anything else unknown.
func (w *cWorker) post(path string, header map[string]string, body string) (string, string) {
	out, detail, _ := w.postTo(w.http, w.tg.HTTP, path, header, body, "", "")
	return out, detail
}

// postTo sends one HTTP request to base (with HTTP Basic auth when user is
// set) and classifies its answer as post does; status is 0 without one.
func (w *cWorker) postTo(client *http.Client, base, path string, header map[string]string, body, user, password string) (out, detail string, status int) {
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
	if err != nil {
		return ansRefused, err.Error(), 0
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := client.Do(req)
	if err != nil {
		return ansUnknown, err.Error(), 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	detail = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
	switch {
	case resp.StatusCode == http.StatusOK:
		return ansAcked, "", resp.StatusCode
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests:
		return ansRefused, detail, resp.StatusCode
	default:
		return ansUnknown, detail, resp.StatusCode
	}
}

// postIdent sends an identity op's request to the identity edge's gateway
// over HTTPS, with its certificate device's client certificate or its
// registry device's secret. It sets a.Denied when the gateway did not take
// a secret or a certificate it loaded (cIdentDenied; a revoked certificate
// fails its handshake: no answer).
func (w *cWorker) postIdent(op *cOp, a *cAnswer) (out, detail string) {
	id := w.tg.Ident
	user, password := op.Client, id.Secrets[op.Client]
	if cIdentCert(op.Client) {
		user, password = "", ""
	}
	out, detail, status := w.postTo(id.httpClient(op.Client), "https://"+id.HTTP, op.Path, op.Header, op.Body, user, password)
	if cIdentDenied(status, detail) {
		a.Denied = detail
	}
	return out, detail
}

// cIdentDenied says whether the identity edge's gateway answered a
// registry device's request by not taking the secret it loaded: 401, or 503
// saying the credentials are not loaded (yet).
func cIdentDenied(status int, detail string) bool {
	return status == http.StatusUnauthorized || status == http.StatusServiceUnavailable && strings.Contains(detail, "not loaded")
}

// publishIdent sends an identity op's publish over its device's connection
// to the identity edge, made on first use, after a failure, and anew when
// op.Reconnect (the device logs in again): TLS with the device's
// certificate, or plain TCP with its secret. It sets a.Denied when the edge
// refused the login of a device whose credentials it loaded (a revoked
// certificate's refusal is expected).
func (w *cWorker) publishIdent(op *cOp, a *cAnswer) (out, detail string) {
	login := w.tg.Ident.login(op.Client)
	refused := func(err error) (string, string) {
		if cServerRefused(err) && !cIdentIsRevoked(op.Client) {
			a.Denied = err.Error()
		}
		return ansRefused, "connect: " + err.Error() // nothing was sent
	}
	if op.Proto == 3 {
		c := w.id3[op.Client]
		if c != nil && op.Reconnect {
			c.conn.Close()
			c = nil
		}
		if c == nil {
			var err error
			if c, err = dial311As(login, op.Client); err != nil {
				delete(w.id3, op.Client)
				return refused(err)
			}
			w.id3[op.Client] = c
		}
		out, detail, broken := c.publish(op.Topic, op.QoS, []byte(op.Body))
		if broken {
			c.conn.Close()
			delete(w.id3, op.Client)
		}
		return out, detail
	}
	c := w.id5[op.Client]
	if c != nil && op.Reconnect {
		cClose5(c)
		c = nil
	}
	if c == nil {
		var err error
		if c, err = dial5As(login, op.Client, nil); err != nil {
			delete(w.id5, op.Client)
			return refused(err)
		}
		w.id5[op.Client] = c
	}
	out, detail, broken := publish5(c, op.Topic, op.QoS, []byte(op.Body))
	if broken {
		cClose5(c)
		delete(w.id5, op.Client)
	}
	return out, detail
}

// publish sends one MQTT publish over the client's connection (made on
// first use, again after a failure).
func (w *cWorker) publish(client string, proto int, topic string, qos byte, payload []byte) (string, string) {
	if proto == 3 {
		c := w.v3[client]
		if c == nil {
			var err error
			id := client + "-v3"
			if w.tg.Auth {
				id = client
			}
			if c, err = dial311(w.tg, id, client); err != nil {
				return ansRefused, "connect: " + err.Error() // nothing was sent
			}
			w.v3[client] = c
		}
		out, detail, broken := c.publish(topic, qos, payload)
		if broken {
			c.conn.Close()
			delete(w.v3, client)
		}
		return out, detail
	}
	c, err := w.conn5(client)
	if err != nil {
		return ansRefused, "connect: " + err.Error()
	}
	out, detail, broken := publish5(c, topic, qos, payload)
	if broken {
		cClose5(c)
		delete(w.v5, client)
	}
	return out, detail
}

// publishUpstream sends one publish of a subscribed op to the upstream
// Mosquitto over the client's own connection to it (made on first use,
// again after a failure; anonymous). At QoS 2 it is acked only on PUBCOMP:
// Mosquitto passes a QoS 2 message on to subscribers once it has the
// PUBREL, and forgets it with a clean session that ends before.
func (w *cWorker) publishUpstream(client string, proto int, topic string, qos byte, payload []byte) (string, string) {
	up := cTargets{MQTT: w.tg.Upstream}
	if proto == 3 {
		c := w.up3[client]
		if c == nil {
			var err error
			if c, err = dial311(up, client+"-up3", client); err != nil {
				return ansRefused, "connect: " + err.Error() // nothing was sent
			}
			c.pubcomp = true
			w.up3[client] = c
		}
		out, detail, broken := c.publish(topic, qos, payload)
		if broken {
			c.conn.Close()
			delete(w.up3, client)
		}
		return out, detail
	}
	c := w.up5[client]
	if c == nil {
		var err error
		if c, err = dial5(up, client+"-up5", client, nil); err != nil {
			return ansRefused, "connect: " + err.Error()
		}
		w.up5[client] = c
	}
	out, detail, broken := publish5(c, topic, qos, payload) // paho answers QoS 2 on PUBCOMP
	if broken {
		cClose5(c)
		delete(w.up5, client)
	}
	return out, detail
}

// conn5 is client's MQTT 5 connection, made on first use (publish and
// publishRetained drop it after a failure).
func (w *cWorker) conn5(client string) (*paho.Client, error) {
	if c := w.v5[client]; c != nil {
		return c, nil
	}
	// Under auth a client id other than the username needs a read= grant
	// (every device's line has one, see campaignAuthFile).
	id := client + "-v5"
	if w.tg.Auth {
		id = client + "/v5"
	}
	c, err := dial5(w.tg, id, client, nil)
	if err != nil {
		return nil, err
	}
	w.v5[client] = c
	return c, nil
}

// publishRetained publishes a retained message over client's MQTT 5
// connection (made on first use, as publish does).
func (w *cWorker) publishRetained(client, topic string, qos byte, payload []byte) (string, string) {
	c, err := w.conn5(client)
	if err != nil {
		return ansRefused, "connect: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), cOpTimeout)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Retain: true, Payload: payload})
	if resp != nil {
		if resp.ReasonCode < 0x80 {
			return ansAcked, ""
		}
		return ansRefused, fmt.Sprintf("reason 0x%02x", resp.ReasonCode)
	}
	cClose5(c)
	delete(w.v5, client)
	if err == nil {
		err = errors.New("no answer")
	}
	return ansUnknown, err.Error()
}

// connectWithWill connects as op's client with the retained will op.Topic
// (the host's STATE): "acked" when the CONNECT is accepted, and then the
// connection ends with reason 0x04 so the broker publishes the will;
// "refused" when it is not (or cannot be made: the probe is judged only on
// an acceptance).
func (w *cWorker) connectWithWill(op *cOp) (string, string) {
	will := &paho.WillMessage{Topic: op.Topic, QoS: op.QoS, Retain: true, Payload: []byte(op.Body)}
	c, err := dial5(w.tg, op.Client+"/will", op.Client, will)
	if err != nil {
		return ansRefused, err.Error()
	}
	done := make(chan struct{})
	go func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0x04}) // disconnect with will message
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	return ansAcked, "CONNECT with the will accepted"
}

// c311 is an MQTT 3.1.1 connection spoken in raw packets. With pubcomp, a
// QoS 2 publish is acked only on PUBCOMP (the upstream Mosquitto), else on
// PUBREC (firehose's broker: the reading is durable then).
type c311 struct {
	conn    net.Conn
	next    uint16
	pubcomp bool
}

func dial311(tg cTargets, clientID, user string) (*c311, error) {
	return dial311As(tg.login(user), clientID)
}

// dial311As connects an MQTT 3.1.1 client (clean session) as login says;
// a refusing CONNACK is a *cConnackError.
func dial311As(login cLogin, clientID string) (*c311, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cOpTimeout)
	defer cancel()
	conn, err := login.dial(ctx)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(cOpTimeout))
	cp := mqttpk.NewControlPacket(mqttpk.Connect).(*mqttpk.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.CleanSession, cp.Keepalive = true, 600
	cp.ClientIdentifier = clientID
	if login.User != "" {
		cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = login.User, true, []byte(login.Password), true
	}
	if err := cp.Write(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("write CONNECT: %w", err)
	}
	pk, err := mqttpk.ReadPacket(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read CONNACK: %w", err)
	}
	ca, ok := pk.(*mqttpk.ConnackPacket)
	switch {
	case !ok:
		conn.Close()
		return nil, fmt.Errorf("CONNECT answered %v", pk)
	case ca.ReturnCode != 0:
		conn.Close()
		return nil, &cConnackError{Code: ca.ReturnCode}
	}
	return &c311{conn: conn}, nil
}

// publish sends one PUBLISH and waits for its PUBACK (QoS 1) or PUBREC
// (QoS 2: the broker stored it; PUBREL/PUBCOMP follow), or with c.pubcomp
// its PUBCOMP. QoS 0 is unknown by definition. broken: the connection must
// go.
func (c *c311) publish(topic string, qos byte, payload []byte) (out, detail string, broken bool) {
	// What a PUBREC alone means: acked by firehose, unknown upstream.
	recd := ansAcked
	if c.pubcomp {
		recd = ansUnknown
	}
	c.next++
	if c.next == 0 {
		c.next = 1
	}
	id := c.next
	_ = c.conn.SetDeadline(time.Now().Add(cOpTimeout))
	pub := mqttpk.NewControlPacket(mqttpk.Publish).(*mqttpk.PublishPacket)
	pub.TopicName, pub.Qos, pub.MessageID, pub.Payload = topic, qos, id, payload
	if err := pub.Write(c.conn); err != nil {
		return ansUnknown, "write PUBLISH: " + err.Error(), true
	}
	if qos == 0 {
		return ansUnknown, "QoS 0", false
	}
	for {
		pk, err := mqttpk.ReadPacket(c.conn)
		if err != nil {
			return ansUnknown, "no ack: " + err.Error(), true
		}
		switch p := pk.(type) {
		case *mqttpk.PubackPacket:
			if p.MessageID == id {
				return ansAcked, "", false
			}
		case *mqttpk.PubrecPacket:
			if p.MessageID == id {
				rel := mqttpk.NewControlPacket(mqttpk.Pubrel).(*mqttpk.PubrelPacket)
				rel.MessageID = id
				if err := rel.Write(c.conn); err != nil {
					return recd, "write PUBREL: " + err.Error(), true
				}
				for {
					pk, err := mqttpk.ReadPacket(c.conn)
					if err != nil {
						return recd, "no PUBCOMP: " + err.Error(), true
					}
					if pc, ok := pk.(*mqttpk.PubcompPacket); ok && pc.MessageID == id {
						return ansAcked, "", false
					}
				}
			}
		}
	}
}

// dial5 connects an MQTT 5 client (clean start) with an optional will.
func dial5(tg cTargets, clientID, user string, will *paho.WillMessage) (*paho.Client, error) {
	return dial5As(tg.login(user), clientID, will)
}

// dial5As connects an MQTT 5 client (clean start) as login says, with an
// optional will; a refusing CONNACK is a *cConnackError.
func dial5As(login cLogin, clientID string, will *paho.WillMessage) (*paho.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cOpTimeout)
	defer cancel()
	conn, err := login.dial(ctx)
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: cOpTimeout, PingHandler: mqtttest.NoPinger{}})
	cp := &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 600, WillMessage: will}
	if login.User != "" {
		cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = login.User, true, []byte(login.Password), true
	}
	if ca, err := c.Connect(ctx, cp); err != nil {
		conn.Close()
		if ca != nil && ca.ReasonCode >= 0x80 {
			err = &cConnackError{Code: ca.ReasonCode}
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	return c, nil
}

// cClose5 disconnects c without waiting long.
func cClose5(c *paho.Client) {
	done := make(chan struct{})
	go func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}

// publish5 publishes and classifies the answer: a reason code below 0x80
// acked, 0x97 (quota exceeded: backlog, Redis unreachable, shutting down)
// unknown, any other failure code refused.
func publish5(c *paho.Client, topic string, qos byte, payload []byte) (out, detail string, broken bool) {
	ctx, cancel := context.WithTimeout(context.Background(), cOpTimeout)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload})
	if qos == 0 {
		if err != nil {
			return ansUnknown, err.Error(), true
		}
		return ansUnknown, "QoS 0", false
	}
	if resp != nil {
		switch code := resp.ReasonCode; {
		case code < 0x80:
			return ansAcked, "", false
		case code == 0x97:
			return ansUnknown, fmt.Sprintf("reason 0x%02x", code), false
		default:
			return ansRefused, fmt.Sprintf("reason 0x%02x", code), false
		}
	}
	if err == nil {
		err = errors.New("no answer")
	}
	return ansUnknown, err.Error(), true
}

// cSpbNode is a Sparkplug B edge node of group "cg": its connection (will:
// NDEATH with its bdSeq), bdSeq, seq, and whether its birth was acked in the
// current Redis epoch.
type cSpbNode struct {
	c     *paho.Client
	bdSeq uint64
	seq   uint64
	born  bool
	epoch int64
}

const cSpbGroup = "cg"

func spbTopic(typ, node string) string { return "spBv1.0/" + cSpbGroup + "/" + typ + "/" + node }

// sparkplug runs a Sparkplug op of its node: (re)connects and births when
// needed, then sends the NDATA (or the death, or the takeover).
func (w *cWorker) sparkplug(op *cOp) (string, string) {
	node := w.spb[op.Client]
	if node == nil {
		node = &cSpbNode{}
		w.spb[op.Client] = node
	}
	switch op.Kind {
	case "spb-death":
		if node.c == nil {
			return ansAcked, "not connected"
		}
		out, detail, _ := publish5(node.c, spbTopic("NDEATH", op.Client), 1, spbDeath(node.bdSeq))
		cClose5(node.c)
		node.c, node.born = nil, false
		return out, detail
	case "spb-early":
		c, err := dial5(w.tg, op.Client, op.Client, nil)
		if err != nil {
			return ansRefused, "connect: " + err.Error()
		}
		defer cClose5(c)
		out, detail, _ := publish5(c, spbTopic("NDATA", op.Client), 1, spbData(op, 0))
		return out, detail
	case "spb-probe-group", "spb-probe-node":
		// The node, connected and born in its own group, births in a group its
		// credentials do not name, or sends DATA as another node.
		if err := w.spbEnsure(op.Client, node); err != nil {
			return ansRefused, err.Error()
		}
		payload := spbData(op, 0)
		if op.Kind == "spb-probe-group" {
			payload = spbBirthValues(1, op.Values)
		}
		out, detail, broken := publish5(node.c, op.Topic, 1, payload)
		if broken {
			cClose5(node.c)
			node.c = nil
		}
		return out, detail
	case "spb-takeover":
		// A new connection with the same client id while the old one lives:
		// the broker ends the old one and publishes its will (NDEATH of the
		// old bdSeq) while the new birth arrives.
		if node.c != nil {
			old := node.c
			defer cClose5(old)
			node.c = nil
		}
		node.born = false
	}
	if err := w.spbEnsure(op.Client, node); err != nil {
		return ansRefused, err.Error() // the NDATA was not sent
	}
	node.seq = (node.seq + 1) % 256
	out, detail, broken := publish5(node.c, spbTopic("NDATA", op.Client), 1, spbData(op, node.seq))
	if out != ansAcked {
		node.born = false // a gap in seq: birth again before the next data
	}
	if broken {
		cClose5(node.c)
		node.c = nil
	}
	return out, detail
}

// spbEnsure connects node (will: its NDEATH) and births it when it is not
// connected, not born, or born before a Redis restore.
func (w *cWorker) spbEnsure(id string, node *cSpbNode) error {
	if node.c != nil {
		select {
		case <-node.c.Done():
			node.c = nil
		default:
		}
	}
	if node.c == nil {
		// Every connection has a bdSeq of its own (Sparkplug 3.0): the will of
		// an old connection, published late, names another birth.
		node.bdSeq++
		node.born = false
		will := &paho.WillMessage{Topic: spbTopic("NDEATH", id), QoS: 1, Payload: spbDeath(node.bdSeq)}
		c, err := dial5(w.tg, id, id, will)
		if err != nil {
			return err
		}
		node.c = c
	}
	epoch := w.tg.Epoch.Load()
	if node.born && node.epoch == epoch {
		return nil
	}
	out, detail, broken := publish5(node.c, spbTopic("NBIRTH", id), 1, spbBirth(node.bdSeq))
	if out != ansAcked {
		if broken {
			cClose5(node.c)
			node.c = nil
		}
		return fmt.Errorf("NBIRTH %s: %s", out, detail)
	}
	node.born, node.seq, node.epoch = true, 0, epoch
	return nil
}

// Sparkplug B payloads (sparkplug_b.proto), the few fields the campaign
// needs: timestamp (1), metrics (2), seq (3); a metric's name (1), alias (2),
// timestamp (3), datatype (4), long_value (11), double_value (13).
const (
	spbInt64  = 4
	spbDouble = 10
)

type spbMetric struct {
	name     string
	alias    uint64
	datatype uint64
	long     uint64
	double   float64
}

func spbPayload(ts uint64, seq uint64, hasSeq bool, ms []spbMetric) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, ts)
	for _, m := range ms {
		var e []byte
		if m.name != "" {
			e = protowire.AppendTag(e, 1, protowire.BytesType)
			e = protowire.AppendString(e, m.name)
		}
		if m.alias != 0 {
			e = protowire.AppendTag(e, 2, protowire.VarintType)
			e = protowire.AppendVarint(e, m.alias)
		}
		if m.name != "" {
			e = protowire.AppendTag(e, 4, protowire.VarintType)
			e = protowire.AppendVarint(e, m.datatype)
		}
		if m.datatype == spbInt64 {
			e = protowire.AppendTag(e, 11, protowire.VarintType)
			e = protowire.AppendVarint(e, m.long)
		} else {
			e = protowire.AppendTag(e, 13, protowire.Fixed64Type)
			e = protowire.AppendFixed64(e, math.Float64bits(m.double))
		}
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	if hasSeq {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, seq)
	}
	return b
}

// spbBirth is an NBIRTH: bdSeq, M1 and M2 (Double, aliases 1 and 2, value
// -1: birth values are not checked), seq 0.
func spbBirth(bdSeq uint64) []byte {
	return spbPayload(uint64(time.Now().UnixMilli()), 0, true, []spbMetric{
		{name: "bdSeq", datatype: spbInt64, long: bdSeq},
		{name: "M1", alias: 1, datatype: spbDouble, double: -1},
		{name: "M2", alias: 2, datatype: spbDouble, double: -1},
	})
}

// spbBirthValues is an NBIRTH of M1, M2... (Double, aliases 1, 2...) with
// the values given.
func spbBirthValues(bdSeq uint64, values []float64) []byte {
	ms := []spbMetric{{name: "bdSeq", datatype: spbInt64, long: bdSeq}}
	for i, v := range values {
		ms = append(ms, spbMetric{name: fmt.Sprintf("M%d", i+1), alias: uint64(i + 1), datatype: spbDouble, double: v})
	}
	return spbPayload(uint64(time.Now().UnixMilli()), 0, true, ms)
}

// spbDeath is an NDEATH carrying bdSeq.
func spbDeath(bdSeq uint64) []byte {
	return spbPayload(uint64(time.Now().UnixMilli()), 0, false, []spbMetric{{name: "bdSeq", datatype: spbInt64, long: bdSeq}})
}

// spbData is the NDATA of op: its values by alias 1, 2 (a third by alias 9,
// which no birth gives), timed by the op's rows.
func spbData(op *cOp, seq uint64) []byte {
	ms := make([]spbMetric, len(op.Values))
	for i, v := range op.Values {
		alias := uint64(i + 1)
		if i == 2 {
			alias = 9
		}
		ms[i] = spbMetric{alias: alias, datatype: spbDouble, double: v}
	}
	return spbPayload(uint64(op.Rows[0].TS.UnixMilli()), seq, true, ms)
}

// cObserver is the user (under --mqtt-auth) who subscribes to the host's
// STATE and to the group no edge node may use: whatever it receives came
// through a probe that should have been refused.
const cObserver = "observer"

// subscribeObserver connects cObserver, subscribed to cStateTopic's group of
// topics and to cOtherGroup; what it receives goes to tg.Commands. The
// returned func closes it.
func subscribeObserver(tg cTargets) (func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", tg.MQTT)
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: 10 * time.Second, PingHandler: mqtttest.NoPinger{},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			tg.Commands.add(cReceived{Subscriber: cObserver, Topic: pr.Packet.Topic, Payload: string(pr.Packet.Payload)})
			return true, nil
		}}})
	cp := &paho.Connect{ClientID: cObserver, CleanStart: true, KeepAlive: 600,
		Username: cObserver, UsernameFlag: true, Password: []byte(cPassword(cObserver)), PasswordFlag: true}
	if _, err := c.Connect(ctx, cp); err != nil {
		conn.Close()
		return nil, fmt.Errorf("observer: connect: %w", err)
	}
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "spBv1.0/STATE/#", QoS: 1}, {Topic: "spBv1.0/" + cOtherGroup + "/#", QoS: 1}}}); err != nil {
		cClose5(c)
		return nil, fmt.Errorf("observer: subscribe: %w", err)
	}
	return func() { cClose5(c) }, nil
}

// subscribeCommands connects a subscriber of devices/ID/commands for each
// device; what they receive goes to tg.Commands. The returned func closes them.
func subscribeCommands(tg cTargets, devices []string) (func(), error) {
	var cs []*paho.Client
	closeAll := func() {
		for _, c := range cs {
			cClose5(c)
		}
	}
	for _, d := range devices {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", tg.MQTT)
		if err != nil {
			cancel()
			closeAll()
			return nil, err
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: 10 * time.Second, PingHandler: mqtttest.NoPinger{},
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				tg.Commands.add(cReceived{Subscriber: d, Topic: pr.Packet.Topic, Payload: string(pr.Packet.Payload)})
				return true, nil
			}}})
		cp := &paho.Connect{ClientID: d + "-sub", CleanStart: true, KeepAlive: 600}
		if tg.Auth {
			// Under auth the client id is the username's; a second session of
			// the device would take over the device's own. Subscribers log in
			// as dashboards of their device: user d, client id d/sub.
			cp.ClientID = d + "/sub"
			cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = d, true, []byte(cPassword(d)), true
		}
		if _, err := c.Connect(ctx, cp); err != nil {
			cancel()
			conn.Close()
			closeAll()
			return nil, fmt.Errorf("subscriber %s: connect: %w", d, err)
		}
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/" + d + "/commands", QoS: 1}}}); err != nil {
			cancel()
			cClose5(c)
			closeAll()
			return nil, fmt.Errorf("subscriber %s: subscribe: %w", d, err)
		}
		cancel()
		cs = append(cs, c)
	}
	return closeAll, nil
}
