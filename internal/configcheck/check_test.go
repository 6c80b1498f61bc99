package configcheck

import (
	"strings"
	"testing"
	"time"

	"firehose/stream"
)

func TestMQTTSample(t *testing.T) {
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	edges := Edges{Streams: stream.Streams{Prefix: "check", Count: 4}}
	for _, tc := range []struct {
		name    string
		topic   string
		payload string
		rows    int
		refused string
		note    string
	}{
		{name: "a reading", topic: "devices/pump-7/readings", payload: `{"reading": 21.5, "site": "north"}`, rows: 1},
		{name: "a bare number", topic: "devices/pump-7/readings", payload: `3`, rows: 1},
		{name: "wildcard topic", topic: "devices/+/readings", payload: `1`, refused: "wildcards"},
		{name: "not a readings topic", topic: "other/pump-7", payload: `1`, note: "not a readings topic"},
		{name: "bad payload", topic: "devices/pump-7/readings", payload: `{"reading": "x"}`, refused: "reading"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := MQTT(edges, tc.topic, []byte(tc.payload), now)
			if tc.refused != "" {
				if s.Refused == nil || !strings.Contains(s.Refused.Reason, tc.refused) {
					t.Fatalf("refusal %+v, want one containing %q", s.Refused, tc.refused)
				}
				return
			}
			if s.Refused != nil || len(s.Rows) != tc.rows || !strings.Contains(s.Note, tc.note) {
				t.Fatalf("sample %+v, want %d rows and note %q", s, tc.rows, tc.note)
			}
			for _, r := range s.Rows {
				if r.DeviceID != "pump-7" || r.Stream != edges.Streams.Key(r.Shard) || !r.ReceivedAt.Equal(now) {
					t.Errorf("row %+v", r)
				}
			}
		})
	}
}

func TestRedactSetting(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:secret@db:5432/firehose":   "postgres://u:xxxxx@db:5432/firehose",
		"postgres://db/firehose?password=secret": "postgres://db/firehose?password=xxxxx",
		"plain value":                            "plain value",
		"5000":                                   "5000",
	} {
		if got := RedactSetting(in); got != want {
			t.Errorf("RedactSetting(%q) = %q, want %q", in, got, want)
		}
	}
}
