package httpgw

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"firehose/ingest"
	"firehose/internal/testcert"
	"firehose/internal/testenv"
)

func TestProducerErrors(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantCode   int
		wantReason string // refusal reason, also in the answer for 503s
	}{
		{name: "backlog full", err: ingest.ErrBacklogFull, wantCode: 503, wantReason: "backlog_full"},
		{name: "redis unavailable, wrapped", err: fmt.Errorf("%w: xadd: dial tcp 10.0.0.7:6379: connection refused", ingest.ErrUnavailable), wantCode: 503, wantReason: "redis_unavailable"},
		{name: "overloaded", err: ingest.ErrOverloaded, wantCode: 503, wantReason: "overloaded"},
		{name: "closed", err: ingest.ErrClosed, wantCode: 503, wantReason: "closed"},
		{name: "unexpected", err: errors.New("boom"), wantCode: 500, wantReason: reasonError},
	}
	bodies := map[string]string{
		"/readings/fast": `{"id": 1, "reading": 2}`,
		"/v1/readings":   `[{"device_id": "a", "reading": 1}, {"device_id": "b", "reading": 2}]`,
	}
	for _, tt := range tests {
		for path, body := range bodies {
			t.Run(tt.name+" "+path, func(t *testing.T) {
				s := newTestServer(t, Config{}, &fakeProducer{err: tt.err})
				rec := post(s.Handler(), path, body)
				if rec.Code != tt.wantCode {
					t.Fatalf("code = %d, want %d; body %s", rec.Code, tt.wantCode, rec.Body)
				}
				a := decodeJSON[errorAnswer](t, rec)
				if tt.wantCode == 503 {
					if rec.Header().Get("Retry-After") != "1" || a.Reason != tt.wantReason {
						t.Errorf("Retry-After %q, reason %q; want 1, %s", rec.Header().Get("Retry-After"), a.Reason, tt.wantReason)
					}
				}
				if strings.Contains(a.Error, "10.0.0.7") || strings.Contains(a.Error, "boom") {
					t.Errorf("error %q tells the client about the inside of the deployment", a.Error)
				}
				want := 1.0
				if path == "/v1/readings" {
					want = 2
				}
				if got := refused(s, tt.wantReason); got != want {
					t.Errorf("refused{%s} = %v, want %v", tt.wantReason, got, want)
				}
				if got := requests(s, path, fmt.Sprint(tt.wantCode)); got != 1 {
					t.Errorf("requests{%s,%d} = %v, want 1", path, tt.wantCode, got)
				}
			})
		}
	}
}

// TestHalfClosedClientGetsTheRealAnswer: a client that sends its request and
// then half-closes its socket (shutdown(SHUT_WR), as some embedded HTTP
// stacks do) makes net/http cancel the request's context. The gateway still
// waits for the producer and sends its real answer: never an early, empty
// 200 while the readings are not confirmed (the answer net/http sends for a
// handler that returns without writing), on both endpoints.
func TestHalfClosedClientGetsTheRealAnswer(t *testing.T) {
	bodies := map[string]string{
		epFast: `{"id": 1, "reading": 2}`,
		epV1:   `{"device_id": "a", "reading": 1}`,
	}
	for _, tt := range []struct {
		name     string
		err      error
		wantCode int
	}{
		{"stored", nil, 200},
		{"redis failed", ingest.ErrUnavailable, 503},
	} {
		for path, body := range bodies {
			t.Run(tt.name+" "+path, func(t *testing.T) {
				p := &fakeProducer{err: tt.err, entered: make(chan struct{}, 1), release: make(chan struct{})}
				s := newTestServer(t, Config{Addr: "127.0.0.1:0"}, p)
				if err := s.Listen(); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(t.Context())
				ran := make(chan error, 1)
				go func() { ran <- s.Run(ctx) }()
				t.Cleanup(func() {
					cancel()
					if err := <-ran; err != nil {
						t.Errorf("Run: %v", err)
					}
				})

				conn, err := net.Dial("tcp", s.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
				if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
					t.Fatal(err)
				}
				select {
				case <-p.entered:
				case <-time.After(10 * time.Second):
					t.Fatal("the request did not reach the producer")
				}
				// Held in the producer: nothing may be answered yet.
				_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if n, err := conn.Read(make([]byte, 1)); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("answered (%d bytes, %v) before the producer confirmed the readings", n, err)
				}
				close(p.release)
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					t.Fatalf("no answer after the producer answered: %v", err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != tt.wantCode || len(b) == 0 {
					t.Errorf("answer %d %q, want %d with a body", resp.StatusCode, b, tt.wantCode)
				}
			})
		}
	}
}

func TestHealthAndRouting(t *testing.T) {
	dbErr := errors.New("connection refused")
	tests := []struct {
		name     string
		method   string
		path     string
		dbCheck  func(context.Context) error
		ready    error
		wantCode int
		wantBody string // substring
		header   [2]string
	}{
		{name: "health", method: "GET", path: "/health", wantCode: 200, wantBody: `{"status":"ok"}`},
		{name: "livez", method: "GET", path: "/livez", wantCode: 200, wantBody: `{"status":"ok"}`},
		{name: "health db not configured", method: "GET", path: "/health/db", wantCode: 503, wantBody: `not configured"`},
		{name: "health db ok", method: "GET", path: "/health/db", dbCheck: func(context.Context) error { return nil }, wantCode: 200, wantBody: `{"status":"ok"}`},
		{name: "health db down", method: "GET", path: "/health/db", dbCheck: func(context.Context) error { return dbErr }, wantCode: 503, wantBody: `"error":"connection refused"`},
		{
			name: "health db has a deadline", method: "GET", path: "/health/db", wantCode: 200, wantBody: `"ok"`,
			dbCheck: func(ctx context.Context) error {
				if d, ok := ctx.Deadline(); !ok || time.Until(d) > dbCheckTimeout {
					return errors.New("no 2s deadline")
				}
				return nil
			},
		},
		{name: "ready", method: "GET", path: "/readyz", wantCode: 200, wantBody: `{"status":"ok"}`},
		{name: "not ready", method: "GET", path: "/readyz", ready: ingest.ErrBacklogFull, wantCode: 503, wantBody: `"reason":"backlog_full"`},
		{name: "metrics", method: "GET", path: "/metrics", wantCode: 200, wantBody: "firehose_http_readings_accepted_total 0"},
		{name: "HEAD health", method: "HEAD", path: "/health", wantCode: 200},
		{name: "GET readings", method: "GET", path: "/v1/readings", wantCode: 405, wantBody: `"error"`, header: [2]string{"Allow", "POST"}},
		{name: "PUT fast", method: "PUT", path: "/readings/fast", wantCode: 405, header: [2]string{"Allow", "POST"}},
		{name: "POST health", method: "POST", path: "/health", wantCode: 405, header: [2]string{"Allow", "GET, HEAD"}},
		{name: "unknown path", method: "GET", path: "/nope", wantCode: 404, wantBody: `{"error":"not found"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Config{}, &fakeProducer{ready: tt.ready}, tt.dbCheck, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			rec := serve(s.Handler(), newRequest(tt.method, tt.path, ""))
			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("%s %s = %d %s; want %d with %s", tt.method, tt.path, rec.Code, rec.Body, tt.wantCode, tt.wantBody)
			}
			if tt.header[0] != "" && rec.Header().Get(tt.header[0]) != tt.header[1] {
				t.Errorf("%s = %q, want %q", tt.header[0], rec.Header().Get(tt.header[0]), tt.header[1])
			}
			if tt.path != "/metrics" && tt.method != "HEAD" && rec.Header().Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type = %q", rec.Header().Get("Content-Type"))
			}
		})
	}
}

func TestMetricsCountRequests(t *testing.T) {
	s := newTestServer(t, Config{}, &fakeProducer{})
	post(s.Handler(), "/readings/fast", `{"id": 1, "reading": 2}`)
	post(s.Handler(), "/readings/fast", `{"id": 1}`)
	post(s.Handler(), "/v1/readings", `[{"device_id": "a", "reading": 1}, {"device_id": "a", "reading": 2}]`)
	get(s.Handler(), "/nope")
	for _, c := range []struct {
		endpoint, code string
		want           float64
	}{{epFast, "200", 1}, {epFast, "422", 1}, {epV1, "200", 1}, {epOther, "404", 1}} {
		if got := requests(s, c.endpoint, c.code); got != c.want {
			t.Errorf("requests{%s,%s} = %v, want %v", c.endpoint, c.code, got, c.want)
		}
	}
	body := get(s.Handler(), "/metrics").Body.String()
	for _, want := range []string{
		"firehose_http_readings_accepted_total 3",
		`firehose_http_readings_refused_total{reason="invalid"} 1`,
		`firehose_http_request_duration_seconds_count{endpoint="/readings/fast"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{}.withDefaults()
	tests := []struct {
		name    string
		change  func(*Config)
		wantErr string // substring; "" for valid
	}{
		{name: "defaults", change: func(*Config) {}},
		{name: "cert without key", change: func(c *Config) { c.TLSCert = "c.pem" }, wantErr: "--http-tls-key is not"},
		{name: "key without cert", change: func(c *Config) { c.TLSKey = "k.pem" }, wantErr: "--http-tls-cert is not"},
		{name: "zero body", change: func(c *Config) { c.MaxBody = 0 }, wantErr: "--http-max-body 0"},
		{name: "negative items", change: func(c *Config) { c.MaxItems = -1 }, wantErr: "--http-max-items -1"},
		{name: "bad address", change: func(c *Config) { c.Addr = "8080" }, wantErr: "--http-addr"},
		{name: "bad default device", change: func(c *Config) { c.DefaultDevice = "a b" }, wantErr: "--default-device-id"},
		{name: "client CA without HTTPS", change: func(c *Config) { c.TLSClientCA = "ca.pem" }, wantErr: "--http-tls-client-ca ca.pem needs --http-tls-cert"},
		{name: "CRL without client CA", change: func(c *Config) { c.TLSCRL = "ca.crl" }, wantErr: "--http-tls-crl ca.crl needs --http-tls-client-ca"},
		{name: "unknown identity", change: func(c *Config) { c.TLSIdentity = "email" }, wantErr: "--http-tls-identity"},
		{name: "ticket keys without HTTPS", change: func(c *Config) { c.TLSTicketKeys = "keys" }, wantErr: "--http-tls-ticket-keys keys needs --http-tls-cert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.change(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error with %q", err, tt.wantErr)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Errorf("Validate() = %q, want one line", err)
			}
		})
	}
}

func TestRegisterFlags(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"--http-max-body", "2048", "--default-device-id", "dev-1"}); err != nil {
		t.Fatal(err)
	}
	want := Config{Addr: ":8080", MaxBody: 2048, MaxItems: 10000, DefaultDevice: "dev-1", TLSIdentity: "cn"}
	if c != want {
		t.Errorf("config = %+v, want %+v", c, want)
	}
	for _, name := range []string{"http-addr", "http-tls-cert", "http-tls-key", "http-tls-client-ca", "http-tls-identity", "http-tls-crl", "http-api-keys", "http-max-body", "http-max-items", "default-device-id"} {
		if fs.Lookup(name) == nil {
			t.Errorf("flag --%s not registered", name)
		}
	}
}

func TestListenAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := newTestServer(t, Config{Addr: ln.Addr().String()}, &fakeProducer{})
	err = s.Listen()
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "choose another with --http-addr") {
		t.Errorf("Listen() = %v, want an error naming %s and --http-addr", err, ln.Addr())
	}
	if s.Addr() != nil {
		t.Errorf("Addr() = %v after a failed Listen", s.Addr())
	}
}

func TestListenBadCertificate(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name      string
		cert, key string
		want      string
	}{
		{name: "missing cert", cert: missing, key: garbage, want: missing},
		{name: "missing key", cert: garbage, key: missing, want: missing},
		{name: "not PEM", cert: garbage, key: garbage, want: garbage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Config{Addr: "127.0.0.1:0", TLSCert: tt.cert, TLSKey: tt.key}, &fakeProducer{})
			if err := s.Listen(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Listen() = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

// TestRunTLS serves HTTPS with a self-signed certificate and refuses TLS 1.1.
func TestRunTLS(t *testing.T) {
	certFile, keyFile, pool := testcert.SelfSigned(t)
	s := newTestServer(t, Config{Addr: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile}, &fakeProducer{})
	stop := runServer(t, s)
	url := "https://" + s.Addr().String() + "/readings/fast"

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Post(url, "application/json", strings.NewReader(`{"id": 1, "reading": 1}`))
	if err != nil {
		t.Fatalf("post over TLS: %v", err)
	}
	if body := readAll(t, resp.Body); resp.StatusCode != 200 || resp.TLS == nil {
		t.Errorf("answer %d %s (TLS %v)", resp.StatusCode, body, resp.TLS != nil)
	}
	resp.Body.Close()

	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}}}
	if resp, err := old.Get("https://" + s.Addr().String() + "/health"); err == nil {
		resp.Body.Close()
		t.Errorf("TLS 1.1 client was served")
	}
	if err := stop(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}

// runServer starts s.Run and returns a function that stops it and returns
// Run's result.
func runServer(t *testing.T, s *Server) (stop func() error) {
	t.Helper()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	var result error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after its context ended")
			}
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// TestShutdownAnswersInFlight: when Run's context ends, readiness fails, the
// request waiting for the producer still gets its answer, and Run returns nil.
func TestShutdownAnswersInFlight(t *testing.T) {
	p := &fakeProducer{entered: make(chan struct{}, 1), release: make(chan struct{})}
	s := newTestServer(t, Config{Addr: "127.0.0.1:0"}, p)
	stop := runServer(t, s)
	base := "http://" + s.Addr().String()

	if rec := get(s.Handler(), "/readyz"); rec.Code != 200 {
		t.Fatalf("readyz before shutdown = %d", rec.Code)
	}
	answered := make(chan int, 1)
	go func() {
		resp, err := http.Post(base+"/readings/fast", "application/json", strings.NewReader(`{"id": 1, "reading": 1}`))
		if err != nil {
			t.Errorf("in-flight request: %v", err)
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	<-p.entered // the request waits in Add

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	testenv.Eventually(t, 5*time.Second, func() bool { return get(s.Handler(), "/readyz").Code == 503 }, "readyz still answers 200 while shutting down")
	if !strings.Contains(get(s.Handler(), "/readyz").Body.String(), `"reason":"shutting_down"`) {
		t.Errorf("readyz does not say shutting_down")
	}
	select {
	case err := <-stopped:
		t.Fatalf("Run returned %v before the in-flight request was answered", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(p.release)
	if code := <-answered; code != 200 {
		t.Errorf("in-flight request answered %d, want 200", code)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	if _, err := http.Get(base + "/health"); err == nil {
		t.Errorf("server still accepts connections after Run returned")
	}
}

// TestShutdownTimeout: a request that outlives ShutdownTimeout is cut off and
// Run says so.
func TestShutdownTimeout(t *testing.T) {
	p := &fakeProducer{entered: make(chan struct{}, 1), release: make(chan struct{})}
	defer close(p.release)
	s := newTestServer(t, Config{Addr: "127.0.0.1:0", ShutdownTimeout: 100 * time.Millisecond}, p)
	stop := runServer(t, s)
	go func() {
		resp, err := http.Post("http://"+s.Addr().String()+"/readings/fast", "application/json", strings.NewReader(`{"id": 1, "reading": 1}`))
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-p.entered
	if err := stop(); err == nil || !strings.Contains(err.Error(), "in flight") {
		t.Errorf("Run() = %v, want an error about requests in flight", err)
	}
}

func TestRunTwice(t *testing.T) {
	s := newTestServer(t, Config{Addr: "127.0.0.1:0"}, &fakeProducer{})
	ctx, cancel := context.WithCancel(t.Context())
	results := make(chan error, 2)
	for range 2 {
		go func() { results <- s.Run(ctx) }()
	}
	first := <-results // the loser returns at once
	cancel()
	second := <-results
	if (first == nil) == (second == nil) || !strings.Contains(errors.Join(first, second).Error(), "Run called twice") {
		t.Errorf("Run results %v and %v, want one nil and one \"Run called twice\"", first, second)
	}
}
