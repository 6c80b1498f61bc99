package mapping_test

import (
	"testing"

	"firehose/mapping"
)

// BenchmarkMap maps a telemetry message of four metrics whose other fields
// go to the payload the rows share.
func BenchmarkMap(b *testing.B) {
	m := mustMapper(b, mapping.Rule{
		Name: "press", Topic: "factory/{site}/{line}/{device_id}/telemetry",
		Time: "t", TimeFormat: "unix_ms", Metrics: []string{"*"}, Exclude: []string{"serial"},
	})
	mt, ok := m.MatchTopic("factory/berlin/line3/press7/telemetry")
	if !ok {
		b.Fatal("the topic does not match")
	}
	msg := []byte(`{"t": 1733040000000, "temp": 21.5, "pressure": 1.013, "rpm": 1450, "load": 0.73, "serial": "SN-4471", "fw": "1.4.2", "status": "ok", "tags": {"zone": "a", "shift": [1, 2]}}`)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		rs, err := mt.Map(msg, received, lim)
		if err != nil || len(rs) != 4 {
			b.Fatalf("%d rows, %v", len(rs), err)
		}
	}
}

// BenchmarkMapTable maps BenchmarkMap's message to one typed row: a topic
// capture, the device and the time, the four metrics and the serial as
// columns, the other fields kept in extra, the site as identity.
func BenchmarkMapTable(b *testing.B) {
	m := mustMapper(b, mapping.Rule{
		Name: "press", Topic: "factory/{site}/{line}/{device_id}/telemetry",
		Time: "t", TimeFormat: "unix_ms", Table: "press_telemetry",
		Columns: []mapping.ColumnRule{
			{Name: "device_id", Type: "text", Source: "device"},
			{Name: "site", Type: "text", Capture: "site"},
			{Name: "line", Type: "text", Capture: "line"},
			{Name: "time", Type: "timestamptz", Source: "time"},
			{Name: "temp", Type: "real", Path: "temp"},
			{Name: "pressure", Type: "double precision", Path: "pressure"},
			{Name: "rpm", Type: "integer", Path: "rpm", Required: true},
			{Name: "load", Type: "real", Path: "load"},
			{Name: "serial", Type: "text", Path: "serial"},
		},
		Identity: []string{"site", "line"},
	})
	mt, ok := m.MatchTopic("factory/berlin/line3/press7/telemetry")
	if !ok {
		b.Fatal("the topic does not match")
	}
	msg := []byte(`{"t": 1733040000000, "temp": 21.5, "pressure": 1.013, "rpm": 1450, "load": 0.73, "serial": "SN-4471", "fw": "1.4.2", "status": "ok", "tags": {"zone": "a", "shift": [1, 2]}}`)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		rs, err := mt.Map(msg, received, lim)
		if err != nil || len(rs) != 1 {
			b.Fatalf("%d rows, %v", len(rs), err)
		}
	}
}
