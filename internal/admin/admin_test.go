package admin

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

type fakeProducer struct {
	err  error
	down []int
}

func (p fakeProducer) Ready() error             { return p.err }
func (p fakeProducer) UnavailableShards() []int { return p.down }

func TestReadyz(t *testing.T) {
	for _, tc := range []struct {
		name     string
		draining bool
		p        Producer
		code     int
		body     string
	}{
		{name: "bridge alone", p: nil, code: http.StatusOK, body: `"ok"`},
		{name: "producer ready", p: fakeProducer{}, code: http.StatusOK, body: `"ok"`},
		{name: "some shards down", p: fakeProducer{down: []int{2}}, code: http.StatusOK, body: `"unavailable_shards":[2]`},
		{name: "producer refuses", p: fakeProducer{err: errors.New("redis down")}, code: http.StatusServiceUnavailable, body: "redis down"},
		{name: "shutting down", draining: true, p: fakeProducer{}, code: http.StatusServiceUnavailable, body: "shutting_down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d atomic.Bool
			d.Store(tc.draining)
			w := httptest.NewRecorder()
			Readyz(&d, tc.p)(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.body) {
				t.Errorf("answered %d %s, want %d with %s", w.Code, w.Body.String(), tc.code, tc.body)
			}
		})
	}
}

// TestRunEndsLongResponses: a response that lasts until its request's
// context ends (the console's server-sent events) does not hold up the
// shutdown past its timeout.
func TestRunEndsLongResponses(t *testing.T) {
	srv, err := Listen("127.0.0.1:0", prometheus.NewRegistry(), writeOK, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	started := make(chan struct{})
	srv.Mux().HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_ = http.NewResponseController(w).Flush()
		close(started)
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	resp, err := http.Get("http://" + srv.Addr().String() + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run with a stream open: %v, want a clean shutdown", err)
	}
}
