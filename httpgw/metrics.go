package httpgw

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"firehose/ingest"
)

// Endpoint label values of the request metrics: the route patterns, plus
// "other" for paths the gateway does not serve.
const (
	epFast     = "/readings/fast"
	epV1       = "/v1/readings"
	epHealth   = "/health"
	epHealthDB = "/health/db"
	epLivez    = "/livez"
	epReadyz   = "/readyz"
	epMetrics  = "/metrics"
	epOther    = "other"
)

// Reasons of firehose_http_readings_refused_total. The producer's reasons
// (ingest.RefusalReason) are added to these.
const (
	reasonInvalid      = "invalid"
	reasonTooLarge     = "too_large"
	reasonMediaType    = "unsupported_media_type"
	reasonUnauthorized = "unauthorized"
	reasonForbidden    = "forbidden"
	reasonCanceled     = "canceled" // the request was cancelled before its answer (503)
	reasonError        = "error"    // an unexpected producer error (500)
	// reasonUnavailable: --http-device-auth's credentials were never loaded
	// (503).
	reasonUnavailable = "credentials_unavailable"
)

// refusalReasons lists every reason, so that each series exists from the
// start.
func refusalReasons() []string {
	rs := []string{reasonInvalid, reasonTooLarge, reasonMediaType, reasonUnauthorized, reasonForbidden, reasonCanceled, reasonError, reasonUnavailable}
	for _, err := range producerRefusals {
		rs = append(rs, ingest.RefusalReason(err))
	}
	return rs
}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	accepted prometheus.Counter
	refused  map[string]prometheus.Counter // read-only after newMetrics
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "firehose_http_requests_total",
			Help: "HTTP requests answered, by endpoint (route pattern, or other) and status code.",
		}, []string{"endpoint", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "firehose_http_request_duration_seconds",
			Help: "Time from routing a request to its answer, by endpoint; for the readings endpoints this is the acknowledgement latency.",
			// 0.1ms doubling to 6.5s.
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17),
		}, []string{"endpoint"}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "firehose_http_readings_accepted_total",
			Help: "Readings acknowledged over HTTP (durable in Redis).",
		}),
		refused: map[string]prometheus.Counter{},
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "firehose_http_readings_refused_total",
		Help: "Readings refused over HTTP, by reason; a request whose readings could not be counted (too large, unauthorized) counts as one.",
	}, []string{"reason"})
	for _, r := range refusalReasons() {
		m.refused[r] = refused.WithLabelValues(r)
	}
	reg.MustRegister(m.requests, m.duration, m.accepted, refused)
	return m
}

func (m *metrics) refuse(reason string, n int) {
	if c, ok := m.refused[reason]; ok {
		c.Add(float64(max(n, 1)))
	}
}

// endpointMetrics are one endpoint's metric children, resolved once so that
// counting a request costs no label lookup.
type endpointMetrics struct {
	name     string
	requests *prometheus.CounterVec
	duration prometheus.Observer
	codes    [600]atomic.Pointer[prometheus.Counter] // by status code, filled on first use
}

func (m *metrics) endpoint(name string) *endpointMetrics {
	return &endpointMetrics{name: name, requests: m.requests, duration: m.duration.WithLabelValues(name)}
}

// done counts a request answered with code after starting at start.
func (e *endpointMetrics) done(code int, start time.Time) {
	e.duration.Observe(time.Since(start).Seconds())
	if code < 0 || code >= len(e.codes) {
		e.requests.WithLabelValues(e.name, strconv.Itoa(code)).Inc()
		return
	}
	c := e.codes[code].Load()
	if c == nil {
		cc := e.requests.WithLabelValues(e.name, strconv.Itoa(code))
		c = &cc
		e.codes[code].Store(c)
	}
	(*c).Inc()
}
