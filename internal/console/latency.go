package console

import (
	"math"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
)

// The latency histograms the overview reads: an acknowledgement's latency
// on each path, and the time from receipt to commit.
var latencyMetrics = []struct{ name, metric, endpoint string }{
	{"HTTP ack", "firehose_http_request_duration_seconds", "readings"}, // the readings endpoints only
	{"MQTT ack", "firehose_mqtt_ack_duration_seconds", ""},
	{"subscriber ack", "firehose_subscriber_ack_seconds", ""},
	{"receipt to commit", "firehose_bridge_receipt_to_commit_seconds", ""},
}

// latencyWindow is how many samples back the latencies are computed over:
// ten seconds at one sample a second, so a quiet second does not blank them.
const latencyWindow = 10

// Latency is one path's latency quantiles over the last latencyWindow
// samples, from its histogram's buckets (nil when nothing was observed).
type Latency struct {
	Name  string   `json:"name"`
	Count float64  `json:"count"` // observations in the window
	P50   *float64 `json:"p50_seconds"`
	P99   *float64 `json:"p99_seconds"`
}

// hist is a histogram's cumulative state: bucket upper bounds and the
// cumulative counts at each, summed over the series read.
type hist struct {
	bounds []float64
	counts []float64 // cumulative, as Prometheus exposes them
	total  float64
}

// readHist sums mf's series (those whose endpoint label contains endpoint,
// when set) into one histogram.
func readHist(mf *dto.MetricFamily, endpoint string) hist {
	var h hist
	for _, m := range mf.GetMetric() {
		if endpoint != "" && !strings.Contains(label(m, "endpoint"), endpoint) {
			continue
		}
		ph := m.GetHistogram()
		if ph == nil {
			continue
		}
		if h.bounds == nil {
			for _, b := range ph.GetBucket() {
				h.bounds = append(h.bounds, b.GetUpperBound())
			}
			h.counts = make([]float64, len(h.bounds))
		}
		for i, b := range ph.GetBucket() {
			if i < len(h.counts) && b.GetUpperBound() == h.bounds[i] {
				h.counts[i] += float64(b.GetCumulativeCount())
			}
		}
		h.total += float64(ph.GetSampleCount())
	}
	return h
}

// since is h's observations after base (an earlier state of the same
// histogram; none when base is empty or the histogram was reset).
func (h hist) since(base hist) hist {
	if len(base.counts) != len(h.counts) || base.total > h.total {
		return h
	}
	d := hist{bounds: h.bounds, counts: make([]float64, len(h.counts)), total: h.total - base.total}
	for i := range h.counts {
		d.counts[i] = h.counts[i] - base.counts[i]
	}
	return d
}

// quantile is the q-quantile of h, interpolated linearly within its bucket
// as Prometheus's histogram_quantile does; nil without observations. An
// observation past the last bound counts as the last bound.
func (h hist) quantile(q float64) *float64 {
	if h.total <= 0 || len(h.bounds) == 0 {
		return nil
	}
	rank := q * h.total
	i := slices.IndexFunc(h.counts, func(c float64) bool { return c >= rank })
	if i < 0 {
		v := h.bounds[len(h.bounds)-1]
		return &v
	}
	lo, below := 0.0, 0.0
	if i > 0 {
		lo, below = h.bounds[i-1], h.counts[i-1]
	}
	hi, in := h.bounds[i], h.counts[i]-below
	if math.IsInf(hi, 1) {
		return &lo
	}
	v := hi
	if in > 0 {
		v = lo + (hi-lo)*(rank-below)/in
	}
	return &v
}

// latencies are the window's quantiles of each histogram in hs, against
// base (the state latencyWindow samples back, or nil); histograms this
// process does not have are left out.
func latencies(hs, base map[string]hist) []Latency {
	out := []Latency{}
	for _, lm := range latencyMetrics {
		h, ok := hs[lm.name]
		if !ok {
			continue
		}
		d := h.since(base[lm.name])
		out = append(out, Latency{Name: lm.name, Count: d.total, P50: d.quantile(0.5), P99: d.quantile(0.99)})
	}
	return out
}
