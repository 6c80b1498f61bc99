package configcheck

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"firehose/broker"
	"firehose/httpgw"
	"firehose/ingest"
	"firehose/internal/cli"
	"firehose/mapping"
	"firehose/mqttmsg"
	"firehose/schema"
	"firehose/stream"
	"firehose/typed"
)

// Endpoints of the gateway a sample may be posted to.
const (
	EndpointV1   = "/v1/readings"
	EndpointFast = "/readings/fast"
)

// Edges is the settings of the edges a sample goes through and of the
// streams it would travel through.
type Edges struct {
	MQTT    broker.Config
	HTTP    httpgw.Config
	Streams stream.Streams
}

// HTTPRequest is a sample request to the gateway.
type HTTPRequest struct {
	Endpoint    string // EndpointV1 or EndpointFast
	Body        string
	ContentType string
	DeviceID    string // its X-Device-ID header; "" for none
}

// Settings is each flag's effective value in fs and where it came from,
// but --config's.
func Settings(fs *cli.FlagSet) []Setting {
	var out []Setting
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == cli.ConfigFlag {
			return
		}
		o := fs.Origin(f.Name)
		s := Setting{Flag: f.Name, Value: RedactSetting(f.Value.String()), From: "default"}
		if strings.HasSuffix(f.Name, "-token") && s.Value != "" {
			s.Value = "xxxxx" // a secret itself, such as --admin-token
		}
		switch o.Source {
		case cli.FromFile:
			s.From, s.Line = "file", o.Line
		case cli.FromEnvironment:
			s.From, s.Env = "environment", o.Env
		}
		out = append(out, s)
	})
	return out
}

// Report is what firehose config check found; --json prints it as is.
type Report struct {
	File     string    `json:"file"`
	Valid    bool      `json:"valid"`
	Error    string    `json:"error,omitempty"`
	Line     int       `json:"line,omitempty"` // of the error, when it is on one
	Roles    []string  `json:"roles,omitempty"`
	Settings []Setting `json:"settings,omitempty"`
	// Tables are the typed tables the rules declare, with the DDL firehose
	// migrate --config (or serve, at the bridge's start) runs to create
	// one that does not exist.
	Tables []Table `json:"tables,omitempty"`
	Sample *Sample `json:"sample,omitempty"`
}

// Table is a typed table the rules declare and the statements that create
// it.
type Table struct {
	Name string   `json:"name"`
	Rule string   `json:"rule"`
	DDL  []string `json:"ddl"`
}

// Tables is the typed tables of rules with their DDL (schema.DDL).
func Tables(rules *mapping.Mapper) []Table {
	var out []Table
	for _, t := range rules.Tables() {
		out = append(out, Table{Name: t.Name, Rule: t.Rule, DDL: schema.DDL(t)})
	}
	return out
}

// Setting is one flag's effective value.
type Setting struct {
	Flag  string `json:"flag"`
	Value string `json:"value"`
	From  string `json:"from"`          // default, file, environment
	Env   string `json:"env,omitempty"` // the variable, from the environment
	Line  int    `json:"line,omitempty"`
}

// Sample is what one sample maps to.
type Sample struct {
	Protocol string `json:"protocol"` // mqtt or http
	Topic    string `json:"topic,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	Rows     []Row  `json:"rows"`
	// TypedRows are the rows of typed tables (a rule's table).
	TypedRows []TypedRow `json:"typed_rows,omitempty"`
	Refused   *Refusal   `json:"refused,omitempty"`
	Note      string     `json:"note,omitempty"`
}

// Row is one row of the readings table, as the bridge would COPY it,
// and the shard stream it would travel through.
type Row struct {
	DeviceID   string          `json:"device_id"`
	Metric     string          `json:"metric"`
	TS         time.Time       `json:"ts"`
	ReceivedAt time.Time       `json:"received_at"` // the check's time stands for the time of receipt
	Reading    float64         `json:"reading"`
	Payload    json.RawMessage `json:"payload"` // null: no extra fields
	Shard      int             `json:"shard"`
	Stream     string          `json:"stream"`
}

// TypedRow is one row of a typed table, as the bridge would COPY it, and
// the shard stream it would travel through.
type TypedRow struct {
	Table   string        `json:"table"`
	Columns []TypedColumn `json:"columns"`
	Shard   int           `json:"shard"`
	Stream  string        `json:"stream"`
}

// TypedColumn is one column's value in a TypedRow: nil is NULL.
type TypedColumn struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Refusal is why a sample would not be stored, and what its client is
// answered.
type Refusal struct {
	Reason string          `json:"reason"`
	Status int             `json:"status,omitempty"` // HTTP
	Answer json.RawMessage `json:"answer,omitempty"` // HTTP: the gateway's JSON answer
	MQTT   string          `json:"mqtt,omitempty"`   // what the publisher gets
}

// Roles builds what serve builds from the settings before it connects:
// the broker and the gateway of the roles that run (mqtt, http; their
// credentials and API key files are read) and the TLS key pairs the
// listeners would load.
func Roles(cfg Edges, mqtt, http bool) error {
	logger := slog.New(slog.DiscardHandler)
	if mqtt {
		mc := cfg.MQTT
		if mc.AuthFile == broker.AuthRegistry && mc.Credentials == nil {
			// The registry is in PostgreSQL, which config check does not
			// reach: the broker is built as serve builds it before the
			// first load.
			mc.Credentials = unloadedRegistry{}
		}
		if _, err := broker.New(mc, &sampleProducer{}, logger, prometheus.NewRegistry()); err != nil {
			return fmt.Errorf("mqtt broker: %w", err)
		}
		if cfg.MQTT.TLSAddr != "" {
			if _, err := tls.LoadX509KeyPair(cfg.MQTT.TLSCert, cfg.MQTT.TLSKey); err != nil {
				return fmt.Errorf("load MQTT TLS certificate (--mqtt-tls-cert %s, --mqtt-tls-key %s): %w", cfg.MQTT.TLSCert, cfg.MQTT.TLSKey, err)
			}
		}
	}
	if http {
		hc := cfg.HTTP
		if hc.DeviceAuth != "" && hc.Devices == nil {
			// serve hands the gateway the credentials of --mqtt-auth: the
			// file is read as serve reads it (the registry would need
			// PostgreSQL: not checked here).
			if f := cfg.MQTT.AuthFile; f != "" && f != broker.AuthRegistry {
				if _, err := broker.OpenCredentialsFile(f, logger); err != nil {
					return fmt.Errorf("load --mqtt-auth for --http-device-auth: %w", err)
				}
			}
			hc.Devices = noDevices{}
		}
		if _, err := httpgw.New(hc, &sampleProducer{}, nil, logger, prometheus.NewRegistry()); err != nil {
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

// MQTT maps a publish as the broker's hook does: the topic names the
// device under --mqtt-topic, mqttmsg.DecodePayload reads the payload, then
// the reading is normalized and validated against the limits.
func MQTT(cfg Edges, topic string, payload []byte, now time.Time) *Sample {
	s := &Sample{Protocol: "mqtt", Topic: topic, Rows: []Row{}}
	if topic == "" || strings.ContainsAny(topic, "+#\x00") {
		s.Refused = &Refusal{
			Reason: "a topic name must not be empty or hold wildcards (+, #)",
			MQTT:   "the broker refuses the packet and disconnects the client",
		}
		return s
	}
	if mt, ok := cfg.MQTT.Rules.MatchTopic(topic); ok {
		rs, err := mt.Map(payload, now, cfg.MQTT.Limits)
		if err != nil {
			s.Refused = &Refusal{
				Reason: err.Error(),
				MQTT:   "QoS 1/2: MQTT 5 gets 0x99 payload format invalid with this reason; MQTT 3.1.1 an acknowledgement once the message is stored whole as an edge dead letter (readings_rejected, firehose rejected list); QoS 0: dropped; none of its rows lands",
			}
			return s
		}
		s.land(cfg, rs)
		s.Note = "mapped by rule " + mt.Rule() + ": its rows are stored together or not at all"
		return s
	}
	tmpl := cmp.Or(cfg.MQTT.Topic, mqttmsg.DefaultTopic)
	dev, ok := mqttmsg.ReadingsDevice(tmpl, topic)
	if !ok {
		s.Note = fmt.Sprintf("not a readings topic (--mqtt-topic %s): the broker delivers it to subscribers and stores nothing", tmpl)
		return s
	}
	maxPacket := cmp.Or(cfg.MQTT.MaxPacket, broker.DefaultMaxPacket)
	if len(payload) > maxPacket {
		s.Refused = &Refusal{
			Reason: fmt.Sprintf("the payload's %d bytes exceed --mqtt-max-packet-bytes %d", len(payload), maxPacket),
			MQTT:   "the broker disconnects the client",
		}
		return s
	}
	r := ingest.Reading{DeviceID: dev, ReceivedAt: now}
	err := mqttmsg.DecodePayload(payload, &r)
	if err == nil {
		r.Normalize()
		err = r.Validate(cfg.MQTT.Limits)
	}
	if err != nil {
		s.Refused = &Refusal{
			Reason: err.Error(),
			MQTT:   "QoS 1/2: MQTT 5 gets 0x99 payload format invalid, MQTT 3.1.1 an acknowledgement and the reading is dropped; QoS 0: dropped",
		}
		return s
	}
	s.land(cfg, []ingest.Reading{r})
	if cfg.MQTT.AuthFile != "" {
		s.Note = "under --mqtt-auth only device " + dev + " may publish it"
	}
	return s
}

// noDevices stands for the device credentials serve would hand the
// gateway: none are asked for here.
type noDevices struct{}

func (noDevices) Device(string) (httpgw.Device, bool, error) { return httpgw.Device{}, false, nil }

// HTTP posts the body to the gateway's own handler, built from the
// settings with a producer that keeps the readings, and reports what it
// answered. API keys and device credentials are not asked for: the sample is
// about the mapping.
func HTTP(cfg Edges, req HTTPRequest) (*Sample, error) {
	s := &Sample{Protocol: "http", Endpoint: req.Endpoint, Rows: []Row{}}
	hc := cfg.HTTP
	hc.APIKeysFile, hc.DeviceAuth = "", ""
	p := &sampleProducer{}
	srv, err := httpgw.New(hc, p, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		return nil, fmt.Errorf("http gateway: %w", err)
	}
	hreq := httptest.NewRequest(http.MethodPost, req.Endpoint, strings.NewReader(req.Body))
	hreq.Header.Set("Content-Type", req.ContentType)
	if req.DeviceID != "" {
		hreq.Header.Set("X-Device-ID", req.DeviceID)
	}
	w := httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, hreq)
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
		s.Refused = &Refusal{Reason: cmp.Or(reason, http.StatusText(w.Code)), Status: w.Code}
		if json.Valid(answer) {
			s.Refused.Answer = json.RawMessage(bytes.Clone(answer))
		}
		return s, nil
	}
	s.land(cfg, p.rs)
	if cfg.HTTP.APIKeysFile != "" {
		s.Note = "the sample was not asked for an API key; under --http-api-keys the request's key must allow each device"
	}
	return s, nil
}

// land sets the rows the bridge would COPY for rs: each reading through
// the stream encoding and back, as the bridge reads it.
func (s *Sample) land(cfg Edges, rs []ingest.Reading) {
	for i := range rs {
		if rs[i].Row != nil {
			s.TypedRows = append(s.TypedRows, typedRow(cfg, &rs[i]))
			continue
		}
		r, err := ingest.Decode(ingest.CodecMetric, string(ingest.AppendEncodeMetric(nil, &rs[i])))
		if err != nil {
			r = rs[i] // cannot happen for a reading that validated; show it as it is
		}
		shard := cfg.Streams.Shard(r.DeviceID)
		row := Row{DeviceID: r.DeviceID, Metric: cmp.Or(r.Metric, ingest.DefaultMetric), TS: r.Time, ReceivedAt: r.ReceivedAt, Reading: r.Value, Payload: json.RawMessage("null"), Shard: shard, Stream: cfg.Streams.Key(shard)}
		if r.Payload != nil {
			row.Payload = json.RawMessage(r.Payload)
		}
		s.Rows = append(s.Rows, row)
	}
}

// typedRow is r's typed row through its stream encoding and back.
func typedRow(cfg Edges, r *ingest.Reading) TypedRow {
	row, _, err := typed.DecodeRow(string(typed.AppendRow(nil, r.Row)))
	if err != nil {
		row = *r.Row // cannot happen; show it as it is
	}
	shard := cfg.Streams.Shard(r.DeviceID)
	out := TypedRow{Table: row.Shape.Table, Shard: shard, Stream: cfg.Streams.Key(shard)}
	for i, c := range row.Shape.Columns {
		out.Columns = append(out.Columns, TypedColumn{Name: c.Name, Type: c.Type.String(), Value: goValue(c.Type, row.Values[i])})
	}
	return out
}

// goValue is v as JSON shows it: nil for NULL, numbers, strings, times,
// arrays; jsonb as the JSON itself.
func goValue(t typed.Type, v typed.Value) any {
	switch {
	case v.Null:
		return nil
	case t == typed.Boolean:
		return v.Bool
	case t == typed.Smallint, t == typed.Integer, t == typed.Bigint:
		return v.Int
	case t == typed.Real, t == typed.Double:
		return v.Float
	case t == typed.Numeric:
		return json.Number(v.Str)
	case t == typed.Timestamptz:
		return v.Time()
	case t == typed.JSONB:
		return json.RawMessage(v.Str)
	case t == typed.DoubleArray:
		return v.Floats()
	case t == typed.TextArray:
		return v.Strs()
	}
	return v.Str
}

// Text is the column's value as config check's text shows it: NULL, a
// quoted string, a time in RFC 3339, JSON otherwise.
func (c TypedColumn) Text() string { return textValue(c.Value) }

// textValue is v as config check's text shows it.
func textValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return strconv.Quote(x)
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case json.RawMessage:
		return string(x)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// RedactSetting hides a password in a setting that is a URL (user info or
// a password= parameter, as PostgreSQL URLs allow).
func RedactSetting(v string) string {
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

// WriteText prints the report as config check shows it without --json.
func (rep *Report) WriteText(w io.Writer) {
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
	for _, t := range rep.Tables {
		fmt.Fprintf(w, "\ntyped table %s (rule %s): firehose migrate --config %s creates it so when it does not exist:\n", t.Name, t.Rule, rep.File)
		for _, stmt := range t.DDL {
			fmt.Fprintf(w, "  %s;\n", stmt)
		}
	}
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
	case len(s.Rows) == 0 && len(s.TypedRows) == 0:
		fmt.Fprintln(w, "no rows land")
	case len(s.Rows) == 0:
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
	for _, r := range s.TypedRows {
		fmt.Fprintf(w, "a row would land in %s (stream %s):\n", r.Table, r.Stream)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  COLUMN\tTYPE\tVALUE")
		for _, c := range r.Columns {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", c.Name, c.Type, textValue(c.Value))
		}
		tw.Flush()
	}
	if s.Note != "" {
		fmt.Fprintf(w, "note: %s\n", s.Note)
	}
}

// unloadedRegistry stands for the device registry in config check: not
// loaded, as serve's is until PostgreSQL answers.
type unloadedRegistry struct{}

func (unloadedRegistry) Credentials() broker.Credentials                          { return nil }
func (unloadedRegistry) Watch(context.Context, func(old, cur broker.Credentials)) {}
func (unloadedRegistry) Connected(string)                                         {}
