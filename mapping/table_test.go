package mapping_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"firehose/ingest"
	"firehose/mapping"
	"firehose/typed"
)

// pressRule is the example: a topic capture, the measured and the
// receipt time, the message id, paths, unknown fields kept.
func pressRule() mapping.Rule {
	return mapping.Rule{
		Name: "press", Topic: "factory/{site}/{device_id}/telemetry", Time: "ts", ID: "msg_id",
		Table: "press_telemetry",
		Columns: []mapping.ColumnRule{
			{Name: "device_id", Type: "text", Source: "device"},
			{Name: "site", Type: "text", Capture: "site"},
			{Name: "time", Type: "timestamptz", Source: "time"},
			{Name: "received_at", Type: "timestamptz", Source: "received"},
			{Name: "msg_id", Type: "text", Source: "id"},
			{Name: "temp", Type: "real", Path: "temp"},
			{Name: "rpm", Type: "integer", Path: "rpm", Required: true},
		},
		Identity: []string{"site"},
		Indexes:  []mapping.IndexRule{{Columns: []string{"device_id", "time"}}, {Columns: []string{"msg_id"}, Unique: true}},
	}
}

// mapPress maps payload on the press topic of site.
func mapPress(t *testing.T, m *mapping.Mapper, site, payload string) ([]ingest.Reading, error) {
	t.Helper()
	mt, ok := m.MatchTopic("factory/" + site + "/press7/telemetry")
	if !ok {
		t.Fatal("the press topic does not match")
	}
	return mt.Map([]byte(payload), received, lim)
}

// values is a row's values by column name.
func values(t *testing.T, rd ingest.Reading) map[string]typed.Value {
	t.Helper()
	if rd.Row == nil {
		t.Fatal("the reading has no row")
	}
	if len(rd.Row.Values) != len(rd.Row.Shape.Columns) {
		t.Fatalf("%d values for %d columns", len(rd.Row.Values), len(rd.Row.Shape.Columns))
	}
	out := map[string]typed.Value{}
	for i, c := range rd.Row.Shape.Columns {
		out[c.Name] = rd.Row.Values[i]
	}
	return out
}

// TestTableRow: every column source lands in its column, the reading names
// the device, the times and the id, and rows share the rule's Shape.
func TestTableRow(t *testing.T) {
	m := mustMapper(t, pressRule())
	rs, err := mapPress(t, m, "berlin", `{"ts": 1733040000123, "msg_id": "m-1", "temp": 21.5, "rpm": 1450, "fw": "1.4.2", "tags": {"zone": "a"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("%d readings, want 1", len(rs))
	}
	rd := rs[0]
	ts := time.UnixMilli(1733040000123).UTC()
	if rd.DeviceID != "press7" || !rd.Time.Equal(ts) || !rd.ReceivedAt.Equal(received) || rd.ID != "m-1" {
		t.Errorf("reading %q %v %v %q", rd.DeviceID, rd.Time, rd.ReceivedAt, rd.ID)
	}
	if rd.Metric != "" || rd.Value != 0 || rd.Payload != nil {
		t.Errorf("a row's reading holds metric %q, value %v, payload %s", rd.Metric, rd.Value, rd.Payload)
	}
	want := map[string]typed.Value{
		"device_id": {Str: "press7"}, "site": {Str: "berlin"}, "time": typed.TimeValue(ts),
		"received_at": typed.TimeValue(received), "msg_id": {Str: "m-1"}, "temp": {Float: 21.5},
		"rpm": {Int: 1450}, "extra": {Str: `{"fw":"1.4.2","tags":{"zone":"a"}}`},
	}
	if got := values(t, rd); !reflect.DeepEqual(got, want) {
		t.Errorf("values\n%+v, want\n%+v", got, want)
	}
	if rd.Row.Shape.Table != "press_telemetry" {
		t.Errorf("table %q", rd.Row.Shape.Table)
	}
	again, err := mapPress(t, m, "paris", `{"ts": 1733040000124, "msg_id": "m-2", "rpm": 1}`)
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Row.Shape != rd.Row.Shape {
		t.Error("two rows of one rule have two shapes")
	}
	if v := values(t, again[0]); !v["temp"].Null || !v["extra"].Null {
		t.Errorf("a missing path and no unknown field: temp %+v, extra %+v; want NULL", v["temp"], v["extra"])
	}
	// A rule without time takes the time of receipt.
	r := pressRule()
	r.Time = ""
	rs, err = mapPress(t, mustMapper(t, r), "berlin", `{"msg_id": "m-1", "rpm": 1, "ts": 5}`)
	if err != nil {
		t.Fatal(err)
	}
	if v := values(t, rs[0]); !rs[0].Time.Equal(received) || v["time"].Int != received.UnixNano() || v["extra"].Str != `{"ts":5}` {
		t.Errorf("receipt time: %v, %+v", rs[0].Time, v)
	}
}

// TestTableTypes: each column type takes what the spec says and refuses
// the rest; a missing or null value is NULL.
func TestTableTypes(t *testing.T) {
	ts := time.Date(2024, 12, 1, 7, 59, 0, 0, time.UTC)
	deep := strings.Repeat("[", 17) + strings.Repeat("]", 17)
	for _, tc := range []struct {
		name, typ, value string
		want             typed.Value
		err              string
	}{
		{name: "text", typ: "text", value: `"a b"`, want: typed.Value{Str: "a b"}},
		{name: "text escaped", typ: "text", value: `"\u00e9\n"`, want: typed.Value{Str: "é\n"}},
		{name: "text refuses a number", typ: "text", value: `12`, err: "want a string, found a number"},
		{name: "text refuses a boolean", typ: "text", value: `true`, err: "want a string, found a boolean"},
		{name: "text refuses NUL", typ: "text", value: `"a\u0000"`, err: `\u0000`},
		{name: "boolean", typ: "boolean", value: `true`, want: typed.Value{Bool: true}},
		{name: "boolean false", typ: "bool", value: `false`, want: typed.Value{}},
		{name: "boolean refuses a string", typ: "boolean", value: `"true"`, err: "want true or false"},
		{name: "boolean refuses 1", typ: "boolean", value: `1`, err: "want true or false"},
		{name: "smallint", typ: "smallint", value: `-32768`, want: typed.Value{Int: -32768}},
		{name: "smallint range", typ: "smallint", value: `32768`, err: "32768 is out of range (-32768 to 32767)"},
		{name: "integer", typ: "integer", value: `2147483647`, want: typed.Value{Int: 2147483647}},
		{name: "integer range", typ: "integer", value: `-2147483649`, err: "out of range"},
		{name: "integer 1.0", typ: "integer", value: `1.0`, want: typed.Value{Int: 1}},
		{name: "integer 1e3", typ: "integer", value: `1e3`, want: typed.Value{Int: 1000}},
		{name: "integer 12.5e1", typ: "integer", value: `12.5e1`, want: typed.Value{Int: 125}},
		{name: "integer 1.5", typ: "integer", value: `1.5`, err: "1.5 is not an integer"},
		{name: "integer 1e-3", typ: "integer", value: `1e-3`, err: "not an integer"},
		{name: "integer string", typ: "integer", value: `"1"`, err: "want an integer, found a string"},
		{name: "bigint max", typ: "bigint", value: `9223372036854775807`, want: typed.Value{Int: 1<<63 - 1}},
		{name: "bigint min", typ: "bigint", value: `-9223372036854775808`, want: typed.Value{Int: -1 << 63}},
		{name: "bigint range", typ: "bigint", value: `9223372036854775808`, err: "out of range"},
		{name: "bigint huge exponent", typ: "bigint", value: `1e999999999999`, err: "out of range"},
		{name: "bigint tiny exponent", typ: "bigint", value: `1e-999999999999`, err: "not an integer"},
		{name: "bigint zero exponent", typ: "bigint", value: `0e999999999999`, want: typed.Value{}},
		{name: "real", typ: "real", value: `21.5`, want: typed.Value{Float: 21.5}},
		{name: "real zero", typ: "real", value: `-0.0e5`, want: typed.Value{Float: 0}},
		{name: "real range", typ: "real", value: `3.5e38`, err: "out of the range of real"},
		{name: "real underflow", typ: "real", value: `1e-50`, err: "out of the range of real"},
		{name: "real string", typ: "float4", value: `"1"`, err: "want a number"},
		{name: "double", typ: "double precision", value: `1e308`, want: typed.Value{Float: 1e308}},
		{name: "double range", typ: "double precision", value: `1e309`, err: "out of the range of double precision"},
		{name: "double underflow", typ: "float8", value: `1e-400`, err: "out of the range"},
		{name: "numeric keeps the text", typ: "numeric", value: `12.50`, want: typed.Value{Str: "12.50"}},
		{name: "numeric exponent", typ: "numeric", value: `-1.5E+300`, want: typed.Value{Str: "-1.5E+300"}},
		{name: "numeric beyond 1e1000", typ: "numeric", value: `1e1001`, err: "exponent"},
		{name: "numeric string", typ: "numeric", value: `"12.5"`, err: "want a number, found a string"},
		{name: "timestamptz RFC 3339", typ: "timestamptz", value: `"2024-12-01T08:59:00+01:00"`, want: typed.TimeValue(ts)},
		{name: "timestamptz Unix ms", typ: "timestamp with time zone", value: `1733039940000`, want: typed.TimeValue(ts)},
		{name: "timestamptz bad string", typ: "timestamptz", value: `"yesterday"`, err: "not an RFC 3339 time"},
		{name: "timestamptz boolean", typ: "timestamptz", value: `true`, err: "found a boolean"},
		{name: "timestamptz range", typ: "timestamptz", value: `"9999-01-01T00:00:00Z"`, err: "outside the years 1678 to 2261"},
		{name: "timestamptz Unix overflow", typ: "timestamptz", value: `99999999999999999999`, err: "not a Unix time"},
		{name: "jsonb object compact", typ: "jsonb", value: `{"a": [1, 2], "b": "x y"}`, want: typed.Value{Str: `{"a":[1,2],"b":"x y"}`}},
		{name: "jsonb string", typ: "jsonb", value: `"s"`, want: typed.Value{Str: `"s"`}},
		{name: "jsonb number", typ: "jsonb", value: `7`, want: typed.Value{Str: `7`}},
		{name: "jsonb too deep", typ: "jsonb", value: deep, err: "deeper than 16"},
		{name: "jsonb NUL", typ: "jsonb", value: `{"a": "\u0000"}`, err: `\u0000`},
		{name: "double array", typ: "double precision[]", value: `[1, 2.5, -3e2]`, want: typed.FloatsValue([]float64{1, 2.5, -300})},
		{name: "double array empty", typ: "float8[]", value: `[]`, want: typed.FloatsValue([]float64{})},
		{name: "double array string element", typ: "double precision[]", value: `[1, "x"]`, err: "element 1: want a number, found a string"},
		{name: "double array null element", typ: "double precision[]", value: `[null]`, err: "element 0: want a number, found null"},
		{name: "double array of a number", typ: "double precision[]", value: `3`, err: "want an array of numbers"},
		{name: "text array", typ: "text[]", value: `["a", ""]`, want: typed.StrsValue([]string{"a", ""})},
		{name: "text array number element", typ: "text[]", value: `["a", 1]`, err: "element 1: want a string, found a number"},
		{name: "missing is NULL", typ: "integer", value: ``, want: typed.Value{Null: true}},
		{name: "null is NULL", typ: "text", value: `null`, want: typed.Value{Null: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mustMapper(t, mapping.Rule{
				Name: "types", Endpoint: "/v1/readings", Device: "device", Table: "types",
				Columns: []mapping.ColumnRule{
					{Name: "time", Type: "timestamptz", Source: "time"},
					{Name: "v", Type: tc.typ, Path: "v"},
				},
			})
			mt, _ := m.ForEndpoint("/v1/readings", "types")
			msg := `{"device": "d1"}`
			if tc.value != "" {
				msg = `{"device": "d1", "v": ` + tc.value + `}`
			}
			rs, err := mt.Map([]byte(msg), received, lim)
			if tc.err != "" {
				var me *mapping.Error
				if !errors.As(err, &me) || me.Rule != "types" || me.Column != "v" || me.Path != "v" || !strings.Contains(me.Msg, tc.err) {
					t.Fatalf("error %v, want rule types, column v, path v, containing %q", err, tc.err)
				}
				if !errors.Is(err, mapping.ErrUnmappable) {
					t.Error("the error does not wrap ErrUnmappable")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := values(t, rs[0])["v"]; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("value %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestTableRefusals: each refusal names the rule, the column and the path,
// and its message says all three.
func TestTableRefusals(t *testing.T) {
	m := mustMapper(t, pressRule())
	for _, tc := range []struct {
		name, payload, column, path, msg string
	}{
		{name: "required missing", payload: `{"ts": 1733040000000, "msg_id": "a"}`, column: "rpm", path: "rpm", msg: "required, and the message has nothing there"},
		{name: "required null", payload: `{"ts": 1733040000000, "msg_id": "a", "rpm": null}`, column: "rpm", path: "rpm", msg: "required, and the message has null there"},
		{name: "wrong type", payload: `{"ts": 1733040000000, "msg_id": "a", "rpm": "fast"}`, column: "rpm", path: "rpm", msg: "integer: want an integer, found a string"},
		{name: "real range", payload: `{"ts": 1733040000000, "msg_id": "a", "rpm": 1, "temp": 1e39}`, column: "temp", path: "temp", msg: "real: 1e39 is out of the range of real"},
		{name: "no time", payload: `{"msg_id": "a", "rpm": 1}`, column: "time", path: "ts", msg: "no time there"},
		{name: "bad time", payload: `{"ts": "noon", "msg_id": "a", "rpm": 1}`, column: "time", path: "ts", msg: "not an RFC 3339 time"},
		{name: "time too old", payload: `{"ts": 1000, "msg_id": "a", "rpm": 1}`, column: "time", path: "ts", msg: "before the time of receipt"},
		{name: "no id", payload: `{"ts": 1733040000000, "rpm": 1}`, path: "msg_id", msg: "the message id must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mapPress(t, m, "berlin", tc.payload)
			var me *mapping.Error
			if !errors.As(err, &me) || me.Rule != "press" || me.Column != tc.column || me.Path != tc.path || !strings.Contains(me.Msg, tc.msg) {
				t.Fatalf("error %#v, want column %q, path %q, containing %q", err, tc.column, tc.path, tc.msg)
			}
			s := err.Error()
			for _, part := range []string{`rule "press"`, `path "` + tc.path + `"`, `column "` + tc.column + `"`} {
				if strings.HasSuffix(part, `""`) {
					continue
				}
				if !strings.Contains(s, part) {
					t.Errorf("%q does not say %s", s, part)
				}
			}
		})
	}
}

// TestTableDrift: keep puts the unknown fields in the extra column (named
// by extra), ignore drops them, refuse names the first.
func TestTableDrift(t *testing.T) {
	msg := `{"ts": 1733040000000, "msg_id": "a", "rpm": 1, "fw": "1.4", "a.b": {"c": [1, 2]}}`
	for _, tc := range []struct {
		name, unknown, extra string
		column, want, err    string
	}{
		{name: "keep", unknown: "", column: "extra", want: `{"fw":"1.4","a.b":{"c":[1,2]}}`},
		{name: "keep named", unknown: "keep", extra: "rest", column: "rest", want: `{"fw":"1.4","a.b":{"c":[1,2]}}`},
		{name: "ignore", unknown: "ignore"},
		{name: "refuse", unknown: "refuse", err: `unknown field "fw"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := pressRule()
			r.Unknown, r.Extra = tc.unknown, tc.extra
			m := mustMapper(t, r)
			rs, err := mapPress(t, m, "berlin", msg)
			if tc.err != "" {
				var me *mapping.Error
				if !errors.As(err, &me) || me.Path != "fw" || !strings.Contains(me.Msg, tc.err) {
					t.Fatalf("error %v, want path fw, containing %q", err, tc.err)
				}
				// A message of known fields only passes.
				if _, err := mapPress(t, m, "berlin", `{"ts": 1733040000000, "msg_id": "a", "rpm": 1}`); err != nil {
					t.Fatalf("known fields only: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			vals := values(t, rs[0])
			cols := rs[0].Row.Shape.Columns
			if tc.column == "" {
				if len(cols) != len(r.Columns) {
					t.Fatalf("ignore: %d columns, want the %d declared", len(cols), len(r.Columns))
				}
				return
			}
			if last := cols[len(cols)-1]; last.Name != tc.column || last.Type != typed.JSONB || last.NotNull {
				t.Errorf("extra column %+v", last)
			}
			if got := vals[tc.column]; got.Null || got.Str != tc.want {
				t.Errorf("%s = %+v, want %s", tc.column, got, tc.want)
			}
		})
	}
	// A kept field that jsonb refuses refuses the message, naming it.
	m := mustMapper(t, pressRule())
	_, err := mapPress(t, m, "berlin", `{"ts": 1733040000000, "msg_id": "a", "rpm": 1, "bad": "\u0000"}`)
	var me *mapping.Error
	if !errors.As(err, &me) || me.Column != "extra" || me.Path != "bad" {
		t.Errorf("a NUL in a kept field: %v", err)
	}
}

// TestTableSamples: one row per sample, its time and fields its own, the
// message's device and id shared (named by position); a refusal names the
// sample.
func TestTableSamples(t *testing.T) {
	m := mustMapper(t, mapping.Rule{
		Name: "upload", Endpoint: "/v1/readings", Device: "device", ID: "batch", Samples: "samples", Time: "t",
		Table: "pump",
		Columns: []mapping.ColumnRule{
			{Name: "device_id", Type: "text", Source: "device"},
			{Name: "batch", Type: "text", Source: "id"},
			{Name: "t", Type: "timestamptz", Source: "time"},
			{Name: "state", Type: "text", Path: "state", Required: true},
			{Name: "alarm", Type: "boolean", Path: "alarm"},
		},
	})
	mt, _ := m.ForEndpoint("/v1/readings", "upload")
	rs, err := mt.Map([]byte(`{"device": "pump3", "batch": "b7", "fw": 2, "samples": [
		{"t": 1733040000000, "state": "run", "alarm": false},
		{"t": 1733040001000, "state": "stop", "alarm": true, "code": 17}]}`), received, lim)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d readings, want 2", len(rs))
	}
	for i, want := range []struct {
		id, state, extra string
		alarm            bool
		ms               int64
	}{{"b7#0", "run", "", false, 1733040000000}, {"b7#1", "stop", `{"code":17}`, true, 1733040001000}} {
		v := values(t, rs[i])
		ts := time.UnixMilli(want.ms)
		if rs[i].ID != want.id || rs[i].DeviceID != "pump3" || !rs[i].Time.Equal(ts) || v["t"].Int != ts.UnixNano() ||
			v["state"].Str != want.state || v["alarm"].Bool != want.alarm || v["batch"].Str != "b7" || v["extra"].Str != want.extra || v["extra"].Null != (want.extra == "") {
			t.Errorf("sample %d: %q %q %v %+v", i, rs[i].ID, rs[i].DeviceID, rs[i].Time, v)
		}
	}
	_, err = mt.Map([]byte(`{"device": "pump3", "batch": "b7", "samples": [{"t": 1733040000000, "state": "run"}, {"t": 1733040000000, "alarm": true}]}`), received, lim)
	var me *mapping.Error
	if !errors.As(err, &me) || me.Column != "state" || me.Path != "samples.1.state" {
		t.Errorf("a sample without its required column: %v", err)
	}
	_, err = mt.Map([]byte(`{"device": "pump3", "batch": "b7", "samples": []}`), received, lim)
	if !errors.As(err, &me) || !strings.Contains(me.Msg, "empty") {
		t.Errorf("no samples: %v", err)
	}
}

// TestTableIdentity: the identity columns name the series: rows differing
// there, or of two tables, never share a Series; rows agreeing there do.
func TestTableIdentity(t *testing.T) {
	other := pressRule()
	other.Name, other.Topic, other.Table = "press2", "plant/{site}/{device_id}/telemetry", "press_other"
	readings := mapping.Rule{Name: "narrow", Topic: "narrow/{site}/{device_id}", Metrics: []string{"rpm"}}
	m := mustMapper(t, pressRule(), other, readings)
	series := func(topic string) []byte {
		t.Helper()
		mt, ok := m.MatchTopic(topic)
		if !ok {
			t.Fatalf("%s matches no rule", topic)
		}
		rs, err := mt.Map([]byte(`{"ts": 1733040000000, "msg_id": "a", "rpm": 1}`), received, lim)
		if err != nil {
			t.Fatal(err)
		}
		return rs[0].Series
	}
	berlin := series("factory/berlin/press7/telemetry")
	if len(berlin) == 0 {
		t.Fatal("no Series")
	}
	if !bytes.Equal(berlin, series("factory/berlin/press7/telemetry")) {
		t.Error("one series, two Series")
	}
	for name, s := range map[string][]byte{
		"another site":         series("factory/paris/press7/telemetry"),
		"another table":        series("plant/berlin/press7/telemetry"),
		"a readings row's tag": series("narrow/berlin/press7"),
	} {
		if bytes.Equal(berlin, s) {
			t.Errorf("%s: the same Series", name)
		}
	}
	// Without identity, the table alone names the series.
	a, b := pressRule(), pressRule()
	a.Identity, b.Identity = nil, nil
	b.Name, b.Topic, b.Table = "b", "plant/{site}/{device_id}/telemetry", "press_b"
	m = mustMapper(t, a, b)
	if x, y := series("factory/berlin/press7/telemetry"), series("factory/paris/press7/telemetry"); len(x) == 0 || !bytes.Equal(x, y) {
		t.Errorf("no identity: Series %q and %q", x, y)
	}
	if bytes.Equal(series("factory/berlin/press7/telemetry"), series("plant/berlin/press7/telemetry")) {
		t.Error("no identity: two tables share a Series")
	}
	// A path column as identity, NULL apart from "".
	r := pressRule()
	r.Columns = append(r.Columns, mapping.ColumnRule{Name: "line", Type: "text", Path: "line"})
	r.Identity = []string{"line"}
	m = mustMapper(t, r)
	seriesOf := func(payload string) []byte {
		rs, err := mapPress(t, m, "berlin", payload)
		if err != nil {
			t.Fatal(err)
		}
		return rs[0].Series
	}
	l1 := seriesOf(`{"ts": 1733040000000, "msg_id": "a", "rpm": 1, "line": "l1"}`)
	empty := seriesOf(`{"ts": 1733040000000, "msg_id": "a", "rpm": 1, "line": ""}`)
	null := seriesOf(`{"ts": 1733040000000, "msg_id": "a", "rpm": 1}`)
	if bytes.Equal(l1, empty) || bytes.Equal(empty, null) || bytes.Equal(l1, null) {
		t.Errorf("line l1, \"\" and NULL: %q %q %q", l1, empty, null)
	}
}

// TestTableRuleErrors: a table rule that cannot work is refused naming the
// rule and, where it is one, the column.
func TestTableRuleErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(r *mapping.Rule)
		want string
	}{
		{"bad table name", func(r *mapping.Rule) { r.Table = "Press" }, `table "Press": want a PostgreSQL identifier`},
		{"long table name", func(r *mapping.Rule) { r.Table = strings.Repeat("t", 64) }, "at most 63 bytes"},
		{"readings", func(r *mapping.Rule) { r.Table = "readings" }, "firehose's own tables"},
		{"firehose table", func(r *mapping.Rule) { r.Table = "bridge_checkpoints" }, "firehose's own tables"},
		{"metrics", func(r *mapping.Rule) { r.Metrics = []string{"rpm"} }, "metrics, exclude and payload do not apply"},
		{"payload", func(r *mapping.Rule) { r.Payload = "none" }, "metrics, exclude and payload do not apply"},
		{"no columns", func(r *mapping.Rule) { r.Columns = nil }, "has no columns"},
		{"bad column name", func(r *mapping.Rule) { r.Columns[5].Name = "1temp" }, `column "1temp": name "1temp": want a PostgreSQL identifier`},
		{"column twice", func(r *mapping.Rule) { r.Columns[5].Name = "rpm" }, `column "rpm": declared twice`},
		{"bad type", func(r *mapping.Rule) { r.Columns[5].Type = "varchar" }, `column "temp": column type "varchar"`},
		{"no type", func(r *mapping.Rule) { r.Columns[5].Type = "" }, `column "temp": column type ""`},
		{"two sources", func(r *mapping.Rule) { r.Columns[5].Capture = "site" }, `column "temp": give exactly one of source`},
		{"no source", func(r *mapping.Rule) { r.Columns[5].Path = "" }, `column "temp": give exactly one of source`},
		{"bad source", func(r *mapping.Rule) { r.Columns[5] = mapping.ColumnRule{Name: "temp", Type: "text", Source: "topic"} }, `source "topic": want device`},
		{"unknown capture", func(r *mapping.Rule) { r.Columns[1].Capture = "line" }, `column "site": capture "line": the topic "factory/{site}/{device_id}/telemetry" captures no {line}`},
		{"device capture", func(r *mapping.Rule) { r.Columns[1].Capture = "device_id" }, "source: device, not capture"},
		{"capture over HTTP", func(r *mapping.Rule) { r.Topic, r.Endpoint, r.Device = "", "/v1/readings", "dev" }, "no topic to capture from"},
		{"capture not text", func(r *mapping.Rule) { r.Columns[1].Type = "integer" }, `column "site": capture site is of type text, not integer`},
		{"time not timestamptz", func(r *mapping.Rule) { r.Columns[2].Type = "bigint" }, `column "time": source time is of type timestamp with time zone, not bigint`},
		{"no time column", func(r *mapping.Rule) { r.Columns = append(r.Columns[:2:2], r.Columns[3:]...) }, "no time column"},
		{"two time columns", func(r *mapping.Rule) { r.Columns[3].Source = "time" }, `column "received_at": a second source: time column (the first is "time")`},
		{"id without the rule's id", func(r *mapping.Rule) { r.ID = "" }, `column "msg_id": source: id needs the rule's id`},
		{"bad unknown", func(r *mapping.Rule) { r.Unknown = "drop" }, `unknown "drop": want keep, ignore or refuse`},
		{"extra without keep", func(r *mapping.Rule) { r.Unknown, r.Extra = "ignore", "rest" }, "extra names the column unknown: keep fills"},
		{"extra clashes", func(r *mapping.Rule) { r.Extra = "rpm" }, `extra column "rpm": a declared column has that name`},
		{"default extra clashes", func(r *mapping.Rule) { r.Columns[5].Name = "extra" }, `extra column "extra"`},
		{"bad extra name", func(r *mapping.Rule) { r.Extra = "Extra" }, `extra "Extra": want a PostgreSQL identifier`},
		{"identity unknown", func(r *mapping.Rule) { r.Identity = []string{"line"} }, `identity "line": no such column`},
		{"identity extra", func(r *mapping.Rule) { r.Identity = []string{"extra"} }, `identity "extra": no such column`},
		{"identity received", func(r *mapping.Rule) { r.Identity = []string{"received_at"} }, `identity "received_at": the time of receipt differs`},
		{"identity twice", func(r *mapping.Rule) { r.Identity = []string{"site", "site"} }, "listed twice"},
		{"index unknown column", func(r *mapping.Rule) { r.Indexes[1].Columns = []string{"nope"} }, `indexes[1]: column "nope": no such column`},
		{"index twice", func(r *mapping.Rule) { r.Indexes[1] = mapping.IndexRule{Columns: []string{"device_id", "time"}} }, "indexes[1]: the same index as indexes[0]"},
		{"unique index twice", func(r *mapping.Rule) {
			r.Indexes[0] = mapping.IndexRule{Columns: []string{"msg_id", "time"}, Unique: true}
		}, "indexes[1]: the same index as indexes[0]"},
		{"index empty", func(r *mapping.Rule) { r.Indexes[0].Columns = nil }, "indexes[0]: no columns"},
		{"columns without table", func(r *mapping.Rule) { r.Table = ""; r.Metrics = []string{"rpm"} }, "columns need a table"},
		{"identity without table", func(r *mapping.Rule) {
			r.Table, r.Columns, r.Indexes, r.Metrics = "", nil, nil, []string{"rpm"}
		}, "apply to a rule with a table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := pressRule()
			tc.edit(&r)
			_, err := mapping.New([]mapping.Rule{r})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `rule "press"`) {
				t.Fatalf("New: %v, want an error naming rule press containing %q", err, tc.want)
			}
		})
	}
}

// TestTables: one table per name, declared alike by the rules naming it,
// its columns in order then extra, NOT NULL for the time and required
// columns, unique indexes holding the time column.
func TestTables(t *testing.T) {
	http := pressRule()
	http.Name, http.Topic, http.Endpoint, http.Device = "press-http", "", "/v1/readings", "device"
	http.Columns[1] = mapping.ColumnRule{Name: "site", Type: "text", Path: "site"}
	pump := mapping.Rule{Name: "pump", Endpoint: "/v1/readings", Device: "device", Table: "pump_status", Unknown: "ignore",
		Columns: []mapping.ColumnRule{{Name: "at", Type: "timestamptz", Source: "time"}, {Name: "alarm", Type: "bool", Path: "alarm"}}}
	narrow := mapping.Rule{Name: "narrow", Topic: "n/{device_id}", Metrics: []string{"v"}}
	m := mustMapper(t, pressRule(), narrow, http, pump)
	want := []typed.Table{
		{Name: "press_telemetry", Rule: "press", TimeColumn: "time",
			Columns: []typed.Column{
				{Name: "device_id", Type: typed.Text}, {Name: "site", Type: typed.Text},
				{Name: "time", Type: typed.Timestamptz, NotNull: true}, {Name: "received_at", Type: typed.Timestamptz},
				{Name: "msg_id", Type: typed.Text}, {Name: "temp", Type: typed.Real},
				{Name: "rpm", Type: typed.Integer, NotNull: true}, {Name: "extra", Type: typed.JSONB},
			},
			Indexes: []typed.Index{{Columns: []string{"device_id", "time"}}, {Columns: []string{"msg_id", "time"}, Unique: true}},
		},
		{Name: "pump_status", Rule: "pump", TimeColumn: "at",
			Columns: []typed.Column{{Name: "at", Type: typed.Timestamptz, NotNull: true}, {Name: "alarm", Type: typed.Boolean}}},
	}
	got := m.Tables()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Tables\n%+v, want\n%+v", got, want)
	}
	got[0].Columns[0].Name = "changed"
	if m.Tables()[0].Columns[0].Name != "device_id" {
		t.Error("Tables hands out the mapper's own slices")
	}
	// The two rules of press_telemetry share one Shape.
	rs, err := mapPress(t, m, "berlin", `{"ts": 1733040000000, "msg_id": "a", "rpm": 1}`)
	if err != nil {
		t.Fatal(err)
	}
	mt, _ := m.ForEndpoint("/v1/readings", "press-http")
	hs, err := mt.Map([]byte(`{"device": "press7", "site": "berlin", "ts": 1733040000000, "msg_id": "a", "rpm": 1}`), received, lim)
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Row.Shape != hs[0].Row.Shape {
		t.Error("two rules of one table, two shapes")
	}
	if v := values(t, hs[0]); v["site"].Str != "berlin" || !v["extra"].Null {
		t.Errorf("the HTTP rule's row: %+v", v)
	}
	if !bytes.Equal(rs[0].Series, hs[0].Series) {
		t.Error("one table, one site: two Series")
	}
	if (&mapping.Mapper{}).Tables() != nil || mustMapper(t, narrow).Tables() != nil {
		t.Error("Tables without a table rule is not nil")
	}

	for _, tc := range []struct {
		name string
		edit func(r *mapping.Rule)
		want string
	}{
		{"column type", func(r *mapping.Rule) { r.Columns[5].Type = "double precision" }, "column 6 is temp double precision, not temp real"},
		{"required", func(r *mapping.Rule) { r.Columns[5].Required = true }, "column 6 is temp real NOT NULL, not temp real"},
		{"more columns", func(r *mapping.Rule) { r.Unknown = "ignore" }, "unknown: ignore, not keep"},
		{"extra name", func(r *mapping.Rule) { r.Extra = "rest" }, "column 8 is rest jsonb, not extra jsonb"},
		{"indexes", func(r *mapping.Rule) { r.Indexes = nil }, "other indexes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := http
			r.Columns = append([]mapping.ColumnRule(nil), http.Columns...)
			tc.edit(&r)
			_, err := mapping.New([]mapping.Rule{pressRule(), r})
			if err == nil || !strings.Contains(err.Error(), `rule "press-http": table "press_telemetry" is declared otherwise by rule "press"`) ||
				!strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want the difference %q", err, tc.want)
			}
		})
	}
}

// FuzzMapTable: a typed rule of every type never panics, refuses only with
// an *Error, and maps to rows whose values fit their columns: the kept
// JSON is valid, the text valid UTF-8, the row survives typed's codec.
func FuzzMapTable(f *testing.F) {
	for _, p := range []string{
		`{"t": 1733040000123, "s": "x", "b": true, "i": 7, "r": 1.5, "d": -2e10, "n": 12.50, "ts": "2024-12-01T07:00:00Z", "j": {"a": [1]}, "fs": [1, 2], "ss": ["a"], "more": {"x": 1}}`,
		`{"samples": [{"t": 1, "i": 1.0}, {"i": 1e3, "u": null}], "device": "d"}`,
		`{"i": 1e999999, "r": 1e-50, "n": 1e1001, "s": "\u0000", "j": "\ud800"}`,
	} {
		f.Add(p)
	}
	cols := []mapping.ColumnRule{
		{Name: "t", Type: "timestamptz", Source: "time"}, {Name: "s", Type: "text", Path: "s"},
		{Name: "b", Type: "boolean", Path: "b"}, {Name: "i", Type: "smallint", Path: "i"},
		{Name: "r", Type: "real", Path: "r"}, {Name: "d", Type: "double precision", Path: "d"},
		{Name: "n", Type: "numeric", Path: "n"}, {Name: "ts", Type: "timestamptz", Path: "ts"},
		{Name: "j", Type: "jsonb", Path: "j"}, {Name: "fs", Type: "double precision[]", Path: "fs"},
		{Name: "ss", Type: "text[]", Path: "ss"}, {Name: "site", Type: "text", Capture: "site"},
	}
	m, err := mapping.New([]mapping.Rule{
		{Name: "one", Topic: "a/{device_id}/{site}", Table: "one", Columns: cols, Identity: []string{"site", "s"}},
		{Name: "samples", Topic: "s/{site}", Device: "device", Samples: "samples", Time: "t", Table: "many", Columns: cols},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		for _, topic := range []string{"a/dev/site", "s/x"} {
			mt, _ := m.MatchTopic(topic)
			rs, err := mt.Map([]byte(payload), received, lim)
			if err != nil {
				var me *mapping.Error
				if !errors.As(err, &me) {
					t.Fatalf("%s: error %v is not an *Error", topic, err)
				}
				continue
			}
			for _, r := range rs {
				if err := r.Validate(lim); err != nil || r.Row == nil {
					t.Fatalf("%s: mapped an invalid reading %+v: %v", topic, r, err)
				}
				for i, c := range r.Row.Shape.Columns {
					v := r.Row.Values[i]
					switch {
					case v.Null:
					case c.Type == typed.JSONB && !json.Valid([]byte(v.Str)):
						t.Fatalf("%s: column %s holds invalid JSON %q", topic, c.Name, v.Str)
					case c.Type == typed.Text && !utf8.ValidString(v.Str):
						t.Fatalf("%s: column %s holds invalid UTF-8 %q", topic, c.Name, v.Str)
					case c.Type == typed.Smallint && (v.Int < math.MinInt16 || v.Int > math.MaxInt16):
						t.Fatalf("%s: column %s holds %d", topic, c.Name, v.Int)
					}
				}
				got, _, err := typed.DecodeRow(string(typed.AppendRow(nil, r.Row)))
				if err != nil || !reflect.DeepEqual(got.Values, r.Row.Values) {
					t.Fatalf("%s: the row does not survive the codec: %v", topic, err)
				}
			}
		}
	})
}

// TestTablePaths: a column reads what GJSON's Get reads at its path,
// whether the path names one field (read in the pass that finds the
// unknown fields) or not: the first of fields named twice (escaped or
// not), a field two columns or a column and the time read, a nested path,
// a wildcard; every field a path starts at is known, the others kept.
func TestTablePaths(t *testing.T) {
	m := mustMapper(t, mapping.Rule{
		Name: "paths", Endpoint: "/v1/readings", Device: "device", Time: "t", TimeFormat: "unix_ms", Table: "paths",
		Columns: []mapping.ColumnRule{
			{Name: "time", Type: "timestamptz", Source: "time"},
			{Name: "a", Type: "integer", Path: "a"},
			{Name: "a_again", Type: "bigint", Path: "a"},
			{Name: "t_ms", Type: "bigint", Path: "t"},
			{Name: "nested", Type: "integer", Path: "n.x"},
			{Name: "dash", Type: "real", Path: "te-mp"},
			{Name: "wild", Type: "integer", Path: "w*"},
			{Name: "absent", Type: "text", Path: "nope"},
			{Name: "null", Type: "text", Path: "z"},
		},
	})
	mt, ok := m.ForEndpoint("/v1/readings", "paths")
	if !ok {
		t.Fatal("no rule paths")
	}
	msg := `{"device":"d1","t":1733040000000,"a":1,"a":2,"n":{"x":5},"te-mp":1.5,"wx":7,"q\u0041":"u","\u0061":3,"z":null,"n":{"x":6}}`
	rs, err := mt.Map([]byte(msg), received, lim)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]typed.Value{
		"time": typed.TimeValue(time.UnixMilli(1733040000000)), "a": {Int: 1}, "a_again": {Int: 1}, "t_ms": {Int: 1733040000000},
		"nested": {Int: 5}, "dash": {Float: 1.5}, "wild": {Int: 7}, "absent": {Null: true}, "null": {Null: true},
		"extra": {Str: `{"wx":7,"q\u0041":"u"}`},
	}
	if got := values(t, rs[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("values\n%+v, want\n%+v", got, want)
	}
}
