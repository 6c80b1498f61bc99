package httpgw

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"firehose/ingest"
)

// nopProducer stores nothing and answers at once: the benchmark measures the
// gateway alone.
type nopProducer struct{}

func (nopProducer) Add(context.Context, []ingest.Reading) error { return nil }
func (nopProducer) Ready() error                                { return nil }

// discardWriter is a ResponseWriter reused across iterations, so that the
// benchmark counts the handler's allocations, not the recorder's.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }

// BenchmarkFastHandler drives POST /readings/fast through the full mux. The
// "reused-writer" cases count only the gateway's allocations; the
// "httptest-recorder" case adds a fresh recorder per request, as a server
// connection's writer would be.
func BenchmarkFastHandler(b *testing.B) {
	bodies := []struct{ name, body string }{
		{"seed-body", `{"id": 12345, "reading": 217}`},
		{"timestamp-body", `{"id": 12345, "reading": 217, "timestamp": "2026-11-28T08:00:00.123Z"}`},
	}
	for _, bb := range bodies {
		b.Run(bb.name+"/reused-writer", func(b *testing.B) {
			s := newTestServer(b, Config{Limits: ingest.Limits{MaxAge: 1 << 62}}, nopProducer{})
			h := s.Handler()
			raw := []byte(bb.body)
			body := bytes.NewReader(nil)
			req := httptest.NewRequest(http.MethodPost, "/readings/fast", nil)
			req.Body = io.NopCloser(body)
			req.ContentLength = int64(len(bb.body))
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				body.Reset(raw)
				clear(w.h)
				h.ServeHTTP(w, req)
				if w.code != http.StatusOK {
					b.Fatalf("code %d", w.code)
				}
			}
		})
	}
	b.Run("seed-body/httptest-recorder", func(b *testing.B) {
		s := newTestServer(b, Config{}, nopProducer{})
		h := s.Handler()
		body := []byte(bodies[0].body)
		b.ReportAllocs()
		for b.Loop() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/readings/fast", bytes.NewReader(body)))
			if rec.Code != http.StatusOK {
				b.Fatalf("code %d: %s", rec.Code, rec.Body)
			}
		}
	})
}
