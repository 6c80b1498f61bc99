package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"firehose/internal/mqtttest"
	"firehose/internal/testcert"
	"firehose/internal/testenv"
)

// TestIntegrationTLSAndWebSocketListeners serves MQTT on plain TCP, TLS with
// a self-signed certificate, and WebSocket at once; a paho.mqtt.golang device
// publishes over each and every reading lands. A plain-text client on the TLS
// port and a TLS client that does not trust the certificate are refused.
func TestIntegrationTLSAndWebSocketListeners(t *testing.T) {
	t.Parallel()
	cert, key, pool := testcert.SelfSigned(t)
	s := newStack(t, stackOptions{bridge: true, cfg: Config{
		Addr: "127.0.0.1:0", TLSAddr: "127.0.0.1:0", TLSCert: cert, TLSKey: key, WSAddr: "127.0.0.1:0",
	}})
	tlsAddr, wsAddr := s.b.Addr("tls").String(), s.b.Addr("ws").String()
	if s.b.Addr("nope") != nil {
		t.Error("Addr of an unknown listener is not nil")
	}

	overTLS := mustConnectV3(t, "tls://"+tlsAddr, "tls-dev", func(o *mqtt.ClientOptions) {
		o.SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	})
	publishV3(t, overTLS, "devices/tls-dev/readings", 1, `{"reading": 1, "via": "tls"}`)
	publishV3(t, overTLS, "devices/tls-dev/readings", 2, `2`)

	overWS := mustConnectV3(t, "ws://"+wsAddr+"/mqtt", "ws-dev")
	publishV3(t, overWS, "devices/ws-dev/readings", 1, `{"reading": 3, "via": "ws"}`)
	publishV3(t, overWS, "devices/ws-dev/readings", 2, `4`)
	// Many small packets in a row: WebSocket messages and MQTT packets need
	// not line up.
	toks := make([]mqtt.Token, 50)
	for i := range toks {
		toks[i] = overWS.Publish("devices/ws-dev/readings", 1, false, `{"reading": 1000, "n": `+strings.Repeat("1", i+1)+`}`)
	}
	for _, tok := range toks {
		if err := waitToken(tok, 10*time.Second); err != nil {
			t.Fatalf("publish over WebSocket: %v", err)
		}
	}

	overTCP := mustConnectV3(t, "tcp://"+s.tcpAddr(), "tcp-dev")
	publishV3(t, overTCP, "devices/tcp-dev/readings", 1, `5`)

	if c, err := mqtttest.ConnectV3(t, "tcp://"+tlsAddr, "plain-on-tls"); err == nil {
		c.Disconnect(0)
		t.Error("a plain-text MQTT client connected to the TLS port")
	}
	if c, err := mqtttest.ConnectV3(t, "tls://"+tlsAddr, "untrusting", func(o *mqtt.ClientOptions) {
		o.SetTLSConfig(&tls.Config{ServerName: "127.0.0.1"})
	}); err == nil {
		c.Disconnect(0)
		t.Error("a TLS client that does not trust the self-signed certificate connected")
	}

	s.settle(55, 10*time.Second)
	got := map[string]int{}
	for _, r := range s.rows("") {
		got[r.Device]++
	}
	if got["tls-dev"] != 2 || got["ws-dev"] != 52 || got["tcp-dev"] != 1 || len(got) != 3 {
		t.Errorf("rows by device %v, want tls-dev 2, ws-dev 52, tcp-dev 1", got)
	}
	if n := s.count("SELECT count(*) FROM readings WHERE payload->>'via' IN ('tls', 'ws')"); n != 2 {
		t.Errorf("%d rows keep their via field, want 2", n)
	}
}

// TestListenPortInUse checks that a taken port is a start-up error of Listen
// naming the address and the flag, for each listener, and that a failed
// Listen releases the ports it had bound.
func TestListenPortInUse(t *testing.T) {
	t.Parallel()
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	taken := held.Addr().String()
	cert, key, _ := testcert.SelfSigned(t)
	for _, tc := range []struct {
		name, flag string
		cfg        func(free string) Config
	}{
		{"tcp", "--mqtt-addr", func(free string) Config { return Config{Addr: taken, WSAddr: free} }},
		{"tls", "--mqtt-tls-addr", func(free string) Config {
			return Config{Addr: free, TLSAddr: taken, TLSCert: cert, TLSKey: key}
		}},
		{"ws", "--mqtt-ws-addr", func(free string) Config { return Config{Addr: free, WSAddr: taken} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			free := freeAddr(t)
			b, err := New(tc.cfg(free), nopProducer{}, discard, newRegistry())
			if err != nil {
				t.Fatal(err)
			}
			err = b.Listen()
			if err == nil {
				t.Fatal("Listen on a port in use succeeded")
			}
			if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), taken) || !strings.Contains(err.Error(), tc.flag) {
				t.Errorf("Listen: %q; want an EADDRINUSE error naming %s and %s", err, taken, tc.flag)
			}
			if b.Addr(tc.name) != nil {
				t.Errorf("Addr(%q) = %v after a failed Listen", tc.name, b.Addr(tc.name))
			}
			// The listener that did bind was closed again.
			ln, err := net.Listen("tcp", free)
			if err != nil {
				t.Fatalf("the port %s bound before the failure was not released: %v", free, err)
			}
			ln.Close()
		})
	}

	t.Run("missing certificate", func(t *testing.T) {
		b, err := New(Config{TLSAddr: "127.0.0.1:0", TLSCert: "/nonexistent/cert.pem", TLSKey: key}, nopProducer{}, discard, newRegistry())
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Listen(); err == nil || !strings.Contains(err.Error(), "--mqtt-tls-cert") {
			t.Errorf("Listen with a missing certificate: %v, want an error naming --mqtt-tls-cert", err)
		}
	})
	t.Run("Listen twice", func(t *testing.T) {
		b, err := New(Config{Addr: "127.0.0.1:0"}, nopProducer{}, discard, newRegistry())
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Listen(); err != nil {
			t.Fatal(err)
		}
		if err := b.Listen(); err == nil {
			t.Error("second Listen succeeded")
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- b.Run(ctx) }()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return")
		}
		if err := b.Run(t.Context()); err == nil {
			t.Error("second Run succeeded")
		}
	})
}

// TestIntegrationMaxPacketDisconnects sends a packet larger than
// --mqtt-max-packet-bytes over MQTT 3.1.1 and 5: the client is disconnected,
// its reading is not acknowledged and does not land, and other clients are
// unaffected.
func TestIntegrationMaxPacketDisconnects(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{bridge: true, cfg: Config{MaxPacket: 1024}})
	big := `{"reading": 1, "pad": "` + strings.Repeat("x", 2000) + `"}`

	var sniff ackSniffer
	var lost atomic.Int64
	v3 := mustConnectV3(t, "tcp://"+s.tcpAddr(), "big-v3", func(o *mqtt.ClientOptions) {
		o.SetCustomOpenConnectionFn(sniff.dial).SetConnectionLostHandler(func(mqtt.Client, error) { lost.Add(1) })
	})
	v3.Publish("devices/big-v3/readings", 1, false, big)
	testenv.Eventually(t, 5*time.Second, func() bool { return lost.Load() == 1 },
		"an MQTT 3.1.1 client sending %d bytes over the 1024-byte limit was not disconnected", len(big))
	if n := sniff.count(typePuback); n != 0 {
		t.Errorf("the oversized publish got %d PUBACKs", n)
	}

	var sniff5 ackSniffer
	conn, err := net.DialTimeout("tcp", s.tcpAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v5, ca, err := connectV5Conn(t, &sniffConn{Conn: conn, a: &sniff5}, &paho.Connect{ClientID: "big-v5", CleanStart: true, KeepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	// A conforming MQTT 5 client is told the limit and stays under it.
	if p := ca.Properties; p == nil || p.MaximumPacketSize == nil || *p.MaximumPacketSize != 1024 {
		t.Errorf("CONNACK does not announce the maximum packet size 1024: %+v", p)
	}
	if _, err := v5.PublishWithOptions(t.Context(), &paho.Publish{Topic: "devices/big-v5/readings", QoS: 1, Payload: []byte(big)},
		paho.PublishOptions{Method: paho.PublishMethod_AsyncSend}); err != nil && !errors.Is(err, paho.ErrNetworkErrorAfterStored) {
		// ErrNetworkErrorAfterStored: the broker closed the connection
		// while the packet was still being written.
		t.Fatal(err)
	}
	select {
	case <-v5.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("an MQTT 5 client sending an oversized packet was not disconnected")
	}
	if n := sniff5.count(typePuback); n != 0 {
		t.Errorf("the oversized MQTT 5 publish got %d PUBACKs", n)
	}
	select {
	case d := <-v5.disconnects:
		if d.ReasonCode != 0x95 {
			t.Errorf("DISCONNECT reason code %#x, want 0x95 (packet too large)", d.ReasonCode)
		}
	default:
		t.Log("the MQTT 5 client was disconnected without a DISCONNECT packet (mochi closes the connection on an oversized packet without sending 0x95)")
	}

	ok := mustConnectV5(t, s.tcpAddr(), "small-v5")
	if got := publishV5(t, ok, "devices/small-v5/readings", 1, `{"reading": 2, "pad": "`+strings.Repeat("y", 900)+`"}`); got != 0 {
		t.Errorf("a packet under the limit: reason code %#x", got)
	}
	s.settle(1, 10*time.Second)
	if rows := s.rows(""); len(rows) != 1 || rows[0].Device != "small-v5" {
		t.Errorf("rows %+v, want only small-v5's reading", rows)
	}
}

// TestIntegrationSubscribersAndOtherTopics: a subscriber to
// devices/+/readings sees valid readings live (and not refused ones); other
// topics are ordinary publish/subscribe and nothing of them reaches the
// streams.
func TestIntegrationSubscribersAndOtherTopics(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	watcher := make(chan mqtt.Message, 100)
	sub := mustConnectV3(t, "tcp://"+s.tcpAddr(), "dashboard")
	for _, filter := range []string{"devices/+/readings", "chat/#", "devices/+/status"} {
		if err := waitToken(sub.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { watcher <- m }), 5*time.Second); err != nil {
			t.Fatalf("subscribe %s: %v", filter, err)
		}
	}
	sub5 := mustConnectV5(t, s.tcpAddr(), "dashboard-v5")
	if _, err := sub5.Subscribe(t.Context(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/+/readings", QoS: 2}}}); err != nil {
		t.Fatalf("MQTT 5 subscribe: %v", err)
	}

	pub := mustConnectV5(t, s.tcpAddr(), "publisher")
	sent := []struct{ topic, payload string }{
		{"devices/pump-1/readings", `{"reading": 1.5, "unit": "bar"}`},
		{"devices/pump-2/readings", `2`},
		{"chat/room-1", `{"reading": 3}`}, // a reading's shape on another topic stays a message
		{"devices/pump-1/status", `online`},
		{"devices/pump-1/readings", `not a reading`},
		{"devices/pump-3/readings", `{"reading": 4}`},
	}
	for _, m := range sent {
		if got := publishV5(t, pub, m.topic, 1, m.payload); m.payload == "not a reading" && got != codePayloadFormatBad || m.payload != "not a reading" && got != 0 {
			t.Fatalf("publish %s %q: reason code %#x", m.topic, m.payload, got)
		}
	}
	// The 3.1.1 subscriber gets every message except the refused reading, in
	// the order sent: the last one proves the refused one is not on its way.
	for _, m := range sent {
		if m.payload == "not a reading" {
			continue
		}
		select {
		case got := <-watcher:
			if got.Topic() != m.topic || string(got.Payload()) != m.payload {
				t.Errorf("subscriber got %s %q, want %s %q", got.Topic(), got.Payload(), m.topic, m.payload)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("subscriber did not get %s %q", m.topic, m.payload)
		}
	}
	for _, want := range []string{`{"reading": 1.5, "unit": "bar"}`, `2`, `{"reading": 4}`} {
		select {
		case got := <-sub5.received:
			if string(got.Payload) != want {
				t.Errorf("MQTT 5 subscriber got %q, want %q", got.Payload, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("MQTT 5 subscriber did not get %q", want)
		}
	}

	testenv.Eventually(t, 5*time.Second, func() bool { return s.streamLen() == 3 }, "streams hold %d entries, want the 3 readings", s.streamLen())
	rs := s.streamReadings()
	got := map[string]float64{}
	for _, r := range rs {
		got[r.DeviceID] = r.Value
	}
	if len(rs) != 3 || got["pump-1"] != 1.5 || got["pump-2"] != 2 || got["pump-3"] != 4 {
		t.Errorf("stream entries %+v, want the readings of pump-1, pump-2 and pump-3 only", rs)
	}
	if got := s.metric("firehose_mqtt_publishes_total", "qos", "1"); got != 4 {
		t.Errorf("firehose_mqtt_publishes_total{qos=1} = %v, want 4 (readings topics only)", got)
	}
}

// TestIntegrationKeepAliveImposed checks --mqtt-max-keepalive: an MQTT 5
// client asking for no keep-alive or a longer one is told the maximum in
// CONNACK, and a silent 3.1.1 client that asked for none is disconnected
// after 1.5 times the maximum.
func TestIntegrationKeepAliveImposed(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{cfg: Config{MaxKeepAlive: time.Second}})
	for _, ask := range []uint16{0, 30, 1} {
		_, ca, err := connectV5(t, s.tcpAddr(), &paho.Connect{ClientID: "ka", CleanStart: true, KeepAlive: ask})
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case ask == 1 && ca.Properties != nil && ca.Properties.ServerKeepAlive != nil && *ca.Properties.ServerKeepAlive != 1:
			t.Errorf("asked for 1s: server keep-alive %d", *ca.Properties.ServerKeepAlive)
		case ask != 1 && (ca.Properties == nil || ca.Properties.ServerKeepAlive == nil || *ca.Properties.ServerKeepAlive != 1):
			t.Errorf("asked for %ds: CONNACK does not impose the 1s maximum: %+v", ask, ca.Properties)
		}
	}

	lost := make(chan time.Time, 1)
	start := time.Now()
	mustConnectV3(t, "tcp://"+s.tcpAddr(), "silent", func(o *mqtt.ClientOptions) {
		o.SetKeepAlive(0).SetConnectionLostHandler(func(mqtt.Client, error) { lost <- time.Now() })
	})
	select {
	case at := <-lost:
		if d := at.Sub(start); d < time.Second {
			t.Errorf("disconnected after %s, before the keep-alive of 1s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a silent client that asked for no keep-alive was not disconnected within 10s (maximum 1s)")
	}
}

// TestIntegrationCustomReadingsTopic configures another readings topic
// (--mqtt-topic): readings on it reach the streams, and the default topic
// becomes an ordinary one.
func TestIntegrationCustomReadingsTopic(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{cfg: Config{Topic: "site/{device_id}/up"}})
	c := mustConnectV5(t, s.tcpAddr(), "custom")
	if got := publishV5(t, c, "site/boiler-1/up", 1, `{"reading": 70.5}`); got != 0 {
		t.Errorf("reading on the configured topic: reason code %#x", got)
	}
	if got := publishV5(t, c, "site/boiler-1/up", 1, `seventy`); got != codePayloadFormatBad {
		t.Errorf("invalid reading on the configured topic: reason code %#x, want 0x99", got)
	}
	if got := publishV5(t, c, "devices/boiler-1/readings", 1, `seventy`); got != 0 {
		t.Errorf("the default topic, now an ordinary one: reason code %#x, want 0", got)
	}
	rs := s.streamReadings()
	if len(rs) != 1 || rs[0].DeviceID != "boiler-1" || rs[0].Value != 70.5 {
		t.Errorf("stream entries %+v, want boiler-1's 70.5 only", rs)
	}
}

// TestIntegrationMaxClients refuses a connection over --mqtt-max-clients at
// CONNECT, over both MQTT versions, and admits one again once a client left.
func TestIntegrationMaxClients(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{cfg: Config{MaxClients: 2}})
	first := mustConnectV5(t, s.tcpAddr(), "mc-1")
	mustConnectV3(t, "tcp://"+s.tcpAddr(), "mc-2")
	if _, ca, err := connectV5(t, s.tcpAddr(), &paho.Connect{ClientID: "mc-3", CleanStart: true}); err == nil || ca == nil || ca.ReasonCode != 0x89 {
		t.Errorf("third MQTT 5 client: CONNACK %+v, %v; want 0x89 (server busy)", ca, err)
	}
	if _, err := mqtttest.ConnectV3(t, "tcp://"+s.tcpAddr(), "mc-3"); !errors.Is(err, packets.ErrorRefusedServerUnavailable) {
		t.Errorf("third MQTT 3.1.1 client: %v, want CONNACK \"server unavailable\"", err)
	}
	if err := first.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		c, err := mqtttest.ConnectV3(t, "tcp://"+s.tcpAddr(), "mc-4")
		if err == nil {
			c.Disconnect(0)
		}
		return err == nil
	}, "no client admitted after one of the two left")
}
