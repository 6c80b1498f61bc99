package httpgw

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"firehose/ingest"
	"firehose/mapping"
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

// encodingProducer encodes each call's readings as the producer's round
// trip does (one batch body of the widest item encoding) into a buffer it
// reuses, and stores nothing.
type encodingProducer struct{ body []byte }

func (p *encodingProducer) Add(_ context.Context, rs []ingest.Reading) error {
	item := ingest.CodecVersion
	for i := range rs {
		item = ingest.Wider(item, ingest.ItemVersion(&rs[i]))
	}
	p.body = append(p.body[:0], make([]byte, ingest.BatchHeaderLen)...)
	for i := range rs {
		p.body = ingest.AppendBatchItemAs(p.body, item, &rs[i])
	}
	p.body = ingest.FinishBatch(p.body, len(rs))
	return nil
}
func (*encodingProducer) Ready() error { return nil }

// BenchmarkV1Mapped drives POST /v1/readings?rule=... with the bench's
// HTTP telemetry request (scripts/bench.sh http-telemetry and http-typed:
// NDJSON of 100 messages of 3 metrics, the rules of
// deploy/simulate-rules.yaml) through the full mux, the producer's encoding
// of the readings included: narrow maps each message to 3 readings rows
// (rule sim-telemetry), typed to one row of sim_telemetry (sim-typed).
// ns/msg is per message.
func BenchmarkV1Mapped(b *testing.B) {
	raw, err := os.ReadFile("../deploy/simulate-rules.yaml")
	if err != nil {
		b.Fatal(err)
	}
	var doc struct{ Rules yaml.Node }
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		b.Fatal(err)
	}
	rules, err := mapping.DecodeYAML(&doc.Rules)
	if err != nil {
		b.Fatal(err)
	}
	const msgs = 100
	var body []byte
	ms := time.Now().Add(-time.Second).UnixMilli()
	for i := range msgs {
		body = fmt.Appendf(body, `{"device":"sim-bench-%d","t":%d,"temp":%.3f,"pressure":%.3f,"rpm":%d,"seq":%d,"msg_id":"sim-bench-%d-%d"}`+"\n",
			i%20, ms, 20+float64(i%10)/7, 3+float64(i%10)/70, 1200+i%50, i+1, i%20, i+1)
	}
	for _, bb := range []struct{ name, rule string }{{"narrow", "sim-telemetry"}, {"typed", "sim-typed"}} {
		b.Run(bb.name, func(b *testing.B) {
			s := newTestServer(b, Config{Rules: rules, MaxItems: 1000}, &encodingProducer{})
			h := s.Handler()
			r := bytes.NewReader(nil)
			req := httptest.NewRequest(http.MethodPost, "/v1/readings?rule="+bb.rule, nil)
			req.Header.Set("Content-Type", "application/x-ndjson")
			req.Body = io.NopCloser(r)
			req.ContentLength = int64(len(body))
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				r.Reset(body)
				clear(w.h)
				h.ServeHTTP(w, req)
				if w.code != http.StatusOK {
					b.Fatalf("code %d", w.code)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*msgs), "ns/msg")
		})
	}
}
