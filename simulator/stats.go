package simulator

import (
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// counters are the fleet's running totals, updated by every device and read
// each second for the progress line and the time series.
type counters struct {
	sent        atomic.Int64 // readings sent at least once
	acked       atomic.Int64 // readings acknowledged (HTTP 200, PUBACK, PUBCOMP)
	requests    atomic.Int64 // HTTP requests and MQTT publishes, resends included
	refused     atomic.Int64 // HTTP 503 answers (the readings are resent)
	errors      atomic.Int64 // transport errors, 5xx other than 503, MQTT publish errors and timeouts
	rejected    atomic.Int64 // readings refused for good (4xx other than 503): not resent
	givenUp     atomic.Int64 // readings without an acknowledgement after every attempt
	qos0        atomic.Int64 // readings published at QoS 0
	offline     atomic.Int64 // QoS 0 readings not published: the device was reconnecting
	reconnects  atomic.Int64 // MQTT connections lost
	tlsFull     atomic.Int64 // MQTT TLS handshakes made in full (openTLS)
	tlsResumed  atomic.Int64 // MQTT TLS handshakes that resumed a session
	unconfirmed atomic.Int64 // MQTT publishes whose connection was lost in flight: outcome unknown
	ackedResent atomic.Int64 // acknowledged readings that had been (or may have been) sent more than once

	resends      atomic.Int64 // messages sent again after their acknowledgement (Config.Resend)
	resentUnits  atomic.Int64 // the units (readings, messages, samples) they carried
	resendsAcked atomic.Int64 // resends acknowledged in their turn

	rebirthsForced   atomic.Int64 // Sparkplug NDATA sent with an alias no birth gave
	rebirthsAsked    atomic.Int64 // Rebirth requests (NCMD) the edge nodes received
	rebirthsAnswered atomic.Int64 // rebirths published (NBIRTH and DBIRTHs again)
	deathsAcked      atomic.Int64 // NDEATHs acknowledged at the end
	deathsUnacked    atomic.Int64 // NDEATHs sent at QoS 0, or without an acknowledgement

	mu         sync.Mutex
	rejections map[string]int64 // rejected readings by answer ("HTTP 401")
}

func (c *counters) reject(answer string, n int) {
	c.rejected.Add(int64(n))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rejections == nil {
		c.rejections = map[string]int64{}
	}
	c.rejections[answer] += int64(n)
}

func (c *counters) rejectionsCopy() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int64, len(c.rejections))
	for k, v := range c.rejections {
		m[k] = v
	}
	return m
}

// Latency histograms hold microseconds from 1 µs to 10 minutes with 3
// significant digits (about 0.1 % error).
const (
	latMin     = 1
	latMax     = int64(10 * time.Minute / time.Microsecond)
	latDigits  = 3
	latShards  = 8
	microPerMs = 1000.0
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(latMin, latMax, latDigits) }

// latencies records acknowledgement latencies from every device into a few
// locked shards (a device always uses the same one), so that recording
// rarely waits; each second the sampler takes what the shards hold.
type latencies struct {
	shards [latShards]struct {
		mu sync.Mutex
		h  *hdrhistogram.Histogram
		_  [40]byte // keep shards on separate cache lines
	}
	total *hdrhistogram.Histogram // owned by the sampler
	spare *hdrhistogram.Histogram // owned by the sampler: swapped into a shard at each drain
}

func newLatencies() *latencies {
	l := &latencies{total: newHist(), spare: newHist()}
	for i := range l.shards {
		l.shards[i].h = newHist()
	}
	return l
}

// record adds one latency from device idx.
func (l *latencies) record(idx int, d time.Duration) {
	us := min(max(d.Microseconds(), latMin), latMax)
	s := &l.shards[idx%latShards]
	s.mu.Lock()
	_ = s.h.RecordValue(us) // in range by construction
	s.mu.Unlock()
}

// drain moves what the shards recorded since the last call into interval
// (reset first) and into the total. Only the sampler calls it.
func (l *latencies) drain(interval *hdrhistogram.Histogram) {
	interval.Reset()
	for i := range l.shards {
		s := &l.shards[i]
		l.spare.Reset()
		s.mu.Lock()
		s.h, l.spare = l.spare, s.h
		s.mu.Unlock()
		interval.Merge(l.spare)
	}
	l.total.Merge(interval)
}

// Latency is a latency distribution's summary, in milliseconds.
type Latency struct {
	Count  int64   `json:"count"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count:  h.TotalCount(),
		MeanMs: round3(h.Mean() / microPerMs),
		P50Ms:  ms(h.ValueAtQuantile(50)),
		P90Ms:  ms(h.ValueAtQuantile(90)),
		P99Ms:  ms(h.ValueAtQuantile(99)),
		P999Ms: ms(h.ValueAtQuantile(99.9)),
		MaxMs:  ms(h.Max()),
	}
}

func ms(us int64) float64 { return round3(float64(us) / microPerMs) }

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// Bucket is one bar of the latency histogram: Count latencies in
// [FromMs, ToMs).
type Bucket struct {
	FromMs float64 `json:"from_ms"`
	ToMs   float64 `json:"to_ms"`
	Count  int64   `json:"count"`
}

// buckets folds h into bars of equal width on a log scale, perDecade bars a
// decade, from the smallest to the largest value recorded.
func buckets(h *hdrhistogram.Histogram, perDecade int) []Bucket {
	if h.TotalCount() == 0 {
		return nil
	}
	lo := math.Floor(math.Log10(float64(max(h.Min(), 1))) * float64(perDecade))
	hi := math.Floor(math.Log10(float64(max(h.Max(), 1)))*float64(perDecade)) + 1
	n := int(hi - lo)
	out := make([]Bucket, n)
	for i := range out {
		out[i].FromMs = round3(math.Pow(10, (lo+float64(i))/float64(perDecade)) / microPerMs)
		out[i].ToMs = round3(math.Pow(10, (lo+float64(i)+1)/float64(perDecade)) / microPerMs)
	}
	for _, bar := range h.Distribution() {
		if bar.Count == 0 {
			continue
		}
		// A bar of the histogram is narrow (0.1 %): its lower end decides.
		i := int(math.Floor(math.Log10(float64(max(bar.From, 1)))*float64(perDecade)) - lo)
		out[min(max(i, 0), n-1)].Count += bar.Count
	}
	return out
}

// Sample is one second of the run.
type Sample struct {
	// T is the end of the second, seconds from the start of sending.
	T float64 `json:"t"`
	// Sent, Acked, Refused, Errors are counts within the second: readings
	// sent the first time, readings acknowledged, 503 answers, errors.
	Sent    int64 `json:"sent"`
	Acked   int64 `json:"acked"`
	Refused int64 `json:"refused"`
	Errors  int64 `json:"errors"`
	// Landed is readings of the run committed to PostgreSQL within the
	// second (from readings.committed_at, filled in after verification).
	Landed int64 `json:"landed"`
	// Ack latency percentiles of the acknowledgements within the second, ms.
	AckP50Ms float64 `json:"ack_p50_ms"`
	AckP90Ms float64 `json:"ack_p90_ms"`
	AckP99Ms float64 `json:"ack_p99_ms"`
	AckMaxMs float64 `json:"ack_max_ms"`
	// Backlog is firehose_stream_backlog_entries summed over the shards at
	// the end of the second; -1 when the target's metrics were not read.
	Backlog int64 `json:"backlog"`
	// Committed is the deployment's rows committed within the second
	// (firehose_bridge_rows_committed_total; every client's, not only this
	// run's); -1 when not read.
	Committed int64 `json:"committed"`
}

// formatMs prints a latency in milliseconds with sensible precision.
func formatMs(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v < 1:
		return strconv.FormatFloat(v, 'f', 3, 64) + "ms"
	case v < 100:
		return strconv.FormatFloat(v, 'f', 1, 64) + "ms"
	case v < 1000:
		return strconv.FormatFloat(v, 'f', 0, 64) + "ms"
	case v < 10000:
		return strconv.FormatFloat(v/1000, 'f', 2, 64) + "s"
	}
	return strconv.FormatFloat(v/1000, 'f', 1, 64) + "s"
}
