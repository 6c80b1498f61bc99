package simulator

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ReportVersion is the version of report.json's layout; it changes when a
// field changes meaning or goes away (new fields do not change it).
const ReportVersion = 1

// Report is everything a run measured and found: the numbers of the summary
// table, the time series and the latency histogram. It is report.json.
type Report struct {
	Version      int    `json:"version"`
	RunID        string `json:"run_id"`
	DevicePrefix string `json:"device_prefix"` // every device id starts with it
	// Started is when the fleet started sending; SendEnded when the last
	// device stopped.
	Started     time.Time `json:"started"`
	SendEnded   time.Time `json:"send_ended"`
	Interrupted bool      `json:"interrupted"` // stopped early (Ctrl-C)
	Config      RunConfig `json:"config"`
	Send        Send      `json:"send"`
	// AckLatency runs from a request's or publish's intended send time to
	// its acknowledgement (HTTP 200, PUBACK, PUBCOMP; at QoS 0 until the
	// client wrote it), resends included: one sample per request or publish.
	AckLatency Latency `json:"ack_latency"`
	// Landing is nil when the run was not verified (no --postgres).
	Landing *Landing `json:"landing"`
	// OK is true when nothing that was acknowledged is missing or
	// duplicated (and something was acknowledged); Failures says what
	// failed otherwise.
	OK        bool     `json:"ok"`
	Failures  []string `json:"failures"`
	Series    []Sample `json:"series"`
	Histogram []Bucket `json:"ack_latency_histogram"`
}

// RunConfig is the run's shape as the report shows it (URLs without
// passwords).
type RunConfig struct {
	Protocol string `json:"protocol"`
	// Shape is what the devices sent (reading, telemetry, samples,
	// sparkplug, typed); MetricCount the metrics of a telemetry message
	// (telemetry, typed) or a Sparkplug node; SparkplugDevices the devices under each edge node;
	// Resend the probability of a resend after an acknowledgement.
	Shape            string  `json:"shape"`
	MetricCount      int     `json:"metric_count,omitempty"`
	SparkplugDevices int     `json:"sparkplug_devices,omitempty"`
	RebirthEvery     int     `json:"sparkplug_rebirth_every,omitempty"`
	Resend           float64 `json:"resend,omitempty"`
	ExpectDedup      bool    `json:"expect_dedup,omitempty"`
	Endpoint         string  `json:"endpoint,omitempty"`
	Batch            int     `json:"batch,omitempty"`
	QoS              int     `json:"qos,omitempty"`
	Devices          int     `json:"devices"`
	HTTPDevices      int     `json:"http_devices"`
	MQTTDevices      int     `json:"mqtt_devices"`
	Loop             string  `json:"loop"` // open or closed
	RatePerS         float64 `json:"rate_per_s"`
	RampS            float64 `json:"ramp_s"`
	DurationS        float64 `json:"duration_s"`
	Concurrency      int     `json:"concurrency,omitempty"` // HTTP requests in flight at most
	ExtraFields      int     `json:"extra_fields"`
	MaxAttempts      int     `json:"max_attempts"`
	TimeoutS         float64 `json:"timeout_s"`
	HTTP             string  `json:"http,omitempty"`
	MQTT             string  `json:"mqtt,omitempty"`
	Postgres         string  `json:"postgres,omitempty"`
	Metrics          string  `json:"metrics,omitempty"`
}

// Send is what the fleet sent and what came back.
type Send struct {
	// Scheduled is, in open loop, the readings due before the end (those
	// not sent by then are late: the target or this machine could not keep
	// up); 0 in closed loop.
	Scheduled int64 `json:"scheduled"`
	// Sent counts readings sent at least once; Requests the HTTP requests
	// and MQTT publishes, resends included.
	Sent     int64 `json:"sent"`
	Requests int64 `json:"requests"`
	// Acked counts readings acknowledged; AckedAfterResend those among them
	// sent (or possibly sent) more than once.
	Acked            int64 `json:"acked"`
	AckedAfterResend int64 `json:"acked_after_resend"`
	// Refused counts 503 answers (each followed by a resend), Errors
	// transport errors, 5xx and MQTT publish failures; Rejected readings
	// refused for good (4xx), by answer in RejectedBy; GivenUp readings
	// without an acknowledgement after every attempt.
	Refused    int64            `json:"refused"`
	Errors     int64            `json:"errors"`
	Rejected   int64            `json:"rejected"`
	RejectedBy map[string]int64 `json:"rejected_by,omitempty"`
	GivenUp    int64            `json:"given_up"`
	FirstError string           `json:"first_error,omitempty"`
	// QoS0 counts readings published at QoS 0; QoS0Offline those the
	// device dropped because it was reconnecting. Reconnects counts MQTT
	// connections lost.
	QoS0        int64 `json:"qos0"`
	QoS0Offline int64 `json:"qos0_offline"`
	Reconnects  int64 `json:"reconnects"`
	// TLSFull and TLSResumed count the MQTT devices' TLS handshakes made
	// through the simulator's dialer (ssl:// with --ca-file, a client
	// certificate or --tls-resume): in full, and resuming a session.
	TLSFull    int64 `json:"tls_full"`
	TLSResumed int64 `json:"tls_resumed"`
	// Unconfirmed counts MQTT QoS 1/2 readings whose connection was lost
	// while they were in flight: the client resent them after reconnecting
	// and reported them done without showing a PUBACK, so they count as
	// neither acknowledged nor failed.
	Unconfirmed int64 `json:"unconfirmed"`
	// SendS is the time from the first send to the last answer; the rates
	// are over it.
	SendS     float64 `json:"send_s"`
	SentPerS  float64 `json:"sent_per_s"`
	AckedPerS float64 `json:"acked_per_s"`
	// ClientCPUCores is the CPU the simulator itself used while sending,
	// in cores (CPU seconds per second), of ClientCores on its machine:
	// near ClientCores, the load generator limited the run, not the target.
	ClientCPUCores float64 `json:"client_cpu_cores"`
	ClientCores    int     `json:"client_cores"`

	// Readings and rows: in the shape reading a reading is a row and both
	// are Acked. In the others Sent and Acked count units (telemetry and
	// Sparkplug: messages; samples: samples); ReadingsAcked counts the
	// numeric values of the acknowledged messages (a telemetry message of
	// 3 metrics: 3; a sample: 1; a Sparkplug BIRTH or DATA: its metrics,
	// births' bdSeq and rebirth control included, a forced unknown alias
	// not, and none of a DATA with a forced unknown alias at QoS 1/2,
	// which the target stores as an edge dead letter), and RowsAcked the rows they should land: a row per reading,
	// plus one per Sparkplug birth and death. The rates are over SendS.
	ReadingsAcked int64   `json:"readings_acked"`
	RowsAcked     int64   `json:"rows_acked"`
	ReadingsPerS  float64 `json:"readings_per_s"`
	RowsPerS      float64 `json:"rows_per_s"`
	// Resends counts messages sent again after their acknowledgement
	// (--resend), ResentUnits the units they carried, ResendsAcked those
	// acknowledged again.
	Resends      int64 `json:"resends"`
	ResentUnits  int64 `json:"resent_units"`
	ResendsAcked int64 `json:"resends_acked"`
	// Sparkplug: NDATA sent with an alias no birth gave (forced: at QoS
	// 1/2 each an edge dead letter, see Landing.DeadLetters; at QoS 0 its
	// known metrics land), Rebirth requests the edge nodes received,
	// rebirths they published, NDEATHs acknowledged.
	RebirthsForced   int64 `json:"rebirths_forced,omitempty"`
	RebirthsAsked    int64 `json:"rebirths_asked,omitempty"`
	RebirthsAnswered int64 `json:"rebirths_answered,omitempty"`
	DeathsAcked      int64 `json:"deaths_acked,omitempty"`
}

// Landing is what the verification found in PostgreSQL for the run's
// devices.
type Landing struct {
	// WaitedS is the time from the end of sending to the end of the landing
	// wait; TimedOut says the wait hit --land-timeout.
	WaitedS  float64 `json:"waited_s"`
	TimedOut bool    `json:"timed_out"`
	// Rows is the run's rows; Readings the distinct (device, seq) among them.
	Rows     int64 `json:"rows"`
	Readings int64 `json:"readings"`
	// Missing: acknowledged, not landed (a failure).
	Missing       int64 `json:"missing"`
	MissingSample []Ref `json:"missing_sample,omitempty"`
	// DupOnceAcked: extra rows of readings acknowledged on their first and
	// only attempt (a failure).
	DupOnceAcked       int64 `json:"dup_once_acked"`
	DupOnceAckedSample []Ref `json:"dup_once_acked_sample,omitempty"`
	// DupAfterResend: extra rows of readings sent more than once after an
	// attempt without an acknowledgement (allowed).
	DupAfterResend int64 `json:"dup_after_resend"`
	// DupFromResends: the second rows of readings (or, in the new shapes,
	// of units' metrics) sent again after their acknowledgement
	// (--resend): expected when the target does not deduplicate, a failure
	// with --expect-dedup.
	DupFromResends int64 `json:"dup_from_resends"`
	// LandedWithoutAck: readings that landed though their acknowledgement
	// never came (allowed: it was lost).
	LandedWithoutAck int64 `json:"landed_without_ack"`
	// Shapes other than reading: RowsAcked is the rows the acknowledged
	// messages carry (a row per metric value, and one per Sparkplug birth
	// and death), RowsLanded those found; Metrics checks each metric,
	// Events the rows of Sparkplug births and deaths. In these shapes
	// Missing, DupOnceAcked (duplicated), DupAfterResend (after a retry),
	// DupFromResends and LandedWithoutAck count rows, summed over the
	// metrics, and Readings counts the (device, ts) that landed a row.
	RowsAcked  int64         `json:"rows_acked,omitempty"`
	RowsLanded int64         `json:"rows_landed,omitempty"`
	Metrics    []MetricCheck `json:"metrics,omitempty"`
	Events     []EventCheck  `json:"events,omitempty"`
	// Partial: rows of Sparkplug DATA messages the target was to store
	// whole as edge dead letters (an alias no birth gave, at QoS 1/2),
	// summed over the metrics (a failure: partial storage); DeadLetters
	// checks those dead letters (nil when the run forced none at QoS 1/2).
	// Columns checks the rows of the shape typed column by column (nil in
	// the other shapes); a mismatch is a failure. In that shape the
	// metric check is the table's (its name as the metric): a row per
	// acknowledged message, found by (device, time).
	Columns       *ColumnCheck     `json:"columns,omitempty"`
	Partial       int64            `json:"partial,omitempty"`
	PartialSample []Ref            `json:"partial_sample,omitempty"`
	DeadLetters   *DeadLetterCheck `json:"dead_letters,omitempty"`
	// Unexpected: rows of the run's devices for readings the fleet never
	// sent (a failure).
	Unexpected int64 `json:"unexpected"`
	// QoS 0 readings: at most once, their loss is no failure.
	QoS0Sent   int64 `json:"qos0_sent"`
	QoS0Landed int64 `json:"qos0_landed"`
	QoS0Lost   int64 `json:"qos0_lost"`
	// End-to-end latency of the run's rows from PostgreSQL: receipt at the
	// edge (received_at) to commit (committed_at), and the device's
	// measurement (ts) to commit. HasCommitTimes is false when the table
	// has no committed_at (and in the shape typed: a typed table has none).
	HasCommitTimes   bool    `json:"has_commit_times"`
	ReceiptToCommit  Latency `json:"receipt_to_commit"`
	MeasuredToCommit Latency `json:"measured_to_commit"`
}

func (l *Landing) fromTally(t *tally) {
	l.Rows, l.Readings = t.rows, t.readings
	l.Missing, l.MissingSample = t.missing, t.missingRefs
	l.DupOnceAcked, l.DupOnceAckedSample = t.dupOnce, t.dupOnceRefs
	l.DupAfterResend, l.LandedWithoutAck, l.Unexpected = t.dupResent, t.landedUnacked, t.unexpected
	l.DupFromResends = t.dupOnPurpose
	l.QoS0Sent, l.QoS0Landed, l.QoS0Lost = t.qos0Sent, t.qos0Landed, t.qos0Lost
}

func (l *Landing) fromRowTally(t *rowTally) {
	l.Rows, l.Readings, l.Unexpected = t.rows, t.units, t.unexpected
	l.QoS0Sent, l.QoS0Landed, l.QoS0Lost = t.qos0Sent, t.qos0Landed, t.qos0Sent-t.qos0Landed
	l.MissingSample, l.DupOnceAckedSample, l.PartialSample = t.missingRef, t.dupRef, t.partialRef
	for _, m := range t.metrics {
		l.Metrics = append(l.Metrics, *m)
		l.RowsAcked += m.RowsAcked
		l.RowsLanded += m.RowsLanded
		l.Missing += m.Missing
		l.DupOnceAcked += m.Duplicated
		l.DupAfterResend += m.DupAfterRetry
		l.DupFromResends += m.DupFromResends
		l.LandedWithoutAck += m.LandedWithoutAck
		l.Partial += m.Partial
	}
	for _, e := range t.events {
		l.Events = append(l.Events, *e)
		l.RowsAcked += e.Acked
		l.RowsLanded += e.Landed
	}
}

// report assembles the run's report; the sampler has stopped.
func (f *fleet) report(sendEnd time.Time, interrupted bool, land *Landing) *Report {
	cfg := f.cfg
	r := &Report{
		Version: ReportVersion, RunID: cfg.RunID, DevicePrefix: cfg.DevicePrefix(),
		Started: f.start.UTC(), SendEnded: sendEnd.UTC(), Interrupted: interrupted,
		Config: RunConfig{
			Protocol: cfg.Protocol, Shape: cfg.Shape, Resend: cfg.Resend, ExpectDedup: cfg.ExpectDedup, Devices: cfg.Devices, HTTPDevices: f.httpDevices, MQTTDevices: f.mqttDevices,
			Loop: "closed", RatePerS: cfg.Rate, RampS: cfg.Ramp.Seconds(), DurationS: cfg.Duration.Seconds(),
			ExtraFields: cfg.ExtraFields, MaxAttempts: cfg.MaxAttempts, TimeoutS: cfg.Timeout.Seconds(),
			Postgres: redact(cfg.Postgres),
		},
		Landing:   land,
		Series:    f.series,
		Histogram: buckets(f.totalLatency(), 10),
	}
	if f.open {
		r.Config.Loop = "open"
	}
	if cfg.Metrics != "off" {
		r.Config.Metrics = redact(cfg.Metrics)
	}
	if f.httpDevices > 0 {
		r.Config.HTTP, r.Config.Endpoint, r.Config.Batch, r.Config.Concurrency = redact(cfg.HTTP), cfg.Endpoint, cfg.Batch, f.httpInFlight()
	}
	if f.mqttDevices > 0 {
		r.Config.MQTT, r.Config.QoS = redact(cfg.MQTT), cfg.QoS
	}
	c := &f.c
	sendS := max(sendEnd.Sub(f.start).Seconds(), 1e-3)
	r.Send = Send{
		Sent: c.sent.Load(), Requests: c.requests.Load(), Acked: c.acked.Load(), AckedAfterResend: c.ackedResent.Load(),
		Refused: c.refused.Load(), Errors: c.errors.Load(), Rejected: c.rejected.Load(), RejectedBy: c.rejectionsCopy(),
		GivenUp: c.givenUp.Load(), FirstError: f.firstErr,
		QoS0: c.qos0.Load(), QoS0Offline: c.offline.Load(), Reconnects: c.reconnects.Load(), TLSFull: c.tlsFull.Load(), TLSResumed: c.tlsResumed.Load(), Unconfirmed: c.unconfirmed.Load(),
		SendS: round3(sendS),
	}
	r.Send.ClientCPUCores, r.Send.ClientCores = round3(f.cpu.Seconds()/sendS), runtime.NumCPU()
	r.Send.SentPerS = round3(float64(r.Send.Sent) / sendS)
	r.Send.AckedPerS = round3(float64(r.Send.Acked) / sendS)
	r.Send.Resends, r.Send.ResentUnits, r.Send.ResendsAcked = c.resends.Load(), c.resentUnits.Load(), c.resendsAcked.Load()
	r.Send.ReadingsAcked, r.Send.RowsAcked = r.Send.Acked, r.Send.Acked
	if cfg.Shape != ShapeReading {
		var births int64
		r.Send.ReadingsAcked, _, births = rowsAcked(f.ledgers())
		r.Send.RowsAcked = r.Send.ReadingsAcked + births + c.deathsAcked.Load()
		if cfg.Shape == ShapeTyped { // a row per message, of MetricCount values
			r.Send.ReadingsAcked *= int64(cfg.MetricCount)
		}
	}
	r.Send.ReadingsPerS = round3(float64(r.Send.ReadingsAcked) / sendS)
	r.Send.RowsPerS = round3(float64(r.Send.RowsAcked) / sendS)
	switch cfg.Shape {
	case ShapeTelemetry, ShapeTyped:
		r.Config.MetricCount = cfg.MetricCount
	case ShapeSparkplug:
		r.Config.MetricCount, r.Config.SparkplugDevices, r.Config.RebirthEvery = cfg.MetricCount, cfg.SparkplugDevices, cfg.SparkplugRebirthEvery
		r.Send.RebirthsForced, r.Send.RebirthsAsked = c.rebirthsForced.Load(), c.rebirthsAsked.Load()
		r.Send.RebirthsAnswered, r.Send.DeathsAcked = c.rebirthsAnswered.Load(), c.deathsAcked.Load()
	}
	if f.open {
		r.Send.Scheduled = f.sched.Due(min(sendEnd.Sub(f.start), cfg.Duration))
	}
	r.AckLatency = summarize(f.totalLatency())
	r.Failures = r.failures()
	r.OK = len(r.Failures) == 0
	return r
}

// failures lists what makes the run fail.
func (r *Report) failures() []string {
	var out []string
	if r.Send.Sent == 0 {
		out = append(out, "nothing was sent")
	} else if r.Send.Acked == 0 && r.Send.QoS0 < r.Send.Sent {
		out = append(out, "nothing was acknowledged")
	}
	if l := r.Landing; l != nil {
		if l.Missing > 0 {
			out = append(out, fmt.Sprintf("%d acknowledged readings are missing (%s)", l.Missing, refs(l.MissingSample, l.Missing)))
		}
		if l.DupOnceAcked > 0 {
			out = append(out, fmt.Sprintf("%d duplicate rows of readings acknowledged on their first and only attempt (%s)", l.DupOnceAcked, refs(l.DupOnceAckedSample, l.DupOnceAcked)))
		}
		if l.Unexpected > 0 {
			out = append(out, fmt.Sprintf("%d rows of the run's devices are readings the fleet never sent", l.Unexpected))
		}
		if c := l.Columns; c != nil && len(c.Types) > 0 {
			out = append(out, fmt.Sprintf("the table %s is not as deploy/simulate-rules.yaml declares it (%s): was it created by firehose migrate --config deploy/simulate-rules.yaml?", c.Table, strings.Join(c.Types, "; ")))
		}
		if c := l.Columns; c != nil && c.Mismatched > 0 {
			out = append(out, fmt.Sprintf("%d of %d rows of %s differ from what their devices sent (%s)", c.Mismatched, c.Rows, c.Table, mismatches(c)))
		}
		if l.Partial > 0 {
			out = append(out, fmt.Sprintf("%d rows landed of Sparkplug DATA with an unknown alias, which the target was to store whole as edge dead letters: partial storage (%s)", l.Partial, refs(l.PartialSample, l.Partial)))
		}
		if d := l.DeadLetters; d != nil && d.Missing > 0 {
			out = append(out, fmt.Sprintf("%d of %d acknowledged NDATA with an unknown alias have no edge dead letter in readings_rejected (source 'edge') (%s)", d.Missing, d.Expected, refs(d.MissingSample, d.Missing)))
		}
		if l.DupFromResends > 0 && r.Config.ExpectDedup {
			out = append(out, fmt.Sprintf("%d duplicate rows from resends of acknowledged messages, and --expect-dedup says the target drops them", l.DupFromResends))
		}
		for _, e := range l.Events {
			switch {
			case e.Landed < e.Acked:
				out = append(out, fmt.Sprintf("%d of %d acknowledged %s rows are missing", e.Acked-e.Landed, e.Acked, e.Metric))
			case e.Landed > e.Acked+e.Resent+e.Unacked || (r.Config.ExpectDedup && e.Landed > e.Acked+e.Unacked):
				out = append(out, fmt.Sprintf("%d %s rows landed for %d acknowledged", e.Landed, e.Metric, e.Acked))
			}
		}
		if r.Config.Shape != ShapeReading && l.Rows == 0 && r.Send.Acked > 0 {
			out = append(out, fmt.Sprintf("no row landed for %d acknowledged units: does the target have the rules of deploy/simulate-rules.yaml (firehose serve --config deploy/simulate-rules.yaml)? An MQTT 3.1.1 broker acknowledges a publish that no rule maps, and stores nothing", r.Send.Acked))
			if r.Config.Shape == ShapeTyped {
				out[len(out)-1] += "; a row the bridge cannot write to " + TypedTable + " is a dead letter in readings_rejected"
			}
		}
	}
	if s := r.Send; s.RebirthsForced > 0 {
		switch {
		case s.RebirthsAsked == 0:
			out = append(out, fmt.Sprintf("%d NDATA carried an unknown alias, and the target never asked for a rebirth (NCMD Node Control/Rebirth)", s.RebirthsForced))
		case s.RebirthsAnswered == 0:
			out = append(out, "the target asked for rebirths, and no edge node answered one")
		}
	}
	return out
}

// mismatches names some of a column check's mismatches.
func mismatches(c *ColumnCheck) string {
	s := make([]string, 0, len(c.Sample))
	for _, m := range c.Sample {
		s = append(s, m.String())
	}
	out := "e.g. " + strings.Join(s, ", ")
	if int64(len(c.Sample)) < c.Mismatched {
		out += ", ..."
	}
	return out
}

func refs(rs []Ref, total int64) string {
	s := make([]string, 0, len(rs))
	for _, r := range rs {
		s = append(s, r.String())
	}
	out := "e.g. " + strings.Join(s, ", ")
	if int64(len(rs)) < total {
		out += ", ..."
	}
	return out
}

// Verdict is the run's one-line conclusion.
func (r *Report) Verdict() string {
	switch {
	case !r.OK:
		return "FAILED: " + strings.Join(r.Failures, "; ")
	case r.Landing == nil:
		return "NOT VERIFIED: no --postgres, so nothing was checked in PostgreSQL."
	case r.Send.Acked == 0:
		return fmt.Sprintf("OK: QoS 0, at most once: %d of %d readings landed, none twice.", r.Landing.QoS0Landed, r.Landing.QoS0Sent)
	}
	if r.Config.Shape == ShapeTyped {
		return "OK: every acknowledged message landed exactly one row of " + TypedTable + ", each column as the device sent it" + r.resendNote() + "."
	}
	if r.Config.Shape != ShapeReading && r.Config.Shape != "" {
		note := r.resendNote()
		if d := r.deadLetters(); d != nil && d.Expected > 0 {
			note += fmt.Sprintf(" (and %d NDATA with an unknown alias were stored whole as edge dead letters, none of their rows)", d.Expected)
		}
		return "OK: every metric of every acknowledged message landed exactly once" + note + "."
	}
	return "OK: every acknowledged reading landed exactly once" + r.resendNote() + "."
}

// resendNote says how the duplicates of resends were taken.
func (r *Report) resendNote() string {
	if r.Landing == nil || r.Landing.DupFromResends == 0 {
		return ""
	}
	return fmt.Sprintf(" (plus %d duplicate rows from resends after the ack: the target does not deduplicate)", r.Landing.DupFromResends)
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	return nil
}

// WriteFiles writes report.json and report.html into dir, creating it.
func (r *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report directory: %w", err)
	}
	for name, write := range map[string]func(io.Writer) error{"report.json": r.WriteJSON, "report.html": r.WriteHTML} {
		if err := writeFile(filepath.Join(dir, name), write); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// row is one line of the summary table, shared by the text and the HTML.
type row struct {
	section string // starts a section when not empty
	label   string
	value   string
	note    string
	status  string // "bad", "good" or ""
}

// Title describes the run in a line.
func (r *Report) Title() string {
	c := r.Config
	var what string
	switch c.Protocol {
	case ProtocolHTTP:
		what = "HTTP " + r.endpointText()
	case ProtocolMQTT:
		what = fmt.Sprintf("MQTT QoS %d", c.QoS)
	default:
		what = fmt.Sprintf("MQTT QoS %d and HTTP %s", c.QoS, r.endpointText())
	}
	load := "closed loop"
	if c.Loop == "open" {
		load = "open loop at " + count(int64(c.RatePerS)) + " readings/s"
		if c.RampS > 0 {
			load += fmt.Sprintf(" (ramp %s)", durText(c.RampS))
		}
	}
	devices := "devices"
	switch c.Shape {
	case ShapeTelemetry:
		what += fmt.Sprintf(", telemetry of %d metrics", c.MetricCount)
	case ShapeTyped:
		what += fmt.Sprintf(", telemetry of %d metrics as rows of %s", c.MetricCount, TypedTable)
	case ShapeSamples:
		what += ", sample uploads"
	case ShapeSparkplug:
		devices = "Sparkplug edge nodes"
		what += fmt.Sprintf(", %d metrics, %d devices each", c.MetricCount, c.SparkplugDevices)
	}
	return fmt.Sprintf("run %s: %s %s over %s, %s, %s", r.RunID, count(int64(c.Devices)), devices, what, load, durText(c.DurationS))
}

func (r *Report) endpointText() string {
	if r.Config.Endpoint == EndpointFast {
		return "POST /readings/fast"
	}
	if r.Config.Batch > 1 {
		return fmt.Sprintf("POST /v1/readings, %d readings a request", r.Config.Batch)
	}
	return "POST /v1/readings"
}

func (r *Report) rows() []row {
	s, c := r.Send, r.Config
	u := unitWord(c.Shape)
	var rows []row
	add := func(label, value, note, status string) {
		rows = append(rows, row{label: label, value: value, note: note, status: status})
	}
	section := func(name string) { rows = append(rows, row{section: name}) }
	section("sending")
	add("devices", fmt.Sprintf("%s-1 .. %s%d", r.DevicePrefix[:len(r.DevicePrefix)-1], r.DevicePrefix, c.Devices), devicesNote(c), "")
	if s.Scheduled > 0 {
		note := "due within the run (open loop)"
		if late := s.Scheduled - s.Sent; late > 0 {
			note = fmt.Sprintf("%s late: not sent within 1s after the end (the target or this machine fell behind)", count(late))
		}
		add("scheduled", count(s.Scheduled)+" "+u, note, "")
	}
	add("sent", count(s.Sent)+" "+u, fmt.Sprintf("%s requests/publishes, %s/s over %s", count(s.Requests), count(int64(s.SentPerS)), durText(s.SendS)), "")
	if s.QoS0 < s.Sent {
		add("acknowledged", count(s.Acked)+" "+u, fmt.Sprintf("%s/s; %s of them after a resend", count(int64(s.AckedPerS)), count(s.AckedAfterResend)), "")
	}
	if s.QoS0 > 0 {
		note := "at most once: no acknowledgement"
		if s.QoS0Offline > 0 {
			note += fmt.Sprintf("; %s dropped while reconnecting", count(s.QoS0Offline))
		}
		add("published at QoS 0", count(s.QoS0)+" "+u, note, "")
	}
	if c.Shape != ShapeReading && c.Shape != "" {
		add("readings acknowledged", count(s.ReadingsAcked), fmt.Sprintf("%s/s: the acknowledged messages' values", count(int64(s.ReadingsPerS))), "")
		rowNote := "a row per value, and one per Sparkplug birth and death"
		if c.Shape == ShapeTyped {
			rowNote = "a row of " + TypedTable + " per message"
		}
		add("rows acknowledged", count(s.RowsAcked), fmt.Sprintf("%s/s: %s", count(int64(s.RowsPerS)), rowNote), "")
	}
	if s.Resends > 0 {
		add("resent after the ack", count(s.Resends)+" messages", fmt.Sprintf("--resend %g: %s units again, %s resends acknowledged", c.Resend, count(s.ResentUnits), count(s.ResendsAcked)), "")
	}
	if c.Shape == ShapeSparkplug {
		forced := "at QoS 0 their known metrics land"
		if c.QoS > 0 {
			forced = "each stored whole as an edge dead letter, no row"
		}
		add("rebirths", fmt.Sprintf("%s asked, %s answered", count(s.RebirthsAsked), count(s.RebirthsAnswered)),
			fmt.Sprintf("%s NDATA with an unknown alias (--sparkplug-rebirth-every %d): %s; %s NDEATHs acknowledged", count(s.RebirthsForced), c.RebirthEvery, forced, count(s.DeathsAcked)), "")
		if d := r.deadLetters(); d != nil {
			note := "edge dead letters (readings_rejected) of the acknowledged NDATA with an unknown alias"
			if d.Again+d.Unacked+d.Other > 0 {
				note += fmt.Sprintf("; %s again (a resend of the same message), %s of unacknowledged ones, %s of other messages", count(d.Again), count(d.Unacked), count(d.Other))
			}
			if d.Missing > 0 {
				note = fmt.Sprintf("%s acknowledged without one", count(d.Missing))
			}
			add("dead letters", fmt.Sprintf("%s expected, %s found", count(d.Expected), count(d.Found)), note, goodBad(d.Missing == 0))
		}
	}
	add("refused (503)", count(s.Refused)+" answers", "each followed by a resend after Retry-After", "")
	errNote := "transport errors, 5xx, publish failures; followed by a resend"
	if s.FirstError != "" {
		errNote = "first: " + clip(s.FirstError, 120)
	}
	add("errors", count(s.Errors), errNote, "")
	if s.Rejected > 0 {
		add("rejected (4xx)", count(s.Rejected)+" "+u, rejectedNote(s.RejectedBy), "bad")
	}
	add("given up", count(s.GivenUp)+" "+u, fmt.Sprintf("no acknowledgement after %d attempts or by the end", c.MaxAttempts), "")
	if s.Reconnects > 0 {
		add("MQTT reconnects", count(s.Reconnects), "connections lost and re-made by the devices", "")
	}
	if n := s.TLSFull + s.TLSResumed; n > 0 {
		add("MQTT TLS handshakes", count(n), count(s.TLSResumed)+" resumed a session (abbreviated), "+count(s.TLSFull)+" full", "")
	}
	if s.Unconfirmed > 0 {
		add("unconfirmed (MQTT)", count(s.Unconfirmed)+" "+u, "in flight when the connection was lost: resent by the client, outcome unseen", "")
	}
	l := r.AckLatency
	latLabel := "ack latency"
	if s.QoS0 == s.Sent {
		latLabel = "publish latency"
	}
	add(latLabel, latencyText(l), fmt.Sprintf("from the intended send time, %s samples", count(l.Count)), "")
	if s.ClientCPUCores > 0 {
		note := "this simulator while sending"
		if s.ClientCPUCores > 0.75*float64(s.ClientCores) {
			note += ": near all the machine's cores, so the load generator may have limited the run"
		}
		add("simulator CPU", fmt.Sprintf("%.2f of %d cores", s.ClientCPUCores, s.ClientCores), note, "")
	}

	section("landing (PostgreSQL)")
	land := r.Landing
	if land == nil {
		add("verified", "no", "run without --postgres: nothing was checked", "bad")
		return rows
	}
	wait := fmt.Sprintf("within %s after sending ended", durText(land.WaitedS))
	if land.TimedOut {
		wait = fmt.Sprintf("still short after --land-timeout (%s)", durText(land.WaitedS))
	}
	add("landed", count(land.Rows)+" rows", fmt.Sprintf("%s distinct readings, %s", count(land.Readings), wait), "")
	if s.QoS0 < s.Sent {
		add("missing", count(land.Missing), "acknowledged but not in PostgreSQL", goodBad(land.Missing == 0))
		add("duplicates, acked once", count(land.DupOnceAcked), "extra rows of readings acknowledged on their only attempt", goodBad(land.DupOnceAcked == 0))
		add("duplicates after resend", count(land.DupAfterResend), "allowed: resent after an attempt without an acknowledgement", "")
		add("landed without an ack", count(land.LandedWithoutAck), "allowed: stored, but the acknowledgement was lost", "")
		if c.Resend > 0 || land.DupFromResends > 0 {
			note := "expected: resent after the ack (--resend), and the target does not deduplicate"
			if c.ExpectDedup {
				note = "--expect-dedup: the target should have dropped them"
			}
			add("duplicates from resends", count(land.DupFromResends), note, goodBad(!c.ExpectDedup || land.DupFromResends == 0))
		}
	}
	if len(land.Metrics) > 0 {
		note := "every metric of every acknowledged message, by (device, metric, ts)"
		if c.Shape == ShapeTyped {
			note = "a row of every acknowledged message, by (device, time)"
		}
		add("rows acked / landed", count(land.RowsAcked)+" / "+count(land.RowsLanded), note, "")
	}
	metricLabel := "  metric "
	if c.Shape == ShapeTyped {
		metricLabel = "  table "
	}
	for _, m := range land.Metrics {
		note := fmt.Sprintf("missing %s, duplicated %s, from resends %s, after retries %s", count(m.Missing), count(m.Duplicated), count(m.DupFromResends), count(m.DupAfterRetry))
		if m.Partial > 0 {
			note += fmt.Sprintf(", of dead letters %s", count(m.Partial))
		}
		add(metricLabel+m.Metric, fmt.Sprintf("%s acked, %s landed", count(m.RowsAcked), count(m.RowsLanded)), note,
			goodBad(m.Missing == 0 && m.Duplicated == 0 && m.Partial == 0))
	}
	if cc := land.Columns; cc != nil {
		add("columns", count(cc.Rows)+" rows checked", columnsNote(cc), goodBad(!cc.Failed()))
	}
	for _, e := range land.Events {
		add("  "+e.Metric, fmt.Sprintf("%s acked, %s landed", count(e.Acked), count(e.Landed)), "rows of Sparkplug births and deaths", goodBad(e.Landed >= e.Acked && e.Landed <= e.Acked+e.Resent+e.Unacked))
	}
	if land.Unexpected > 0 {
		add("never sent", count(land.Unexpected), "rows of the run's devices the fleet did not send", "bad")
	}
	if land.QoS0Sent > 0 {
		add("QoS 0 landed", fmt.Sprintf("%s of %s", count(land.QoS0Landed), count(land.QoS0Sent)),
			fmt.Sprintf("%s (%s lost: at most once, not a failure)", percent(land.QoS0Landed, land.QoS0Sent), count(land.QoS0Lost)), "")
	}
	if land.HasCommitTimes {
		add("receipt -> commit", latencyText(land.ReceiptToCommit), "end to end in the pipeline: received_at to committed_at", "")
		add("measured -> commit", latencyText(land.MeasuredToCommit), "device's ts to committed_at", "")
	}
	return rows
}

// columnsNote says what the column check of the shape typed found.
func columnsNote(c *ColumnCheck) string {
	switch {
	case len(c.Types) > 0:
		return "the table is not as the rules declare it: " + strings.Join(c.Types, "; ")
	case c.Mismatched == 0:
		return "each column as the device sent it: site, line, temp (real), pressure, rpm, seq, msg_id, extra, received_at"
	}
	by := make([]string, 0, len(c.ByColumn))
	for _, n := range c.columnNames() {
		by = append(by, fmt.Sprintf("%s %s", n, count(c.ByColumn[n])))
	}
	return fmt.Sprintf("%s rows differ (%s); %s", count(c.Mismatched), strings.Join(by, ", "), mismatches(c))
}

// deadLetters is the dead-letter check of a verified run, or nil.
func (r *Report) deadLetters() *DeadLetterCheck {
	if r.Landing == nil {
		return nil
	}
	return r.Landing.DeadLetters
}

// unitWord names the units a shape's ledger counts.
func unitWord(shape string) string {
	switch shape {
	case ShapeTelemetry, ShapeSparkplug, ShapeTyped:
		return "messages"
	case ShapeSamples:
		return "samples"
	}
	return "readings"
}

func devicesNote(c RunConfig) string {
	switch {
	case c.MQTTDevices > 0 && c.HTTPDevices > 0:
		return fmt.Sprintf("%d over MQTT (even), %d over HTTP (odd)", c.MQTTDevices, c.HTTPDevices)
	case c.HTTPDevices > 0:
		return fmt.Sprintf("at most %d HTTP requests in flight", c.Concurrency)
	}
	return "one MQTT connection each"
}

func rejectedNote(by map[string]int64) string {
	keys := make([]string, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %s", k, count(by[k])))
	}
	return "not resent; " + strings.Join(parts, ", ")
}

func goodBad(ok bool) string {
	if ok {
		return "good"
	}
	return "bad"
}

func latencyText(l Latency) string {
	if l.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s",
		formatMs(l.P50Ms), formatMs(l.P90Ms), formatMs(l.P99Ms), formatMs(l.P999Ms), formatMs(l.MaxMs))
}

// WriteSummary prints the summary table and the verdict.
func (r *Report) WriteSummary(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "firehose simulate, %s\n", r.Title())
	if r.Interrupted {
		b.WriteString("(interrupted: sending stopped early)\n")
	}
	for _, rw := range r.rows() {
		if rw.section != "" {
			fmt.Fprintf(&b, "\n%s\n", rw.section)
			continue
		}
		line := fmt.Sprintf("  %-26s %-22s", rw.label, rw.value)
		if len(rw.value) > 22 {
			line = fmt.Sprintf("  %-26s %s ", rw.label, rw.value)
		}
		if rw.note != "" {
			line += " " + rw.note
		}
		b.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	fmt.Fprintf(&b, "\n%s\n", r.Verdict())
	_, err := io.WriteString(w, b.String())
	return err
}

// count prints n with thousands separators.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func percent(a, b int64) string {
	if b == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*float64(a)/float64(b), 'f', 2, 64) + " %"
}

func durText(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
