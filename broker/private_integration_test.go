package broker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"firehose/internal/mqtttest"
	"firehose/internal/testenv"
)

// subscribeV5 subscribes c to filter at QoS 1 and returns the SUBACK's
// reason code.
func subscribeV5(t *testing.T, c *v5Client, filter string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if sa == nil || len(sa.Reasons) != 1 {
		t.Fatalf("subscribe to %q: no SUBACK: %v", filter, err)
	}
	return sa.Reasons[0]
}

// fenceV5 makes sure every message queued for c before the call has reached
// it: c publishes to a topic of its own that it subscribed to (devices/ID/#)
// and waits for it to come back; mochi writes a client's messages in order.
// It returns what c received up to the fence, fence excluded.
func fenceV5(t *testing.T, c *v5Client, dev string) []*paho.Publish {
	t.Helper()
	fence := "devices/" + dev + "/fence"
	marker := testenv.ID()
	if code := publishV5(t, c, fence, 1, marker); code != 0 {
		t.Fatalf("%s publishes its fence: reason code %#x", dev, code)
	}
	var got []*paho.Publish
	deadline := time.After(10 * time.Second)
	for {
		select {
		case p := <-c.received:
			if p.Topic == fence && string(p.Payload) == marker {
				return got
			}
			got = append(got, p)
		case <-deadline:
			t.Fatalf("%s: its fence did not come back within 10s", dev)
			return nil
		}
	}
}

// v3Inbox collects the messages an MQTT 3.1.1 client receives.
type v3Inbox struct {
	mu  sync.Mutex
	got []mqtt.Message
}

func (b *v3Inbox) handle(_ mqtt.Client, m mqtt.Message) {
	b.mu.Lock()
	b.got = append(b.got, m)
	b.mu.Unlock()
}

func (b *v3Inbox) topics() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.got {
		out = append(out, m.Topic())
	}
	return out
}

// TestIntegrationPrivateReadings runs the broker with --mqtt-auth: a device
// may subscribe only under its own id (wildcards over other devices,
// $share/ and $SYS refused with 0x87, 3.1.1 0x80); a dashboard's
// read=devices/+/readings grant lets it read every device's readings and
// nothing else, not publish readings for others; no device receives
// another's messages; and a grant removed from the file disconnects the
// dashboard, which may then no longer subscribe to what it granted.
func TestIntegrationPrivateReadings(t *testing.T) {
	t.Parallel()
	creds := filepath.Join(t.TempDir(), "creds")
	dashHash := cheapHash(t, "pw-dash")
	lines := map[string]string{
		"dev-a": cheapHash(t, "pw-a"), "dev-b": cheapHash(t, "pw-b"), "dev-c": cheapHash(t, "pw-c"),
		"dash": dashHash + " read=devices/+/readings",
		"ops":  cheapHash(t, "pw-ops") + " read=#",
	}
	writeCredentials(t, creds, lines)
	s := newStack(t, stackOptions{cfg: Config{AuthFile: creds}})
	connect := func(dev, pw string) *v5Client {
		t.Helper()
		c, _, err := connectV5(t, s.tcpAddr(), v5Creds(dev, dev, pw))
		if err != nil {
			t.Fatalf("connect %s: %v", dev, err)
		}
		return c
	}
	a, b, dash, ops := connect("dev-a", "pw-a"), connect("dev-b", "pw-b"), connect("dash", "pw-dash"), connect("ops", "pw-ops")

	refused := 0
	for _, tc := range []struct {
		name   string
		c      *v5Client
		filter string
		want   byte
	}{
		{"device: every device's readings", a, "devices/+/readings", codeNotAuthorized},
		{"device: everything", a, "#", codeNotAuthorized},
		{"device: wildcard first level", a, "+/+/readings", codeNotAuthorized},
		{"device: another device's readings", a, "devices/dev-b/readings", codeNotAuthorized},
		{"device: another device's topics", a, "devices/dev-b/#", codeNotAuthorized},
		{"device: a device whose id it prefixes", a, "devices/dev-ab/readings", codeNotAuthorized},
		{"device: $SYS", a, "$SYS/#", codeNotAuthorized},
		{"device: shared, every device", a, "$share/g/devices/+/readings", codeNotAuthorized},
		{"device: shared, everything", a, "$SHARE/g/#", codeNotAuthorized},
		{"device: its own topics", a, "devices/dev-a/#", 1},
		{"device: its own readings", a, "devices/dev-a/readings", 1},
		{"device: its own readings, shared", a, "$share/g/devices/dev-a/readings", 1},
		{"dashboard: its grant", dash, "devices/+/readings", 1},
		{"dashboard: its own topics", dash, "devices/dash/#", 1},
		{"dashboard: statuses, not granted", dash, "devices/+/status", codeNotAuthorized},
		{"dashboard: everything, not granted", dash, "#", codeNotAuthorized},
		{"dashboard: $SYS", dash, "$SYS/#", codeNotAuthorized},
		{"device b: its own", b, "devices/dev-b/#", 1},
		{"grant of #", ops, "#", 1},
		{"grant of #: not $SYS", ops, "$SYS/#", codeNotAuthorized},
	} {
		if got := subscribeV5(t, tc.c, tc.filter); got != tc.want {
			t.Errorf("%s: SUBSCRIBE %q answered %#x, want %#x", tc.name, tc.filter, got, tc.want)
		}
		if tc.want == codeNotAuthorized {
			refused++
		}
	}
	// MQTT 3.1.1 has one failure code.
	var inbox v3Inbox
	c3 := mustConnectV3(t, "tcp://"+s.tcpAddr(), "dev-c", v3Creds("dev-c", "pw-c"), func(o *mqtt.ClientOptions) {
		o.SetDefaultPublishHandler(inbox.handle)
	})
	for filter, want := range map[string]byte{"devices/+/readings": 0x80, "#": 0x80, "devices/dev-c/#": 1} {
		tok := c3.Subscribe(filter, 1, nil)
		if err := waitToken(tok, 10*time.Second); err != nil && want < 0x80 {
			t.Fatalf("MQTT 3.1.1 subscribe to %q: %v", filter, err)
		}
		if got := tok.(*mqtt.SubscribeToken).Result()[filter]; got != want {
			t.Errorf("MQTT 3.1.1 SUBSCRIBE %q answered %#x, want %#x", filter, got, want)
		}
		if want >= 0x80 {
			refused++
		}
	}

	// dev-b publishes readings (with an extra field) and a status; the
	// dashboard may not publish for it.
	for i := range 3 {
		if code := publishV5(t, b, "devices/dev-b/readings", 1, fmt.Sprintf(`{"reading": %d, "secret": "b"}`, i)); code != 0 {
			t.Fatalf("dev-b publishes a reading: %#x", code)
		}
	}
	if code := publishV5(t, b, "devices/dev-b/status", 1, "b-status"); code != 0 {
		t.Fatalf("dev-b publishes its status: %#x", code)
	}
	if code := publishV5(t, a, "devices/dev-a/readings", 1, "7"); code != 0 {
		t.Fatalf("dev-a publishes a reading: %#x", code)
	}
	if code := publishV5(t, dash, "devices/dev-b/readings", 1, "666"); code != codeNotAuthorized {
		t.Errorf("the dashboard publishes a reading for dev-b: reason code %#x, want 0x87", code)
	}
	// mochi hands a publish to every subscriber before it reads the
	// publisher's next packet: once these are acknowledged, the ones before
	// are queued for everyone, and each fence below comes after them.
	publishV5(t, b, "devices/dev-b/barrier", 1, "x")
	publishV5(t, a, "devices/dev-a/barrier", 1, "x")

	count := func(ps []*paho.Publish) map[string]int {
		m := map[string]int{}
		for _, p := range ps {
			m[p.Topic]++
		}
		return m
	}
	gotA := count(fenceV5(t, a, "dev-a"))
	for topic := range gotA {
		if !strings.HasPrefix(topic, "devices/dev-a/") {
			t.Errorf("dev-a received %q", topic)
		}
	}
	if gotA["devices/dev-a/readings"] == 0 {
		t.Errorf("dev-a did not receive its own reading: %v", gotA)
	}
	gotDash := count(fenceV5(t, dash, "dash"))
	if gotDash["devices/dev-b/readings"] != 3 || gotDash["devices/dev-a/readings"] != 1 || len(gotDash) != 2 {
		t.Errorf("the dashboard received %v, want dev-b's 3 readings and dev-a's 1, and nothing else", gotDash)
	}
	gotOps := count(fenceV5(t, ops, "ops"))
	if gotOps["devices/dev-b/status"] != 1 || gotOps["devices/dev-b/readings"] != 3 {
		t.Errorf("ops (read=#) received %v, want every message", gotOps)
	}
	publishV3(t, c3, "devices/dev-c/fence", 1, "fence")
	testenv.Eventually(t, 10*time.Second, func() bool {
		ts := inbox.topics()
		return len(ts) > 0 && ts[len(ts)-1] == "devices/dev-c/fence"
	}, "dev-c's fence did not come back: %v", inbox.topics())
	if ts := inbox.topics(); len(ts) != 1 {
		t.Errorf("dev-c (MQTT 3.1.1) received %v, want only its fence", ts)
	}
	if got := s.metric("firehose_mqtt_subscriptions_refused_total"); got != float64(refused) {
		t.Errorf("firehose_mqtt_subscriptions_refused_total = %v, want %d", got, refused)
	}

	// Revoke the dashboard's grant (its password kept): it is disconnected,
	// and what it subscribed to under the grant is refused when it comes
	// back.
	lines["dash"] = dashHash
	writeCredentials(t, creds, lines)
	testenv.Eventually(t, 15*time.Second, func() bool {
		select {
		case <-dash.Done():
			return true
		default:
			return false
		}
	}, "the dashboard is still connected after its grant was removed")
	dash2 := connect("dash", "pw-dash")
	if code := subscribeV5(t, dash2, "devices/+/readings"); code != codeNotAuthorized {
		t.Errorf("the dashboard, its grant removed: SUBSCRIBE devices/+/readings answered %#x, want 0x87", code)
	}
}

// TestIntegrationClientIDIsUsername: under --mqtt-auth the client id must be
// the username (0x85, 3.1.1 identifier rejected), or username/anything for
// a user with a read grant; an empty one becomes the username; a wrong
// password is 0x86 whatever the id; no one takes over another device's
// session; a will on another device's readings topic is refused.
func TestIntegrationClientIDIsUsername(t *testing.T) {
	t.Parallel()
	creds := filepath.Join(t.TempDir(), "creds")
	writeCredentials(t, creds, map[string]string{
		"dev-a": cheapHash(t, "pw-a"), "dev-b": cheapHash(t, "pw-b"),
		"dash": cheapHash(t, "pw-dash") + " read=devices/+/readings",
	})
	s := newStack(t, stackOptions{cfg: Config{AuthFile: creds}})
	code := func(cp *paho.Connect) byte {
		t.Helper()
		_, ca, err := connectV5(t, s.tcpAddr(), cp)
		if ca == nil {
			t.Fatalf("CONNECT %s as %s: no CONNACK: %v", cp.ClientID, cp.Username, err)
		}
		return ca.ReasonCode
	}
	const codeIDNotValid = 0x85
	// dev-a holds its session; nobody else may take it over.
	a, _, err := connectV5(t, s.tcpAddr(), v5Creds("dev-a", "dev-a", "pw-a"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cp   *paho.Connect
		want byte
	}{
		{"another device's id", v5Creds("dev-b", "dev-a", "pw-a"), codeIDNotValid},
		{"another device's id, to take its session", v5Creds("dev-a", "dev-b", "pw-b"), codeIDNotValid},
		{"the username with a suffix, no grant", v5Creds("dev-a/x", "dev-a", "pw-a"), codeIDNotValid},
		{"wrong password and another id", v5Creds("dev-b", "dev-a", "wrong"), codeBadUserNameOrPasswd},
		{"dashboard tab 1", v5Creds("dash/tab-1", "dash", "pw-dash"), 0},
		{"dashboard tab 2", v5Creds("dash/tab-2", "dash", "pw-dash"), 0},
		{"dashboard, a device's id", v5Creds("dev-a", "dash", "pw-dash"), codeIDNotValid},
		{"dashboard, its name as a prefix", v5Creds("dash-x", "dash", "pw-dash"), codeIDNotValid},
	} {
		if got := code(tc.cp); got != tc.want {
			t.Errorf("%s: CONNACK %#x, want %#x", tc.name, got, tc.want)
		}
	}
	select {
	case d := <-a.disconnects:
		t.Errorf("dev-a was disconnected (%#x) by another user's attempt on its client id", d.ReasonCode)
	default:
	}
	if code := publishV5(t, a, "devices/dev-a/readings", 1, "1"); code != 0 {
		t.Errorf("dev-a after the attempts on its session: reason code %#x", code)
	}

	// An empty client id becomes the username.
	cp := v5Creds("", "dev-b", "pw-b")
	c, ca, err := connectV5(t, s.tcpAddr(), cp)
	if err != nil {
		t.Fatalf("empty client id: %v", err)
	}
	if ca.Properties == nil || ca.Properties.AssignedClientID != "dev-b" {
		t.Errorf("empty client id: CONNACK assigned %+v, want dev-b", ca.Properties)
	}
	_ = c.Disconnect(&paho.Disconnect{})

	// MQTT 3.1.1: return code 2.
	if _, err := mqtttest.ConnectV3(t, "tcp://"+s.tcpAddr(), "dev-b", v3Creds("dev-a", "pw-a")); !errors.Is(err, packets.ErrorRefusedIDRejected) {
		t.Errorf("MQTT 3.1.1 CONNECT of dev-a as client dev-b: %v, want identifier rejected", err)
	}

	// Wills: not on another device's readings topic.
	will := func(user, pw, topic string) *paho.Connect {
		cp := v5Creds(user, user, pw)
		cp.WillMessage = &paho.WillMessage{Topic: topic, QoS: 1, Payload: []byte("42")}
		return cp
	}
	if got := code(will("dev-a", "pw-a", "devices/dev-b/readings")); got != codeNotAuthorized {
		t.Errorf("a will on another device's readings topic: CONNACK %#x, want 0x87", got)
	}
	_, err = mqtttest.ConnectV3(t, "tcp://"+s.tcpAddr(), "dev-a", v3Creds("dev-a", "pw-a"), func(o *mqtt.ClientOptions) {
		o.SetWill("devices/dev-b/readings", "42", 1, false)
	})
	if !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Errorf("MQTT 3.1.1 will on another device's readings topic: %v, want not authorized", err)
	}
	if got := code(will("dev-b", "pw-b", "devices/dev-b/status")); got != 0 {
		t.Errorf("a will on its own status topic: CONNACK %#x, want 0", got)
	}

	for reason, want := range map[string]float64{"client_id": 6, "bad_credentials": 1, "will_not_authorized": 2, "throttled": 0} {
		if got := s.metric("firehose_mqtt_connects_refused_total", "reason", reason); got != want {
			t.Errorf("firehose_mqtt_connects_refused_total{reason=%s} = %v, want %v", reason, got, want)
		}
	}
}

// TestIntegrationLoginThrottle: after --mqtt-auth-fail-burst failed logins
// from one address, its next CONNECTs are refused (0x9F, 3.1.1 server
// unavailable) without a bcrypt comparison, right password or not, while a
// device whose password passed before still connects.
func TestIntegrationLoginThrottle(t *testing.T) {
	t.Parallel()
	creds := filepath.Join(t.TempDir(), "creds")
	writeCredentials(t, creds, map[string]string{"known": cheapHash(t, "pw-k"), "fresh": cheapHash(t, "pw-f")})
	s := newStack(t, stackOptions{cfg: Config{AuthFile: creds, AuthFailBurst: 3, AuthFailInterval: time.Hour}})
	code := func(cp *paho.Connect) byte {
		t.Helper()
		c, ca, err := connectV5(t, s.tcpAddr(), cp)
		if ca == nil {
			t.Fatalf("CONNECT as %s: no CONNACK: %v", cp.Username, err)
		}
		if c != nil {
			_ = c.Disconnect(&paho.Disconnect{})
		}
		return ca.ReasonCode
	}
	const codeRateExceeded = 0x9F
	if got := code(v5Creds("known", "known", "pw-k")); got != 0 {
		t.Fatalf("known device: CONNACK %#x", got)
	}
	for i := range 3 {
		if got := code(v5Creds("known", "known", fmt.Sprint("wrong-", i))); got != codeBadUserNameOrPasswd {
			t.Errorf("failed login %d: CONNACK %#x, want 0x86", i+1, got)
		}
	}
	checks := s.metric("firehose_mqtt_auth_password_checks_total")
	if checks != 4 {
		t.Errorf("bcrypt comparisons after 1 good and 3 failed logins: %v, want 4", checks)
	}
	for _, tc := range []struct {
		name string
		cp   *paho.Connect
	}{
		{"a wrong password", v5Creds("known", "known", "wrong-again")},
		{"the right password of a device never seen", v5Creds("fresh", "fresh", "pw-f")},
		{"an unknown user", v5Creds("ghost", "ghost", "pw")},
	} {
		if got := code(tc.cp); got != codeRateExceeded {
			t.Errorf("throttled, %s: CONNACK %#x, want 0x9F", tc.name, got)
		}
	}
	if _, err := mqtttest.ConnectV3(t, "tcp://"+s.tcpAddr(), "fresh", v3Creds("fresh", "pw-f")); !errors.Is(err, packets.ErrorRefusedServerUnavailable) {
		t.Errorf("throttled MQTT 3.1.1 CONNECT: %v, want server unavailable", err)
	}
	if got := s.metric("firehose_mqtt_auth_password_checks_total"); got != checks {
		t.Errorf("throttled CONNECTs ran %v bcrypt comparisons, want 0", got-checks)
	}
	// The remembered password passes without bcrypt, throttle or not.
	if got := code(v5Creds("known", "known", "pw-k")); got != 0 {
		t.Errorf("known device while its address is throttled: CONNACK %#x, want 0", got)
	}
	if got := s.metric("firehose_mqtt_connects_refused_total", "reason", "throttled"); got != 4 {
		t.Errorf("firehose_mqtt_connects_refused_total{reason=throttled} = %v, want 4", got)
	}
	if got := s.metric("firehose_mqtt_connects_refused_total", "reason", "bad_credentials"); got != 3 {
		t.Errorf("firehose_mqtt_connects_refused_total{reason=bad_credentials} = %v, want 3", got)
	}
	if got := s.metric("firehose_mqtt_auth_throttled_addresses"); got != 1 {
		t.Errorf("firehose_mqtt_auth_throttled_addresses = %v, want 1", got)
	}
}
