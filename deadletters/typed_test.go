package deadletters

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"firehose/ingest"
	"firehose/typed"
)

// typedReading is a row of table press_telemetry, received at received.
func typedReading(received time.Time) ingest.Reading {
	at := received.Add(-time.Second)
	return ingest.Reading{DeviceID: "press-1", Time: at, ReceivedAt: received, Row: &typed.Row{
		Shape: &typed.Shape{Table: "press_telemetry", Columns: []typed.Column{
			{Name: "time", Type: typed.Timestamptz}, {Name: "rpm", Type: typed.Integer}, {Name: "temp", Type: typed.Real},
			{Name: "extra", Type: typed.JSONB}, {Name: "fs", Type: typed.DoubleArray}, {Name: "site", Type: typed.Text}}},
		Values: []typed.Value{typed.TimeValue(at), {Int: -1}, {Float: math.Inf(1)}, {Str: `{"a":1}`}, typed.FloatsValue([]float64{1, math.NaN()}), {Null: true}},
	}}
}

// TestTypedRowDeadLetter: a refused typed row (version 6) plans a replay
// of itself, row and table included; --reading cannot repair it (it would
// land in readings); list shows its table and columns.
func TestTypedRowDeadLetter(t *testing.T) {
	received := time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)
	rd := typedReading(received)
	v6 := ingest.CodecTyped
	row := Row{ID: 4, Version: &v6, Raw: ingest.AppendEncodeTyped(nil, &rd), Error: "table press_telemetry: ERROR: new row violates check constraint"}
	got, err := PlanReading(&row, nil, ingest.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Row == nil || got.Row.Shape.Table != "press_telemetry" || got.Row.Values[1].Int != -1 || !got.ReceivedAt.Equal(received) {
		t.Fatalf("planned %+v, want the typed row", got)
	}
	vals := ingest.ReplayReading(row.ID, &got)
	if vals[1] != ingest.CodecTyped {
		t.Errorf("replay entry in version %v, want %s", vals[1], ingest.CodecTyped)
	}
	if _, err := PlanReading(&row, []byte(`{"device_id":"press-1","reading":1}`), ingest.Limits{}); err == nil || !strings.Contains(err.Error(), "table press_telemetry") {
		t.Errorf("a --reading repair of a typed row: %v, want it refused naming the table", err)
	}
	if p := row.Preview(); !strings.HasPrefix(p, "press_telemetry: time=") || !strings.Contains(p, "rpm=-1") {
		t.Errorf("Preview = %q", p)
	}
	b, err := json.Marshal(row.JSON())
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); !strings.Contains(s, `"table":"press_telemetry"`) || !strings.Contains(s, `"rpm":-1`) ||
		!strings.Contains(s, `"temp":"+Inf"`) || !strings.Contains(s, `"extra":{"a":1}`) || !strings.Contains(s, `"site":null`) {
		t.Errorf("JSON = %s", s)
	}
}
