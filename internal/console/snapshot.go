package console

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The metrics the overview reads (their producers document them).
const (
	metricWritten       = "firehose_producer_entries_written_total"
	metricHTTPAccepted  = "firehose_http_readings_accepted_total"
	metricMQTTAccepted  = "firehose_mqtt_readings_accepted_total"
	metricCommitted     = "firehose_bridge_rows_committed_total"
	metricHTTPRefused   = "firehose_http_readings_refused_total"
	metricMQTTRefused   = "firehose_mqtt_readings_refused_total"
	metricBacklog       = "firehose_stream_backlog_entries"
	metricShardLag      = "firehose_bridge_shard_lag_seconds"
	metricMQTTConnected = "firehose_mqtt_clients_connected"
	metricTableRows     = "firehose_bridge_table_rows_committed_total"
)

// Snapshot is what the overview shows at one instant. Totals count since
// the process started; rates are per second over the last sampling
// interval (nil on the first sample, before there is an interval).
type Snapshot struct {
	Time          time.Time `json:"time"`
	ReadingsIn    float64   `json:"readings_in"`
	HTTPIn        float64   `json:"http_in"`
	MQTTIn        float64   `json:"mqtt_in"`
	RowsCommitted float64   `json:"rows_committed"`
	ReadingsRate  *float64  `json:"readings_per_second"`
	RowsRate      *float64  `json:"rows_per_second"`
	Refusals      []Refusal `json:"refusals"`
	Shards        []Shard   `json:"shards"`
	MQTTDevices   *float64  `json:"mqtt_devices"` // nil: no broker role here
	Health        []Health  `json:"health"`
	Latencies     []Latency `json:"latencies"`
	// Paths are the readings in by edge (http, mqtt, and subscriber when
	// the role runs here), Tables the rows committed by table; their rates
	// are over the latencies' window (smoother than a second's).
	Paths  []Flow `json:"paths"`
	Tables []Flow `json:"tables"`
	// Subscriptions are this process's subscriber sessions (none without
	// the subscriber role).
	Subscriptions []Subscription `json:"subscriptions"`

	hists map[string]hist // the latency histograms' state, for the next windows
}

// Subscription is the subscriber role's session with its broker.
type Subscription struct {
	Broker         string    `json:"broker"`
	ClientID       string    `json:"client_id"`
	Connected      bool      `json:"connected"`
	SessionPresent bool      `json:"session_present"`
	Protocol       string    `json:"protocol"`
	Since          time.Time `json:"since"` // of the last connection or loss of it
	LastError      string    `json:"last_error,omitempty"`
	InFlight       int64     `json:"in_flight"`
	Received       int64     `json:"received"`
	Redeliveries   int64     `json:"redeliveries"`
}

// Flow is a total since the start and its rate per second over the last
// window (nil before there is one).
type Flow struct {
	Name  string   `json:"name"`
	Total float64  `json:"total"`
	Rate  *float64 `json:"per_second"`
}

// Refusal is the readings refused on one path for one reason.
type Refusal struct {
	Path   string  `json:"path"`
	Reason string  `json:"reason"`
	Count  float64 `json:"count"`
}

// Shard is one shard's backlog (readings not yet committed), where a bridge
// here owns it its lag, and the bridge that owns it (any process).
type Shard struct {
	Shard      string   `json:"shard"`
	Backlog    float64  `json:"backlog"`
	LagSeconds *float64 `json:"lag_seconds"`
	Bridge     string   `json:"bridge"` // host:pid of its owner; "" none; "?" not known here
}

// Health is one service's answer to a ping.
type Health struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Check pings one service the process uses.
type Check struct {
	Name string
	Ping func(context.Context) error
}

// checkTimeout bounds each health check of a sample.
const checkTimeout = time.Second

// sources are where a snapshot's figures come from besides the metrics.
type sources struct {
	health func(context.Context) []Health
	owners func(context.Context) map[int]string // nil: not known here
	subs   func() []Subscription                // nil: no subscriber role
}

// sample gathers g and runs the checks into a snapshot; prev (or nil) gives
// the rates, base (or nil: since the start) the start of the latencies'
// window.
func sample(ctx context.Context, g prometheus.Gatherer, src sources, prev, base *Snapshot) (*Snapshot, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	s := &Snapshot{Time: time.Now(), Refusals: []Refusal{}, Shards: []Shard{}, Health: []Health{},
		Subscriptions: []Subscription{}, Tables: []Flow{}, hists: map[string]hist{}}
	lags := map[string]float64{}
	for _, mf := range mfs {
		for _, lm := range latencyMetrics {
			if mf.GetName() == lm.metric {
				s.hists[lm.name] = readHist(mf, lm.endpoint)
			}
		}
		switch mf.GetName() {
		case metricWritten:
			s.ReadingsIn = sum(mf)
		case metricHTTPAccepted:
			s.HTTPIn = sum(mf)
		case metricMQTTAccepted:
			s.MQTTIn = sum(mf)
		case metricCommitted:
			s.RowsCommitted = sum(mf)
		case metricHTTPRefused, metricMQTTRefused:
			path := "http"
			if mf.GetName() == metricMQTTRefused {
				path = "mqtt"
			}
			for _, m := range mf.GetMetric() {
				if v := value(m); v > 0 {
					s.Refusals = append(s.Refusals, Refusal{Path: path, Reason: label(m, "reason"), Count: v})
				}
			}
		case metricBacklog:
			for _, m := range mf.GetMetric() {
				s.Shards = append(s.Shards, Shard{Shard: label(m, "shard"), Backlog: value(m)})
			}
		case metricShardLag:
			for _, m := range mf.GetMetric() {
				lags[label(m, "shard")] = value(m)
			}
		case metricTableRows:
			for _, m := range mf.GetMetric() {
				s.Tables = append(s.Tables, Flow{Name: label(m, "table"), Total: value(m)})
			}
		case metricMQTTConnected:
			v := sum(mf)
			s.MQTTDevices = &v
		}
	}
	for sh, lag := range lags {
		i := slices.IndexFunc(s.Shards, func(x Shard) bool { return x.Shard == sh })
		if i < 0 {
			s.Shards = append(s.Shards, Shard{Shard: sh})
			i = len(s.Shards) - 1
		}
		s.Shards[i].LagSeconds = &lag
	}
	slices.SortFunc(s.Shards, func(a, b Shard) int { return shardNumber(a.Shard) - shardNumber(b.Shard) })
	var owners map[int]string
	if src.owners != nil {
		owners = src.owners(ctx)
	}
	for i := range s.Shards {
		s.Shards[i].Bridge = "?"
		if owners != nil {
			s.Shards[i].Bridge = owners[shardNumber(s.Shards[i].Shard)]
		}
	}
	var bh map[string]hist
	if base != nil {
		bh = base.hists
	}
	s.Latencies = latencies(s.hists, bh)
	if src.subs != nil {
		s.Subscriptions = append(s.Subscriptions, src.subs()...)
	}
	s.Paths = []Flow{{Name: "http", Total: s.HTTPIn}, {Name: "mqtt", Total: s.MQTTIn}}
	if src.subs != nil {
		// The subscriber's readings are the rest of what this process's
		// producer wrote.
		s.Paths = append(s.Paths, Flow{Name: "subscriber", Total: max(0, s.ReadingsIn-s.HTTPIn-s.MQTTIn)})
	}
	slices.SortFunc(s.Tables, func(a, b Flow) int { return strings.Compare(a.Name, b.Name) })
	if base != nil {
		windowRates(s.Paths, base.Paths, s.Time.Sub(base.Time).Seconds())
		windowRates(s.Tables, base.Tables, s.Time.Sub(base.Time).Seconds())
	}
	if prev != nil {
		if dt := s.Time.Sub(prev.Time).Seconds(); dt > 0 {
			in, rows := rate(prev.ReadingsIn, s.ReadingsIn, dt), rate(prev.RowsCommitted, s.RowsCommitted, dt)
			s.ReadingsRate, s.RowsRate = &in, &rows
		}
	}
	s.Health = src.health(ctx)
	return s, nil
}

// ping runs the checks in parallel, each bounded by checkTimeout.
func ping(ctx context.Context, checks []Check) []Health {
	out := make([]Health, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			defer cancel()
			out[i] = Health{Name: c.Name, OK: true}
			if err := c.Ping(cctx); err != nil {
				out[i] = Health{Name: c.Name, Error: err.Error()}
			}
		})
	}
	wg.Wait()
	return out
}

// windowRates sets each flow's rate against its total in base, seconds
// earlier (a flow new since then counts from zero).
func windowRates(flows, base []Flow, seconds float64) {
	if seconds <= 0 {
		return
	}
	for i := range flows {
		var before float64
		if j := slices.IndexFunc(base, func(b Flow) bool { return b.Name == flows[i].Name }); j >= 0 {
			before = base[j].Total
		}
		r := rate(before, flows[i].Total, seconds)
		flows[i].Rate = &r
	}
}

// rate is a counter's increase per second; a counter that went down (the
// process restarted: not here, but harmless) counts from zero.
func rate(before, after, seconds float64) float64 {
	if after < before {
		return after / seconds
	}
	return (after - before) / seconds
}

func sum(mf *dto.MetricFamily) float64 {
	var t float64
	for _, m := range mf.GetMetric() {
		t += value(m)
	}
	return t
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

func shardNumber(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// The overview's cells, as the page's script writes them too
// (assets/console.js).

// millis is a latency in milliseconds, "–" when there is none.
func millis(v *float64) string {
	switch {
	case v == nil:
		return "–"
	case *v < 0.01:
		return fmt.Sprintf("%.2f ms", *v*1000)
	}
	return fmt.Sprintf("%.1f ms", *v*1000)
}

// owner is a shard's bridge: "none" when no bridge holds it, "–" when this
// process cannot know.
func owner(b string) string {
	switch b {
	case "":
		return "none"
	case "?":
		return "–"
	}
	return b
}

// subState says whether a subscription is connected and with what session.
func subState(s Subscription) string {
	if !s.Connected {
		if s.LastError != "" {
			return "disconnected: " + s.LastError
		}
		return "disconnected"
	}
	st := "connected, MQTT " + s.Protocol
	if s.SessionPresent {
		st += ", session resumed"
	}
	return st
}
