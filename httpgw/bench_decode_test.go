package httpgw

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"firehose/ingest"
)

// BenchmarkDecodeV1 decodes /v1/readings bodies: one reading with extra
// fields, and 100 readings as a JSON array and as NDJSON.
func BenchmarkDecodeV1(b *testing.B) {
	now := time.Now()
	ts := now.Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	item := `{"device_id":"pump-%d","reading":21.5,"ts":"` + ts + `","battery":97,"status":"ok"}`
	items := make([]string, 100)
	for i := range items {
		items[i] = fmt.Sprintf(item, i)
	}
	for _, bc := range []struct {
		name   string
		body   string
		ndjson bool
		want   int
	}{
		{"one-with-extras", fmt.Sprintf(item, 7), false, 1},
		{"array-100", "[" + strings.Join(items, ",") + "]", false, 100},
		{"ndjson-100", strings.Join(items, "\n"), true, 100},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := []byte(bc.body)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				rs, err := decodeV1(body, bc.ndjson, 1000, ingest.Limits{}, now)
				if err != nil || len(rs) != bc.want {
					b.Fatalf("%d readings, %v", len(rs), err)
				}
			}
		})
	}
}

// BenchmarkParseFast decodes /readings/fast bodies alone, without the
// handler around them.
func BenchmarkParseFast(b *testing.B) {
	for _, bc := range []struct{ name, body string }{
		{"seed-body", `{"id": 12345, "reading": 217}`},
		{"timestamp-body", `{"id": 1, "reading": 2, "timestamp": "` + time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano) + `"}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := []byte(bc.body)
			buf := make([]byte, 0, 64)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				r := ingest.Reading{DeviceID: DefaultDevice, ReceivedAt: time.Now()}
				var errs []pydError
				if buf, errs = parseFast(body, &r, ingest.Limits{}, buf[:0]); errs != nil {
					b.Fatal(errs)
				}
			}
		})
	}
}
