package broker

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"firehose/ingest"
	"firehose/internal/mqtttest"
	"firehose/mapping"
)

// Tests of deny by default under --mqtt-auth: a client publishes, retains
// and leaves as its will only its own topics, or what a write=FILTER grant
// covers.

// loginV5 connects user with its password (client id = username).
func loginV5(t *testing.T, s *testStack, user, pw string) *v5Client {
	t.Helper()
	c, _, err := connectV5(t, s.tcpAddr(), v5Creds(user, user, pw))
	if err != nil {
		t.Fatalf("connect %s: %v", user, err)
	}
	return c
}

// mustSubscribeV5 subscribes c to filter at QoS 1 and fails the test unless
// it is granted.
func mustSubscribeV5(t *testing.T, c *v5Client, filter string) {
	t.Helper()
	if code := subscribeV5(t, c, filter); code >= 0x80 {
		t.Fatalf("subscribe to %s: SUBACK %#x", filter, code)
	}
}

// firstReceived is the first message c receives; the test fails if none
// comes. A message published after those the test wants absent, that c
// must receive, tells without a sleep that none of them came: mochi hands a
// publish to the subscribers before it reads the publisher's next packet,
// and one subscriber's messages arrive in the order they were handed.
func firstReceived(t *testing.T, c *v5Client, what string) *paho.Publish {
	t.Helper()
	select {
	case pb := <-c.received:
		return pb
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: nothing received", what)
		return nil
	}
}

// connackV5 connects with cp and returns the CONNACK's reason code. An
// admitted client's connection is then dropped without a DISCONNECT, so
// that its will, if any, goes out.
func connackV5(t *testing.T, s *testStack, cp *paho.Connect) byte {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.tcpAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, ca, err := connectV5Conn(t, conn, cp)
	if err == nil {
		conn.Close()
		<-c.Done()
		return 0
	}
	if ca == nil {
		t.Fatalf("connect %s: no CONNACK: %v", cp.ClientID, err)
	}
	return ca.ReasonCode
}

// withWill is v5Creds with a will.
func withWill(user, pw, topic, payload string, retain bool) *paho.Connect {
	cp := v5Creds(user, user, pw)
	cp.WillMessage = &paho.WillMessage{Topic: topic, QoS: 1, Payload: []byte(payload), Retain: retain}
	return cp
}

// TestIntegrationAuthDeviceCommandsAnother is issue 16's hole 3: under
// --mqtt-auth dev-a publishes to devices/dev-b/commands at QoS 1 and 2,
// retained, and as its will (MQTT 5 and 3.1.1). Each is refused (PUBACK or
// PUBREC 0x87, CONNACK 0x87, the 3.1.1 client disconnected or refused), and
// dev-b receives none of it, live or retained; its own topics stay open to
// dev-a, and a client granted write=devices/+/commands commands dev-b.
func TestIntegrationAuthDeviceCommandsAnother(t *testing.T) {
	t.Parallel()
	creds := filepath.Join(t.TempDir(), "creds")
	writeCredentials(t, creds, map[string]string{
		"dev-a": cheapHash(t, "pw-a"), "dev-b": cheapHash(t, "pw-b"),
		"ops": cheapHash(t, "pw-ops") + " write=devices/+/commands read=devices/+/commands",
	})
	s := newStack(t, stackOptions{cfg: Config{AuthFile: creds}})
	const victim = "devices/dev-b/commands"

	b := loginV5(t, s, "dev-b", "pw-b")
	mustSubscribeV5(t, b, "devices/dev-b/#")

	// A will on another device's topic, retained or not: refused at CONNECT.
	for _, retain := range []bool{false, true} {
		if code := connackV5(t, s, withWill("dev-a", "pw-a", victim, "open the valve", retain)); code != codeNotAuthorized {
			t.Errorf("dev-a connecting with a will (retain %v) on %s: CONNACK %#x, want 0x87", retain, victim, code)
		}
	}
	_, err := mqtttest.ConnectV3(t, "tcp://"+s.tcpAddr(), "dev-a", v3Creds("dev-a", "pw-a"), func(o *mqtt.ClientOptions) {
		o.SetWill(victim, "open the valve", 1, true)
	})
	if !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Errorf("MQTT 3.1.1 dev-a with a will on %s: %v, want refused, not authorized", victim, err)
	}
	if code := connackV5(t, s, withWill("dev-a", "pw-a", "devices/dev-a/status", "offline", true)); code != 0 {
		t.Errorf("dev-a connecting with a will on its own status topic: CONNACK %#x, want 0", code)
	}

	a := loginV5(t, s, "dev-a", "pw-a")
	for _, qos := range []byte{1, 2} {
		if code := publishV5(t, a, victim, qos, "open the valve"); code != codeNotAuthorized {
			t.Errorf("dev-a publishing to %s at QoS %d: reason code %#x, want 0x87", victim, qos, code)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := a.Publish(ctx, &paho.Publish{Topic: victim, QoS: 1, Retain: true, Payload: []byte("retained: open the valve")}); resp == nil || resp.ReasonCode != codeNotAuthorized {
		t.Errorf("dev-a publishing a retained message to %s: %+v %v, want 0x87", victim, resp, err)
	}
	publishV5(t, a, victim, 0, "at most once: open the valve")
	if code := publishV5(t, a, "devices/dev-a/status", 1, "fine"); code != 0 {
		t.Errorf("dev-a publishing on its own topic: reason code %#x, want 0", code)
	}

	// MQTT 3.1.1 has no reason code: the client is disconnected, unacknowledged.
	lost := make(chan error, 1)
	a3 := mustConnectV3(t, "tcp://"+s.tcpAddr(), "dev-a", v3Creds("dev-a", "pw-a"), func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	})
	a3.Publish(victim, 1, true, "3.1.1: open the valve")
	select {
	case <-lost:
	case <-time.After(30 * time.Second):
		t.Error("an MQTT 3.1.1 device publishing on another device's commands topic was not disconnected")
	}

	// The granted client commands dev-b: it is the first message dev-b gets.
	ops := loginV5(t, s, "ops", "pw-ops")
	if code := publishV5(t, ops, victim, 1, "from ops"); code != 0 {
		t.Fatalf("ops, granted write=devices/+/commands: reason code %#x", code)
	}
	if pb := firstReceived(t, b, "dev-b"); pb.Topic != victim || string(pb.Payload) != "from ops" {
		t.Errorf("dev-b received %s %q first, want ops' command: another device's publish got through", pb.Topic, pb.Payload)
	}
	// Nothing was retained there: a new subscriber gets the live message
	// first.
	mustSubscribeV5(t, ops, victim)
	if code := publishV5(t, ops, victim, 1, "fence"); code != 0 {
		t.Fatalf("ops fence: reason code %#x", code)
	}
	if pb := firstReceived(t, ops, "ops"); string(pb.Payload) != "fence" {
		t.Errorf("a new subscriber to %s received %q first (retained %v), want the live fence", victim, pb.Payload, pb.Retain)
	}
	if got := s.metric("firehose_mqtt_readings_refused_total", "reason", "not_authorized"); got < 5 {
		t.Errorf("firehose_mqtt_readings_refused_total{reason=not_authorized} = %v, want at least 5", got)
	}
}

// TestIntegrationAuthSparkplugState is issue 16's hole 4 and Sparkplug B
// groups tied to credentials: under --mqtt-auth a plain device and an edge
// node may not publish a host's STATE (retained or not) nor leave it as a
// will; the host granted write=spBv1.0/STATE/scada may, its will included,
// and edge nodes receive only its STATE. An edge node publishes its own
// NBIRTH and NDATA in the group its credentials name, not in another group
// nor as another edge node, and a device with no sparkplug= group is no edge
// node.
func TestIntegrationAuthSparkplugState(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "sparkplug", "testdata", "fixtures")
	birth, err := os.ReadFile(filepath.Join(dir, "seq-00-NBIRTH.bin"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "seq-01-NDATA.bin"))
	if err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(t.TempDir(), "creds")
	writeCredentials(t, creds, map[string]string{
		"dev-a": cheapHash(t, "pw-a"),
		"edge1": cheapHash(t, "pw-1") + " sparkplug=plant1",
		"scada": cheapHash(t, "pw-s") + " read=spBv1.0/# write=spBv1.0/+/NCMD/# write=spBv1.0/STATE/scada",
	})
	lim := ingest.Limits{MaxAge: 20 * 365 * 24 * time.Hour} // the fixtures are of 2023
	s := newStack(t, stackOptions{bridge: true, cfg: Config{Sparkplug: true, AuthFile: creds, Limits: lim}})
	const state = "spBv1.0/STATE/scada"
	offline := `{"online":false,"timestamp":1}`

	// An edge node watches the host's STATE (no grant needed) and its commands.
	edge := loginV5(t, s, "edge1", "pw-1")
	mustSubscribeV5(t, edge, state)
	mustSubscribeV5(t, edge, "spBv1.0/plant1/NCMD/edge1")

	// Fake STATE as a will: refused at CONNECT, from a plain device and
	// from an edge node.
	for _, u := range [][2]string{{"dev-a", "pw-a"}, {"edge1", "pw-1"}} {
		for _, topic := range []string{state, "STATE/scada"} {
			if code := connackV5(t, s, withWill(u[0], u[1], topic, offline, true)); code != codeNotAuthorized {
				t.Errorf("%s connecting with a will on %s: CONNACK %#x, want 0x87", u[0], topic, code)
			}
		}
	}
	_, err = mqtttest.ConnectV3(t, "tcp://"+s.tcpAddr(), "dev-a", v3Creds("dev-a", "pw-a"), func(o *mqtt.ClientOptions) {
		o.SetWill(state, offline, 1, true)
	})
	if !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Errorf("MQTT 3.1.1 dev-a with a will on %s: %v, want refused, not authorized", state, err)
	}

	// Fake STATE as a publish, retained or not.
	a := loginV5(t, s, "dev-a", "pw-a")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct {
		who    string
		client *v5Client
	}{{"dev-a", a}, {"edge1", edge}} {
		for _, retain := range []bool{true, false} {
			resp, err := c.client.Publish(ctx, &paho.Publish{Topic: state, QoS: 1, Retain: retain, Payload: []byte(offline)})
			if resp == nil || resp.ReasonCode != codeNotAuthorized {
				t.Errorf("%s publishing STATE (retain %v): %+v %v, want 0x87", c.who, retain, resp, err)
			}
		}
	}
	// Not an edge node: dev-a has no group; edge1 only in plant1 as edge1.
	for _, tc := range []struct {
		who    string
		client *v5Client
		topic  string
	}{
		{"dev-a", a, "spBv1.0/plant1/NBIRTH/dev-a"},
		{"edge1", edge, "spBv1.0/plant2/NBIRTH/edge1"},
		{"edge1", edge, "spBv1.0/plant1/NBIRTH/edge2"},
		{"edge1", edge, "spBv1.0/plant1/NCMD/edge1"},
	} {
		resp, err := tc.client.Publish(ctx, &paho.Publish{Topic: tc.topic, QoS: 1, Payload: birth})
		if resp == nil || resp.ReasonCode != codeNotAuthorized {
			t.Errorf("%s publishing on %s: %+v %v, want 0x87", tc.who, tc.topic, resp, err)
		}
	}
	if code := connackV5(t, s, withWill("edge1", "pw-1", "spBv1.0/plant2/NDEATH/edge1", "x", false)); code != codeNotAuthorized {
		t.Errorf("edge1 with an NDEATH will in a group not its own: CONNACK %#x, want 0x87", code)
	}
	// Its own edge node in its group.
	for _, m := range []struct {
		topic   string
		payload []byte
	}{{"spBv1.0/plant1/NBIRTH/edge1", birth}, {"spBv1.0/plant1/NDATA/edge1", data}} {
		resp, err := edge.Publish(ctx, &paho.Publish{Topic: m.topic, QoS: 1, Payload: m.payload})
		if resp == nil || resp.ReasonCode != 0 {
			t.Fatalf("edge1 publishing its own %s: %+v %v", m.topic, resp, err)
		}
	}

	// The host: its will is STATE offline, retained; it publishes online.
	conn, err := net.Dial("tcp", s.tcpAddr())
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := connectV5Conn(t, conn, withWill("scada", "pw-s", state, offline, true))
	if err != nil {
		t.Fatalf("the host connecting with its STATE will: %v", err)
	}
	online := `{"online":true,"timestamp":2}`
	if resp, err := host.Publish(ctx, &paho.Publish{Topic: state, QoS: 1, Retain: true, Payload: []byte(online)}); resp == nil || resp.ReasonCode != 0 {
		t.Fatalf("the host publishing its STATE: %+v %v", resp, err)
	}
	if pb := firstReceived(t, edge, "edge1"); pb.Topic != state || string(pb.Payload) != online {
		t.Fatalf("edge1 received %s %q first, want the host's STATE online: a fake STATE got through", pb.Topic, pb.Payload)
	}
	conn.Close() // gone without a DISCONNECT: its will goes out
	if pb := firstReceived(t, edge, "edge1"); pb.Topic != state || string(pb.Payload) != offline {
		t.Errorf("edge1 received %s %q, want the host's will, STATE offline", pb.Topic, pb.Payload)
	}

	// edge1's birth (its row and 2 metrics) and data landed; nothing of
	// the refused ones.
	s.settle(4, 30*time.Second)
	if got := s.count("SELECT count(*) FROM readings WHERE device_id = 'plant1/edge1'"); got != 4 {
		t.Errorf("%d rows of plant1/edge1, want 4", got)
	}
	if got := s.count("SELECT count(*) FROM readings WHERE device_id <> 'plant1/edge1'"); got != 0 {
		t.Errorf("%d rows of other edge nodes landed, want 0", got)
	}
}

// TestIntegrationAuthMappedTopicRows: under --mqtt-auth a topic a mapping
// rule matches is open to every device as far as the ACL goes, and the rows
// decide: a device publishes (and leaves as its will) a mapped message of
// its own device, not one of another device's, nor a will the rule cannot
// map.
func TestIntegrationAuthMappedTopicRows(t *testing.T) {
	t.Parallel()
	rules, err := mapping.New([]mapping.Rule{{Name: "press", Topic: "factory/{site}/{device_id}/telemetry", Metrics: []string{"temp"}}})
	if err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(t.TempDir(), "creds")
	writeCredentials(t, creds, map[string]string{"press7": cheapHash(t, "pw-7"), "press8": cheapHash(t, "pw-8")})
	s := newStack(t, stackOptions{bridge: true, cfg: Config{AuthFile: creds, Rules: rules}})

	p8 := loginV5(t, s, "press8", "pw-8")
	mustSubscribeV5(t, p8, "devices/press8/#")
	for _, tc := range []struct {
		topic, payload string
	}{
		{"factory/berlin/press8/telemetry", `{"temp": 99}`}, // another device's rows
		{"factory/berlin/press7/telemetry", `offline`},      // whose rows?
	} {
		if code := connackV5(t, s, withWill("press7", "pw-7", tc.topic, tc.payload, false)); code != codeNotAuthorized {
			t.Errorf("press7 with a will %q on %s: CONNACK %#x, want 0x87", tc.payload, tc.topic, code)
		}
	}
	if code := connackV5(t, s, withWill("press7", "pw-7", "factory/berlin/press7/telemetry", `{"temp": 0}`, false)); code != 0 {
		t.Errorf("press7 with a will of its own rows: CONNACK %#x, want 0", code)
	}
	// Its will landed before press7 connects again: a connection that
	// takes over the session before mochi 2.7.9 reads from the first one
	// ends it without its will (RELIABILITY.md), which is not this test's
	// business.
	s.settle(1, 30*time.Second)
	p7 := loginV5(t, s, "press7", "pw-7")
	if code := publishV5(t, p7, "factory/berlin/press7/telemetry", 1, `{"temp": 71.5}`); code != 0 {
		t.Errorf("press7 publishing its own mapped rows: reason code %#x, want 0", code)
	}
	if code := publishV5(t, p7, "factory/berlin/press8/telemetry", 1, `{"temp": 66.6}`); code != codeNotAuthorized {
		t.Errorf("press7 publishing press8's mapped rows: reason code %#x, want 0x87", code)
	}
	if code := publishV5(t, p7, "devices/press8/commands", 1, "stop"); code != codeNotAuthorized {
		t.Errorf("press7 publishing press8's commands: reason code %#x, want 0x87", code)
	}
	s.settle(2, 30*time.Second) // press7's own row, and its will's (temp 0) when it was disconnected
	if got := s.count("SELECT count(*) FROM readings WHERE device_id = 'press8'"); got != 0 {
		t.Errorf("%d rows of press8 landed, want 0", got)
	}
	if got := s.count("SELECT count(*) FROM readings WHERE device_id = 'press7' AND reading = 71.5"); got != 1 {
		t.Errorf("%d rows of press7's own message, want 1", got)
	}
}

// TestIntegrationAuthWillRevoked: a will allowed at CONNECT whose grant is
// revoked (the credentials file rewritten) before its client goes is not
// delivered: mochi publishes wills past the ACL check, so OnWill checks it
// again (the revocation disconnects the client, which leaves its will).
// Nor does a publish through a topic alias set before the revocation get
// through.
func TestIntegrationAuthWillRevoked(t *testing.T) {
	t.Parallel()
	creds := filepath.Join(t.TempDir(), "creds")
	lines := map[string]string{
		"dev-b": cheapHash(t, "pw-b"),
		"ops":   cheapHash(t, "pw-ops") + " write=devices/+/commands",
		"ops2":  cheapHash(t, "pw-ops2") + " write=devices/+/commands read=devices/+/commands",
	}
	writeCredentials(t, creds, lines)
	s := newStack(t, stackOptions{cfg: Config{AuthFile: creds}})
	const victim = "devices/dev-b/commands"
	b := loginV5(t, s, "dev-b", "pw-b")
	mustSubscribeV5(t, b, victim)

	conn, err := net.DialTimeout("tcp", s.tcpAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ops, _, err := connectV5Conn(t, conn, withWill("ops", "pw-ops", victim, "will of ops", true))
	if err != nil {
		t.Fatalf("ops with a granted will: %v", err)
	}
	tryAlias := func(topic, payload string) (byte, error) {
		a := uint16(1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := ops.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload),
			Properties: &paho.PublishProperties{TopicAlias: &a}})
		if resp == nil {
			return 0, err
		}
		return resp.ReasonCode, nil
	}
	if code, err := tryAlias(victim, "probe"); err != nil || code != 0 {
		t.Fatalf("ops setting its topic alias while granted: reason code %#x, %v", code, err)
	}
	lines["ops"] = cheapHash(t, "pw-ops") // the grant is gone
	writeCredentials(t, creds, lines)
	probes, gone := publishUntilRevoked(t, ops, victim, func(int) string { return "probe" })
	probes++ // the alias's
	if !gone {
		// Refused but still connected, in the moment before the
		// disconnection: OnACLCheck sees no topic through an alias,
		// OnPublish checks it.
		if code, err := tryAlias("", "through the alias"); err == nil && code != codeNotAuthorized {
			t.Errorf("ops publishing through its alias after its grant was revoked: reason code %#x, want 0x87", code)
		}
	}
	conn.Close() // gone (disconnected, or now without a DISCONNECT): mochi publishes the will
	<-ops.Done()

	o2 := loginV5(t, s, "ops2", "pw-ops2")
	if code := publishV5(t, o2, victim, 1, "fence"); code != 0 {
		t.Fatalf("ops2 fence: reason code %#x", code)
	}
	for i := 0; ; i++ {
		pb := firstReceived(t, b, "dev-b")
		if string(pb.Payload) == "fence" {
			if i != probes {
				t.Errorf("dev-b received %d probes, want %d", i, probes)
			}
			break
		}
		if string(pb.Payload) != "probe" {
			t.Fatalf("dev-b received %s %q: a refused publish or will was delivered", pb.Topic, pb.Payload)
		}
	}
	// Nor was it retained.
	mustSubscribeV5(t, o2, victim)
	if code := publishV5(t, o2, victim, 1, "fence 2"); code != 0 {
		t.Fatalf("ops2 fence: reason code %#x", code)
	}
	if pb := firstReceived(t, o2, "ops2"); string(pb.Payload) != "fence 2" {
		t.Errorf("a new subscriber to %s received %q first, want the live fence", victim, pb.Payload)
	}
}
