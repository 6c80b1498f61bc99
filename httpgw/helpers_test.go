package httpgw

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"firehose/ingest"
)

// fakeProducer records what Add was given and answers with err.
type fakeProducer struct {
	mu       sync.Mutex
	readings []ingest.Reading
	calls    int
	err      error         // Add's answer
	ready    error         // Ready's answer
	entered  chan struct{} // if set, Add sends on it when called
	release  chan struct{} // if set, Add waits for it (or ctx)
}

func (p *fakeProducer) Add(ctx context.Context, rs []ingest.Reading) error {
	if p.entered != nil {
		p.entered <- struct{}{}
	}
	if p.release != nil {
		select {
		case <-p.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.err != nil {
		return p.err
	}
	// Copy: the gateway reuses its memory once Add returned.
	for _, r := range rs {
		r.Payload = slices.Clone(r.Payload)
		p.readings = append(p.readings, r)
	}
	return nil
}

func (p *fakeProducer) Ready() error { return p.ready }

func (p *fakeProducer) got() []ingest.Reading {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.readings)
}

// newTestServer builds a Server with a fresh registry and a silent logger.
func newTestServer(t testing.TB, cfg Config, p Producer) *Server {
	t.Helper()
	s, err := New(cfg, p, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// newRequest makes a request with body and header pairs (name, value, ...).
func newRequest(method, path, body string, header ...string) *http.Request {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return req
}

// serve runs req through h.
func serve(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// post sends body to path through h.
func post(h http.Handler, path, body string, header ...string) *httptest.ResponseRecorder {
	return serve(h, newRequest(http.MethodPost, path, body, header...))
}

func get(h http.Handler, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

// decodeJSON decodes an answer, failing t if it is not JSON.
func decodeJSON[T any](t testing.TB, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("answer %d %q is not the expected JSON: %v", rec.Code, rec.Body.String(), err)
	}
	return v
}

// errorAnswer is the {"error": ...} shape of the gateway's own refusals.
type errorAnswer struct {
	Error   string `json:"error"`
	Reason  string `json:"reason"`
	Index   *int   `json:"index"`
	Line    int    `json:"line"`
	Invalid int    `json:"invalid"`
	More    int    `json:"more"`
	Details []struct {
		Index int    `json:"index"`
		Line  int    `json:"line"`
		Field string `json:"field"`
		Type  string `json:"type"`
		Msg   string `json:"msg"`
	} `json:"details"`
}

// requests is the value of firehose_http_requests_total{endpoint, code}.
func requests(s *Server, endpoint, code string) float64 {
	return testutil.ToFloat64(s.m.requests.WithLabelValues(endpoint, code))
}

// refused is the value of firehose_http_readings_refused_total{reason}.
func refused(s *Server, reason string) float64 {
	return testutil.ToFloat64(s.m.refused[reason])
}

// readAll reads an HTTP response's body.
func readAll(t testing.TB, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}
