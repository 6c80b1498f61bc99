package console

import (
	"net/http"
	"strings"
)

// Sample is a message the playground maps: an MQTT publish (Topic) or an
// HTTP request to the gateway (Path, DeviceID).
type Sample struct {
	Protocol string // "mqtt" or "http"
	Topic    string // MQTT: the topic it is published to
	Path     string // HTTP: /v1/readings (?rule=NAME) or /readings/fast
	DeviceID string // HTTP: its X-Device-ID header, "" for none
	Payload  string // the MQTT payload or the HTTP body (application/json)
}

// Mapped is what a sample becomes, as firehose config check shows it: the
// rows it lands, or why it is refused.
type Mapped struct {
	Rows      []ReadingRow
	TypedRows []TypedRow
	Refused   *Refused // nil: not refused
	Note      string
}

// ReadingRow is one row of the readings table, its values as text.
type ReadingRow struct {
	DeviceID, Metric, TS, ReceivedAt, Reading, Payload, Stream string
}

// TypedRow is one row of a typed table, column by column.
type TypedRow struct {
	Table, Stream string
	Columns       []Column
}

// Column is one column of a typed row: its value as text (NULL for none).
type Column struct{ Name, Type, Value string }

// Refused is why a sample is not stored and what its client is answered.
type Refused struct{ Reason, Answer string }

// MapFunc maps a sample through the running process's own edge settings
// (rules, readings topic, limits) and stores nothing. An error is a sample
// that cannot be tried (an unknown path), not a refusal.
type MapFunc func(Sample) (*Mapped, error)

// maxSampleBytes bounds the playground's form.
const maxSampleBytes = 1 << 20

type playgroundPage struct {
	Sample Sample
	Mapped *Mapped
	Error  string
	Posted bool
}

// playground shows the form (GET) and, posted, what the sample maps to.
func (c *Console) playground(w http.ResponseWriter, r *http.Request) {
	if !c.authorized(r) {
		c.render(w, http.StatusUnauthorized, "login.html", loginPage{})
		return
	}
	page := playgroundPage{Sample: Sample{Protocol: "mqtt", Topic: "devices/pump-7/readings", Path: "/v1/readings", Payload: `{"reading": 21.5}`}}
	if r.Method == http.MethodPost {
		if !sameOrigin(r) {
			http.Error(w, "cross-origin request refused", http.StatusForbidden)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxSampleBytes)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "read the form: "+err.Error(), http.StatusBadRequest)
			return
		}
		page.Posted = true
		page.Sample = Sample{Protocol: r.PostFormValue("protocol"), Topic: strings.TrimSpace(r.PostFormValue("topic")),
			Path: strings.TrimSpace(r.PostFormValue("path")), DeviceID: strings.TrimSpace(r.PostFormValue("device_id")),
			Payload: r.PostFormValue("payload")}
		switch {
		case page.Sample.Protocol != "mqtt" && page.Sample.Protocol != "http":
			page.Error = "protocol: want mqtt or http"
		case c.mapSample == nil:
			page.Error = "this process has no mapping to try"
		default:
			m, err := c.mapSample(page.Sample)
			if err != nil {
				page.Error = err.Error()
			}
			page.Mapped = m
		}
	}
	code := http.StatusOK
	if page.Error != "" {
		code = http.StatusBadRequest
	}
	c.render(w, code, "playground.html", page)
}
