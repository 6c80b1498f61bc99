package ingest_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode"

	"firehose/ingest"
)

// rx is the time of receipt of the readings in the unit tests.
var rx = time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)

// wantFieldError fails t unless err is a *FieldError for field with type typ
// that wraps ErrInvalidReading.
func wantFieldError(t *testing.T, err error, field, typ string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s %s", field, typ)
	}
	if !errors.Is(err, ingest.ErrInvalidReading) {
		t.Errorf("errors.Is(%v, ErrInvalidReading) = false", err)
	}
	var fe *ingest.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is no *FieldError", err, err)
	}
	if fe.Field != field || fe.Type != typ {
		t.Errorf("got field %q type %q (%v), want field %q type %q", fe.Field, fe.Type, err, field, typ)
	}
	if fe.Msg == "" || !strings.HasPrefix(err.Error(), fe.Field+": ") {
		t.Errorf("message %q does not name the field and say what is wrong", err.Error())
	}
}

// nested returns a JSON object whose innermost value lies depth levels of
// objects and arrays deep.
func nested(depth int) []byte {
	var b strings.Builder
	b.WriteString(`{"a":`)
	for range depth - 1 {
		b.WriteString("[")
	}
	b.WriteString("1")
	for range depth - 1 {
		b.WriteString("]")
	}
	b.WriteString("}")
	return []byte(b.String())
}

// payloadOfSize returns a JSON object of exactly n bytes (n >= 8).
func payloadOfSize(n int) []byte {
	return []byte(`{"a":"` + strings.Repeat("x", n-8) + `"}`)
}

func TestValidate(t *testing.T) {
	ok := func(mod func(r *ingest.Reading)) ingest.Reading {
		r := ingest.Reading{DeviceID: "pump-7", Time: rx.Add(-time.Minute), ReceivedAt: rx, Value: 21.5}
		if mod != nil {
			mod(&r)
		}
		return r
	}
	withID := func(id string) ingest.Reading { return ok(func(r *ingest.Reading) { r.DeviceID = id }) }
	withValue := func(v float64) ingest.Reading { return ok(func(r *ingest.Reading) { r.Value = v }) }
	withTime := func(ts time.Time) ingest.Reading { return ok(func(r *ingest.Reading) { r.Time = ts }) }
	withPayload := func(p string) ingest.Reading { return ok(func(r *ingest.Reading) { r.Payload = []byte(p) }) }

	tests := []struct {
		name      string
		r         ingest.Reading
		lim       ingest.Limits
		wantField string // "" means valid
		wantType  string
	}{
		{name: "valid minimal", r: ok(nil)},
		{name: "valid with payload", r: withPayload(`{"battery":97,"status":"ok","tags":["a","b"],"n":null}`)},
		{name: "valid unicode device id", r: withID("température-7_Ω.ü")},
		{name: "valid emoji device id", r: withID("🌡️sensor")},
		{name: "valid negative zero", r: withValue(math.Copysign(0, -1))},
		{name: "valid largest float", r: withValue(math.MaxFloat64)},
		{name: "valid smallest float", r: withValue(-math.MaxFloat64)},

		{name: "device id empty", r: withID(""), wantField: "device_id", wantType: "missing"},
		{name: "device id 128 bytes", r: withID(strings.Repeat("d", 128))},
		{name: "device id 129 bytes", r: withID(strings.Repeat("d", 129)), wantField: "device_id", wantType: "too_long"},
		{name: "device id too long counts bytes not runes", r: withID(strings.Repeat("é", 65)), wantField: "device_id", wantType: "too_long"},
		{name: "device id invalid UTF-8", r: withID("pump\xff7"), wantField: "device_id", wantType: "format"},
		{name: "device id truncated UTF-8", r: withID("pump\xc3"), wantField: "device_id", wantType: "format"},
		{name: "device id NUL", r: withID("pump\x007"), wantField: "device_id", wantType: "format"},
		{name: "device id control char", r: withID("pump\x017"), wantField: "device_id", wantType: "format"},
		{name: "device id DEL", r: withID("pump\x7f"), wantField: "device_id", wantType: "format"},
		{name: "device id C1 control", r: withID("pump\u0085"), wantField: "device_id", wantType: "format"},
		{name: "device id newline", r: withID("pump\n7"), wantField: "device_id", wantType: "format"},
		{name: "device id tab", r: withID("pump\t7"), wantField: "device_id", wantType: "format"},
		{name: "device id space", r: withID("pump 7"), wantField: "device_id", wantType: "format"},
		{name: "device id no-break space", r: withID("pump\u00a07"), wantField: "device_id", wantType: "format"},
		{name: "device id zero-width space", r: withID("pump\u200b7"), wantField: "device_id", wantType: "format"},
		{name: "device id slash", r: withID("site/pump-7"), wantField: "device_id", wantType: "format"},
		{name: "device id plus", r: withID("pump+7"), wantField: "device_id", wantType: "format"},
		{name: "device id hash", r: withID("pump#7"), wantField: "device_id", wantType: "format"},
		{name: "device id lone plus", r: withID("+"), wantField: "device_id", wantType: "format"},

		{name: "reading NaN", r: withValue(math.NaN()), wantField: "reading", wantType: "range"},
		{name: "reading +Inf", r: withValue(math.Inf(1)), wantField: "reading", wantType: "range"},
		{name: "reading -Inf", r: withValue(math.Inf(-1)), wantField: "reading", wantType: "range"},

		{name: "received at missing", r: ok(func(r *ingest.Reading) { r.ReceivedAt = time.Time{} }), wantField: "received_at", wantType: "missing"},
		{name: "ts exactly max age old", r: withTime(rx.Add(-ingest.DefaultLimits.MaxAge))},
		{name: "ts older than max age", r: withTime(rx.Add(-ingest.DefaultLimits.MaxAge - time.Nanosecond)), wantField: "ts", wantType: "range"},
		{name: "ts far in the past", r: withTime(time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)), wantField: "ts", wantType: "range"},
		{name: "ts zero (Normalize not run)", r: withTime(time.Time{}), wantField: "ts", wantType: "range"},
		{name: "ts exactly max skew ahead", r: withTime(rx.Add(ingest.DefaultLimits.MaxSkew))},
		{name: "ts beyond max skew", r: withTime(rx.Add(ingest.DefaultLimits.MaxSkew + time.Nanosecond)), wantField: "ts", wantType: "range"},
		{name: "ts far in the future", r: withTime(time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)), wantField: "ts", wantType: "range"},
		{name: "ts in another zone within limits", r: withTime(rx.In(time.FixedZone("X", 5*3600)))},

		{name: "payload exactly max size", r: ok(func(r *ingest.Reading) { r.Payload = payloadOfSize(16 << 10) })},
		{name: "payload too big", r: ok(func(r *ingest.Reading) { r.Payload = payloadOfSize(16<<10 + 1) }), wantField: "payload", wantType: "too_long"},
		{name: "payload exactly max depth", r: ok(func(r *ingest.Reading) { r.Payload = nested(16) })},
		{name: "payload too deep", r: ok(func(r *ingest.Reading) { r.Payload = nested(17) }), wantField: "payload", wantType: "too_deep"},
		{name: "payload brackets in strings do not nest", r: withPayload(`{"a":"[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{{"}`)},
		{name: "payload NUL escape", r: withPayload(`{"a":"x\u0000y"}`), wantField: "payload", wantType: "format"},
		{name: "payload NUL escape in key", r: withPayload(`{"\u0000":1}`), wantField: "payload", wantType: "format"},
		{name: "payload escaped backslash before u0000 text", r: withPayload(`{"a":"\\u0000"}`)},
		{name: "payload other escapes", r: withPayload(`{"a":"\"\\\/\b\f\n\r\t\u00e9\u20AC"}`)},
		{name: "payload lone high surrogate", r: withPayload(`{"a":"\ud800"}`), wantField: "payload", wantType: "format"},
		{name: "payload lone high surrogate then text", r: withPayload(`{"a":"\ud83dxxxxxxx"}`), wantField: "payload", wantType: "format"},
		{name: "payload lone low surrogate", r: withPayload(`{"a":"\udc00"}`), wantField: "payload", wantType: "format"},
		{name: "payload reversed surrogate pair", r: withPayload(`{"a":"\ude00\ud83d"}`), wantField: "payload", wantType: "format"},
		{name: "payload high surrogate then non-low escape", r: withPayload(`{"a":"\ud83d\u0041"}`), wantField: "payload", wantType: "format"},
		{name: "payload high surrogate then high", r: withPayload(`{"a":"\ud83d\ud83d"}`), wantField: "payload", wantType: "format"},
		{name: "payload high surrogate then other escape", r: withPayload(`{"a":"\ud83d\n"}`), wantField: "payload", wantType: "format"},
		{name: "payload valid surrogate pair", r: withPayload(`{"a":"\ud83d\ude00"}`)},
		{name: "payload valid surrogate pair upper case", r: withPayload(`{"a":"\uD83D\uDE00x"}`)},
		{name: "payload valid surrogate pair in key", r: withPayload(`{"\ud83d\ude00":"\ud83d\ude00"}`)},
		{name: "payload malformed u escape", r: withPayload(`{"a":"\u12"}`), wantField: "payload", wantType: "format"},
		{name: "payload unterminated string", r: withPayload(`{"a":"abc`), wantField: "payload", wantType: "format"},
		{name: "payload invalid UTF-8", r: withPayload("{\"a\":\"\xff\"}"), wantField: "payload", wantType: "format"},
		{name: "payload number beyond float64", r: withPayload(`{"a":1e400}`), wantField: "payload", wantType: "range"},
		{name: "payload negative number beyond float64", r: withPayload(`{"a":[1,-1E+400]}`), wantField: "payload", wantType: "range"},
		{name: "payload huge integer", r: withPayload(`{"a":1` + strings.Repeat("0", 400) + `}`), wantField: "payload", wantType: "range"},
		{name: "payload largest float64", r: withPayload(`{"a":1.7976931348623157e308,"b":-0.0,"c":5e-324}`)},
		{name: "payload underflow is zero", r: withPayload(`{"a":1e-400}`)},
		{name: "payload digits in strings are not numbers", r: withPayload(`{"1e400":"1e400"}`)},

		{name: "custom device id limit", r: withID("12345"), lim: ingest.Limits{MaxDeviceID: 4}, wantField: "device_id", wantType: "too_long"},
		{name: "custom payload limit", r: withPayload(`{"a":12345}`), lim: ingest.Limits{MaxPayload: 10}, wantField: "payload", wantType: "too_long"},
		{name: "custom depth limit", r: withPayload(`{"a":[1]}`), lim: ingest.Limits{MaxDepth: 1}, wantField: "payload", wantType: "too_deep"},
		{name: "custom max age", r: withTime(rx.Add(-time.Minute - 1)), lim: ingest.Limits{MaxAge: time.Minute}, wantField: "ts", wantType: "range"},
		{name: "custom max skew", r: withTime(rx.Add(time.Second + 1)), lim: ingest.Limits{MaxSkew: time.Second}, wantField: "ts", wantType: "range"},

		// A zero field of Limits means its default, whatever the other fields say.
		{name: "defaults: device id", r: withID(strings.Repeat("d", 129)), lim: ingest.Limits{MaxPayload: 1 << 20}, wantField: "device_id", wantType: "too_long"},
		{name: "defaults: payload", r: ok(func(r *ingest.Reading) { r.Payload = payloadOfSize(16<<10 + 1) }), lim: ingest.Limits{MaxDeviceID: 64}, wantField: "payload", wantType: "too_long"},
		{name: "defaults: payload at limit", r: ok(func(r *ingest.Reading) { r.Payload = payloadOfSize(16 << 10) }), lim: ingest.Limits{MaxDepth: 1}},
		{name: "defaults: depth", r: ok(func(r *ingest.Reading) { r.Payload = nested(17) }), lim: ingest.Limits{MaxPayload: 100}, wantField: "payload", wantType: "too_deep"},
		{name: "defaults: max age", r: withTime(rx.Add(-ingest.DefaultLimits.MaxAge - 1)), lim: ingest.Limits{MaxSkew: time.Second}, wantField: "ts", wantType: "range"},
		{name: "defaults: max age at limit", r: withTime(rx.Add(-ingest.DefaultLimits.MaxAge)), lim: ingest.Limits{MaxSkew: time.Second}},
		{name: "defaults: max skew", r: withTime(rx.Add(time.Hour + 1)), lim: ingest.Limits{MaxAge: time.Minute}, wantField: "ts", wantType: "range"},
		{name: "defaults: negative fields", r: withID(strings.Repeat("d", 128)), lim: ingest.Limits{MaxDeviceID: -1, MaxPayload: -1, MaxDepth: -1, MaxAge: -1, MaxSkew: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Validate(tt.lim)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			wantFieldError(t, err, tt.wantField, tt.wantType)
		})
	}
}

// TestValidateDeviceIDASCII: each ASCII character is allowed in an id
// exactly when it is printable, not a space and not one of / + #.
func TestValidateDeviceIDASCII(t *testing.T) {
	for c := rune(0); c < 0x80; c++ {
		want := unicode.IsPrint(c) && !unicode.IsSpace(c) && !strings.ContainsRune("/+#", c)
		if err := ingest.ValidateDeviceID("a"+string(c)+"b", 0); (err == nil) != want {
			t.Errorf("%U: %v, want allowed %v", c, err, want)
		}
	}
}

func TestValidateDeviceID(t *testing.T) {
	tests := []struct {
		name     string
		id       string
		max      int
		wantType string // "" means valid
	}{
		{name: "simple", id: "pump-7"},
		{name: "punctuation", id: "a.b_c-d:e@f!g$h%i&j*k(l)m=n~o"},
		{name: "unicode", id: "Überlauf-温度-🌡"},
		{name: "one byte", id: "x"},
		{name: "empty", id: "", wantType: "missing"},
		{name: "default max when zero", id: strings.Repeat("x", 128), max: 0},
		{name: "default max when zero, too long", id: strings.Repeat("x", 129), max: 0, wantType: "too_long"},
		{name: "default max when negative, too long", id: strings.Repeat("x", 129), max: -5, wantType: "too_long"},
		{name: "custom max", id: "abcd", max: 4},
		{name: "custom max exceeded", id: "abcde", max: 4, wantType: "too_long"},
		{name: "too long checked before UTF-8", id: "\xff\xff\xff", max: 2, wantType: "too_long"},
		{name: "invalid UTF-8", id: "\xff", wantType: "format"},
		{name: "surrogate half in UTF-8", id: "a\xed\xa0\x80", wantType: "format"},
		{name: "overlong UTF-8", id: "a\xc0\xaf", wantType: "format"},
		{name: "NUL", id: "\x00", wantType: "format"},
		{name: "trailing NUL", id: "pump\x00", wantType: "format"},
		{name: "escape", id: "a\x1b[31m", wantType: "format"},
		{name: "carriage return", id: "a\rb", wantType: "format"},
		{name: "space", id: " ", wantType: "format"},
		{name: "leading space", id: " pump", wantType: "format"},
		{name: "ideographic space", id: "a\u3000b", wantType: "format"},
		{name: "line separator", id: "a\u2028b", wantType: "format"},
		{name: "byte order mark", id: "\ufeffpump", wantType: "format"},
		{name: "slash", id: "/", wantType: "format"},
		{name: "plus", id: "a+", wantType: "format"},
		{name: "hash", id: "#", wantType: "format"},
		{name: "mqtt wildcard topic", id: "devices/+/readings", wantType: "format"},
		{name: "delete", id: "a\x7fb", wantType: "format"},
		{name: "tilde and bang", id: "~!"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ingest.ValidateDeviceID(tt.id, tt.max)
			if tt.wantType == "" {
				if err != nil {
					t.Fatalf("ValidateDeviceID(%q, %d): %v", tt.id, tt.max, err)
				}
				return
			}
			wantFieldError(t, err, "device_id", tt.wantType)
		})
	}
}

func TestNormalize(t *testing.T) {
	zone := time.FixedZone("UTC+2", 2*3600)
	tests := []struct {
		name     string
		r        ingest.Reading
		wantTime time.Time
	}{
		{name: "zero time becomes receipt time", r: ingest.Reading{ReceivedAt: rx.In(zone)}, wantTime: rx},
		{name: "given time kept", r: ingest.Reading{Time: rx.Add(-time.Hour), ReceivedAt: rx}, wantTime: rx.Add(-time.Hour)},
		{name: "given time in another zone", r: ingest.Reading{Time: rx.In(zone), ReceivedAt: rx}, wantTime: rx},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.r.Normalize()
			if !tt.r.Time.Equal(tt.wantTime) || tt.r.Time.Location() != time.UTC {
				t.Errorf("Time = %v, want %v in UTC", tt.r.Time, tt.wantTime)
			}
			if tt.r.ReceivedAt.Location() != time.UTC {
				t.Errorf("ReceivedAt = %v, want UTC", tt.r.ReceivedAt)
			}
		})
	}
}

func BenchmarkValidate(b *testing.B) {
	for _, bc := range []struct {
		name    string
		payload []byte
	}{
		{"NoPayload", nil},
		{"Payload64B", payloadOfSize(64)},
		{"Payload1KiB", payloadOfSize(1 << 10)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := ingest.Reading{DeviceID: "pump-0007", Time: rx.Add(-time.Second), ReceivedAt: rx, Value: 21.5, Payload: bc.payload}
			b.ReportAllocs()
			for b.Loop() {
				if err := r.Validate(ingest.DefaultLimits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestAgeBoundRefusesWhatRetentionDeletes: a shared AgeBound tightens
// MaxAge for every copy of the Limits, with a message naming the retention,
// and may change while they are in use; a bound looser than MaxAge changes
// nothing.
func TestAgeBoundRefusesWhatRetentionDeletes(t *testing.T) {
	now := time.Now()
	r := ingest.Reading{DeviceID: "d", Time: now.Add(-72 * time.Hour), ReceivedAt: now, Value: 1}
	r.Normalize()
	var b ingest.AgeBound
	lim := ingest.Limits{Retained: &b}
	if err := r.Validate(lim); err != nil {
		t.Fatalf("no bound: %v", err)
	}
	b.Set(23*time.Hour, 24*time.Hour)
	err := r.Validate(lim)
	var fe *ingest.FieldError
	if !errors.As(err, &fe) || fe.Field != "ts" || !strings.Contains(fe.Msg, "--retention") || !strings.Contains(fe.Msg, "24h0m0s") {
		t.Errorf("3 days old under a 23h bound: %v, want a ts error naming the retention", err)
	}
	r.Time = now.Add(-12 * time.Hour)
	if err := r.Validate(lim); err != nil {
		t.Errorf("12 hours old under a 23h bound: %v", err)
	}
	b.Set(2*365*24*time.Hour, 3*365*24*time.Hour)
	r.Time = now.Add(-400 * 24 * time.Hour)
	if err := r.Validate(lim); err == nil || strings.Contains(err.Error(), "--retention") {
		t.Errorf("400 days old, bound beyond MaxAge: %v, want MaxAge's own error", err)
	}
}
