package mqttmsg

import (
	"testing"

	"firehose/ingest"
)

// BenchmarkDecodePayload decodes MQTT payloads: an object as a Python
// client's json.dumps writes it (spaces after ',' and ':'), and a bare
// number.
func BenchmarkDecodePayload(b *testing.B) {
	for _, bc := range []struct{ name, payload string }{
		{"object", `{"reading": 21.5, "ts": "2026-11-28T08:00:00.123Z", "battery": 97, "unit": "°C"}`},
		{"bare-number", `21.5`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := []byte(bc.payload)
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for b.Loop() {
				r := ingest.Reading{DeviceID: "pump-7"}
				if err := DecodePayload(p, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
