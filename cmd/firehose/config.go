package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"firehose/broker"
	"firehose/httpgw"
	"firehose/ingest"
	"firehose/internal/cli"
)

const configUsage = "usage: firehose config check FILE [--topic TOPIC --payload PAYLOAD | --endpoint PATH --body BODY] [--json]"

// Endpoints of the gateway a config check sample may post to.
const (
	endpointV1   = "/v1/readings"
	endpointFast = "/readings/fast"
)

func runConfig(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "check" {
		return runConfigCheck(args[1:], stdout, stderr)
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(stdout, configUsage)
		return nil
	}
	return usageError{errors.New(configUsage)}
}

// checkArgs are config check's own flags: a sample to map, and the output.
type checkArgs struct {
	file        string
	topic       string
	payload     string
	endpoint    string
	body        string
	contentType string
	device      string
	asJSON      bool
}

func parseCheckArgs(args []string, stderr io.Writer) (checkArgs, error) {
	var ca checkArgs
	fs := cli.NewFlagSet("config check", "firehose config check FILE [flags]",
		"Reads the configuration file FILE (with the FIREHOSE_* environment) exactly as firehose serve --config FILE would,\n"+
			"connecting to nothing, and prints each effective setting and where it came from (secrets redacted). Given a\n"+
			"sample (--topic and --payload for MQTT, --endpoint and --body for HTTP), it also prints the rows that sample\n"+
			"would land in the readings table, or why it would be refused. Exits 1 if serve would refuse the file.\n"+
			"A PAYLOAD or BODY of @path is read from that file.")
	fs.SetOutput(stderr)
	fs.StringVar(&ca.topic, "topic", "", "MQTT sample: the topic it is published to, e.g. devices/pump-7/readings")
	fs.StringVar(&ca.payload, "payload", "", "MQTT sample: its payload, e.g. '{\"reading\": 21.5}'")
	fs.StringVar(&ca.endpoint, "endpoint", "", "HTTP sample: the path it is posted to, "+endpointV1+" or "+endpointFast)
	fs.StringVar(&ca.body, "body", "", "HTTP sample: the request body")
	fs.StringVar(&ca.contentType, "content-type", "application/json", "HTTP sample: its Content-Type (application/json or application/x-ndjson)")
	fs.StringVar(&ca.device, "device-id", "", "HTTP sample: its X-Device-ID header ("+endpointFast+"; default --default-device-id)")
	fs.BoolVar(&ca.asJSON, "json", false, "print one JSON object, for scripts")
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	fs.CommandLineOnly(names...) // a sample is one run's choice
	// FILE may stand before, between or after the flags.
	var files []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return ca, err
			}
			return ca, usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	switch {
	case len(files) != 1:
		return ca, usageError{errors.New(configUsage)}
	case ca.topic != "" && ca.endpoint != "":
		return ca, usageError{errors.New("give one sample: --topic (MQTT) or --endpoint (HTTP), not both")}
	case ca.payload != "" && ca.topic == "":
		return ca, usageError{errors.New("--payload needs --topic")}
	case ca.body != "" && ca.endpoint == "":
		return ca, usageError{errors.New("--body needs --endpoint")}
	case ca.endpoint != "" && ca.endpoint != endpointV1 && ca.endpoint != endpointFast:
		return ca, usageError{fmt.Errorf("--endpoint %q: want %s or %s", ca.endpoint, endpointV1, endpointFast)}
	}
	ca.file = files[0]
	for _, p := range []*string{&ca.payload, &ca.body} {
		if path, ok := strings.CutPrefix(*p, "@"); ok {
			b, err := os.ReadFile(path)
			if err != nil {
				return ca, usageError{fmt.Errorf("read sample: %w", err)}
			}
			*p = string(b)
		}
	}
	return ca, nil
}

// checkReport is what config check found; --json prints it as is.
type checkReport struct {
	File     string         `json:"file"`
	Valid    bool           `json:"valid"`
	Error    string         `json:"error,omitempty"`
	Line     int            `json:"line,omitempty"` // of the error, when it is on one
	Roles    []string       `json:"roles,omitempty"`
	Settings []checkSetting `json:"settings,omitempty"`
	Sample   *checkSample   `json:"sample,omitempty"`
}

// checkSetting is one flag's effective value.
type checkSetting struct {
	Flag  string `json:"flag"`
	Value string `json:"value"`
	From  string `json:"from"`          // default, file, environment
	Env   string `json:"env,omitempty"` // the variable, from the environment
	Line  int    `json:"line,omitempty"`
}

// checkSample is what one sample maps to.
type checkSample struct {
	Protocol string        `json:"protocol"` // mqtt or http
	Topic    string        `json:"topic,omitempty"`
	Endpoint string        `json:"endpoint,omitempty"`
	Rows     []checkRow    `json:"rows"`
	Refused  *checkRefusal `json:"refused,omitempty"`
	Note     string        `json:"note,omitempty"`
}

// checkRow is one row of the readings table, as the bridge would COPY it,
// and the shard stream it would travel through.
type checkRow struct {
	DeviceID   string          `json:"device_id"`
	Metric     string          `json:"metric"`
	TS         time.Time       `json:"ts"`
	ReceivedAt time.Time       `json:"received_at"` // the check's time stands for the time of receipt
	Reading    float64         `json:"reading"`
	Payload    json.RawMessage `json:"payload"` // null: no extra fields
	Shard      int             `json:"shard"`
	Stream     string          `json:"stream"`
}

// checkRefusal is why a sample would not be stored, and what its client is
// answered.
type checkRefusal struct {
	Reason string          `json:"reason"`
	Status int             `json:"status,omitempty"` // HTTP
	Answer json.RawMessage `json:"answer,omitempty"` // HTTP: the gateway's JSON answer
	MQTT   string          `json:"mqtt,omitempty"`   // what the publisher gets
}

func runConfigCheck(args []string, stdout, stderr io.Writer) error {
	ca, err := parseCheckArgs(args, stderr)
	if err != nil {
		return err
	}
	rep, err := checkConfig(ca, time.Now())
	if ca.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if e := enc.Encode(rep); e != nil {
			return fmt.Errorf("write report: %w", e)
		}
	} else if err == nil {
		printReport(stdout, rep)
	}
	return err
}

// checkConfig validates ca.file as serve would, without connecting to
// anything, and maps the sample if one is given. The error is the file's
// refusal (not a usage error: exit 1), also in the report.
func checkConfig(ca checkArgs, now time.Time) (*checkReport, error) {
	rep := &checkReport{File: ca.file}
	fail := func(err error) (*checkReport, error) {
		var ue usageError
		if errors.As(err, &ue) {
			err = ue.error
		}
		rep.Error = err.Error()
		if fe := (*cli.FileError)(nil); errors.As(err, &fe) {
			rep.Line = fe.Line
		}
		return rep, err
	}
	cfg, fs, err := loadServe([]string{"--" + cli.ConfigFlag, ca.file}, io.Discard)
	if err != nil {
		return fail(err)
	}
	if err := checkRoles(cfg); err != nil {
		return fail(err)
	}
	rep.Valid = true
	rep.Roles, _ = cfg.roles()
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == cli.ConfigFlag {
			return
		}
		o := fs.Origin(f.Name)
		s := checkSetting{Flag: f.Name, Value: redactSetting(f.Value.String()), From: "default"}
		switch o.Source {
		case cli.FromFile:
			s.From, s.Line = "file", o.Line
		case cli.FromEnvironment:
			s.From, s.Env = "environment", o.Env
		}
		rep.Settings = append(rep.Settings, s)
	})
	edge := ""
	switch {
	case ca.topic != "":
		edge = roleBroker
		rep.Sample = mqttSample(cfg, ca.topic, []byte(ca.payload), now)
	case ca.endpoint != "":
		edge = roleHTTP
		rep.Sample, err = httpSample(cfg, ca)
		if err != nil {
			return fail(err)
		}
	}
	if edge != "" && !slices.Contains(rep.Roles, edge) {
		rep.Sample.Note = strings.TrimPrefix(rep.Sample.Note+"; ", "; ") +
			fmt.Sprintf("this file runs no %s role: the processes that do map it so, with these settings", edge)
	}
	return rep, nil
}

// checkRoles builds what serve builds from the settings before it connects:
// the broker and the gateway (their credentials and API key files are read)
// and the TLS key pairs the listeners would load.
func checkRoles(cfg *serveConfig) error {
	roles, _ := cfg.roles()
	logger := slog.New(slog.DiscardHandler)
	if slices.Contains(roles, roleBroker) {
		if _, err := broker.New(cfg.MQTT, &sampleProducer{}, logger, prometheus.NewRegistry()); err != nil {
			return fmt.Errorf("mqtt broker: %w", err)
		}
		if cfg.MQTT.TLSAddr != "" {
			if _, err := tls.LoadX509KeyPair(cfg.MQTT.TLSCert, cfg.MQTT.TLSKey); err != nil {
				return fmt.Errorf("load MQTT TLS certificate (--mqtt-tls-cert %s, --mqtt-tls-key %s): %w", cfg.MQTT.TLSCert, cfg.MQTT.TLSKey, err)
			}
		}
	}
	if slices.Contains(roles, roleHTTP) {
		if _, err := httpgw.New(cfg.HTTP, &sampleProducer{}, nil, logger, prometheus.NewRegistry()); err != nil {
			return fmt.Errorf("http gateway: %w", err)
		}
		if cfg.HTTP.TLSCert != "" {
			if _, err := tls.LoadX509KeyPair(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey); err != nil {
				return fmt.Errorf("load HTTP TLS certificate (--http-tls-cert %s, --http-tls-key %s): %w", cfg.HTTP.TLSCert, cfg.HTTP.TLSKey, err)
			}
		}
	}
	return nil
}

// sampleProducer keeps what an edge would have stored, instead of storing it.
type sampleProducer struct{ rs []ingest.Reading }

func (p *sampleProducer) Add(_ context.Context, rs []ingest.Reading) error {
	for _, r := range rs {
		p.Enqueue(r)
	}
	return nil
}

// Enqueue keeps a copy: the edges reuse a reading's memory once Add returned.
func (p *sampleProducer) Enqueue(r ingest.Reading) error {
	r.DeviceID = strings.Clone(r.DeviceID)
	r.Payload = bytes.Clone(r.Payload)
	p.rs = append(p.rs, r)
	return nil
}

// AddDeadLetter keeps nothing: a sample is checked by mapping it, not by
// publishing it.
func (p *sampleProducer) AddDeadLetter(context.Context, ingest.DeadLetter) error { return nil }

func (p *sampleProducer) Ready() error { return nil }

// mqttSample maps a publish as the broker's hook does: the topic names the
// device under --mqtt-topic, broker.DecodePayload reads the payload, then
// the reading is normalized and validated against the limits.
func mqttSample(cfg *serveConfig, topic string, payload []byte, now time.Time) *checkSample {
	s := &checkSample{Protocol: "mqtt", Topic: topic, Rows: []checkRow{}}
	if topic == "" || strings.ContainsAny(topic, "+#\x00") {
		s.Refused = &checkRefusal{
			Reason: "a topic name must not be empty or hold wildcards (+, #)",
			MQTT:   "the broker refuses the packet and disconnects the client",
		}
		return s
	}
	if mt, ok := cfg.MQTT.Rules.MatchTopic(topic); ok {
		rs, err := mt.Map(payload, now, cfg.MQTT.Limits)
		if err != nil {
			s.Refused = &checkRefusal{
				Reason: err.Error(),
				MQTT:   "QoS 1/2: MQTT 5 gets 0x99 payload format invalid with this reason, MQTT 3.1.1 an acknowledgement and the message is dropped; QoS 0: dropped; nothing of it is stored",
			}
			return s
		}
		s.Rows = landedRows(cfg, rs)
		s.Note = "mapped by rule " + mt.Rule() + ": its rows are stored together or not at all"
		return s
	}
	tmpl := cmp.Or(cfg.MQTT.Topic, broker.DefaultTopic)
	dev, ok := broker.ReadingsDevice(tmpl, topic)
	if !ok {
		s.Note = fmt.Sprintf("not a readings topic (--mqtt-topic %s): the broker delivers it to subscribers and stores nothing", tmpl)
		return s
	}
	maxPacket := cmp.Or(cfg.MQTT.MaxPacket, broker.DefaultMaxPacket)
	if len(payload) > maxPacket {
		s.Refused = &checkRefusal{
			Reason: fmt.Sprintf("the payload's %d bytes exceed --mqtt-max-packet-bytes %d", len(payload), maxPacket),
			MQTT:   "the broker disconnects the client",
		}
		return s
	}
	r := ingest.Reading{DeviceID: dev, ReceivedAt: now}
	err := broker.DecodePayload(payload, &r)
	if err == nil {
		r.Normalize()
		err = r.Validate(cfg.MQTT.Limits)
	}
	if err != nil {
		s.Refused = &checkRefusal{
			Reason: err.Error(),
			MQTT:   "QoS 1/2: MQTT 5 gets 0x99 payload format invalid, MQTT 3.1.1 an acknowledgement and the reading is dropped; QoS 0: dropped",
		}
		return s
	}
	s.Rows = landedRows(cfg, []ingest.Reading{r})
	if cfg.MQTT.AuthFile != "" {
		s.Note = "under --mqtt-auth only device " + dev + " may publish it"
	}
	return s
}

// httpSample posts the body to the gateway's own handler, built from the
// settings with a producer that keeps the readings, and reports what it
// answered. API keys are not asked for: the sample is about the mapping.
func httpSample(cfg *serveConfig, ca checkArgs) (*checkSample, error) {
	s := &checkSample{Protocol: "http", Endpoint: ca.endpoint, Rows: []checkRow{}}
	hc := cfg.HTTP
	hc.APIKeysFile = ""
	p := &sampleProducer{}
	srv, err := httpgw.New(hc, p, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		return nil, fmt.Errorf("http gateway: %w", err)
	}
	req := httptest.NewRequest(http.MethodPost, ca.endpoint, strings.NewReader(ca.body))
	req.Header.Set("Content-Type", ca.contentType)
	if ca.device != "" {
		req.Header.Set("X-Device-ID", ca.device)
	}
	w := httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		answer := w.Body.Bytes()
		var a struct {
			Error  string `json:"error"`
			Detail []struct {
				Msg string `json:"msg"`
			} `json:"detail"`
		}
		_ = json.Unmarshal(answer, &a) // the reason is best effort; the answer is kept whole
		reason := a.Error
		if reason == "" && len(a.Detail) > 0 {
			reason = a.Detail[0].Msg
		}
		s.Refused = &checkRefusal{Reason: cmp.Or(reason, http.StatusText(w.Code)), Status: w.Code}
		if json.Valid(answer) {
			s.Refused.Answer = json.RawMessage(bytes.Clone(answer))
		}
		return s, nil
	}
	s.Rows = landedRows(cfg, p.rs)
	if cfg.HTTP.APIKeysFile != "" {
		s.Note = "the sample was not asked for an API key; under --http-api-keys the request's key must allow each device"
	}
	return s, nil
}

// landedRows is what the bridge would COPY for rs: each reading through
// the stream encoding and back, as the bridge reads it.
func landedRows(cfg *serveConfig, rs []ingest.Reading) []checkRow {
	rows := make([]checkRow, 0, len(rs))
	for i := range rs {
		r, err := ingest.Decode(ingest.CodecMetric, string(ingest.AppendEncodeMetric(nil, &rs[i])))
		if err != nil {
			r = rs[i] // cannot happen for a reading that validated; show it as it is
		}
		shard := cfg.Streams.Shard(r.DeviceID)
		row := checkRow{DeviceID: r.DeviceID, Metric: cmp.Or(r.Metric, ingest.DefaultMetric), TS: r.Time, ReceivedAt: r.ReceivedAt, Reading: r.Value, Payload: json.RawMessage("null"), Shard: shard, Stream: cfg.Streams.Key(shard)}
		if r.Payload != nil {
			row.Payload = json.RawMessage(r.Payload)
		}
		rows = append(rows, row)
	}
	return rows
}

// redactSetting hides a password in a setting that is a URL (user info or
// a password= parameter, as PostgreSQL URLs allow).
func redactSetting(v string) string {
	u, err := url.Parse(v)
	if err != nil || u.Scheme == "" {
		return v
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

func printReport(w io.Writer, rep *checkReport) {
	fmt.Fprintf(w, "%s: valid: firehose serve --config %s would start roles %s\n\n", rep.File, rep.File, strings.Join(rep.Roles, ", "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SETTING\tVALUE\tFROM")
	for _, s := range rep.Settings {
		v := s.Value
		if v == "" {
			v = `""`
		}
		from := s.From
		switch s.From {
		case "file":
			from = rep.File + ":" + strconv.Itoa(s.Line)
		case "environment":
			from = s.Env
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Flag, v, from)
	}
	tw.Flush()
	s := rep.Sample
	if s == nil {
		return
	}
	if s.Protocol == "mqtt" {
		fmt.Fprintf(w, "\nsample: MQTT publish to %s\n", s.Topic)
	} else {
		fmt.Fprintf(w, "\nsample: HTTP POST %s\n", s.Endpoint)
	}
	switch {
	case s.Refused != nil:
		fmt.Fprintf(w, "refused, nothing lands: %s\n", s.Refused.Reason)
		if s.Refused.Status != 0 {
			fmt.Fprintf(w, "answer: %d %s\n", s.Refused.Status, s.Refused.Answer)
		}
		if s.Refused.MQTT != "" {
			fmt.Fprintf(w, "answer: %s\n", s.Refused.MQTT)
		}
	case len(s.Rows) == 0:
		fmt.Fprintln(w, "no rows land")
	default:
		fmt.Fprintf(w, "%d row(s) would land in readings:\n", len(s.Rows))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "DEVICE_ID\tMETRIC\tTS\tRECEIVED_AT\tREADING\tPAYLOAD\tSTREAM")
		for _, r := range s.Rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.DeviceID, r.Metric, r.TS.Format(time.RFC3339Nano), r.ReceivedAt.Format(time.RFC3339Nano),
				strconv.FormatFloat(r.Reading, 'g', -1, 64), r.Payload, r.Stream)
		}
		tw.Flush()
	}
	if s.Note != "" {
		fmt.Fprintf(w, "note: %s\n", s.Note)
	}
}
