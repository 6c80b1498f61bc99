package mqttmsg

import (
	"bytes"
	"unicode/utf8"

	"firehose/ingest"
)

// DecodePayload fills r (whose DeviceID the topic gave) from an MQTT payload:
// a JSON object such as {"reading": 21.5, "ts": "2026-11-28T08:00:00Z",
// "battery": 97} (extra fields go to Payload; a "device_id" field must match
// the topic), or a bare number such as 21.5. It does not validate; errors wrap
// ingest.ErrInvalidReading. Objects are read in one pass by ingest.ParseObject
// (internal/jsonscan validates and walks them at once); a bare number is
// checked against JSON's grammar (jsonscan.IsNumber) by ingest.ParseNumber.
func DecodePayload(payload []byte, r *ingest.Reading) error {
	p := bytes.TrimSpace(payload)
	if len(p) > 0 && p[0] == '{' {
		return ingest.ParseObject(p, r)
	}
	if !utf8.Valid(p) {
		return &ingest.FieldError{Field: "payload", Type: "format", Msg: "is not valid UTF-8"}
	}
	v, err := ingest.ParseNumber(p)
	if err != nil {
		return &ingest.FieldError{Field: "payload", Type: "format", Msg: `must be a JSON object such as {"reading": 21.5} or a bare number`}
	}
	r.Value = v
	r.Payload = nil
	return nil
}
