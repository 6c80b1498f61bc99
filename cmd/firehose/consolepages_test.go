package main

import (
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"firehose/internal/console"
)

// The playground of a serve process maps as config check does, with the
// process's own settings: a typed row, a readings row over HTTP, the
// refusal's reason, and an unknown path refused before anything is tried.
func TestConsolePlaygroundMapsAsConfigCheck(t *testing.T) {
	file := writeConfig(t, docsPressRule)
	cfg, _, err := loadServe([]string{"--config", file}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	st := &stack{cfg: cfg}
	at := time.Now().Add(-time.Minute).Truncate(time.Second).UTC()
	t0 := strconv.FormatInt(at.UnixMilli(), 10)
	for _, tc := range []struct {
		name    string
		sample  console.Sample
		want    string // in the rows, the refusal's reason or the error
		wantErr bool
	}{
		{name: "typed row", sample: console.Sample{Protocol: "mqtt", Topic: "factory/berlin/press-7/telemetry",
			Payload: `{"t": ` + t0 + `, "rpm": 1450, "msg_id": "m-1", "shift": "night"}`},
			want: `press_telemetry device_id="press-7" site="berlin" time=` + at.Format(time.RFC3339) + ` rpm=1450 msg_id="m-1" extra={"shift":"night"}`},
		{name: "refused", sample: console.Sample{Protocol: "mqtt", Topic: "factory/berlin/press-7/telemetry",
			Payload: `{"t": ` + t0 + `, "rpm": "fast", "msg_id": "m-1"}`},
			want: `refused: rule "press": column "rpm": path "rpm": integer: want an integer, found a string`},
		{name: "readings topic", sample: console.Sample{Protocol: "mqtt", Topic: "devices/pump-7/readings", Payload: "21.5"},
			want: "readings pump-7 reading 21.5"},
		{name: "http", sample: console.Sample{Protocol: "http", Path: "/v1/readings", Payload: `{"device_id": "pump-8", "reading": 3}`},
			want: "readings pump-8 reading 3"},
		{name: "http refused", sample: console.Sample{Protocol: "http", Path: "/v1/readings", Payload: `{"device_id": "pump-8"}`},
			want: "refused: "},
		{name: "unknown path", sample: console.Sample{Protocol: "http", Path: "/v2/nope"}, want: `path "/v2/nope": want /v1/readings`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := st.playground(tc.sample)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want one: %v", err, tc.wantErr)
			}
			var got string
			switch {
			case err != nil:
				got = err.Error()
			case m.Refused != nil:
				got = "refused: " + m.Refused.Reason
			default:
				var b strings.Builder
				for _, r := range m.TypedRows {
					b.WriteString(r.Table)
					for _, c := range r.Columns {
						if c.Value != "NULL" && c.Name != "received_at" {
							b.WriteString(" " + c.Name + "=" + c.Value)
						}
					}
				}
				for _, r := range m.Rows {
					b.WriteString("readings " + r.DeviceID + " " + r.Metric + " " + r.Reading)
				}
				got = b.String()
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q in it", got, tc.want)
			}
		})
	}
}
