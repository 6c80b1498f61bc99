package mqttmsg

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"firehose/ingest"
)

// receivedAt is the time of receipt the payload tests give their readings.
var receivedAt = time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)

func TestDecodePayload(t *testing.T) {
	ts := time.Date(2026, 11, 28, 7, 59, 30, 123456789, time.UTC)
	for _, tc := range []struct {
		name        string
		payload     string
		wantValue   float64
		wantTime    time.Time // zero: the time of receipt
		wantPayload string    // JSON; "" means none
		wantField   string    // DecodePayload fails naming this field
		wantInvalid string    // DecodePayload succeeds, Validate fails naming this field
	}{
		{name: "object", payload: `{"reading": 21.5}`, wantValue: 21.5},
		{name: "object with time", payload: `{"reading": -3, "ts": "2026-11-28T07:59:30.123456789Z"}`, wantValue: -3, wantTime: ts},
		{name: "time with offset", payload: `{"reading": 1, "ts": "2026-11-28T08:59:30.123456789+01:00"}`, wantValue: 1, wantTime: ts},
		{name: "null time", payload: `{"reading": 1, "ts": null}`, wantValue: 1},
		{name: "extra fields", payload: `{"reading": 7, "battery": 97, "unit": "°C"}`, wantValue: 7, wantPayload: `{"battery":97,"unit":"°C"}`},
		{name: "nested extra fields", payload: `{"reading": 1, "meta": {"fw": [1, 2, {"x": null}], "ok": true}}`, wantValue: 1, wantPayload: `{"meta":{"fw":[1,2,{"x":null}],"ok":true}}`},
		{name: "matching device_id", payload: `{"device_id": "pump-7", "reading": 2}`, wantValue: 2},
		{name: "white space around object", payload: " \n\t{\"reading\": 2}\r\n", wantValue: 2},
		{name: "exponent", payload: `{"reading": 1.5e3}`, wantValue: 1500},
		{name: "largest float", payload: `{"reading": 1.7976931348623157e308}`, wantValue: math.MaxFloat64},
		{name: "bare number", payload: `21.5`, wantValue: 21.5},
		{name: "bare negative", payload: `-0.25`, wantValue: -0.25},
		{name: "bare integer", payload: `42`, wantValue: 42},
		{name: "bare number with white space", payload: " 42\n", wantValue: 42},
		{name: "bare exponent", payload: `6.02e23`, wantValue: 6.02e23},

		{name: "device_id mismatch", payload: `{"device_id": "pump-8", "reading": 2}`, wantField: "device_id"},
		{name: "device_id not a string", payload: `{"device_id": 7, "reading": 2}`, wantField: "device_id"},
		{name: "missing reading", payload: `{"value": 2}`, wantField: "reading"},
		{name: "reading as string", payload: `{"reading": "21.5"}`, wantField: "reading"},
		{name: "reading null", payload: `{"reading": null}`, wantField: "reading"},
		{name: "reading out of range", payload: `{"reading": 1e400}`, wantField: "reading"},
		{name: "NaN string in object", payload: `{"reading": "NaN"}`, wantField: "reading"},
		{name: "bad time", payload: `{"reading": 1, "ts": "yesterday"}`, wantField: "ts"},
		{name: "time as number", payload: `{"reading": 1, "ts": 1764316800}`, wantField: "ts"},
		{name: "invalid JSON", payload: `{"reading": 1,}`, wantField: "body"},
		{name: "truncated JSON", payload: `{"reading": 1`, wantField: "body"},
		{name: "invalid UTF-8 in object", payload: "{\"reading\": 1, \"note\": \"\xff\"}", wantField: "body"},
		{name: "empty", payload: ``, wantField: "payload"},
		{name: "white space only", payload: " \n", wantField: "payload"},
		{name: "NaN", payload: `NaN`, wantField: "payload"},
		{name: "Infinity", payload: `Infinity`, wantField: "payload"},
		{name: "minus Infinity", payload: `-Infinity`, wantField: "payload"},
		{name: "Inf", payload: `Inf`, wantField: "payload"},
		{name: "quoted number", payload: `"21.5"`, wantField: "payload"},
		{name: "hex float", payload: `0x1p4`, wantField: "payload"},
		{name: "underscores", payload: `1_000`, wantField: "payload"},
		{name: "leading zero", payload: `007`, wantField: "payload"},
		{name: "trailing dot", payload: `1.`, wantField: "payload"},
		{name: "two numbers", payload: `1 2`, wantField: "payload"},
		{name: "bare number out of range", payload: `1e400`, wantField: "payload"},
		{name: "invalid UTF-8", payload: "\xff\xfe", wantField: "payload"},
		{name: "array", payload: `[21.5]`, wantField: "payload"},
		{name: "null", payload: `null`, wantField: "payload"},
		{name: "true", payload: `true`, wantField: "payload"},
		{name: "text", payload: `hello`, wantField: "payload"},

		{name: "NUL escape in extra field", payload: `{"reading": 1, "note": "a\u0000b"}`, wantInvalid: "payload"},
		{name: "unpaired surrogate in extra field", payload: `{"reading": 1, "note": "\ud800"}`, wantInvalid: "payload"},
		{name: "too deep", payload: `{"reading": 1, "x": ` + strings.Repeat("[", 20) + strings.Repeat("]", 20) + `}`, wantInvalid: "payload"},
		{name: "extra fields too long", payload: `{"reading": 1, "x": "` + strings.Repeat("a", 17<<10) + `"}`, wantInvalid: "payload"},
		{name: "time too far ahead", payload: `{"reading": 1, "ts": "2026-11-28T10:00:00Z"}`, wantInvalid: "ts"},
		{name: "time too old", payload: `{"reading": 1, "ts": "2020-01-01T00:00:00Z"}`, wantInvalid: "ts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Something left from a previous reading must not survive.
			r := ingest.Reading{DeviceID: "pump-7", ReceivedAt: receivedAt, Payload: []byte(`{"stale":1}`)}
			err := DecodePayload([]byte(tc.payload), &r)
			if tc.wantField != "" {
				var fe *ingest.FieldError
				if !errors.As(err, &fe) || !errors.Is(err, ingest.ErrInvalidReading) {
					t.Fatalf("DecodePayload(%q) = %v; want a *FieldError wrapping ErrInvalidReading", tc.payload, err)
				}
				if fe.Field != tc.wantField {
					t.Errorf("DecodePayload(%q): error %q names field %q, want %q", tc.payload, err, fe.Field, tc.wantField)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodePayload(%q): %v", tc.payload, err)
			}
			r.Normalize()
			err = r.Validate(ingest.Limits{})
			if tc.wantInvalid != "" {
				var fe *ingest.FieldError
				if !errors.As(err, &fe) || fe.Field != tc.wantInvalid {
					t.Fatalf("Validate after DecodePayload(%.60q) = %v; want an error on field %q", tc.payload, err, tc.wantInvalid)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate after DecodePayload(%q): %v", tc.payload, err)
			}
			if r.DeviceID != "pump-7" {
				t.Errorf("device id = %q, want the topic's pump-7", r.DeviceID)
			}
			if r.Value != tc.wantValue {
				t.Errorf("value = %v, want %v", r.Value, tc.wantValue)
			}
			wantTime := tc.wantTime
			if wantTime.IsZero() {
				wantTime = receivedAt
			}
			if !r.Time.Equal(wantTime) || r.Time.Location() != time.UTC {
				t.Errorf("time = %v, want %v in UTC", r.Time, wantTime)
			}
			switch {
			case tc.wantPayload == "" && r.Payload != nil:
				t.Errorf("payload = %s, want none", r.Payload)
			case tc.wantPayload != "" && !jsonEqual(r.Payload, []byte(tc.wantPayload)):
				t.Errorf("payload = %s, want %s", r.Payload, tc.wantPayload)
			}
		})
	}
}

// FuzzDecodePayload feeds the MQTT payload decoder arbitrary bytes: it must
// not panic, must refuse with an ingest.ErrInvalidReading, and what it
// accepts and Validate passes must survive the stream encoding unchanged.
func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{
		`{"reading": 21.5}`,
		`{"reading": 21.5, "ts": "2026-11-28T07:59:30.123456789Z", "battery": 97}`,
		`{"device_id": "pump-7", "reading": -1e-7, "meta": {"a": [1, "x", null, true]}}`,
		`{"device_id": "pump-8", "reading": 1}`,
		`{"reading": "NaN"}`,
		`{"reading": 1, "n\u00e9": "\ud83d\ude00", "z": "\u0000"}`,
		`{"reading": 1, "\ud800": 1}`,
		`{"reading": 1, "ts": null}`,
		`21.5`, ` -0 `, `1e308`, `1e400`, `NaN`, `Infinity`, `-Infinity`, `0x1p4`, `007`,
		"\xff", "", "{", `[1]`, `null`,
	} {
		f.Add([]byte(s))
	}
	lim := ingest.Limits{}
	f.Fuzz(func(t *testing.T, payload []byte) {
		r := ingest.Reading{DeviceID: "pump-7", ReceivedAt: receivedAt}
		err := DecodePayload(payload, &r)
		if err != nil {
			if !errors.Is(err, ingest.ErrInvalidReading) {
				t.Fatalf("DecodePayload(%q) = %v, which does not wrap ErrInvalidReading", payload, err)
			}
			return
		}
		if r.DeviceID != "pump-7" {
			t.Fatalf("DecodePayload(%q) changed the device id to %q", payload, r.DeviceID)
		}
		if r.Payload != nil {
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(r.Payload, &fields); err != nil || len(fields) == 0 {
				t.Fatalf("DecodePayload(%q): payload %q is not a non-empty JSON object: %v", payload, r.Payload, err)
			}
			for _, k := range []string{ingest.JSONDeviceID, ingest.JSONReading, ingest.JSONTime} {
				if _, ok := fields[k]; ok {
					t.Fatalf("DecodePayload(%q): payload %s keeps the field %q", payload, r.Payload, k)
				}
			}
		}
		r.Normalize()
		if r.Validate(lim) != nil {
			return
		}
		if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) || (r.Payload != nil && !utf8.Valid(r.Payload)) {
			t.Fatalf("Validate passed %+v", r)
		}
		got, err := ingest.Decode(ingest.CodecVersion, string(ingest.AppendEncode(nil, &r)))
		if err != nil {
			t.Fatalf("Decode(AppendEncode(%+v)): %v", r, err)
		}
		if got.DeviceID != r.DeviceID || !got.Time.Equal(r.Time) || !got.ReceivedAt.Equal(r.ReceivedAt) ||
			math.Float64bits(got.Value) != math.Float64bits(r.Value) || !bytes.Equal(got.Payload, r.Payload) {
			t.Fatalf("round trip of the reading of %q:\n got %+v\nwant %+v", payload, got, r)
		}
	})
}
