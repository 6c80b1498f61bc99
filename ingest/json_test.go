package ingest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"firehose/ingest"
)

func TestParseObject(t *testing.T) {
	ts := time.Date(2026, 11, 28, 7, 59, 30, 123456789, time.UTC)
	tests := []struct {
		name        string
		preset      string // r.DeviceID before ParseObject (the MQTT topic's device)
		body        string
		wantID      string
		wantValue   float64
		wantTime    time.Time
		wantPayload string // "" means nil
		wantField   string // "" means accepted
		wantType    string
	}{
		{
			name:   "extras go to the payload in the sender's order, compacted",
			body:   `{"z":"last","device_id":"pump-7","m":{"y":[1, 2 ,3],"b":null},"reading":21.5,"ts":"2026-11-28T07:59:30.123456789Z","a":true,"n":-1.50e+3}`,
			wantID: "pump-7", wantValue: 21.5, wantTime: ts,
			// Members in the sender's order (jsonb orders keys itself), values
			// compacted; device_id, reading and ts are not repeated.
			wantPayload: `{"z":"last","m":{"y":[1,2,3],"b":null},"a":true,"n":-1.50e+3}`,
		},
		{
			name:      "no extras gives nil payload",
			body:      `{"device_id":"pump-7","reading":-3}`,
			wantID:    "pump-7",
			wantValue: -3,
		},
		{
			name:      "surrounding white space",
			body:      " \r\n\t{ \"device_id\" : \"pump-7\" , \"reading\" : 0 } \n",
			wantID:    "pump-7",
			wantValue: 0,
		},
		{
			name:        "HTML characters are kept as sent",
			body:        `{"device_id":"pump-7","reading":1,"note":"a<b && c>d"}`,
			wantID:      "pump-7",
			wantValue:   1,
			wantPayload: `{"note":"a<b && c>d"}`,
		},
		{
			name:        "duplicate keys: the last reading wins; jsonb keeps the last payload member",
			body:        `{"device_id":"pump-7","reading":1,"reading":2,"x":1,"x":2}`,
			wantID:      "pump-7",
			wantValue:   2,
			wantPayload: `{"x":1,"x":2}`,
		},
		{
			name:        "escaped names are decoded before matching; payload names stay as sent",
			body:        `{"device\u005fid":"pump-7","\u0072eading":4,"\u00e9t\u00e9":1}`,
			wantID:      "pump-7",
			wantValue:   4,
			wantPayload: `{"\u00e9t\u00e9":1}`,
		},
		{
			name:      "ts with zone offset",
			body:      `{"device_id":"pump-7","reading":1,"ts":"2026-11-28T09:59:30.123456789+02:00"}`,
			wantID:    "pump-7",
			wantValue: 1,
			wantTime:  ts,
		},
		{
			name:      "ts null means not given",
			body:      `{"device_id":"pump-7","reading":1,"ts":null}`,
			wantID:    "pump-7",
			wantValue: 1,
		},
		{
			name:      "negative zero reading",
			body:      `{"device_id":"pump-7","reading":-0}`,
			wantID:    "pump-7",
			wantValue: math.Copysign(0, -1),
		},
		{
			name:      "reading with exponent",
			body:      `{"device_id":"pump-7","reading":2.5E-3}`,
			wantID:    "pump-7",
			wantValue: 0.0025,
		},
		{
			name:      "reading underflows to zero",
			body:      `{"device_id":"pump-7","reading":1e-400}`,
			wantID:    "pump-7",
			wantValue: 0,
		},

		{name: "device from the topic", preset: "pump-7", body: `{"reading":5}`, wantID: "pump-7", wantValue: 5},
		{name: "device from the topic matches the body", preset: "pump-7", body: `{"device_id":"pump-7","reading":5}`, wantID: "pump-7", wantValue: 5},
		{name: "device from the topic differs from the body", preset: "pump-7", body: `{"device_id":"pump-8","reading":5}`, wantField: "device_id", wantType: "format"},
		{name: "device from the topic, body device empty", preset: "pump-7", body: `{"device_id":"","reading":5}`, wantField: "device_id", wantType: "format"},
		{name: "device id missing", body: `{"reading":5}`, wantField: "device_id", wantType: "missing"},
		{name: "device id a number", body: `{"device_id":7,"reading":5}`, wantField: "device_id", wantType: "type"},
		{name: "device id an object", body: `{"device_id":{},"reading":5}`, wantField: "device_id", wantType: "type"},

		{name: "reading missing", body: `{"device_id":"pump-7","value":5}`, wantField: "reading", wantType: "missing"},
		{name: "reading a string", body: `{"device_id":"pump-7","reading":"21.5"}`, wantField: "reading", wantType: "type"},
		{name: "reading null", body: `{"device_id":"pump-7","reading":null}`, wantField: "reading", wantType: "type"},
		{name: "reading a boolean", body: `{"device_id":"pump-7","reading":true}`, wantField: "reading", wantType: "type"},
		{name: "reading an array", body: `{"device_id":"pump-7","reading":[1]}`, wantField: "reading", wantType: "type"},
		{name: "reading beyond float64", body: `{"device_id":"pump-7","reading":1e400}`, wantField: "reading", wantType: "range"},
		{name: "reading beyond float64, negative", body: `{"device_id":"pump-7","reading":-1e400}`, wantField: "reading", wantType: "range"},
		{name: "reading a huge integer", body: `{"device_id":"pump-7","reading":1` + strings.Repeat("0", 400) + `}`, wantField: "reading", wantType: "range"},

		{name: "ts not RFC 3339", body: `{"device_id":"pump-7","reading":1,"ts":"28/11/2026 08:00"}`, wantField: "ts", wantType: "format"},
		{name: "ts without zone", body: `{"device_id":"pump-7","reading":1,"ts":"2026-11-28T08:00:00"}`, wantField: "ts", wantType: "format"},
		{name: "ts with a space", body: `{"device_id":"pump-7","reading":1,"ts":"2026-11-28 08:00:00Z"}`, wantField: "ts", wantType: "format"},
		{name: "ts out of range month", body: `{"device_id":"pump-7","reading":1,"ts":"2026-13-28T08:00:00Z"}`, wantField: "ts", wantType: "format"},
		{name: "ts empty", body: `{"device_id":"pump-7","reading":1,"ts":""}`, wantField: "ts", wantType: "format"},
		{name: "ts a number", body: `{"device_id":"pump-7","reading":1,"ts":1764316800}`, wantField: "ts", wantType: "type"},
		// The zero Time: taken for "not given", it would become the time of receipt.
		{name: "ts year 1", body: `{"device_id":"pump-7","reading":1,"ts":"0001-01-01T00:00:00Z"}`, wantField: "ts", wantType: "range"},
		{name: "ts year 1 with an offset", body: `{"device_id":"pump-7","reading":1,"ts":"0001-01-01T01:00:00+01:00"}`, wantField: "ts", wantType: "range"},

		{name: "array", body: `[{"device_id":"pump-7","reading":1}]`, wantField: "body", wantType: "type"},
		{name: "number", body: `21.5`, wantField: "body", wantType: "type"},
		{name: "string", body: `"pump-7"`, wantField: "body", wantType: "type"},
		{name: "null", body: `null`, wantField: "body", wantType: "type"},
		{name: "empty", body: ``, wantField: "body", wantType: "type"},
		{name: "white space only", body: " \n ", wantField: "body", wantType: "type"},
		{name: "invalid JSON", body: `{"device_id":"pump-7","reading":}`, wantField: "body", wantType: "json_invalid"},
		{name: "unterminated object", body: `{"device_id":"pump-7"`, wantField: "body", wantType: "json_invalid"},
		{name: "trailing garbage", body: `{"device_id":"pump-7","reading":1} x`, wantField: "body", wantType: "json_invalid"},
		{name: "two objects", body: `{"device_id":"pump-7","reading":1}{"reading":2}`, wantField: "body", wantType: "json_invalid"},
		{name: "single quotes", body: `{'device_id':'pump-7','reading':1}`, wantField: "body", wantType: "json_invalid"},
		{name: "raw control character in string", body: "{\"device_id\":\"pump\x01\",\"reading\":1}", wantField: "body", wantType: "json_invalid"},
		{name: "invalid UTF-8", body: "{\"device_id\":\"pump\xff\",\"reading\":1}", wantField: "body", wantType: "format"},
		{name: "invalid UTF-8 in an extra field", body: "{\"device_id\":\"pump-7\",\"reading\":1,\"x\":\"\xc3\"}", wantField: "body", wantType: "format"},

		// encoding/json decodes an unpaired surrogate escape to U+FFFD, so
		// without a check of its own ParseObject would silently change the
		// device id ("a\ud800" and "a\udc00" would become the same device)
		// or a field name.
		{name: "lone surrogate in device id", body: `{"device_id":"pump\ud800","reading":1}`, wantField: "device_id", wantType: "format"},
		{name: "lone low surrogate in device id", body: `{"device_id":"pump\udc00","reading":1}`, wantField: "device_id", wantType: "format"},
		{name: "NUL escape in device id", body: `{"device_id":"pump\u0000","reading":1}`, wantField: "device_id", wantType: "format"},
		{name: "lone surrogate in a field name is left to Validate", body: `{"device_id":"pump-7","reading":1,"x\ud800":1}`, wantID: "pump-7", wantValue: 1, wantPayload: `{"x\ud800":1}`},
		{name: "real U+FFFD in a field name", body: `{"device_id":"pump-7","reading":1,"\ufffd":1,"�":2}`, wantID: "pump-7", wantValue: 1, wantPayload: `{"\ufffd":1,"�":2}`},
		{name: "lone surrogate in a value is left to Validate", body: `{"device_id":"pump-7","reading":1,"x":"\ud800"}`, wantID: "pump-7", wantValue: 1, wantPayload: `{"x":"\ud800"}`},
		{name: "surrogate pair in device id", body: `{"device_id":"pump\ud83d\ude00","reading":1}`, wantID: "pump😀", wantValue: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ingest.Reading{DeviceID: tt.preset}
			err := ingest.ParseObject([]byte(tt.body), &r)
			if tt.wantField != "" {
				wantFieldError(t, err, tt.wantField, tt.wantType)
				return
			}
			if err != nil {
				t.Fatalf("ParseObject: %v", err)
			}
			if r.DeviceID != tt.wantID {
				t.Errorf("DeviceID = %q, want %q", r.DeviceID, tt.wantID)
			}
			if math.Float64bits(r.Value) != math.Float64bits(tt.wantValue) {
				t.Errorf("Value = %v, want %v", r.Value, tt.wantValue)
			}
			if !r.Time.Equal(tt.wantTime) {
				t.Errorf("Time = %v, want %v", r.Time, tt.wantTime)
			}
			if !r.ReceivedAt.IsZero() {
				t.Errorf("ReceivedAt = %v, want it left unset", r.ReceivedAt)
			}
			if tt.wantPayload == "" {
				if r.Payload != nil {
					t.Errorf("Payload = %s, want nil", r.Payload)
				}
				return
			}
			if string(r.Payload) != tt.wantPayload {
				t.Errorf("Payload = %s\nwant      %s", r.Payload, tt.wantPayload)
			}
			if !json.Valid(r.Payload) {
				t.Errorf("Payload %s is not valid JSON", r.Payload)
			}
		})
	}
}

// TestParseObjectResetsPayload: a Reading reused for the next object must not
// keep the previous object's extra fields.
func TestParseObjectResetsPayload(t *testing.T) {
	var r ingest.Reading
	if err := ingest.ParseObject([]byte(`{"device_id":"a","reading":1,"x":1}`), &r); err != nil {
		t.Fatal(err)
	}
	if err := ingest.ParseObject([]byte(`{"device_id":"a","reading":2}`), &r); err != nil {
		t.Fatal(err)
	}
	if r.Payload != nil || r.Value != 2 {
		t.Errorf("got Value %v Payload %s, want 2 and nil", r.Value, r.Payload)
	}
}

// TestParseObjectThenValidate runs the edge's whole check: whatever stage
// refuses a body, text PostgreSQL cannot store must never pass both.
func TestParseObjectThenValidate(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{name: "NUL escape in device id", body: `{"device_id":"pump\u0000","reading":1}`},
		{name: "NUL escape in a field name", body: `{"device_id":"pump-7","reading":1,"\u0000":1}`},
		{name: "NUL escape in a value", body: `{"device_id":"pump-7","reading":1,"x":"\u0000"}`},
		{name: "NUL escape nested", body: `{"device_id":"pump-7","reading":1,"x":{"y":["\u0000"]}}`},
		{name: "lone surrogate in device id", body: `{"device_id":"\ud800","reading":1}`},
		{name: "lone surrogate in a field name", body: `{"device_id":"pump-7","reading":1,"\udfff":1}`},
		{name: "lone surrogate in a value", body: `{"device_id":"pump-7","reading":1,"x":"\ud800"}`},
		{name: "escaped slash in device id", body: `{"device_id":"a\/b","reading":1}`},
		{name: "escaped control in device id", body: `{"device_id":"a\u0007","reading":1}`},
		{name: "number beyond float64 in payload", body: `{"device_id":"pump-7","reading":1,"x":[1e999]}`},
		{name: "payload too deep", body: `{"device_id":"pump-7","reading":1,"x":` + strings.Repeat("[", 16) + strings.Repeat("]", 16) + `}`},
		{name: "device id null", body: `{"device_id":null,"reading":1}`},
		{name: "ts long ago", body: `{"device_id":"pump-7","reading":1,"ts":"2000-01-01T00:00:00Z"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r ingest.Reading
			err := ingest.ParseObject([]byte(tt.body), &r)
			if err == nil {
				r.ReceivedAt = rx
				r.Normalize()
				err = r.Validate(ingest.Limits{})
			}
			if err == nil {
				t.Fatalf("accepted %s as %+v", tt.body, r)
			}
			var fe *ingest.FieldError
			if !errors.Is(err, ingest.ErrInvalidReading) || !errors.As(err, &fe) {
				t.Errorf("error %v is not a *FieldError wrapping ErrInvalidReading", err)
			}
		})
	}
}

func TestParseNumber(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     float64
		wantType string // "" means accepted
	}{
		{name: "decimal", in: "21.5", want: 21.5},
		{name: "surrounding space", in: " 7 ", want: 7},
		{name: "trailing newline", in: "7\r\n", want: 7},
		{name: "negative zero", in: "-0", want: math.Copysign(0, -1)},
		{name: "negative", in: "-12.25", want: -12.25},
		{name: "exponent", in: "1e3", want: 1000},
		{name: "exponent with sign", in: "1.5E-2", want: 0.015},
		{name: "largest float64", in: "1.7976931348623157e308", want: math.MaxFloat64},
		{name: "underflow to zero", in: "1e-400", want: 0},
		{name: "NaN", in: "NaN", wantType: "type"},
		{name: "negative NaN", in: "-NaN", wantType: "type"},
		{name: "Infinity", in: "Infinity", wantType: "type"},
		{name: "negative Infinity", in: "-Infinity", wantType: "type"},
		{name: "negative Inf", in: "-Inf", wantType: "type"},
		{name: "beyond float64", in: "1e999", want: 0, wantType: "range"},
		{name: "beyond float64, negative", in: "-1e999", want: 0, wantType: "range"},
		{name: "letters", in: "abc", wantType: "type"},
		{name: "empty", in: "", wantType: "type"},
		{name: "space only", in: "  ", wantType: "type"},
		{name: "quoted", in: `"21.5"`, wantType: "type"},
		{name: "null", in: "null", wantType: "type"},
		{name: "true", in: "true", wantType: "type"},
		{name: "plus sign", in: "+5", wantType: "type"},
		{name: "leading dot", in: ".5", wantType: "type"},
		{name: "lone minus", in: "-", wantType: "type"},
		{name: "two numbers", in: "1 2", wantType: "type"},
		{name: "unit suffix", in: "21.5C", wantType: "type"},
		{name: "comma decimal", in: "21,5", wantType: "type"},
		// Not JSON numbers, though strconv.ParseFloat takes them.
		{name: "trailing dot", in: "1.", wantType: "type"},
		{name: "leading zero", in: "007", wantType: "type"},
		{name: "underscore", in: "1_000", wantType: "type"},
		{name: "hexadecimal float", in: "0x1p4", wantType: "type"},
		{name: "negative hexadecimal float", in: "-0x1p-2", wantType: "type"},
		{name: "exponent without digits", in: "1e", wantType: "type"},
		{name: "exponent sign without digits", in: "1e+", wantType: "type"},
		{name: "dot without digits before exponent", in: "1.e5", wantType: "type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := ingest.ParseNumber([]byte(tt.in))
			if tt.wantType != "" {
				wantFieldError(t, err, "reading", tt.wantType)
				return
			}
			if err != nil {
				t.Fatalf("ParseNumber(%q): %v", tt.in, err)
			}
			if math.Float64bits(v) != math.Float64bits(tt.want) {
				t.Errorf("ParseNumber(%q) = %v, want %v", tt.in, v, tt.want)
			}
		})
	}
}

// FuzzParseNumber: ParseNumber (the parser of bare MQTT payloads) accepts
// exactly the JSON numbers within the range of a float64, with the value
// strconv.ParseFloat gives.
func FuzzParseNumber(f *testing.F) {
	for _, s := range []string{"21.5", " 7 ", "-0", "1e999", "NaN", "-Inf", "0x1p4", "1_000", "007", "1.", "1e+5", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ingest.ParseNumber([]byte(s))
		trimmed := strings.TrimSpace(s)
		want, perr := strconv.ParseFloat(trimmed, 64)
		isNumber := trimmed != "" && (trimmed[0] == '-' || trimmed[0] >= '0' && trimmed[0] <= '9') && json.Valid([]byte(trimmed))
		if isNumber && perr == nil {
			if err != nil {
				t.Fatalf("ParseNumber(%q) = %v, want %v", s, err, want)
			}
			if math.Float64bits(v) != math.Float64bits(want) {
				t.Fatalf("ParseNumber(%q) = %v, want %v", s, v, want)
			}
			return
		}
		if err == nil {
			t.Fatalf("ParseNumber(%q) = %v, want an error (JSON number: %v, ParseFloat: %v)", s, v, isNumber, perr)
		}
		var fe *ingest.FieldError
		if !errors.As(err, &fe) || fe.Field != "reading" || !errors.Is(err, ingest.ErrInvalidReading) {
			t.Fatalf("ParseNumber(%q) error %v is not a reading *FieldError", s, err)
		}
		if isNumber != (fe.Type == "range") {
			t.Fatalf("ParseNumber(%q) error type %q, JSON number: %v", s, fe.Type, isNumber)
		}
	})
}

func TestParseTime(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    time.Time
		wantErr bool
	}{
		{name: "UTC", in: "2026-11-28T08:00:00Z", want: rx},
		{name: "nanoseconds", in: "2026-11-28T08:00:00.000000001Z", want: rx.Add(1)},
		{name: "offset", in: "2026-11-28T09:30:00+01:30", want: rx},
		{name: "lower-case t and z", in: "2026-11-28t08:00:00z", wantErr: true},
		{name: "date only", in: "2026-11-28", wantErr: true},
		{name: "unix seconds", in: "1764316800", wantErr: true},
		{name: "hour 24", in: "2026-11-28T24:00:00Z", wantErr: true},
		{name: "long garbage is cut in the message", in: strings.Repeat("x", 1000), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ingest.ParseTime(tt.in)
			if tt.wantErr {
				wantFieldError(t, err, "ts", "format")
				if len(err.Error()) > 200 {
					t.Errorf("message of %d bytes repeats the whole input", len(err.Error()))
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseTime(%q): %v", tt.in, err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("ParseTime(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzParseObject: ParseObject never panics, refuses only with a FieldError,
// and whatever it accepts and Validate passes is storable: the payload is a
// valid JSON object that passes Validate again, survives the stream codec,
// and is a fixed point of ParseObject (the payload is canonical).
func FuzzParseObject(f *testing.F) {
	for _, s := range []struct{ preset, body string }{
		{"", `{"device_id":"pump-7","reading":21.5,"ts":"2026-11-28T07:59:00Z","battery":97}`},
		{"pump-7", `{"reading":21.5,"tags":{"b":[1,2,{"c":null}],"a":"x"}}`},
		{"pump-7", `{"device_id":"pump-8","reading":1}`},
		{"", `{"device_id":"a","reading":1e400}`},
		{"", `{"device_id":"a","reading":1,"x":"\ud83d\ude00\u0041<>&"}`},
		{"", `{"device_id":"a","reading":1,"\ud800":1}`},
		{"", `{"device_id":"a","reading":1,"x":"\u0000"}`},
		{"", `{"device_id":"a","reading":-0,"ts":null,"x":[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}`},
		{"", `[1,2]`},
		{"", `{"device_id":"a","reading":1,"x":1}{}`},
		{"", "{\"device_id\":\"\xff\",\"reading\":1}"},
	} {
		f.Add(s.preset, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, preset string, body []byte) {
		r := ingest.Reading{DeviceID: preset}
		if err := ingest.ParseObject(body, &r); err != nil {
			var fe *ingest.FieldError
			if !errors.Is(err, ingest.ErrInvalidReading) || !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FieldError wrapping ErrInvalidReading", err)
			}
			return
		}
		if !json.Valid(body) || !utf8.Valid(body) {
			t.Fatalf("accepted a body that is not valid JSON: %q", body)
		}
		if preset != "" && r.DeviceID != preset {
			t.Fatalf("device %q of the topic became %q", preset, r.DeviceID)
		}
		r.ReceivedAt = rx
		r.Normalize()
		if err := r.Validate(ingest.Limits{}); err != nil {
			return
		}
		if r.Payload != nil {
			if !json.Valid(r.Payload) || r.Payload[0] != '{' {
				t.Fatalf("payload %q is not a JSON object", r.Payload)
			}
			if bytes.Contains(r.Payload, []byte("\ufffd")) && !bytes.Contains(body, []byte("\ufffd")) && !bytes.Contains(bytes.ToLower(body), []byte(`\ufffd`)) {
				t.Fatalf("payload %q holds U+FFFD that the body %q did not", r.Payload, body)
			}
		}
		// Validate must pass again after the round trip through Redis.
		got, err := ingest.Decode(ingest.CodecVersion, string(ingest.AppendEncode(nil, &r)))
		if err != nil {
			t.Fatalf("Decode(Encode(%+v)): %v", r, err)
		}
		if err := got.Validate(ingest.Limits{}); err != nil {
			t.Fatalf("Validate after the codec round trip: %v", err)
		}
		assertSameReading(t, got, r)

		// Sending the canonical form again gives the same reading.
		again := `{"reading":` + strconv.FormatFloat(r.Value, 'g', -1, 64) + `}`
		if r.Payload != nil {
			again = `{"reading":` + strconv.FormatFloat(r.Value, 'g', -1, 64) + `,` + string(r.Payload[1:])
		}
		r2 := ingest.Reading{DeviceID: r.DeviceID}
		if err := ingest.ParseObject([]byte(again), &r2); err != nil {
			t.Fatalf("ParseObject(%s) of the canonical form: %v", again, err)
		}
		if !bytes.Equal(r2.Payload, r.Payload) || math.Float64bits(r2.Value) != math.Float64bits(r.Value) {
			t.Fatalf("canonical form %s parsed to value %v payload %s, want %v %s", again, r2.Value, r2.Payload, r.Value, r.Payload)
		}
	})
}

// refCheckJSON is what checkJSON must decide for valid JSON, computed with
// encoding/json. sure is false when it cannot tell (the input holds a real
// U+FFFD, which encoding/json also makes of an unpaired surrogate escape).
func refCheckJSON(data []byte, maxDepth int) (ok, sure bool) {
	if bytes.Contains(data, []byte("\ufffd")) || bytes.Contains(bytes.ToLower(data), []byte(`\ufffd`)) {
		return false, false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return true, true
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				depth++
				if depth > maxDepth {
					return false, true
				}
			} else {
				depth--
			}
		case json.Number:
			if _, err := strconv.ParseFloat(string(v), 64); err != nil {
				return false, true
			}
		case string:
			if strings.ContainsRune(v, 0) || strings.ContainsRune(v, utf8.RuneError) {
				return false, true
			}
		}
	}
}

func TestCheckJSON(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{name: "scalars", in: `[true,false,null,0,-1.5e3,"s"]`, ok: true},
		{name: "depth 3", in: `{"a":[{"b":1}]}`, ok: true},
		{name: "depth 4", in: `{"a":[{"b":[]}]}`},
		{name: "depth counts siblings once", in: `[[[1]],[[2]],[[3]]]`, ok: true},
		{name: "escaped quote does not end a string", in: `["\"[[[[\""]`, ok: true},
		{name: "NUL", in: `["\u0000"]`},
		{name: "lone surrogate at the end of the input", in: `["\ud800`},
		{name: "high surrogate then truncated low", in: `["\ud800\udc"]`},
		{name: "number beyond float64", in: `[1e309]`},
		{name: "number at the end of the input", in: `1e309`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ingest.CheckJSON([]byte(tt.in), 3)
			if (err == nil) != tt.ok {
				t.Fatalf("checkJSON(%s) = %v, want ok %v", tt.in, err, tt.ok)
			}
			if err != nil {
				var fe *ingest.FieldError
				if !errors.As(err, &fe) || fe.Field != "payload" || !errors.Is(err, ingest.ErrInvalidReading) {
					t.Errorf("error %v is not a payload *FieldError", err)
				}
			}
		})
	}
}

// FuzzCheckJSON: checkJSON never panics and, for valid JSON, refuses exactly
// what encoding/json shows PostgreSQL would refuse: NUL, unpaired
// surrogates, numbers beyond float64 and nesting beyond the limit.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{
		`{"a":1}`, `{"a":"\u0000"}`, `{"a":"\ud800"}`, `{"a":"\udc00"}`, `{"a":"\ud83d\ude00"}`,
		`{"a":"\ud83d\u0041"}`, `{"a":"\\u0000"}`, `{"a":1e400}`, `{"a":[[[[1]]]]}`, `"\ud800`, `-`, `{"a":"\u12"}`,
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, depth uint8) {
		maxDepth := int(depth%20) + 1
		err := ingest.CheckJSON(data, maxDepth)
		if err != nil {
			var fe *ingest.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ingest.ErrInvalidReading) {
				t.Fatalf("error %v is not a *FieldError wrapping ErrInvalidReading", err)
			}
		}
		if !utf8.Valid(data) {
			if err == nil {
				t.Fatalf("accepted invalid UTF-8 %q", data)
			}
			return
		}
		if !json.Valid(data) {
			return
		}
		want, sure := refCheckJSON(data, maxDepth)
		if sure && want != (err == nil) {
			t.Fatalf("checkJSON(%q, %d) = %v, want ok %v", data, maxDepth, err, want)
		}
	})
}

func BenchmarkParseObject(b *testing.B) {
	for _, bc := range []struct{ name, body string }{
		{"Minimal", `{"device_id":"pump-7","reading":21.5}`},
		{"WithTime", `{"device_id":"pump-7","reading":21.5,"ts":"2026-11-28T08:00:00.123Z"}`},
		{"WithExtras", `{"device_id":"pump-7","reading":21.5,"ts":"2026-11-28T08:00:00.123Z","battery":97,"status":"ok","fw":"1.4.2","rssi":-71}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := []byte(bc.body)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				var r ingest.Reading
				if err := ingest.ParseObject(body, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestParseObjectErrorRanks pins which error a body with several problems
// gets, as it was when utf8.Valid and json.Valid each read the body first:
// invalid UTF-8 anywhere, then not an object, then not JSON, then fields.
func TestParseObjectErrorRanks(t *testing.T) {
	tests := []struct {
		name, body, wantField, wantType string
	}{
		{name: "invalid UTF-8 after a syntax error", body: "{\"reading\":,\"x\":\"\xff\"}", wantField: "body", wantType: "format"},
		{name: "invalid UTF-8 outside a string", body: "{\"device_id\":\"a\",\"reading\":1}\xff", wantField: "body", wantType: "format"},
		{name: "invalid UTF-8 in a non-object", body: "[\"\xff\"]", wantField: "body", wantType: "format"},
		{name: "a non-object that is not JSON either", body: `[1,`, wantField: "body", wantType: "type"},
		{name: "syntax error before a field error", body: `{"device_id":7,"reading":"x"} x`, wantField: "body", wantType: "json_invalid"},
		{name: "Unicode space around the object is trimmed", body: "\u00a0{\"device_id\":\"a\",\"reading\":1}\u2005"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ingest.Reading{Value: 42}
			err := ingest.ParseObject([]byte(tt.body), &r)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("ParseObject: %v", err)
				}
				return
			}
			wantFieldError(t, err, tt.wantField, tt.wantType)
			if r.Value != 42 || r.DeviceID != "" {
				t.Errorf("refused body changed the reading to %+v", r)
			}
		})
	}
}

// TestParseObjectSyntaxMessage: the words and offset are encoding/json's.
func TestParseObjectSyntaxMessage(t *testing.T) {
	err := ingest.ParseObject([]byte(`{"device_id":"a","reading":1}{}`), &ingest.Reading{})
	want := "body: invalid JSON at byte 30: invalid character '{' after top-level value"
	if err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}
