package faults

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"firehose/broker"
	"firehose/httpgw"
	"firehose/internal/mqtttest"
	"firehose/internal/testcert"
	"firehose/internal/testenv"
)

// auSecrets are every password and API key of the scenario: none may
// appear in a log.
type auSecrets map[string]string // what -> secret

func auSecret(t *testing.T, what string, secrets auSecrets) string {
	t.Helper()
	s := "pw-" + testenv.ID() + testenv.ID()
	if strings.HasPrefix(what, "key") {
		k, err := httpgw.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		s = k
	}
	secrets[what] = s
	return s
}

// auHTTP is the scenario's HTTP client side: it counts the refusals it
// provokes, to compare with the gateway's counters.
type auHTTP struct {
	s            *Stack
	client       *http.Client
	unauthorized int // requests answered 401
	forbidden    int // readings refused with 403
}

// post sends body to path with the given headers and returns the status
// and body.
func (h *auHTTP) post(t *testing.T, path, body string, headers ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.s.HTTP()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusUnauthorized {
		h.unauthorized++
		if got := resp.Header.Get("WWW-Authenticate"); got != "Bearer" {
			t.Errorf("POST %s: 401 with WWW-Authenticate %q, want Bearer", path, got)
		}
	}
	return resp.StatusCode, string(b)
}

// expect posts and requires status and a body naming the problem.
func (h *auHTTP) expect(t *testing.T, what string, want int, wantBody, path, body string, headers ...string) {
	t.Helper()
	code, got := h.post(t, path, body, headers...)
	if code != want || !strings.Contains(got, wantBody) {
		t.Errorf("%s: %d %s, want %d naming %q", what, code, got, want, wantBody)
	}
}

func bearer(key string) []string { return []string{"Authorization", "Bearer " + key} }

// TestWhoGetsIn runs a stack with API keys on the gateway, device
// credentials on the broker and a TLS-only MQTT listener, under a
// legitimate load that uses them (API key, per-device passwords over TLS).
// Meanwhile every kind of intruder is refused with its status or reason
// code: wrong, unknown and missing passwords (CONNACK 0x86), a device
// publishing under another device's id (PUBACK 0x87, a 3.1.1 client
// disconnected), a revoked device (new connections refused, its open
// connection's publishes refused, with a topic alias too), missing and
// unknown API keys (401), a key revoked by rewriting the key file (401 after
// the reload), a key used for a device it is not bound to (403), and
// plain-text MQTT to the TLS port (no CONNACK, closed). Nothing of theirs
// lands, the load lands exactly once, and no password or key appears in the
// stack's debug log.
func TestWhoGetsIn(t *testing.T) {
	skipShort(t)
	t.Parallel()
	secrets := auSecrets{}
	dir := t.TempDir()
	certFile, keyFile, pool := testcert.SelfSigned(t)

	// Device credentials: the simulated fleet shares one password; the
	// test's own devices have theirs.
	run := "auth" + testenv.ID()
	devices := scale(20, 60)
	fleetPW := auSecret(t, "password of the fleet", secrets)
	aPW := auSecret(t, "password of ok-auth-a", secrets)
	a3PW := auSecret(t, "password of ok-auth-a3", secrets)
	victimPW := auSecret(t, "password of bad-auth-victim", secrets)
	revokePW := auSecret(t, "password of ok-auth-revoke", secrets)
	wrongPW := auSecret(t, "a wrong password", secrets)
	hash := func(pw string) string {
		h, err := broker.HashPassword(pw)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	var creds bytes.Buffer
	// The fleet's hash at bcrypt's lowest cost: a fleet connecting at once
	// checks its passwords at the same time, and at the default cost that
	// takes longer on this loaded machine than the simulator waits for a
	// CONNACK. The test's own devices use firehose mqttpasswd's cost.
	cheap, err := bcrypt.GenerateFromPassword([]byte(fleetPW), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	fleetHash := string(cheap)
	for i := 1; i <= devices; i++ {
		fmt.Fprintf(&creds, "sim-%s-%d %s\n", run, i, fleetHash)
	}
	fmt.Fprintf(&creds, "ok-auth-a %s\nok-auth-a3 %s\nbad-auth-victim %s\n", hash(aPW), hash(a3PW), hash(victimPW))
	credsFile := filepath.Join(dir, "devices.txt")
	edgeWriteFile(t, credsFile, append(bytes.Clone(creds.Bytes()), fmt.Sprintf("ok-auth-revoke %s\n", hash(revokePW))...))
	fleetPWFile := filepath.Join(dir, "fleet-passwords.txt")
	edgeWriteFile(t, fleetPWFile, []byte("* "+fleetPW+"\n"))

	// API keys: the fleet's (any device), one bound to a device, one to
	// revoke; one never issued.
	fleetKey := auSecret(t, "key of the fleet", secrets)
	pumpKey := auSecret(t, "key bound to ok-auth-pump", secrets)
	revokedKey := auSecret(t, "key revoked during the run", secrets)
	unknownKey := auSecret(t, "key never issued", secrets)
	keys := fmt.Sprintf("fleet %s *\npump %s ok-auth-pump\n", httpgw.HashKey(fleetKey), httpgw.HashKey(pumpKey))
	keysFile := filepath.Join(dir, "keys.txt")
	edgeWriteFile(t, keysFile, []byte(keys+fmt.Sprintf("doomed %s *\n", httpgw.HashKey(revokedKey))))

	tlsAddr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	svc := SharedServices(t)
	s := StartStack(t, svc, "--log-level", "debug",
		"--http-api-keys", keysFile, "--mqtt-auth", credsFile,
		"--mqtt-addr", "", "--mqtt-tls-addr", tlsAddr, "--mqtt-tls-cert", certFile, "--mqtt-tls-key", keyFile)
	l := StartLoad(t, s, LoadOpts{Devices: devices, Rate: scale(200.0, 1000.0), Duration: scale(12*time.Second, 45*time.Second),
		Extra: []string{"--run-id", run, "--timeout", "15s", "--api-key", fleetKey, "--mqtt", "ssl://" + tlsAddr, "--ca-file", certFile,
			"--mqtt-password-file", fleetPWFile}})
	edgeWaitLoadRunning(t, s, l)
	rdb := edgeRedis(t, s)
	t.Cleanup(func() {
		if t.Failed() {
			auLogFailure(t, s.Proc.Output())
		}
	})

	// --- MQTT ---
	// The plain listener is off: only TLS is served.
	if c, err := net.DialTimeout("tcp", s.MQTTAddr, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("something listens on the plain MQTT address %s though --mqtt-addr is empty", s.MQTTAddr)
	}
	// Plain-text MQTT to the TLS port: no CONNACK, the connection closes.
	auPlainToTLS(t, tlsAddr)
	if _, err := mqtttest.ConnectV3(t, "tcp://"+tlsAddr, "bad-auth-plain-v3"); err == nil {
		t.Error("an MQTT 3.1.1 client connected in plain text to the TLS-only listener")
	}

	// Wrong, unknown and missing credentials: CONNACK 0x86 (MQTT 5), refused (3.1.1).
	for _, tc := range []struct {
		what, user, password string
	}{
		{"wrong password", "ok-auth-a", wrongPW},
		{"another device's password", "ok-auth-a", victimPW},
		{"unknown device", "bad-auth-nobody", wrongPW},
		{"no password", "ok-auth-a", ""},
		{"no username", "", ""},
	} {
		code, err := auConnectV5Code(t, tlsAddr, pool, "bad-auth-"+strings.ReplaceAll(tc.what, " ", "-"), tc.user, tc.password)
		if code != 0x86 {
			t.Errorf("MQTT 5 connect with %s: CONNACK 0x%02x (%v), want 0x86 (bad user name or password)", tc.what, code, err)
		}
	}
	_, err = mqtttest.ConnectV3(t, "ssl://"+tlsAddr, "bad-auth-wrong-v3", auV3Creds(pool, "ok-auth-a", wrongPW))
	// mochi answers 3.1.1's return code 5, not authorized (4 is for
	// malformed credentials).
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "not authorized") {
		t.Errorf("MQTT 3.1.1 connect with a wrong password: %v, want refused, not authorized", err)
	}

	// A device publishing under another device's id.
	a := auMustV5(t, tlsAddr, pool, "ok-auth-a", aPW)
	auExpectV5(t, a, "publish under another device's topic", "devices/bad-auth-victim/readings", `{"reading": 666}`, 0x87)
	auExpectV5(t, a, "publish naming another device in the body", "devices/ok-auth-a/readings", `{"device_id": "bad-auth-victim", "reading": 667}`, 0x99)
	auExpectV5(t, a, "publish of its own", "devices/ok-auth-a/readings", `{"reading": 1}`, 0x00)
	lost := make(chan error, 1)
	a3, err := mqtttest.ConnectV3(t, "ssl://"+tlsAddr, "ok-auth-a3", auV3Creds(pool, "ok-auth-a3", a3PW),
		func(o *mqtt3.ClientOptions) {
			o.SetConnectionLostHandler(func(_ mqtt3.Client, err error) { lost <- err })
		})
	if err != nil {
		t.Fatalf("MQTT 3.1.1 connect of ok-auth-a3: %v", err)
	}
	a3.Publish("devices/bad-auth-victim/readings", 1, false, `{"reading": 668}`)
	select {
	case <-lost:
	case <-time.After(15 * time.Second):
		t.Error("an MQTT 3.1.1 device publishing under another device's id was not disconnected")
	}

	// A device whose credentials are revoked while it is connected. Before:
	// its readings land, one through a topic alias.
	rv := auMustV5(t, tlsAddr, pool, "ok-auth-revoke", revokePW)
	auExpectV5(t, rv, "revoked device before revocation", "devices/ok-auth-revoke/readings", `{"reading": 1, "phase": "before"}`, 0x00)
	alias := uint16(1)
	if code, ok, err := auPublishAlias(rv, "devices/ok-auth-revoke/readings", alias, `{"reading": 2, "phase": "before"}`); !ok || code != 0 {
		t.Fatalf("set a topic alias before revocation: PUBACK %v 0x%02x %v", ok, code, err)
	}

	// --- HTTP ---
	h := &auHTTP{s: s, client: &http.Client{Timeout: 15 * time.Second}}
	one := func(dev string) string { return fmt.Sprintf(`{"device_id": %q, "reading": 1}`, dev) }
	fast := `{"id": 1, "reading": 1}`
	h.expect(t, "v1 without a key", 401, "missing API key", "/v1/readings", one("bad-auth-nokey"))
	h.expect(t, "fast without a key", 401, "missing API key", "/readings/fast", fast, "X-Device-ID", "bad-auth-nokey-fast")
	h.expect(t, "v1 with Basic credentials", 401, "missing API key", "/v1/readings", one("bad-auth-basic"), "Authorization", "Basic "+fleetKey)
	h.expect(t, "v1 with an unknown key", 401, "unknown API key", "/v1/readings", one("bad-auth-unknown"), bearer(unknownKey)...)
	h.expect(t, "v1 with an unknown X-API-Key", 401, "unknown API key", "/v1/readings", one("bad-auth-unknown-x"), "X-API-Key", unknownKey)
	h.expect(t, "fast with an unknown key", 401, "unknown API key", "/readings/fast", fast, append(bearer(unknownKey), "X-Device-ID", "bad-auth-unknown-fast")...)
	h.expect(t, "v1 with a key's hash instead of the key", 401, "unknown API key", "/v1/readings", one("bad-auth-hash"), bearer(httpgw.HashKey(pumpKey))...)
	pumpOK := 0
	h.expect(t, "bound key for its device", 200, `"accepted":1`, "/v1/readings", one("ok-auth-pump"), bearer(pumpKey)...)
	pumpOK++
	h.expect(t, "bound key for another device", 403, "may not post for device", "/v1/readings", one("bad-auth-notbound"), bearer(pumpKey)...)
	h.forbidden++
	h.expect(t, "bound key for another device, fast", 403, "may not post for device", "/readings/fast", fast, append(bearer(pumpKey), "X-Device-ID", "bad-auth-notbound-fast")...)
	h.forbidden++
	h.expect(t, "bound key for its device and another in one request", 403, "may not post for device", "/v1/readings",
		`[{"device_id": "ok-auth-pump", "reading": 2, "refused_batch": true}, {"device_id": "bad-auth-notbound-2", "reading": 3}]`, bearer(pumpKey)...)
	h.forbidden += 2
	h.expect(t, "key to be revoked, before", 200, `"accepted":1`, "/v1/readings", one("ok-auth-prerevoke"), bearer(revokedKey)...)

	// Revoke the key and the device by rewriting both files, and wait for
	// the reloads: an empty body is answered 422 while the key stands and
	// 401 once it is revoked; a fresh connection of the device gets 0x86.
	edgeWriteFile(t, keysFile, []byte(keys))
	edgeWriteFile(t, credsFile, creds.Bytes())
	testenv.Eventually(t, 30*time.Second, func() bool {
		code, _ := h.post(t, "/v1/readings", "{}", bearer(revokedKey)...)
		return code == http.StatusUnauthorized
	}, "the revoked API key is still accepted")
	testenv.Eventually(t, 30*time.Second, func() bool {
		code, _ := auConnectV5Code(t, tlsAddr, pool, "ok-auth-revoke-again", "ok-auth-revoke", revokePW)
		return code == 0x86
	}, "the revoked device can still connect")
	h.expect(t, "v1 with the revoked key", 401, "unknown API key", "/v1/readings", one("bad-auth-revoked"), bearer(revokedKey)...)
	h.expect(t, "fast with the revoked key", 401, "unknown API key", "/readings/fast", fast, append(bearer(revokedKey), "X-Device-ID", "bad-auth-revoked-fast")...)
	h.expect(t, "bound key after the reload", 200, `"accepted":1`, "/v1/readings", one("ok-auth-pump"), bearer(pumpKey)...)
	pumpOK++

	// The revoked device's open connection is disconnected (DISCONNECT
	// 0x87): nothing it sends after, by topic or by alias, is taken.
	testenv.Await(t, func() bool {
		select {
		case <-rv.Done():
			return true
		default:
			return false
		}
	}, "the revoked device's open connection was not disconnected")
	if code, ok, err := rv.publish("devices/ok-auth-revoke/readings", []byte(`{"reading": 3, "phase": "after"}`)); ok {
		t.Errorf("revoked device on its closed connection: PUBACK 0x%02x (%v), want no answer", code, err)
	}
	if code, ok, err := auPublishAlias(rv, "", alias, `{"reading": 4, "phase": "after"}`); ok {
		t.Errorf("revoked device through its topic alias on its closed connection: PUBACK 0x%02x (%v), want no answer", code, err)
	}

	rep := l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	edgeWaitDrained(t, s, rdb, 2*time.Minute)

	// Nothing of the intruders landed; the legitimate controls did.
	if ids := edgeStrangers(t, svc.Postgres); len(ids) > 0 {
		t.Errorf("readings of refused clients landed, devices %q", ids)
	}
	if n := QueryInt(t, svc.Postgres, `SELECT count(*) FROM readings WHERE payload ? 'refused_batch' OR payload->>'phase' = 'after'`); n != 0 {
		t.Errorf("%d readings of refused requests or of the revoked device landed", n)
	}
	for dev, want := range map[string]int64{"ok-auth-pump": int64(pumpOK), "ok-auth-a": 1, "ok-auth-prerevoke": 1, "ok-auth-revoke": 2} {
		if n := edgeRowsOf(t, svc.Postgres, dev, nil); n != want {
			t.Errorf("%s: %d rows, want %d", dev, n, want)
		}
	}
	for _, m := range []struct {
		name string
		want int
	}{
		{`firehose_http_readings_refused_total{reason="unauthorized"}`, h.unauthorized},
		{`firehose_http_readings_refused_total{reason="forbidden"}`, h.forbidden},
		// Another device's topic (MQTT 5 and 3.1.1); the revoked device
		// is disconnected, not refused.
		{`firehose_mqtt_readings_refused_total{reason="not_authorized"}`, 2},
	} {
		if got, _ := s.Metric(m.name); int(got) != m.want {
			t.Errorf("%s = %v, want %d", m.name, got, m.want)
		}
	}

	// Credentials never appear in logs: not the stack's (at debug level),
	// not the simulator's.
	s.Stop(30 * time.Second)
	out := s.Proc.Output()
	if !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "mqtt connect refused: bad credentials") {
		t.Errorf("the stack did not log at debug level, so the log check proves nothing; output starts %.500q", out)
	}
	for what, secret := range secrets {
		if strings.Contains(out, secret) {
			t.Errorf("the %s appears in the stack's log", what)
		}
		if strings.Contains(l.Output(), secret) {
			t.Errorf("the %s appears in the simulator's output", what)
		}
	}

	r := ResultOf(rep)
	r.Scenario = "9. who gets in"
	r.Load = LoadDesc(rep) + ", MQTT over TLS with per-device passwords, HTTP with an API key"
	r.Faults = "wrong/unknown/missing MQTT passwords, publishing under another device's id (MQTT 5 and 3.1.1), a device revoked while connected (disconnected, by topic and topic alias after), missing/unknown/revoked/hashed API keys, a key used for a device it is not bound to, plain-text MQTT to the TLS-only listener"
	r.Notes = fmt.Sprintf("each refused (CONNACK 0x86, PUBACK 0x87, 3.1.1 disconnect, HTTP 401 x%d, 403 for %d readings, TLS port closed); nothing of theirs landed; %d log lines at debug level hold no password or key",
		h.unauthorized, h.forbidden, strings.Count(out, "\n"))
	Record(t, r)
}

// auV3Creds sets an MQTT 3.1.1 client's TLS trust and credentials.
func auV3Creds(pool *x509.CertPool, user, password string) func(*mqtt3.ClientOptions) {
	return func(o *mqtt3.ClientOptions) {
		o.SetTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}).SetUsername(user).SetPassword(password)
	}
}

// auConnectV5Code connects an MQTT 5 client over TLS and returns the
// CONNACK's reason code (disconnecting again when it was accepted).
func auConnectV5Code(t *testing.T, addr string, pool *x509.CertPool, clientID, user, password string) (byte, error) {
	t.Helper()
	conn, err := edgeDialTLS(addr, pool)
	if err != nil {
		return 0xff, err
	}
	cp := &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30,
		Username: user, UsernameFlag: user != "", Password: []byte(password), PasswordFlag: password != ""}
	c, ca, err := edgeConnectV5(t, conn, cp)
	if c != nil {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	}
	if ca == nil {
		return 0xff, err
	}
	return ca.ReasonCode, err
}

func auMustV5(t *testing.T, addr string, pool *x509.CertPool, device, password string) *edgeV5 {
	t.Helper()
	conn, err := edgeDialTLS(addr, pool)
	if err != nil {
		t.Fatal(err)
	}
	c, ca, err := edgeConnectV5(t, conn, &paho.Connect{ClientID: device, CleanStart: true, KeepAlive: 30,
		Username: device, UsernameFlag: true, Password: []byte(password), PasswordFlag: true})
	if err != nil {
		t.Fatalf("MQTT 5 connect of %s: %v (CONNACK %+v)", device, err, ca)
	}
	return c
}

func auExpectV5(t *testing.T, c *edgeV5, what, topic, payload string, want byte) {
	t.Helper()
	code, ok, err := c.publish(topic, []byte(payload))
	if !ok || code != want {
		t.Errorf("%s: PUBACK %v, reason code 0x%02x (%v), want 0x%02x", what, ok, code, err, want)
	}
}

// auPublishAlias publishes at QoS 1 with a topic alias (and the topic, to
// set the alias, or "" to use it).
func auPublishAlias(c *edgeV5, topic string, alias uint16, payload string) (byte, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload),
		Properties: &paho.PublishProperties{TopicAlias: &alias}})
	if resp != nil {
		return resp.ReasonCode, true, nil
	}
	return 0, false, err
}

// auPlainToTLS speaks plain MQTT to the TLS listener: it must get no
// CONNACK, and the connection must close.
func auPlainToTLS(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial the TLS listener: %v", err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := conn.Write(edgeConnectPacket(5, "bad-auth-plain", "", "")); err != nil {
		return // closed at once: refused
	}
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	got, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("plain-text MQTT to the TLS-only listener: the connection stayed open %s", time.Since(start).Round(time.Millisecond))
	}
	if len(got) > 0 && got[0] == 0x20 {
		t.Errorf("plain-text MQTT to the TLS-only listener got a CONNACK: % x", got)
	}
	t.Logf("plain-text MQTT to the TLS-only listener: closed after %s; the server sent % x", time.Since(start).Round(time.Millisecond), got)
}

// auLogFailure logs, for a failed run, what the stack said about the
// test's own clients and what it warned about.
func auLogFailure(t *testing.T, out string) {
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "-auth-") || strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			keep = append(keep, line)
		}
	}
	if len(keep) > 300 {
		keep = keep[len(keep)-300:]
	}
	t.Logf("the stack's log about the test's clients, and its warnings:\n%s", strings.Join(keep, "\n"))
	if os.Getenv("FIREHOSE_FAULTS_DUMP") != "" {
		_ = os.WriteFile(os.Getenv("FIREHOSE_FAULTS_DUMP"), []byte(out), 0o644)
	}
}
