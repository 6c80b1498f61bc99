package httpgw

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"firehose/internal/testcert"
	"firehose/internal/testenv"
)

// TestIntegrationTLSResumption: with --http-tls-ticket-keys a client's TLS
// session resumes on a restarted gateway with the same key file (through
// http.Server's clone of the TLS config), and the client certificate in
// the session still names its device.
func TestIntegrationTLSResumption(t *testing.T) {
	pki := testcert.NewPKI(t)
	cert, key := pki.Device("resume-dev", testcert.DeviceOptions{})
	keys := filepath.Join(t.TempDir(), "keys")
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keys, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, _, _ := startProducer(t)
	start := func() (base string, stop func()) {
		s := newTestServer(t, Config{Addr: "127.0.0.1:0", TLSCert: pki.ServerCert, TLSKey: pki.ServerKey,
			TLSClientCA: pki.CA, TLSTicketKeys: keys}, p)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		testenv.Eventually(t, 5*time.Second, func() bool { return s.Addr() != nil }, "server not listening")
		return "https://" + s.Addr().String(), func() { cancel(); <-done }
	}
	caPEM, err := os.ReadFile(pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{pair}, ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	// post sends body on a new connection and returns the status code and
	// whether the TLS session resumed.
	post := func(base, body string) (int, bool) {
		t.Helper()
		tr := &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Post(base+"/v1/readings", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.TLS.DidResume
	}

	base, stop := start()
	if code, resumed := post(base, `{"device_id": "resume-dev", "reading": 1}`); code != 200 || resumed {
		t.Fatalf("first request: %d, resumed %v; want 200 on a full handshake", code, resumed)
	}
	stop()
	base, stop = start()
	defer stop()
	if code, resumed := post(base, `{"device_id": "resume-dev", "reading": 2}`); code != 200 || !resumed {
		t.Errorf("after the restart: %d, resumed %v; want 200 on a resumed session", code, resumed)
	}
	if code, resumed := post(base, `{"device_id": "pump-9", "reading": 3}`); code != 403 || !resumed {
		t.Errorf("another device's reading on a resumed session: %d, resumed %v; want 403", code, resumed)
	}
}
