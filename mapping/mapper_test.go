package mapping_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"firehose/ingest"
	"firehose/mapping"
)

var received = time.Date(2024, 12, 1, 8, 0, 0, 0, time.UTC)

// lim lets the examples' 2024 times through.
var lim = ingest.Limits{MaxAge: 5 * 365 * 24 * time.Hour}

func mustMapper(t testing.TB, rules ...mapping.Rule) *mapping.Mapper {
	t.Helper()
	m, err := mapping.New(rules)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

type row struct {
	device, metric string
	ts             time.Time
	value          float64
	payload        string
}

func rowsOf(rs []ingest.Reading) []row {
	out := make([]row, len(rs))
	for i, r := range rs {
		m := r.Metric
		if m == "" {
			m = ingest.DefaultMetric
		}
		out[i] = row{r.DeviceID, m, r.Time, r.Value, string(r.Payload)}
	}
	return out
}

func sameRows(t *testing.T, got []ingest.Reading, want []row) {
	t.Helper()
	g := rowsOf(got)
	if len(g) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(g), len(want), g)
	}
	for i := range want {
		if g[i].device != want[i].device || g[i].metric != want[i].metric || !g[i].ts.Equal(want[i].ts) ||
			g[i].value != want[i].value || g[i].payload != want[i].payload {
			t.Errorf("row %d = %+v, want %+v", i, g[i], want[i])
		}
	}
}

// TestPressTelemetry: a topic hierarchy naming the device and two tags, a
// multi-metric payload with its time in Unix milliseconds: a row per numeric
// field, with the tags and the other fields in the payload.
func TestPressTelemetry(t *testing.T) {
	m := mustMapper(t, mapping.Rule{
		Name: "press", Topic: "factory/{site}/{line}/{device_id}/telemetry",
		Time: "t", TimeFormat: "unix_ms", Metrics: []string{"*"}, Exclude: []string{"serial"},
	})
	mt, ok := m.MatchTopic("factory/berlin/line3/press7/telemetry")
	if !ok || mt.Rule() != "press" {
		t.Fatal("the press topic does not match")
	}
	rs, err := mt.Map([]byte(`{"t": 1733040000123, "temp": 71.2, "pressure": 3.1, "rpm": 1200, "serial": 4711, "state": "run"}`), received, lim)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.UnixMilli(1733040000123).UTC()
	p := `{"line":"line3","site":"berlin","serial":4711,"state":"run"}`
	sameRows(t, rs, []row{
		{"press7", "temp", ts, 71.2, p},
		{"press7", "pressure", ts, 3.1, p},
		{"press7", "rpm", ts, 1200, p},
	})
}

// TestSampleArray: a gateway's upload of a device's buffered samples over
// HTTP: the device in the payload, a row per sample, RFC 3339 times, a named
// metric read from another field.
func TestSampleArray(t *testing.T) {
	m := mustMapper(t, mapping.Rule{
		Name: "pump-upload", Endpoint: "/v1/readings", Device: "device",
		Samples: "samples", Time: "ts", Metrics: []string{"flow=v"}, Payload: "tags",
	})
	mt, ok := m.ForEndpoint("/v1/readings", "pump-upload")
	if !ok {
		t.Fatal("no rule for the endpoint")
	}
	rs, err := mt.Map([]byte(`{"device": "pump-7", "samples": [{"ts": "2024-12-01T07:00:00Z", "v": 1.2}, {"ts": "2024-12-01T07:00:10.5Z", "v": 1.3}]}`), received, lim)
	if err != nil {
		t.Fatal(err)
	}
	sameRows(t, rs, []row{
		{"pump-7", "flow", time.Date(2024, 12, 1, 7, 0, 0, 0, time.UTC), 1.2, ""},
		{"pump-7", "flow", time.Date(2024, 12, 1, 7, 0, 10, 5e8, time.UTC), 1.3, ""},
	})
}

func TestTimeFormatsAndDefaults(t *testing.T) {
	tests := []struct {
		format, raw string
		want        time.Time
	}{
		{"unix_s", `1733040000`, time.Unix(1733040000, 0)},
		{"unix_s", `1733040000.25`, time.Unix(1733040000, 25e7)},
		{"unix_ms", `1733040000123`, time.UnixMilli(1733040000123)},
		{"unix_us", `1733040000123456`, time.UnixMicro(1733040000123456)},
		{"unix_ns", `1733040000123456789`, time.Unix(0, 1733040000123456789)},
		{"unix_ms", `"1733040000123"`, time.UnixMilli(1733040000123)},
		{"", `1733040000123`, time.UnixMilli(1733040000123)},
		{"", `"2024-12-01T08:00:00+01:00"`, time.Date(2024, 12, 1, 7, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		m := mustMapper(t, mapping.Rule{Name: "r", Topic: "d/{device_id}", Time: "at", TimeFormat: tt.format, Metrics: []string{"v"}})
		mt, _ := m.MatchTopic("d/x")
		rs, err := mt.Map([]byte(`{"at": `+tt.raw+`, "v": 1}`), received, lim)
		if err != nil {
			t.Errorf("%s %s: %v", tt.format, tt.raw, err)
			continue
		}
		if !rs[0].Time.Equal(tt.want) {
			t.Errorf("%s %s: time %v, want %v", tt.format, tt.raw, rs[0].Time, tt.want)
		}
	}
	// No time path: the time of receipt; the metric named "reading" is the
	// default metric.
	m := mustMapper(t, mapping.Rule{Name: "r", Topic: "d/{device_id}", Metrics: []string{"reading"}})
	mt, _ := m.MatchTopic("d/x")
	rs, err := mt.Map([]byte(`{"reading": 5}`), received, lim)
	if err != nil || !rs[0].Time.Equal(received) || rs[0].Metric != "" {
		t.Errorf("receipt time and default metric: %+v %v", rs, err)
	}
}

func TestTopicMatching(t *testing.T) {
	m := mustMapper(t,
		mapping.Rule{Name: "a", Topic: "site/+/{device_id}/data", Metrics: []string{"v"}},
		mapping.Rule{Name: "b", Topic: "raw/{device_id}/#", Metrics: []string{"v"}},
	)
	for topic, want := range map[string]string{
		"site/x/dev1/data":    "a",
		"site/x/dev1/data/z":  "",
		"site/x/dev1":         "",
		"site//dev1/data":     "a", // + matches an empty level, as in MQTT
		"site/x//data":        "",  // a capture does not
		"raw/dev2":            "b",
		"raw/dev2/a/b/c":      "b",
		"other/dev1/data":     "",
		"devices/x/readings":  "",
		"site/x/dev1/datax":   "",
		"site/x/dev1/data/#":  "",
		"raw":                 "",
		"site/x/dev+1/data":   "a", // the id is validated later, by Map
		"site/x/dev1/data/ ":  "",
		"site/x/dev1/data/  ": "",
	} {
		mt, ok := m.MatchTopic(topic)
		got := ""
		if ok {
			got = mt.Rule()
		}
		if got != want {
			t.Errorf("MatchTopic(%q) = %q, want %q", topic, got, want)
		}
	}
}

// TestUnmappable: every message a rule cannot map is refused whole with an
// error that names the rule and the path.
func TestUnmappable(t *testing.T) {
	m := mustMapper(t,
		mapping.Rule{Name: "named", Topic: "n/{device_id}", Time: "t", TimeFormat: "unix_ms", Metrics: []string{"temp", "p=pressure.value"}},
		mapping.Rule{Name: "all", Topic: "a/{device_id}", Metrics: []string{"*"}},
		mapping.Rule{Name: "samples", Topic: "s/{device_id}", Samples: "samples", Time: "ts", Metrics: []string{"v"}},
		mapping.Rule{Name: "device", Topic: "g/data", Device: "dev", Metrics: []string{"v"}},
	)
	big := `{"samples": [` + strings.Repeat(`{"ts": "2024-12-01T07:00:00Z", "v": 1},`, mapping.MaxRows) + `{"ts": "2024-12-01T07:00:00Z", "v": 1}]}`
	tests := []struct {
		topic, payload, path, msg string
	}{
		{"n/d", `not json`, "", "not valid JSON"},
		{"n/d", `[1, 2]`, "", "not a JSON object"},
		{"n/d", `{"t": 1733040000123, "pressure": {"value": 1}}`, "temp", "no value there"},
		{"n/d", `{"t": 1733040000123, "temp": "hot", "pressure": {"value": 1}}`, "temp", "want a number, found a string"},
		{"n/d", `{"t": 1733040000123, "temp": 1e400, "pressure": {"value": 1}}`, "temp", "does not fit"},
		{"n/d", `{"temp": 1, "pressure": {"value": 1}}`, "t", "no time there"},
		{"n/d", `{"t": "yesterday", "temp": 1, "pressure": {"value": 1}}`, "t", "not a Unix time"},
		{"n/d", `{"t": 1, "temp": 1, "pressure": {"value": 1}}`, "t", "before the time of receipt"},
		{"n/d", `{"t": 1733040000123, "temp": 1, "pressure": {"value": null}}`, "pressure.value", "found null"},
		{"a/d", `{"name": "x"}`, "", "no numeric field"},
		{"s/d", `{"samples": {"v": 1}}`, "samples", "must be an array"},
		{"s/d", `{"samples": []}`, "samples", "empty"},
		{"s/d", `{"samples": [{"ts": "2024-12-01T07:00:00Z", "v": 1}, 7]}`, "samples.1", "must be an object"},
		{"s/d", `{"samples": [{"ts": "2024-12-01T07:00:00Z", "v": 1}, {"ts": "2024-12-01T07:00:00Z"}]}`, "samples.1.v", "no value there"},
		{"s/d", big, "samples", "more than"},
		{"g/data", `{"v": 1}`, "dev", "non-empty string"},
		{"g/data", `{"dev": "a/b", "v": 1}`, "dev", "must not contain"},
	}
	for _, tt := range tests {
		mt, ok := m.MatchTopic(tt.topic)
		if !ok {
			t.Fatalf("%s: no rule", tt.topic)
		}
		rs, err := mt.Map([]byte(tt.payload), received, lim)
		var me *mapping.Error
		if !errors.As(err, &me) || !errors.Is(err, mapping.ErrUnmappable) {
			t.Errorf("%s %.60s: %v (%d rows), want a mapping error", tt.topic, tt.payload, err, len(rs))
			continue
		}
		if me.Rule != mt.Rule() || me.Path != tt.path || !strings.Contains(me.Msg, tt.msg) {
			t.Errorf("%s %.60s: %v; want rule %q, path %q, message with %q", tt.topic, tt.payload, err, mt.Rule(), tt.path, tt.msg)
		}
		if rs != nil {
			t.Errorf("%s: %d rows returned with the error", tt.topic, len(rs))
		}
	}
}

func TestBadRules(t *testing.T) {
	tests := []struct {
		rule mapping.Rule
		msg  string
	}{
		{mapping.Rule{Topic: "a/{device_id}", Metrics: []string{"v"}}, "no name"},
		{mapping.Rule{Name: "r", Metrics: []string{"v"}}, "give a topic (MQTT) or an endpoint"},
		{mapping.Rule{Name: "r", Topic: "a", Endpoint: "/v1/readings", Device: "d", Metrics: []string{"v"}}, "not both"},
		{mapping.Rule{Name: "r", Endpoint: "/readings/fast", Device: "d", Metrics: []string{"v"}}, "apply to /v1/readings"},
		{mapping.Rule{Name: "r", Topic: "a/#/b", Device: "d", Metrics: []string{"v"}}, "# must be the last"},
		{mapping.Rule{Name: "r", Topic: "a/{}", Device: "d", Metrics: []string{"v"}}, "is not a capture"},
		{mapping.Rule{Name: "r", Topic: "a/{x}/{x}", Device: "d", Metrics: []string{"v"}}, "captured twice"},
		{mapping.Rule{Name: "r", Topic: "a/x{y}", Device: "d", Metrics: []string{"v"}}, "mixes"},
		{mapping.Rule{Name: "r", Topic: "a/{device_id}", Device: "d", Metrics: []string{"v"}}, "give one"},
		{mapping.Rule{Name: "r", Topic: "a/b", Metrics: []string{"v"}}, "no device"},
		{mapping.Rule{Name: "r", Topic: "a/{device_id}", Time: "t", TimeFormat: "unix", Metrics: []string{"v"}}, "time_format"},
		{mapping.Rule{Name: "r", Topic: "a/{device_id}", TimeFormat: "unix_s", Metrics: []string{"v"}}, "without time"},
		{mapping.Rule{Name: "r", Topic: "a/{device_id}", Payload: "all", Metrics: []string{"v"}}, "payload"},
		{mapping.Rule{Name: "r", Topic: "a/{device_id}"}, "no metrics"},
		{mapping.Rule{Name: "r", Topic: "a/{device_id}", Metrics: []string{"*", "v"}}, "list no others"},
		{mapping.Rule{Name: "r", Topic: "a/{device_id}", Metrics: []string{"=x"}}, "want name or name=path"},
		{mapping.Rule{Name: "r", Topic: "a/{device_id}", Metrics: []string{"v", "v"}}, "twice"},
		{mapping.Rule{Name: "r", Topic: "a/{device_id}", Metrics: []string{"v"}, Exclude: []string{"x"}}, "exclude applies"},
	}
	for _, tt := range tests {
		_, err := mapping.New([]mapping.Rule{tt.rule})
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("New(%+v) = %v, want an error with %q", tt.rule, err, tt.msg)
		}
	}
	if _, err := mapping.New([]mapping.Rule{
		{Name: "r", Topic: "a/{device_id}", Metrics: []string{"v"}},
		{Name: "r", Topic: "b/{device_id}", Metrics: []string{"v"}},
	}); err == nil || !strings.Contains(err.Error(), "another rule has that name") {
		t.Errorf("two rules of one name: %v", err)
	}
}

// FuzzMap: no payload, under any rule shape, panics the mapper, and what it
// maps is valid readings.
func FuzzMap(f *testing.F) {
	for _, p := range []string{
		`{"t": 1733040000123, "temp": 71.2, "pressure": 3.1, "rpm": 1200}`,
		`{"device": "pump-7", "samples": [{"ts": "2024-12-01T07:00:00Z", "v": 1.2}]}`,
		`{"a": {"b": [1, 2, {"c": true}]}, "v": -0}`,
		`{"samples": [1, {"v": "x"}], "t": null}`,
	} {
		f.Add(p)
	}
	m, err := mapping.New([]mapping.Rule{
		{Name: "all", Topic: "a/{device_id}/{site}", Time: "t", Metrics: []string{"*"}},
		{Name: "named", Topic: "n/{device_id}", Metrics: []string{"temp", "c=a.b.2.c", "x=a.b.#"}},
		{Name: "samples", Topic: "s/x", Device: "device", Samples: "samples", Time: "ts", TimeFormat: "rfc3339", Metrics: []string{"v"}},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		for _, topic := range []string{"a/dev/site", "n/dev", "s/x"} {
			mt, _ := m.MatchTopic(topic)
			rs, err := mt.Map([]byte(payload), received, lim)
			if err != nil {
				if !errors.Is(err, mapping.ErrUnmappable) {
					t.Fatalf("%s: error %v does not wrap ErrUnmappable", topic, err)
				}
				continue
			}
			for _, r := range rs {
				if err := r.Validate(lim); err != nil {
					t.Fatalf("%s: mapped an invalid reading %+v: %v", topic, r, err)
				}
			}
		}
	})
}

// TestMessageID: a rule's id names each row of the message by the id and
// its position; the id is neither a metric (under "*") nor payload; a
// message without one is refused, naming the path.
func TestMessageID(t *testing.T) {
	m := mustMapper(t, mapping.Rule{Name: "press", Topic: "plant/{device_id}/telemetry", ID: "msg", Metrics: []string{"*"}},
		mapping.Rule{Name: "upload", Endpoint: "/v1/readings", Device: "device", Samples: "samples", ID: "batch", Metrics: []string{"v"}})
	mt, _ := m.MatchTopic("plant/p7/telemetry")
	rs, err := mt.Map([]byte(`{"msg": 42, "temp": 71.2, "rpm": 1200, "site": "b"}`), received, lim)
	if err != nil {
		t.Fatal(err)
	}
	sameRows(t, rs, []row{
		{"p7", "temp", received, 71.2, `{"site":"b"}`},
		{"p7", "rpm", received, 1200, `{"site":"b"}`},
	})
	if rs[0].ID != "42#0" || rs[1].ID != "42#1" {
		t.Errorf("ids %q, %q; want 42#0, 42#1", rs[0].ID, rs[1].ID)
	}
	up, _ := m.ForEndpoint("/v1/readings", "upload")
	rs, err = up.Map([]byte(`{"device": "d", "batch": "b-1", "samples": [{"v": 1}]}`), received, lim)
	if err != nil || len(rs) != 1 || rs[0].ID != "b-1" {
		t.Errorf("one sample: %+v, %v; want one row of id b-1", rs, err)
	}
	_, err = mt.Map([]byte(`{"temp": 1}`), received, lim)
	var me *mapping.Error
	if !errors.As(err, &me) || me.Path != "msg" {
		t.Errorf("no id: %v; want an *Error at path msg", err)
	}
}

// TestSeriesHoldsTheTags: rows of one device id on two topics that differ
// by a captured tag name two series (the dedup key holds Series), whatever
// the rule puts in the payload; rows of one topic share theirs, and a rule
// without tags gives none.
func TestSeriesHoldsTheTags(t *testing.T) {
	m := mustMapper(t, mapping.Rule{
		Name: "press", Topic: "factory/{site}/{line}/{device_id}/telemetry",
		Time: "t", TimeFormat: "unix_ms", Metrics: []string{"temp", "pressure"}, Payload: "none",
	}, mapping.Rule{Name: "plain", Topic: "plant/{device_id}/telemetry", Metrics: []string{"*"}})
	msg := []byte(`{"t": 1733040000123, "temp": 71.2, "pressure": 3.1}`)
	series := func(topic string) [][]byte {
		t.Helper()
		mt, ok := m.MatchTopic(topic)
		if !ok {
			t.Fatalf("%s does not match", topic)
		}
		rs, err := mt.Map(msg, received, lim)
		if err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for _, r := range rs {
			out = append(out, r.Series)
		}
		return out
	}
	berlin, munich := series("factory/berlin/line3/press7/telemetry"), series("factory/munich/line1/press7/telemetry")
	if len(berlin[0]) == 0 || !bytes.Equal(berlin[0], berlin[1]) {
		t.Errorf("rows of one message: series %q and %q, want one, not empty", berlin[0], berlin[1])
	}
	if bytes.Equal(berlin[0], munich[0]) {
		t.Errorf("berlin and munich share series %q", berlin[0])
	}
	// A tag's value must not run into the next tag's name.
	if a, b := series("factory/ab/c/press7/telemetry"), series("factory/a/bc/press7/telemetry"); bytes.Equal(a[0], b[0]) {
		t.Errorf("ab/c and a/bc share series %q", a[0])
	}
	if s := series("plant/p7/telemetry"); s[0] != nil {
		t.Errorf("no tags: series %q, want none", s[0])
	}
}
