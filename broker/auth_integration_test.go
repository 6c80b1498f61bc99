package broker

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"firehose/internal/mqtttest"
	"firehose/internal/syncbuf"
	"firehose/internal/testenv"
)

func v3Creds(user, password string) func(*mqtt.ClientOptions) {
	return func(o *mqtt.ClientOptions) { o.SetUsername(user).SetPassword(password) }
}

// TestIntegrationAuthCredentialsAndACL runs the broker with --mqtt-auth: a
// wrong password or unknown device is refused at CONNECT, a device publishes
// readings only under its own id, and rewriting the file revokes a device
// (one already connected is disconnected) and admits a new one, without a
// restart.
func TestIntegrationAuthCredentialsAndACL(t *testing.T) {
	t.Parallel()
	// sensor-1's line is made as firehose mqttpasswd makes it; the others at
	// bcrypt's lowest cost, which the race detector makes slow enough.
	one, err := HashPassword("pw-one")
	if err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(t.TempDir(), "creds")
	writeCredentials(t, creds, map[string]string{"sensor-1": one, "sensor-2": cheapHash(t, "pw-two"), "sensor-4": cheapHash(t, "pw-four")})
	// Ten failed logins from 127.0.0.1 follow: more than the throttle's
	// default burst (TestIntegrationLoginThrottle tests it).
	s := newStack(t, stackOptions{bridge: true, cfg: Config{AuthFile: creds, AuthFailBurst: 100}})
	url := "tcp://" + s.tcpAddr()

	for _, tc := range []struct {
		name           string
		user, password string
	}{
		{"wrong password", "sensor-1", "pw-two"},
		{"wrong password of a cheap hash", "sensor-2", "pw-one"},
		{"unknown device", "sensor-9", "pw-one"},
		{"empty password", "sensor-1", ""},
		{"no credentials", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mqtttest.ConnectV3(t, url, "bad-v3", v3Creds(tc.user, tc.password))
			if !errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) && !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
				t.Errorf("MQTT 3.1.1 CONNECT as %q/%q: %v, want a CONNACK refusal (bad user name or password, or not authorized)", tc.user, tc.password, err)
			}
			cp := v5Creds("bad-v5", tc.user, tc.password)
			cp.UsernameFlag, cp.PasswordFlag = tc.user != "", tc.password != ""
			_, ca, err := connectV5(t, s.tcpAddr(), cp)
			if err == nil || ca == nil || (ca.ReasonCode != codeBadUserNameOrPasswd && ca.ReasonCode != codeNotAuthorized) {
				code := -1
				if ca != nil {
					code = int(ca.ReasonCode)
				}
				t.Errorf("MQTT 5 CONNECT as %q/%q: CONNACK %#x, %v; want 0x86 or 0x87", tc.user, tc.password, code, err)
			}
		})
	}

	v5one, _, err := connectV5(t, s.tcpAddr(), v5Creds("sensor-1", "sensor-1", "pw-one"))
	if err != nil {
		t.Fatalf("sensor-1 with its password: %v", err)
	}
	v5two, _, err := connectV5(t, s.tcpAddr(), v5Creds("sensor-2", "sensor-2", "pw-two"))
	if err != nil {
		t.Fatalf("sensor-2 with its password: %v", err)
	}
	if got := publishV5(t, v5one, "devices/sensor-1/readings", 1, "1"); got != 0 {
		t.Errorf("sensor-1 under its own id: reason code %#x", got)
	}
	for _, qos := range []byte{1, 2} {
		if got := publishV5(t, v5one, "devices/sensor-2/readings", qos, "666"); got != codeNotAuthorized {
			t.Errorf("sensor-1 under sensor-2's id at QoS %d: reason code %#x, want 0x87", qos, got)
		}
	}
	// Deny by default: another device's other topics are closed too, its
	// own are open.
	if got := publishV5(t, v5one, "devices/sensor-2/status", 1, "hello"); got != codeNotAuthorized {
		t.Errorf("sensor-1 on another device's non-readings topic: reason code %#x, want 0x87", got)
	}
	if got := publishV5(t, v5one, "devices/sensor-1/status", 1, "hello"); got != 0 {
		t.Errorf("sensor-1 on its own non-readings topic: reason code %#x, want 0", got)
	}

	// MQTT 3.1.1 has no reason codes: publishing under another id
	// disconnects the device, unacknowledged.
	var sniff ackSniffer
	var lost atomic.Int64
	v3 := mustConnectV3(t, url, "sensor-4", v3Creds("sensor-4", "pw-four"), func(o *mqtt.ClientOptions) {
		o.SetCustomOpenConnectionFn(sniff.dial).SetConnectionLostHandler(func(mqtt.Client, error) { lost.Add(1) })
	})
	publishV3(t, v3, "devices/sensor-4/readings", 1, "2")
	acks := sniff.count(typePuback)
	v3.Publish("devices/sensor-2/readings", 1, false, "667")
	testenv.Eventually(t, 5*time.Second, func() bool { return lost.Load() == 1 },
		"an MQTT 3.1.1 device publishing under another id was not disconnected")
	if got := sniff.count(typePuback) - acks; got != 0 {
		t.Errorf("an MQTT 3.1.1 device publishing under another id got %d PUBACKs", got)
	}

	// Revoke sensor-2 and add sensor-3 by rewriting the file.
	writeCredentials(t, creds, map[string]string{"sensor-1": one, "sensor-3": cheapHash(t, "pw-three")})
	acked, gone := publishUntilRevoked(t, v5two, "devices/sensor-2/readings", func(i int) string { return fmt.Sprint(100 + i) })
	if !gone {
		t.Error("sensor-2, removed from the credentials file, was refused but not disconnected")
	}
	t.Logf("sensor-2 published %d readings before the file was reloaded", acked)
	if _, ca, err := connectV5(t, s.tcpAddr(), v5Creds("sensor-2", "sensor-2", "pw-two")); err == nil {
		t.Errorf("sensor-2 connected after it was removed from the credentials file (CONNACK %+v)", ca)
	}
	v5three, _, err := connectV5(t, s.tcpAddr(), v5Creds("sensor-3", "sensor-3", "pw-three"))
	if err != nil {
		t.Fatalf("sensor-3, added to the credentials file: %v", err)
	}
	if got := publishV5(t, v5three, "devices/sensor-3/readings", 2, "3"); got != 0 {
		t.Errorf("sensor-3 under its own id: reason code %#x", got)
	}
	if got := publishV5(t, v5one, "devices/sensor-1/readings", 1, "4"); got != 0 {
		t.Errorf("sensor-1 after the reload: reason code %#x", got)
	}

	s.settle(4+acked, 10*time.Second)
	got := map[string]int{}
	for _, r := range s.rows("") {
		got[fmt.Sprintf("%s=%v", r.Device, r.Value)]++
	}
	want := map[string]int{"sensor-1=1": 1, "sensor-4=2": 1, "sensor-3=3": 1, "sensor-1=4": 1}
	for i := range acked {
		want[fmt.Sprintf("sensor-2=%d", 100+i)] = 1
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("landed %v, want %v", got, want)
	}
}

// TestIntegrationTopicAliasChecked publishes readings through MQTT 5 topic
// aliases, which mochi resolves only after its ACL check: a device's own
// alias works, and once the device is revoked its open connection is
// disconnected; a publish through the alias in the moment before is refused
// (0x87), as one naming the topic, and does not land.
func TestIntegrationTopicAliasChecked(t *testing.T) {
	t.Parallel()
	creds := filepath.Join(t.TempDir(), "creds")
	hashB := cheapHash(t, "pw-b") // kept: a new hash would revoke alias-b too
	writeCredentials(t, creds, map[string]string{"alias-a": cheapHash(t, "pw-a"), "alias-b": hashB})
	s := newStack(t, stackOptions{bridge: true, cfg: Config{AuthFile: creds}})
	refusedAlias := 0.0
	publishAlias := func(c *v5Client, topic, payload string) byte {
		t.Helper()
		alias := uint16(1)
		resp, err := c.Publish(t.Context(), &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload),
			Properties: &paho.PublishProperties{TopicAlias: &alias}})
		if resp == nil {
			t.Fatalf("publish through topic alias 1 (topic %q): %v", topic, err)
		}
		return resp.ReasonCode
	}
	a, _, err := connectV5(t, s.tcpAddr(), v5Creds("alias-a", "alias-a", "pw-a"))
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := connectV5(t, s.tcpAddr(), v5Creds("alias-b", "alias-b", "pw-b"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		client *v5Client
		dev    string
	}{{a, "alias-a"}, {b, "alias-b"}} {
		if got := publishAlias(c.client, "devices/"+c.dev+"/readings", "1"); got != 0 {
			t.Errorf("%s sets its alias: reason code %#x", c.dev, got)
		}
		if got := publishAlias(c.client, "", "2"); got != 0 {
			t.Errorf("%s publishes through its alias: reason code %#x", c.dev, got)
		}
	}

	writeCredentials(t, creds, map[string]string{"alias-b": hashB})
	acked := 0
	testenv.Eventually(t, 10*time.Second, func() bool {
		alias := uint16(1)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		resp, _ := a.Publish(ctx, &paho.Publish{Topic: "", QoS: 1, Payload: []byte(fmt.Sprint(100 + acked)),
			Properties: &paho.PublishProperties{TopicAlias: &alias}})
		switch {
		case resp == nil:
			select {
			case <-a.Done():
				return true // disconnected: revoked
			default: // slow, or disconnected meanwhile: the next round tells
			}
		case resp.ReasonCode == 0:
			acked++
		case resp.ReasonCode == codeNotAuthorized:
			refusedAlias++ // in the moment between the reload and the disconnection
		default:
			t.Fatalf("alias-a while being revoked: reason code %#x", resp.ReasonCode)
		}
		return false
	}, "alias-a, removed from the credentials file, was not disconnected")
	if got := publishAlias(b, "", "3"); got != 0 {
		t.Errorf("alias-b through its alias after the reload: reason code %#x", got)
	}

	s.settle(5+acked, 10*time.Second)
	got := map[string]int{}
	for _, r := range s.rows("") {
		got[fmt.Sprintf("%s=%v", r.Device, r.Value)]++
	}
	want := map[string]int{"alias-a=1": 1, "alias-a=2": 1, "alias-b=1": 1, "alias-b=2": 1, "alias-b=3": 1}
	for i := range acked {
		want[fmt.Sprintf("alias-a=%d", 100+i)] = 1
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("landed %v, want %v", got, want)
	}
	if got := s.metric("firehose_mqtt_readings_refused_total", "reason", "not_authorized"); got != refusedAlias {
		t.Errorf("firehose_mqtt_readings_refused_total{reason=not_authorized} = %v, want %v (the publishes refused through the alias)", got, refusedAlias)
	}
}

// TestIntegrationPasswordNeverLogged runs the broker with --mqtt-auth and
// debug logging, in text and JSON, through right and wrong passwords over
// both MQTT versions, refusals and a shutdown, and checks that no password
// appears in the logs in any common encoding.
func TestIntegrationPasswordNeverLogged(t *testing.T) {
	t.Parallel()
	const right, wrong = "Right-Pass-7f3a9c", "Wrong-Pass-2b8d1e"
	creds := filepath.Join(t.TempDir(), "creds")
	// A read grant lets meter-1 hold several connections at once, under
	// client ids meter-1/...
	writeCredentials(t, creds, map[string]string{"meter-1": cheapHash(t, right) + " read=devices/meter-1/#"})
	var logs syncbuf.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	logger := slog.New(slog.NewMultiHandler(slog.NewTextHandler(&logs, opts), slog.NewJSONHandler(&logs, opts)))
	s := newStack(t, stackOptions{cfg: Config{AuthFile: creds}, logger: logger})
	url := "tcp://" + s.tcpAddr()

	if _, err := mqtttest.ConnectV3(t, url, "log-v3-bad", v3Creds("meter-1", wrong)); err == nil {
		t.Fatal("wrong password accepted")
	}
	if _, _, err := connectV5(t, s.tcpAddr(), v5Creds("log-v5-bad", "meter-1", wrong)); err == nil {
		t.Fatal("wrong password accepted")
	}
	v3 := mustConnectV3(t, url, "meter-1/v3", v3Creds("meter-1", right))
	publishV3(t, v3, "devices/meter-1/readings", 1, "1")
	publishV3(t, v3, "devices/meter-1/readings", 1, "not a reading")
	v5, _, err := connectV5(t, s.tcpAddr(), v5Creds("meter-1/v5", "meter-1", right))
	if err != nil {
		t.Fatal(err)
	}
	publishV5(t, v5, "devices/meter-1/readings", 2, `{"reading": "bad"}`)
	publishV5(t, v5, "devices/meter-2/readings", 1, "2")
	// A second connection with the right password takes the remembered path.
	if _, _, err := connectV5(t, s.tcpAddr(), v5Creds("meter-1/v5-again", "meter-1", right)); err != nil {
		t.Fatal(err)
	}
	v3.Publish("devices/meter-2/readings", 1, false, "3") // disconnects the 3.1.1 client
	if err := s.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	out := logs.String()
	for _, want := range []string{"mqtt connect refused", "meter-1", "mqtt reading refused"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the debug logs do not mention %q, so they did not capture what this test looks for:\n%s", want, out)
		}
	}
	for _, pw := range []string{right, wrong} {
		b := []byte(pw)
		for _, form := range []string{pw, fmt.Sprint(b), fmt.Sprintf("%x", b), hex.EncodeToString(b),
			base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b), fmt.Sprintf("%q", b)} {
			if strings.Contains(out, form) {
				t.Errorf("a password appears in the logs as %q", form)
			}
		}
	}
	if t.Failed() {
		t.Logf("logs:\n%s", out)
	}
}
