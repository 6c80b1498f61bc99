package deadletters

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"firehose/ingest"
)

func TestReplayPlan(t *testing.T) {
	received := time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)
	good := ingest.Reading{DeviceID: "dev-1", Time: received.Add(-time.Second), ReceivedAt: received, Value: 2.5, Payload: []byte(`{"seq":1}`)}
	body := ingest.AppendEncode(nil, &good)
	v1 := ingest.CodecVersion
	invalid := good
	invalid.Payload = []byte(`{"note":"a\u0000b"}`)
	notJSON := good
	notJSON.Payload = []byte(`{"a":`)
	rejectedAt := received.Add(time.Minute)
	replayedAt := received.Add(time.Hour)
	newRow := int64(9)
	for _, tc := range []struct {
		name    string
		row     Row
		repair  string
		want    *ingest.Reading
		wantErr string
	}{
		{name: "decodes and validates", row: Row{ID: 1, Version: &v1, Raw: body}, want: &good},
		{name: "does not decode", row: Row{ID: 2, Version: &v1, Raw: body[:5]}, wantErr: "row 2 does not decode"},
		{name: "unknown version", row: Row{ID: 3, Raw: body}, wantErr: "--id 3 --reading"},
		{name: "fails validation", row: Row{ID: 4, Version: &v1, Raw: ingest.AppendEncode(nil, &invalid)}, wantErr: "the edges would refuse"},
		{name: "payload not JSON", row: Row{ID: 12, Version: &v1, Raw: ingest.AppendEncode(nil, &notJSON)}, wantErr: "not a JSON object"},
		{name: "replayed", row: Row{ID: 5, Version: &v1, Raw: body, ReplayedAt: &replayedAt}, wantErr: "replayed already"},
		{name: "refused again", row: Row{ID: 6, Version: &v1, Raw: body, ReplayedAt: &replayedAt, RefusedAs: &newRow}, wantErr: "replay row 9 instead"},
		{
			name: "repair of an entry that does not decode keeps the time of rejection", row: Row{ID: 7, Raw: []byte("junk"), RejectedAt: rejectedAt},
			repair: `{"device_id":"dev-2","reading":7,"seq":2}`,
			want:   &ingest.Reading{DeviceID: "dev-2", Time: rejectedAt, ReceivedAt: rejectedAt, Value: 7, Payload: []byte(`{"seq":2}`)},
		},
		{
			name: "repair keeps the original time of receipt", row: Row{ID: 8, Version: &v1, Raw: body, RejectedAt: rejectedAt},
			repair: `{"device_id":"dev-1","reading":3,"ts":"2026-11-28T07:59:00Z"}`,
			want:   &ingest.Reading{DeviceID: "dev-1", Time: received.Add(-time.Minute), ReceivedAt: received, Value: 3},
		},
		{name: "repair that does not parse", row: Row{ID: 10, Raw: []byte("junk")}, repair: `{"reading":1}`, wantErr: "--reading: device_id"},
		{name: "repair that does not validate", row: Row{ID: 11, Raw: []byte("junk"), RejectedAt: rejectedAt},
			repair: `{"device_id":"a/b","reading":1}`, wantErr: "fix the --reading"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var repair []byte
			if tc.repair != "" {
				repair = []byte(tc.repair)
			}
			got, err := PlanReading(&tc.row, repair, ingest.Limits{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			w := tc.want
			if got.DeviceID != w.DeviceID || !got.Time.Equal(w.Time) || !got.ReceivedAt.Equal(w.ReceivedAt) || got.Value != w.Value || string(got.Payload) != string(w.Payload) {
				t.Fatalf("reading %+v, want %+v", got, *w)
			}
		})
	}
}

func TestPrintable(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"plain text", 80, "plain text"},
		{"tab\there\nnl", 80, `tab\there\nnl`},
		{"bad \xff\x00 bytes", 80, `bad \xff\x00 bytes`},
		{"ünïcödé", 7, "ünïcödé"},
		{"abcdefghij", 5, "abcde…"},
	} {
		if got := Printable(tc.in, tc.max); got != tc.want {
			t.Errorf("Printable(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func FuzzPreview(f *testing.F) {
	r := ingest.Reading{DeviceID: "d", Time: time.Unix(1, 0), ReceivedAt: time.Unix(1, 0), Value: 1, Payload: []byte(`{"a":1}`)}
	f.Add(ingest.CodecVersion, ingest.AppendEncode(nil, &r))
	f.Add("", []byte("v=1\nx=y\n"))
	f.Add(ingest.CodecVersion, []byte("\x01\xff"))
	typedRow := typedReading(time.Unix(1, 0))
	f.Add(ingest.CodecTyped, ingest.AppendEncodeTyped(nil, &typedRow))
	f.Fuzz(func(t *testing.T, version string, raw []byte) {
		row := Row{ID: 1, Version: &version, Raw: raw}
		_ = row.Preview()
		if _, err := json.Marshal(row.JSON()); err != nil {
			t.Fatalf("--json cannot print the row: %v", err)
		}
		if _, err := PlanReading(&row, nil, ingest.Limits{}); err == nil {
			// What passes is a reading the edges would accept.
			rd, _ := row.Decoded()
			rd.Normalize()
			if err := rd.Validate(ingest.Limits{}); err != nil {
				t.Fatalf("planReplay accepted a reading that fails validation: %v", err)
			}
		}
	})
}
