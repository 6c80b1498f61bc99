package console

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHistQuantile(t *testing.T) {
	// Buckets 1, 2, 4 and +Inf: 10 observations under 1, 10 between 1 and 2.
	h := hist{bounds: []float64{1, 2, 4, math.Inf(1)}, counts: []float64{10, 20, 20, 20}, total: 20}
	for _, tt := range []struct{ q, want float64 }{{0.25, 0.5}, {0.5, 1}, {0.75, 1.5}, {0.99, 1.98}} {
		got := h.quantile(tt.q)
		if got == nil || math.Abs(*got-tt.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := (hist{bounds: h.bounds, counts: make([]float64, 4)}).quantile(0.5); got != nil {
		t.Errorf("no observations: quantile = %v, want nil", *got)
	}
	// Observations past the last finite bound count as that bound.
	over := hist{bounds: h.bounds, counts: []float64{0, 0, 0, 5}, total: 5}
	if got := over.quantile(0.5); got == nil || *got != 4 {
		t.Errorf("past the last bound: quantile = %v, want 4", got)
	}
	// The window: what was observed after base only.
	base := hist{bounds: h.bounds, counts: []float64{10, 10, 10, 10}, total: 10}
	if d := h.since(base); d.total != 10 || d.quantile(0.5) == nil || *d.quantile(0.5) != 1.5 {
		t.Errorf("since base: %+v, median %v, want 10 observations, median 1.5", d, d.quantile(0.5))
	}
}

// The overview shows the latencies of this process's histograms, who owns
// each shard and the subscriber's session.
func TestOverviewLatencyOwnersSubscriptions(t *testing.T) {
	reg := prometheus.NewRegistry()
	ack := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "firehose_mqtt_ack_duration_seconds",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 8)})
	httpDur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "firehose_http_request_duration_seconds",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 8)}, []string{"endpoint"})
	backlog := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricBacklog}, []string{"shard"})
	tableRows := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricTableRows}, []string{"table"})
	written := prometheus.NewCounter(prometheus.CounterOpts{Name: metricWritten})
	mqttIn := prometheus.NewCounter(prometheus.CounterOpts{Name: metricMQTTAccepted})
	reg.MustRegister(ack, httpDur, backlog, tableRows, written, mqttIn)
	tableRows.WithLabelValues("readings").Add(30)
	tableRows.WithLabelValues("press_telemetry").Add(12)
	written.Add(50)
	mqttIn.Add(20) // the subscriber's: the other 30
	for range 100 {
		ack.Observe(0.003) // in the (0.002, 0.004] bucket
	}
	httpDur.WithLabelValues("GET /readyz").Observe(5) // not a readings endpoint: not counted
	backlog.WithLabelValues("0").Set(1)
	backlog.WithLabelValues("1").Set(2)
	c := New(Config{Token: "t", Gatherer: reg,
		Owners: func(context.Context) (map[int]string, error) { return map[int]string{0: "edge-1:4242"}, nil },
		Subscriptions: func() []Subscription {
			return []Subscription{{Broker: "mqtt.example:1883", ClientID: "fh-1", Connected: true, Protocol: "5",
				SessionPresent: true, InFlight: 7, Received: 99, Since: time.Now()}}
		}}, slog.New(slog.DiscardHandler))
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	code, body := get(t, srv.URL+"/console/", "Authorization", "Bearer t")
	if code != http.StatusOK {
		t.Fatalf("overview: %d", code)
	}
	for _, want := range []string{
		"<td>MQTT ack</td><td>3.00 ms</td><td>3.98 ms</td><td>100</td>", // p50 mid-bucket, p99 near its top
		"<td>HTTP ack</td><td>–</td><td>–</td><td>0</td>",
		"<td>0</td><td>1</td><td>–</td><td>edge-1:4242</td>",
		"<td>1</td><td>2</td><td>–</td><td>none</td>",
		"<td>http</td><td>0</td><td>–</td></tr>\n<tr><td>mqtt</td><td>20</td><td>–</td></tr>\n<tr><td>subscriber</td><td>30</td><td>–</td>",
		"<td>press_telemetry</td><td>12</td><td>–</td></tr>\n<tr><td>readings</td><td>30</td><td>–</td>",
		"<td>mqtt.example:1883</td><td>fh-1</td><td class=\"ok\">connected, MQTT 5, session resumed</td><td>7</td><td>99</td>",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "receipt to commit") {
		t.Error("overview lists a latency this process has no histogram of")
	}
}
