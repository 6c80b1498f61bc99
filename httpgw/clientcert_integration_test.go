package httpgw

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"firehose/bridge"
	"firehose/broker"
	"firehose/internal/devsecret"
	"firehose/internal/testcert"
	"firehose/internal/testenv"
	"firehose/stream"
)

// startBridge lands the streams' readings in a database of the test's own
// and returns a pool on it.
func startBridge(t *testing.T, rdb *redis.Client, streams stream.Streams) *pgxpool.Pool {
	t.Helper()
	pgURL := testenv.Postgres(t)
	pool, err := pgxpool.New(t.Context(), pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	br, err := bridge.New(bridge.Config{Postgres: pgURL, Streams: streams, BatchSize: 100, BatchAge: 20 * time.Millisecond,
		LockRetry: 100 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}, rdb, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = br.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return pool
}

// curl posts body to path over HTTPS (body "": gets it) with a client
// certificate (cert "" sends none) and returns the status code and the
// answer; err is curl's failure (a refused handshake).
func curl(t *testing.T, base, ca, cert, key, path, body string, header ...string) (string, error) {
	t.Helper()
	args := []string{"-sS", "--cacert", ca, "-o", "-", "-w", " %{http_code}"}
	if body != "" {
		args = append(args, "-H", "Content-Type: application/json", "--data-binary", body)
	}
	if cert != "" {
		args = append(args, "--cert", cert, "--key", key)
	}
	for _, h := range header {
		args = append(args, "-H", h)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", append(args, base+path)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestIntegrationClientCertificatesCurl serves HTTPS requiring certificates
// of a CA made by openssl and posts with curl: the device's own readings
// land in PostgreSQL, readings of another device are refused 403 naming it,
// a client without a certificate reaches /livez and /metrics but is refused
// 401 on the readings endpoints, clients with an expired, revoked,
// server-only or usage-less one fail the handshake, and a keep-alive connection whose
// certificate is revoked is refused at its next request.
func TestIntegrationClientCertificatesCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skipf("curl not installed: %v", err)
	}
	pki := testcert.NewPKI(t)
	goodCert, goodKey := pki.Device("cert-dev", testcert.DeviceOptions{})
	doomedCert, doomedKey := pki.Device("doomed", testcert.DeviceOptions{})
	revokedCert, revokedKey := pki.Device("revoked", testcert.DeviceOptions{})
	pki.Revoke(revokedCert)

	p, rdb, streams := startProducer(t)
	pool := startBridge(t, rdb, streams)
	s := newTestServer(t, Config{Addr: "127.0.0.1:0", TLSCert: pki.ServerCert, TLSKey: pki.ServerKey,
		TLSClientCA: pki.CA, TLSCRL: pki.CRL}, p)
	s.keyCheckEvery = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testenv.Eventually(t, 5*time.Second, func() bool { return s.Addr() != nil }, "server not listening")
	base := "https://" + s.Addr().String()

	for _, c := range []struct {
		name, path, body string
		header           []string
		want             string // the answer's end: status code
		says             string // in the answer
	}{
		{"own reading", "/v1/readings", `{"device_id": "cert-dev", "reading": 1}`, nil, "200", `"accepted":1`},
		{"fast, device from the certificate", "/readings/fast", `{"id": 1, "reading": 2}`, nil, "200", "buffered"},
		{"another device's reading", "/v1/readings", `[{"device_id": "cert-dev", "reading": 3}, {"device_id": "pump-9", "reading": 4}]`, nil, "403", `"device_id":"pump-9"`},
		{"fast for another device", "/readings/fast", `{"id": 2, "reading": 5}`, []string{"X-Device-ID: pump-9"}, "403", "pump-9"},
	} {
		out, err := curl(t, base, pki.CA, goodCert, goodKey, c.path, c.body, c.header...)
		if err != nil || !strings.HasSuffix(out, c.want) || !strings.Contains(out, c.says) {
			t.Errorf("%s: curl: %v: %s; want %s saying %s", c.name, err, out, c.want, c.says)
		}
	}
	// Without a certificate, the handshake passes (probes and scrapers
	// need none) but the readings endpoints answer 401.
	for path, want := range map[string]string{"/v1/readings": "401", "/readings/fast": "401", "/livez": "200", "/metrics": "200"} {
		body := `{"device_id": "cert-dev", "reading": 8}`
		if path == "/livez" || path == "/metrics" {
			body = ""
		}
		if out, err := curl(t, base, pki.CA, "", "", path, body); err != nil || !strings.HasSuffix(out, " "+want) {
			t.Errorf("no certificate, %s: curl: %v: %.200s; want %s", path, err, out, want)
		}
	}
	refused := map[string][2]string{"revoked": {revokedCert, revokedKey}}
	for _, o := range []struct {
		name string
		opts testcert.DeviceOptions
	}{
		{"expired", testcert.DeviceOptions{Expired: true}},
		{"no-usage", testcert.DeviceOptions{Usage: "none"}},
		{"server-only", testcert.DeviceOptions{Usage: "serverAuth"}},
	} {
		cert, key := pki.Device(o.name, o.opts)
		refused[o.name] = [2]string{cert, key}
	}
	for name, ck := range refused {
		dev := strings.TrimSuffix(ck[0][strings.LastIndex(ck[0], "/")+1:], ".pem")
		if out, err := curl(t, base, pki.CA, ck[0], ck[1], "/v1/readings", `{"device_id": "`+dev+`", "reading": 9}`); err == nil {
			t.Errorf("%s: curl was answered: %s; want the handshake refused", name, out)
		}
	}

	// A keep-alive connection outlives the revocation of its certificate:
	// its next request is refused, and the connection closed.
	pair, err := tls.LoadX509KeyPair(doomedCert, doomedKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	var handshakes atomic.Int32
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, Certificates: []tls.Certificate{pair},
		VerifyConnection: func(tls.ConnectionState) error { handshakes.Add(1); return nil },
	}}}
	postDoomed := func() int {
		resp, err := client.Post(base+"/v1/readings", "application/json", strings.NewReader(`{"device_id": "doomed", "reading": 6}`))
		if err != nil {
			t.Fatalf("post as doomed: %v", err)
		}
		defer resp.Body.Close()
		readAll(t, resp.Body)
		return resp.StatusCode
	}
	if code := postDoomed(); code != 200 {
		t.Fatalf("doomed before its revocation: %d", code)
	}
	pki.Revoke(doomedCert)
	var last int
	testenv.Eventually(t, 10*time.Second, func() bool { last = postDoomed(); return last == 403 }, "the revoked certificate's keep-alive connection was still answered %d", last)
	if n := handshakes.Load(); n != 1 {
		t.Errorf("%d handshakes, want 1: the refusal came on the kept-alive connection", n)
	}

	// The accepted readings, and only they, land in PostgreSQL: cert-dev
	// twice, doomed at least once (before the revocation; the wait may
	// have posted more).
	testenv.Eventually(t, 15*time.Second, func() bool {
		var n int
		err := pool.QueryRow(t.Context(), "SELECT count(*) FROM readings WHERE device_id = 'cert-dev'").Scan(&n)
		return err == nil && n == 2
	}, "the device's two readings did not land")
	var others []string
	rows, err := pool.Query(t.Context(), "SELECT DISTINCT device_id FROM readings WHERE device_id NOT IN ('cert-dev', 'doomed')")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			t.Fatal(err)
		}
		others = append(others, d)
	}
	if len(others) > 0 {
		t.Errorf("readings of %v landed: only the certificates' own devices may post", others)
	}
}

// TestIntegrationCertificateOrSecret: with both --http-tls-client-ca and
// --http-device-auth, a device identifies itself by either: a certificate
// needs no secret, a secret needs no certificate, and neither is a 401;
// each may post only its own readings.
func TestIntegrationCertificateOrSecret(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skipf("curl not installed: %v", err)
	}
	pki := testcert.NewPKI(t)
	cert, key := pki.Device("cert-dev", testcert.DeviceOptions{})
	secret, hash, err := devsecret.New()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "mqtt-auth")
	if err := os.WriteFile(file, []byte("pump-1 "+hash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := broker.OpenCredentialsFile(file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	watch(t, src)
	p, _, _ := startProducer(t)
	s := newTestServer(t, Config{Addr: "127.0.0.1:0", TLSCert: pki.ServerCert, TLSKey: pki.ServerKey,
		TLSClientCA: pki.CA, TLSCRL: pki.CRL, DeviceAuth: DeviceAuthMQTT, Devices: sourceDevices{src}}, p)
	runServer(t, s)
	base := "https://" + s.Addr().String()
	basic := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("pump-1:"+secret))
	for _, c := range []struct {
		name, cert, key, body string
		header                []string
		want                  string
	}{
		{"certificate, no secret", cert, key, `{"device_id": "cert-dev", "reading": 1}`, nil, "200"},
		{"secret, no certificate", "", "", `{"device_id": "pump-1", "reading": 2}`, []string{basic}, "200"},
		{"neither", "", "", `{"device_id": "pump-1", "reading": 3}`, nil, "401"},
		{"certificate, another device's reading", cert, key, `{"device_id": "pump-1", "reading": 4}`, nil, "403"},
		{"secret, another device's reading", "", "", `{"device_id": "cert-dev", "reading": 5}`, []string{basic}, "403"},
	} {
		out, err := curl(t, base, pki.CA, c.cert, c.key, "/v1/readings", c.body, c.header...)
		if err != nil || !strings.HasSuffix(out, " "+c.want) {
			t.Errorf("%s: curl: %v: %s; want %s", c.name, err, out, c.want)
		}
	}
}
