package broker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"firehose/internal/testcert"
	"firehose/internal/testenv"
)

// mosquitto runs a mosquitto command-line client (mosquitto_pub or
// mosquitto_sub) against the broker's TLS listener with a device
// certificate, and returns what it printed and how it ended.
func mosquitto(t *testing.T, s *testStack, pki *testcert.PKI, bin, cert, key string, args ...string) (string, error) {
	t.Helper()
	host, port, _ := strings.Cut(s.b.Addr(tlsListener).String(), ":")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	all := append([]string{"-h", host, "-p", port, "--cafile", pki.CA, "--cert", cert, "--key", key}, args...)
	out, err := exec.CommandContext(ctx, "/usr/bin/"+bin, all...).CombinedOutput()
	return string(out), err
}

func needMosquitto(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"mosquitto_pub", "mosquitto_sub"} {
		if _, err := os.Stat("/usr/bin/" + bin); err != nil {
			t.Skipf("%s not installed (%v): install the mosquitto-clients package to run this interop test", bin, err)
		}
	}
}

// certStack serves MQTT over TLS requiring certificates of pki's CA, with its
// CRL, into PostgreSQL; authFile is --mqtt-auth (empty: none).
func certStack(t *testing.T, pki *testcert.PKI, authFile string) *testStack {
	t.Helper()
	return newStack(t, stackOptions{bridge: true, cfg: Config{
		Addr: "127.0.0.1:0", TLSAddr: "127.0.0.1:0", TLSCert: pki.ServerCert, TLSKey: pki.ServerKey,
		TLSClientCA: pki.CA, TLSCRL: pki.CRL, AuthFile: authFile,
	}})
}

// TestIntegrationClientCertificatesMosquitto drives the certificate listener
// with mosquitto_pub and mosquitto_sub, certificates made by openssl,
// without --mqtt-auth: the good devices' readings land in PostgreSQL; a
// client id or username naming another device, another device's topics, an
// expired, revoked, server-only or usage-less certificate are refused; a
// subscriber whose certificate is revoked while it is connected is cut off.
func TestIntegrationClientCertificatesMosquitto(t *testing.T) {
	needMosquitto(t)
	t.Parallel()
	pki := testcert.NewPKI(t)
	goodCert, goodKey := pki.Device("cert-dev", testcert.DeviceOptions{})
	otherCert, otherKey := pki.Device("cert-other", testcert.DeviceOptions{})
	doomedCert, doomedKey := pki.Device("doomed", testcert.DeviceOptions{})
	revokedCert, revokedKey := pki.Device("revoked", testcert.DeviceOptions{})
	pki.Revoke(revokedCert)
	s := certStack(t, pki, "")

	pub := func(cert, key string, args ...string) (string, error) {
		return mosquitto(t, s, pki, "mosquitto_pub", cert, key, append([]string{"-q", "1"}, args...)...)
	}
	for _, v := range []string{"mqttv5", "mqttv311"} {
		if out, err := pub(goodCert, goodKey, "-V", v, "-i", "cert-dev", "-t", "devices/cert-dev/readings", "-m", `{"reading": 1, "via": "`+v+`"}`); err != nil || out != "" {
			t.Errorf("mosquitto_pub -V %s with the device's certificate: %v: %s", v, err, out)
		}
	}
	// The username may name the device itself; no password is needed.
	if out, err := pub(goodCert, goodKey, "-V", "mqttv5", "-i", "cert-dev", "-u", "cert-dev", "-t", "devices/cert-dev/readings", "-m", "3"); err != nil || out != "" {
		t.Errorf("mosquitto_pub -u cert-dev with its certificate: %v: %s", err, out)
	}
	if out, err := pub(otherCert, otherKey, "-V", "mqttv5", "-i", "cert-other", "-t", "devices/cert-other/readings", "-m", "4"); err != nil || out != "" {
		t.Errorf("mosquitto_pub as cert-other: %v: %s", err, out)
	}

	type refusal struct {
		name      string
		cert, key string
		args      []string
		want      string // in mosquitto's output, lower case; "": a failed TLS handshake
	}
	refusals := []refusal{
		{"client id of another device", goodCert, goodKey, []string{"-V", "mqttv5", "-i", "cert-other", "-t", "devices/cert-other/readings"}, "client identifier not valid"},
		{"client id of another device, 3.1.1", goodCert, goodKey, []string{"-V", "mqttv311", "-i", "cert-other", "-t", "devices/cert-other/readings"}, "identifier rejected"},
		{"username of another device", goodCert, goodKey, []string{"-V", "mqttv5", "-i", "cert-dev", "-u", "cert-other", "-t", "devices/cert-other/readings"}, "not authorized"},
		{"another device's topic", goodCert, goodKey, []string{"-V", "mqttv5", "-i", "cert-dev", "-t", "devices/cert-other/readings"}, "not authorized"},
		{"revoked", revokedCert, revokedKey, []string{"-i", "revoked", "-t", "devices/revoked/readings"}, ""},
	}
	for _, o := range []struct {
		name string
		opts testcert.DeviceOptions
	}{
		{"expired", testcert.DeviceOptions{Expired: true}},
		{"no-usage", testcert.DeviceOptions{Usage: "none"}},
		{"server-only", testcert.DeviceOptions{Usage: "serverAuth"}},
	} {
		cert, key := pki.Device(o.name, o.opts)
		refusals = append(refusals, refusal{o.name, cert, key, []string{"-i", o.name, "-t", "devices/" + o.name + "/readings"}, ""})
	}
	for _, r := range refusals {
		out, err := pub(r.cert, r.key, append(r.args, "-m", "99")...)
		if (r.want == "" && err == nil) || !strings.Contains(strings.ToLower(out), r.want) {
			t.Errorf("%s: mosquitto_pub ended with %v, printed %q; want a refusal saying %q", r.name, err, out, r.want)
		}
	}
	// Nor may a device read another's topics (all its filters refused:
	// mosquitto_sub gives up).
	if out, err := mosquitto(t, s, pki, "mosquitto_sub", goodCert, goodKey, "-V", "mqttv5", "-i", "cert-dev", "-t", "devices/cert-other/#", "-C", "1"); !strings.Contains(strings.ToLower(out), "denied") {
		t.Errorf("mosquitto_sub of another device's topics: %v: %q, want the subscription denied", err, out)
	}

	// A subscriber connected with a certificate that is then revoked is
	// disconnected once the broker reads the new CRL.
	host, port, _ := strings.Cut(s.b.Addr(tlsListener).String(), ":")
	sub := exec.Command("/usr/bin/mosquitto_sub", "-h", host, "-p", port, "--cafile", pki.CA, "--cert", doomedCert, "--key", doomedKey,
		"-V", "mqttv5", "-i", "doomed", "-t", "devices/doomed/#")
	var subOut strings.Builder
	sub.Stdout, sub.Stderr = &subOut, &subOut
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sub.Wait() }()
	t.Cleanup(func() { _ = sub.Process.Kill(); <-exited })
	testenv.Eventually(t, 10*time.Second, func() bool {
		cl, ok := s.b.srv.Clients.Get("doomed")
		return ok && !cl.Closed()
	}, "the doomed subscriber did not connect")
	pki.Revoke(doomedCert)
	select {
	case <-exited:
		exited <- nil // for the cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("the subscriber whose certificate was revoked is still connected 15s after the CRL was rewritten")
	}
	// Counted once the CRL's pass over the clients ends, after it
	// disconnected them.
	testenv.Await(t, func() bool { return s.metric("firehose_mqtt_certificates_revoked_disconnects_total") >= 1 }, "the revocation counted")
	if n := s.metric("firehose_mqtt_certificates_revoked_disconnects_total"); n != 1 {
		t.Errorf("firehose_mqtt_certificates_revoked_disconnects_total = %v, want 1", n)
	}
	if out, err := pub(doomedCert, doomedKey, "-i", "doomed", "-t", "devices/doomed/readings", "-m", "5"); err == nil {
		t.Errorf("a revoked certificate connected again: %s", out)
	}

	s.settle(4, 15*time.Second)
	got := map[string]int{}
	for _, r := range s.rows("") {
		got[r.Device]++
	}
	if len(got) != 2 || got["cert-dev"] != 3 || got["cert-other"] != 1 {
		t.Errorf("rows by device %v, want cert-dev 3, cert-other 1 and nothing else", got)
	}
	if n := s.metric("firehose_mqtt_connects_refused_total", "reason", "client_id"); n != 2 {
		t.Errorf("connects refused for their client id: %v, want 2", n)
	}
	if n := s.metric("firehose_mqtt_connects_refused_total", "reason", "username"); n != 1 {
		t.Errorf("connects refused for their username: %v, want 1", n)
	}
}

// TestIntegrationClientCertificatesWithAuthFile: with --mqtt-auth too, a
// certificate needs no password, its credentials line grants it more, a
// certificate device without a line still publishes its own readings, and
// password clients on the plain listener are unchanged.
func TestIntegrationClientCertificatesWithAuthFile(t *testing.T) {
	needMosquitto(t)
	t.Parallel()
	pki := testcert.NewPKI(t)
	opsCert, opsKey := pki.Device("ops", testcert.DeviceOptions{})
	devCert, devKey := pki.Device("lonely", testcert.DeviceOptions{})
	authFile := filepath.Join(t.TempDir(), "auth.txt")
	hash := func(pw string) string {
		h, err := HashPassword(pw)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	writeCredentials(t, authFile, map[string]string{"ops": hash("ops-secret") + " write=devices/+/commands", "pw-dev": hash("pw-secret")})
	s := certStack(t, pki, authFile)

	pub := func(cert, key string, args ...string) (string, error) {
		return mosquitto(t, s, pki, "mosquitto_pub", cert, key, append([]string{"-q", "1", "-V", "mqttv5"}, args...)...)
	}
	if out, err := pub(opsCert, opsKey, "-i", "ops", "-t", "devices/pump-1/commands", "-m", "stop"); err != nil || out != "" {
		t.Errorf("ops publishing on its write grant with its certificate: %v: %s", err, out)
	}
	if out, err := pub(devCert, devKey, "-i", "lonely", "-t", "devices/pump-1/commands", "-m", "stop"); !strings.Contains(strings.ToLower(out), "not authorized") {
		t.Errorf("a certificate device without grants publishing another's commands: %v: %q, want not authorized", err, out)
	}
	if out, err := pub(devCert, devKey, "-i", "lonely", "-t", "devices/lonely/readings", "-m", "7"); err != nil || out != "" {
		t.Errorf("a certificate device without a credentials line publishing its readings: %v: %s", err, out)
	}
	host, port, _ := strings.Cut(s.tcpAddr(), ":")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "/usr/bin/mosquitto_pub", "-h", host, "-p", port, "-V", "mqttv5", "-q", "1", "-i", "pw-dev",
		"-u", "pw-dev", "-P", "pw-secret", "-t", "devices/pw-dev/readings", "-m", "8").CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("a password client on the plain listener: %v: %s", err, out)
	}
	s.settle(2, 15*time.Second)
	got := map[string]int{}
	for _, r := range s.rows("") {
		got[r.Device]++
	}
	if len(got) != 2 || got["lonely"] != 1 || got["pw-dev"] != 1 {
		t.Errorf("rows by device %v, want lonely 1, pw-dev 1", got)
	}
}
