package httpgw

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"firehose/ingest"
)

func TestV1Accepted(t *testing.T) {
	ts := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	tsText := ts.Format(time.RFC3339)
	type want struct {
		device  string
		value   float64
		payload string
		time    time.Time // zero: the time of receipt
	}
	tests := []struct {
		name        string
		contentType string
		body        string
		want        []want
	}{
		{
			name: "single object", contentType: "application/json",
			body: `{"device_id": "pump-7", "reading": 21.5, "ts": "` + tsText + `", "battery": 97}`,
			want: []want{{"pump-7", 21.5, `{"battery":97}`, ts}},
		},
		{
			name: "no content type is JSON",
			body: `{"device_id": "pump-7", "reading": 1}`,
			want: []want{{"pump-7", 1, "", time.Time{}}},
		},
		{
			name: "array with charset", contentType: "application/json; charset=utf-8",
			body: ` [ {"device_id": "a", "reading": 1}, {"device_id": "b", "reading": -2.5e3, "ts": null} ] `,
			want: []want{{"a", 1, "", time.Time{}}, {"b", -2500, "", time.Time{}}},
		},
		{
			name: "ndjson with blank lines and CRLF", contentType: "application/x-ndjson",
			body: "{\"device_id\": \"a\", \"reading\": 1}\r\n\r\n  \n{\"device_id\": \"b\", \"reading\": 2, \"ts\": \"" + tsText + "\", \"tags\": {\"x\": [1, 2]}}\n",
			want: []want{{"a", 1, "", time.Time{}}, {"b", 2, `{"tags":{"x":[1,2]}}`, ts}},
		},
		{
			name: "ndjson without final newline", contentType: "Application/X-NDJSON",
			body: `{"device_id": "a", "reading": 0}`,
			want: []want{{"a", 0, "", time.Time{}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakeProducer{}
			s := newTestServer(t, Config{}, p)
			rec := post(s.Handler(), "/v1/readings", tt.body, "Content-Type", tt.contentType)
			if rec.Code != http.StatusOK {
				t.Fatalf("code = %d, want 200; body %s", rec.Code, rec.Body)
			}
			if a := decodeJSON[struct{ Accepted int }](t, rec); a.Accepted != len(tt.want) {
				t.Errorf("accepted = %d, want %d", a.Accepted, len(tt.want))
			}
			if p.calls != 1 {
				t.Errorf("Add called %d times, want once for the whole request", p.calls)
			}
			got := p.got()
			if len(got) != len(tt.want) {
				t.Fatalf("producer got %d readings, want %d", len(got), len(tt.want))
			}
			for i, w := range tt.want {
				r := got[i]
				wantTime := w.time
				if wantTime.IsZero() {
					wantTime = r.ReceivedAt
				}
				if r.DeviceID != w.device || r.Value != w.value || string(r.Payload) != w.payload || !r.Time.Equal(wantTime) {
					t.Errorf("reading %d = %+v (payload %s), want %+v", i, r, r.Payload, w)
				}
				if err := r.Validate(ingest.DefaultLimits); err != nil {
					t.Errorf("reading %d does not validate: %v", i, err)
				}
			}
			if !got[0].ReceivedAt.Equal(got[len(got)-1].ReceivedAt) {
				t.Errorf("readings of one request have different receipt times")
			}
		})
	}
}

func TestV1Refused(t *testing.T) {
	good := `{"device_id": "a", "reading": 1}`
	var many []string
	for i := range 150 {
		many = append(many, fmt.Sprintf(`{"device_id": "d%d"}`, i))
	}
	var tooMany []string
	for range 6 {
		tooMany = append(tooMany, good)
	}
	tests := []struct {
		name        string
		contentType string
		body        string
		wantCode    int
		wantReason  string
		check       func(t *testing.T, a errorAnswer)
		cfg         *Config // nil: MaxItems 5, MaxBody 1000
	}{
		{
			name: "one bad item of four", body: "[" + good + "," + good + "," + good + `,{"device_id": "a", "reading": "x"}]`,
			wantCode: 422, wantReason: reasonInvalid,
			check: func(t *testing.T, a errorAnswer) {
				if a.Error != "invalid readings" || a.Invalid != 1 || len(a.Details) != 1 || a.Details[0].Index != 3 ||
					a.Details[0].Field != "reading" || a.Details[0].Type != "type" {
					t.Errorf("answer = %+v, want item 3's reading", a)
				}
			},
		},
		{
			name: "every bad item listed", contentType: "application/x-ndjson",
			body:     good + "\n{\"reading\": 1}\n\n" + `{"device_id": "a/b", "reading": 1}` + "\n" + `{"device_id": "a", "reading": 1, "ts": "2001-01-01T00:00:00Z"}`,
			wantCode: 422, wantReason: reasonInvalid,
			check: func(t *testing.T, a errorAnswer) {
				type d struct {
					index, line int
					field, typ  string
				}
				want := []d{{1, 2, "device_id", "missing"}, {2, 4, "device_id", "format"}, {3, 5, "ts", "range"}}
				if len(a.Details) != len(want) {
					t.Fatalf("details = %+v, want %+v", a.Details, want)
				}
				for i, w := range want {
					g := a.Details[i]
					if (d{g.Index, g.Line, g.Field, g.Type}) != w || g.Msg == "" {
						t.Errorf("detail %d = %+v, want %+v", i, g, w)
					}
				}
			},
		},
		{
			name: "details capped at 100", body: "[" + strings.Join(many, ",") + "]",
			wantCode: 422, wantReason: reasonInvalid, cfg: &Config{},
			check: func(t *testing.T, a errorAnswer) {
				if a.Invalid != 150 || len(a.Details) != 100 || a.More != 50 {
					t.Errorf("invalid %d, %d details, more %d; want 150, 100, 50", a.Invalid, len(a.Details), a.More)
				}
			},
		},
		{
			name: "malformed array item", body: "[" + good + `, {"device_id": "a", "reading": 1,}]`,
			wantCode: 400, wantReason: reasonInvalid,
			check: func(t *testing.T, a errorAnswer) {
				if a.Index == nil || *a.Index != 1 || !strings.Contains(a.Error, "item 1") {
					t.Errorf("answer = %+v, want item 1 named", a)
				}
			},
		},
		{name: "missing comma", body: "[" + good + " " + good + "]", wantCode: 400, wantReason: reasonInvalid},
		{name: "array not closed", body: "[" + good, wantCode: 400, wantReason: reasonInvalid},
		{name: "trailing comma", body: "[" + good + ",]", wantCode: 400, wantReason: reasonInvalid},
		{name: "data after array", body: "[" + good + "] []", wantCode: 400, wantReason: reasonInvalid},
		{
			name: "malformed ndjson line", contentType: "application/x-ndjson", body: good + "\n\n" + good + "\n{\"device_id\": \n",
			wantCode: 400, wantReason: reasonInvalid,
			check: func(t *testing.T, a errorAnswer) {
				if a.Line != 4 || a.Index == nil || *a.Index != 2 || !strings.Contains(a.Error, "line 4") {
					t.Errorf("answer = %+v, want line 4 (item 2) named", a)
				}
			},
		},
		{name: "ndjson line not JSON", contentType: "application/x-ndjson", body: "hello", wantCode: 400, wantReason: reasonInvalid},
		{
			name: "concatenated objects sent as JSON", body: good + "\n" + good,
			wantCode: 400, wantReason: reasonInvalid,
			check: func(t *testing.T, a errorAnswer) {
				if !strings.Contains(a.Error, "application/x-ndjson") {
					t.Errorf("error %q does not suggest NDJSON", a.Error)
				}
			},
		},
		{name: "not JSON", body: "reading=1", wantCode: 400, wantReason: reasonInvalid},
		{name: "nesting past the JSON decoder's limit", body: `[{"device_id": "a", "reading": 1, "x": ` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}]`, wantCode: 400, wantReason: reasonInvalid, cfg: &Config{}},
		{name: "nesting past the payload limit", body: `{"device_id": "a", "reading": 1, "x": ` + strings.Repeat("[", 17) + strings.Repeat("]", 17) + `}`, wantCode: 422, wantReason: reasonInvalid},
		{name: "scalar", body: "5", wantCode: 422, wantReason: reasonInvalid},
		{name: "array of scalars", body: "[1]", wantCode: 422, wantReason: reasonInvalid},
		{name: "invalid UTF-8", body: "{\"device_id\": \"\xff\", \"reading\": 1}", wantCode: 422, wantReason: reasonInvalid},
		{name: "NUL escape in payload", body: `{"device_id": "a", "reading": 1, "note": "a\u0000b"}`, wantCode: 422, wantReason: reasonInvalid},
		{name: "huge number", body: `{"device_id": "a", "reading": 1e999}`, wantCode: 422, wantReason: reasonInvalid},
		{
			name: "empty body", body: "", wantCode: 422, wantReason: reasonInvalid,
			check: func(t *testing.T, a errorAnswer) {
				if a.Error != "no readings" {
					t.Errorf("error = %q, want no readings", a.Error)
				}
			},
		},
		{name: "empty array", body: " [ ] ", wantCode: 422, wantReason: reasonInvalid},
		{name: "blank ndjson", contentType: "application/x-ndjson", body: "\n\n \n", wantCode: 422, wantReason: reasonInvalid},
		{name: "too many items", body: "[" + strings.Join(tooMany, ",") + "]", wantCode: 413, wantReason: reasonTooLarge},
		{name: "too many ndjson lines", contentType: "application/x-ndjson", body: strings.Join(tooMany, "\n"), wantCode: 413, wantReason: reasonTooLarge},
		{name: "body too large", body: "[" + strings.Repeat(" ", 2000) + "]", wantCode: 413, wantReason: reasonTooLarge},
		{
			name: "unsupported content type", contentType: "text/plain", body: good,
			wantCode: 415, wantReason: reasonMediaType,
			check: func(t *testing.T, a errorAnswer) {
				if a.Error != `unsupported content type "text/plain": use application/json or application/x-ndjson` {
					t.Errorf("error = %q", a.Error)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakeProducer{}
			cfg := Config{MaxItems: 5, MaxBody: 1000}
			if tt.cfg != nil {
				cfg = *tt.cfg
			}
			s := newTestServer(t, cfg, p)
			rec := post(s.Handler(), "/v1/readings", tt.body, "Content-Type", tt.contentType)
			if rec.Code != tt.wantCode {
				t.Fatalf("code = %d, want %d; body %s", rec.Code, tt.wantCode, rec.Body)
			}
			a := decodeJSON[errorAnswer](t, rec)
			if a.Error == "" {
				t.Errorf("answer %s has no error", rec.Body)
			}
			if tt.check != nil {
				tt.check(t, a)
			}
			if p.calls != 0 {
				t.Errorf("producer called %d times for a refused request: all or nothing", p.calls)
			}
			if refused(s, tt.wantReason) == 0 {
				t.Errorf("refused{%s} not counted", tt.wantReason)
			}
		})
	}
}

func TestBodyTooLarge(t *testing.T) {
	for _, path := range []string{"/readings/fast", "/v1/readings"} {
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s chunked=%v", path, chunked), func(t *testing.T) {
				p := &fakeProducer{}
				s := newTestServer(t, Config{MaxBody: 64}, p)
				body := `{"id": 1, "reading": 1, "device_id": "a", "pad": "` + strings.Repeat("x", 100) + `"}`
				req := newRequest(http.MethodPost, path, body)
				if chunked {
					req.ContentLength = -1 // unknown length: MaxBytesReader stops it
				}
				rec := serve(s.Handler(), req)
				if rec.Code != http.StatusRequestEntityTooLarge {
					t.Fatalf("code = %d, want 413; body %s", rec.Code, rec.Body)
				}
				if a := decodeJSON[errorAnswer](t, rec); a.Error != "body larger than 64 bytes" {
					t.Errorf("error = %q", a.Error)
				}
				if p.calls != 0 || refused(s, reasonTooLarge) != 1 {
					t.Errorf("calls %d, refused{too_large} %v", p.calls, refused(s, reasonTooLarge))
				}
			})
		}
	}
}

// TestV1ArrayReadOnce pins what the array walker keeps from the days when
// json.Decoder read each item before ParseObject read it again.
func TestV1ArrayReadOnce(t *testing.T) {
	good := `{"device_id": "a", "reading": 1}`
	deepItem := func(n int) string {
		return `{"device_id": "a", "reading": 1, "x": ` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`
	}
	tests := []struct {
		name     string
		body     string
		wantCode int
		want     []string // substrings of the error
		invalid  int
	}{
		// An item may nest 10,000 levels from itself, as json.Decoder
		// allowed; the payload limit then refuses it.
		{name: "item nesting 9,999 under its object", body: "[" + deepItem(9999) + "]", wantCode: 422, invalid: 1},
		{name: "item nesting 10,000 under its object", body: "[" + deepItem(10000) + "]", wantCode: 400, want: []string{"malformed JSON in item 0", "exceeded max depth"}},
		{name: "malformed item past the item limit", body: "[" + strings.Repeat(good+",", 5) + `{"device_id": ]`, wantCode: 400, want: []string{"malformed JSON in item 5"}},
		{name: "well-formed item past the item limit", body: "[" + strings.Repeat(good+",", 5) + good + "]", wantCode: 413},
		{name: "every item with invalid UTF-8 is listed", body: "[{\"device_id\": \"\xff\", \"reading\": 1}, " + good + ", {\"device_id\": \"a\", \"reading\": 1, \"x\": \"\xfe\"}]", wantCode: 422, invalid: 2},
		{name: "invalid UTF-8 then malformed JSON in one item", body: "[{\"device_id\": \"\xff\", \"reading\": }]", wantCode: 400, want: []string{"malformed JSON in item 0"}},
		{name: "array not closed", body: "[" + good, wantCode: 400, want: []string{"after item 1", "not closed"}},
		{name: "missing comma names the next item", body: "[" + good + " " + good + "]", wantCode: 400, want: []string{"in item 1", "after array element"}},
		{name: "data after the array", body: "[" + good + "] x", wantCode: 400, want: []string{"data after the array"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakeProducer{}
			s := newTestServer(t, Config{MaxItems: 5}, p)
			rec := post(s.Handler(), "/v1/readings", tt.body, "Content-Type", "application/json")
			if rec.Code != tt.wantCode {
				t.Fatalf("code = %d, want %d; body %.300s", rec.Code, tt.wantCode, rec.Body)
			}
			a := decodeJSON[errorAnswer](t, rec)
			for _, w := range tt.want {
				if !strings.Contains(a.Error, w) {
					t.Errorf("error %q does not say %q", a.Error, w)
				}
			}
			if a.Invalid != tt.invalid {
				t.Errorf("invalid = %d, want %d (%+v)", a.Invalid, tt.invalid, a.Details)
			}
		})
	}
}
