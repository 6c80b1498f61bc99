package broker

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"firehose/internal/testcert"
	"firehose/internal/testenv"
)

// writeTicketKeys writes a session ticket key file of one random key.
func writeTicketKeys(t *testing.T, path string) {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// resumeClient is a device's TLS configuration with a session cache of its
// own, kept across its reconnects as a device's TLS stack keeps it.
func resumeClient(t *testing.T, caFile, cert, key string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: pool, ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc
}

// connectTLS connects an MQTT 5 client over the stack's TLS listener and
// reports whether its TLS session resumed; the error is the handshake's or
// the CONNECT's.
func connectTLS(t *testing.T, s *testStack, tc *tls.Config, cp *paho.Connect) (*v5Client, bool, error) {
	t.Helper()
	conn, err := tls.Dial("tcp", s.b.Addr(tlsListener).String(), tc)
	if err != nil {
		return nil, false, err
	}
	resumed := conn.ConnectionState().DidResume
	c, _, err := connectV5Conn(t, conn, cp)
	if err != nil {
		_ = conn.Close()
		return nil, resumed, err
	}
	return c, resumed, nil
}

// bye disconnects c and waits until the server has let it go.
func bye(t *testing.T, c *v5Client) {
	t.Helper()
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("MQTT 5 client did not shut down")
	}
}

// TestIntegrationTLSResumptionClientCertificates: with
// --mqtt-tls-ticket-keys a device's TLS session resumes on a restarted
// broker (a new process's listener, the same key file), its client
// certificate, carried in the session, still makes it the same device;
// with another key file it makes a full handshake; and a certificate
// revoked since its session began fails the resumed handshake.
func TestIntegrationTLSResumptionClientCertificates(t *testing.T) {
	t.Parallel()
	pki := testcert.NewPKI(t)
	devCert, devKey := pki.Device("resume-dev", testcert.DeviceOptions{})
	doomedCert, doomedKey := pki.Device("resume-doomed", testcert.DeviceOptions{})
	dir := t.TempDir()
	keys, otherKeys := filepath.Join(dir, "keys"), filepath.Join(dir, "other-keys")
	writeTicketKeys(t, keys)
	writeTicketKeys(t, otherKeys)
	edge := func(ticketKeys string) *testStack {
		return newStack(t, stackOptions{cfg: Config{
			TLSAddr: "127.0.0.1:0", TLSCert: pki.ServerCert, TLSKey: pki.ServerKey,
			TLSClientCA: pki.CA, TLSCRL: pki.CRL, TLSTicketKeys: ticketKeys,
		}})
	}
	dev := resumeClient(t, pki.CA, devCert, devKey)
	doomed := resumeClient(t, pki.CA, doomedCert, doomedKey)
	connect := func(s *testStack, tc *tls.Config, id string) (*v5Client, bool, error) {
		return connectTLS(t, s, tc, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	}

	first := edge(keys)
	for _, d := range []struct {
		tc *tls.Config
		id string
	}{{dev, "resume-dev"}, {doomed, "resume-doomed"}} {
		c, resumed, err := connect(first, d.tc, d.id)
		if err != nil || resumed {
			t.Fatalf("%s's first connection: resumed %v, %v; want a full handshake", d.id, resumed, err)
		}
		bye(t, c)
	}
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}

	// Restarted with the same key file: the session resumes, and the
	// certificate in it names the device.
	pki.Revoke(doomedCert)
	second := edge(keys)
	c, resumed, err := connect(second, dev, "resume-dev")
	if err != nil || !resumed {
		t.Fatalf("after the restart: resumed %v, %v; want a resumed session", resumed, err)
	}
	if code := publishV5(t, c, "devices/resume-dev/readings", 1, `{"reading": 1}`); code != 0 {
		t.Errorf("the resumed device's own reading: reason code %#x, want 0", code)
	}
	if code := publishV5(t, c, "devices/someone-else/readings", 1, `{"reading": 1}`); code != 0x87 {
		t.Errorf("another device's readings from the resumed session: reason code %#x, want 0x87", code)
	}
	cl, ok := second.b.srv.Clients.Get("resume-dev")
	if !ok || string(cl.Properties.Username) != "resume-dev" {
		t.Errorf("the resumed client's device: %v %q, want resume-dev", ok, cl.Properties.Username)
	}
	bye(t, c)
	// A client id naming another device is still refused.
	if _, resumed, err := connect(second, dev, "resume-doomed"); err == nil || !resumed {
		t.Errorf("a resumed session naming another device as client id: resumed %v, %v; want resumed and refused", resumed, err)
	}

	// Revoked since its session began: the resumed handshake fails
	// (VerifyConnection runs on resumption too).
	if _, _, err := connect(second, doomed, "resume-doomed"); err == nil {
		t.Error("a device whose certificate was revoked since resumed its session and connected")
	}
	// The server counts the failure after sending its alert: wait for it.
	testenv.Eventually(t, 10*time.Second, func() bool {
		return second.metric("firehose_mqtt_tls_handshakes_total", "result", "failed", "resumed", "true") == 1
	}, "resumed handshakes failed: want 1 (the revoked certificate)")
	if n := second.metric("firehose_mqtt_tls_handshakes_total", "result", "ok", "resumed", "true"); n != 2 {
		t.Errorf("resumed handshakes ok: %v, want 2", n)
	}
	if n := second.metric("firehose_mqtt_tls_handshakes_total", "result", "ok", "resumed", "false"); n != 0 {
		t.Errorf("full handshakes ok: %v, want 0", n)
	}
	if err := second.stop(); err != nil {
		t.Fatal(err)
	}

	// Another key file: the ticket is not accepted, a full handshake.
	third := edge(otherKeys)
	c, resumed, err = connect(third, dev, "resume-dev")
	if err != nil || resumed {
		t.Fatalf("with another key file: resumed %v, %v; want a full handshake", resumed, err)
	}
	bye(t, c)
}

// TestIntegrationTLSResumptionCredentials: a device with a secret resumes
// its TLS session across a restart, and its credentials are still checked
// at CONNECT: once its line is removed, the resumed session is refused.
func TestIntegrationTLSResumptionCredentials(t *testing.T) {
	t.Parallel()
	pki := testcert.NewPKI(t)
	dir := t.TempDir()
	keys, authFile := filepath.Join(dir, "keys"), filepath.Join(dir, "auth.txt")
	writeTicketKeys(t, keys)
	hash, err := HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	writeCredentials(t, authFile, map[string]string{"pw-dev": hash})
	edge := func() *testStack {
		return newStack(t, stackOptions{cfg: Config{
			TLSAddr: "127.0.0.1:0", TLSCert: pki.ServerCert, TLSKey: pki.ServerKey, TLSTicketKeys: keys, AuthFile: authFile,
		}})
	}
	dev := resumeClient(t, pki.CA, "", "")
	first := edge()
	c, resumed, err := connectTLS(t, first, dev, v5Creds("pw-dev", "pw-dev", "s3cret"))
	if err != nil || resumed {
		t.Fatalf("first connection: resumed %v, %v; want a full handshake", resumed, err)
	}
	bye(t, c)
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}

	second := edge()
	c, resumed, err = connectTLS(t, second, dev, v5Creds("pw-dev", "pw-dev", "s3cret"))
	if err != nil || !resumed {
		t.Fatalf("after the restart: resumed %v, %v; want a resumed session", resumed, err)
	}
	bye(t, c)
	if _, resumed, err := connectTLS(t, second, dev, v5Creds("pw-dev", "pw-dev", "wrong")); err == nil || !resumed {
		t.Errorf("a wrong secret over a resumed session: resumed %v, %v; want resumed and refused", resumed, err)
	}
	if err := second.stop(); err != nil {
		t.Fatal(err)
	}

	writeCredentials(t, authFile, map[string]string{"other": hash})
	third := edge()
	if _, resumed, err := connectTLS(t, third, dev, v5Creds("pw-dev", "pw-dev", "s3cret")); err == nil || !resumed {
		t.Errorf("a removed device over a resumed session: resumed %v, %v; want resumed and refused", resumed, err)
	}
}
