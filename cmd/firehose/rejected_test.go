package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"firehose/ingest"
)

func TestRejectedUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"rejected"}, "name a subcommand"},
		{"unknown subcommand", []string{"rejected", "purge"}, `unknown subcommand "purge"`},
		{"replay of nothing", []string{"rejected", "replay"}, "--id N"},
		{"id and all", []string{"rejected", "replay", "--id", "1", "--all"}, "exclude each other"},
		{"bad id", []string{"rejected", "replay", "--id", "7,x"}, `"x" is not a row id`},
		{"zero id", []string{"rejected", "replay", "--id", "0"}, `"0" is not a row id`},
		{"reading with two ids", []string{"rejected", "replay", "--id", "1,2", "--reading", "{}"}, "exactly one --id"},
		{"reading with all", []string{"rejected", "replay", "--all", "--reading", "{}"}, "exactly one --id"},
		{"since with ids", []string{"rejected", "replay", "--id", "1", "--since", "1h"}, "--since applies to --all"},
		{"bad since", []string{"rejected", "list", "--since", "yesterday"}, `--since "yesterday"`},
		{"negative limit", []string{"rejected", "list", "--limit", "-1"}, "--limit -1"},
		{"argument", []string{"rejected", "list", "17"}, "row ids go in --id"},
		{"bad shards", []string{"rejected", "list", "--shards", "0"}, "--shards 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(context.Background(), tc.args, &out, &errOut); code != 2 {
				t.Errorf("exit code %d, want 2; stderr: %s", code, errOut.String())
			}
			if !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("stderr %q does not contain %q", errOut.String(), tc.want)
			}
		})
	}
}

func TestRejectedHelpNamesFlagsAndEnvironment(t *testing.T) {
	for _, sub := range []string{"list", "replay"} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), []string{"rejected", sub, "--help"}, &out, &errOut); code != 0 {
			t.Fatalf("rejected %s --help: exit %d", sub, code)
		}
		for _, want := range []string{"--postgres", "FIREHOSE_POSTGRES_URL", "--redis-prefix", "FIREHOSE_REDIS_PREFIX", "--shards", "--since"} {
			if !strings.Contains(errOut.String(), want) {
				t.Errorf("rejected %s --help does not mention %s", sub, want)
			}
		}
	}
}

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
		row     rejectedRow
		repair  string
		want    *ingest.Reading
		wantErr string
	}{
		{name: "decodes and validates", row: rejectedRow{ID: 1, Version: &v1, Raw: body}, want: &good},
		{name: "does not decode", row: rejectedRow{ID: 2, Version: &v1, Raw: body[:5]}, wantErr: "row 2 does not decode"},
		{name: "unknown version", row: rejectedRow{ID: 3, Raw: body}, wantErr: "--id 3 --reading"},
		{name: "fails validation", row: rejectedRow{ID: 4, Version: &v1, Raw: ingest.AppendEncode(nil, &invalid)}, wantErr: "the edges would refuse"},
		{name: "payload not JSON", row: rejectedRow{ID: 12, Version: &v1, Raw: ingest.AppendEncode(nil, &notJSON)}, wantErr: "not a JSON object"},
		{name: "replayed", row: rejectedRow{ID: 5, Version: &v1, Raw: body, ReplayedAt: &replayedAt}, wantErr: "replayed already"},
		{name: "refused again", row: rejectedRow{ID: 6, Version: &v1, Raw: body, ReplayedAt: &replayedAt, RefusedAs: &newRow}, wantErr: "replay row 9 instead"},
		{
			name: "repair of an entry that does not decode keeps the time of rejection", row: rejectedRow{ID: 7, Raw: []byte("junk"), RejectedAt: rejectedAt},
			repair: `{"device_id":"dev-2","reading":7,"seq":2}`,
			want:   &ingest.Reading{DeviceID: "dev-2", Time: rejectedAt, ReceivedAt: rejectedAt, Value: 7, Payload: []byte(`{"seq":2}`)},
		},
		{
			name: "repair keeps the original time of receipt", row: rejectedRow{ID: 8, Version: &v1, Raw: body, RejectedAt: rejectedAt},
			repair: `{"device_id":"dev-1","reading":3,"ts":"2026-11-28T07:59:00Z"}`,
			want:   &ingest.Reading{DeviceID: "dev-1", Time: received.Add(-time.Minute), ReceivedAt: received, Value: 3},
		},
		{name: "repair that does not parse", row: rejectedRow{ID: 10, Raw: []byte("junk")}, repair: `{"reading":1}`, wantErr: "--reading: device_id"},
		{name: "repair that does not validate", row: rejectedRow{ID: 11, Raw: []byte("junk"), RejectedAt: rejectedAt},
			repair: `{"device_id":"a/b","reading":1}`, wantErr: "fix the --reading"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var repair []byte
			if tc.repair != "" {
				repair = []byte(tc.repair)
			}
			got, err := planReplayReading(&tc.row, repair, ingest.Limits{})
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

func TestRejectedPrintable(t *testing.T) {
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
		if got := printable(tc.in, tc.max); got != tc.want {
			t.Errorf("printable(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func FuzzRejectedPreview(f *testing.F) {
	r := ingest.Reading{DeviceID: "d", Time: time.Unix(1, 0), ReceivedAt: time.Unix(1, 0), Value: 1, Payload: []byte(`{"a":1}`)}
	f.Add(ingest.CodecVersion, ingest.AppendEncode(nil, &r))
	f.Add("", []byte("v=1\nx=y\n"))
	f.Add(ingest.CodecVersion, []byte("\x01\xff"))
	f.Fuzz(func(t *testing.T, version string, raw []byte) {
		row := rejectedRow{ID: 1, Version: &version, Raw: raw}
		_ = preview(&row)
		if _, err := json.Marshal(rowJSON(&row)); err != nil {
			t.Fatalf("--json cannot print the row: %v", err)
		}
		if _, err := planReplayReading(&row, nil, ingest.Limits{}); err == nil {
			// What passes is a reading the edges would accept.
			rd, _ := row.decoded()
			rd.Normalize()
			if err := rd.Validate(ingest.Limits{}); err != nil {
				t.Fatalf("planReplay accepted a reading that fails validation: %v", err)
			}
		}
	})
}
