package httpgw

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"firehose/ingest"
)

// fastAnswer is the 200 answer of /readings/fast.
type fastAnswer struct {
	Status    string `json:"status"`
	Message   string `json:"message"`
	Timestamp string `json:"timestamp"`
}

// fastDetail is one item of a FastAPI 422 answer.
type fastDetail struct {
	Type  string          `json:"type"`
	Loc   []any           `json:"loc"`
	Msg   string          `json:"msg"`
	Input json.RawMessage `json:"input"`
	Ctx   map[string]any  `json:"ctx"`
}

func TestFastAccepted(t *testing.T) {
	now := time.Now().UTC()
	recent := now.Add(-time.Minute).Truncate(time.Millisecond)
	tests := []struct {
		name      string
		body      string
		header    []string
		wantValue float64
		wantID    string
		wantTime  time.Time // zero: the time of receipt
		device    string
	}{
		{name: "seed body", body: `{"id": 1, "reading": 21}`, wantValue: 21, wantID: "1"},
		{name: "with timestamp", body: `{"id": 2, "reading": -5, "timestamp": "` + recent.Format(time.RFC3339Nano) + `"}`, wantValue: -5, wantID: "2", wantTime: recent},
		{name: "timestamp with offset", body: `{"id": 2, "reading": 1, "timestamp": "` + recent.In(time.FixedZone("", 2*3600)).Format(time.RFC3339Nano) + `"}`, wantValue: 1, wantID: "2", wantTime: recent},
		{name: "naive timestamp is UTC, space separator", body: `{"id": 2, "reading": 1, "timestamp": "` + recent.Format("2006-01-02 15:04:05.000") + `"}`, wantValue: 1, wantID: "2", wantTime: recent},
		{name: "unix seconds", body: `{"id": 2, "reading": 1, "timestamp": ` + strconv.FormatInt(recent.Unix(), 10) + `}`, wantValue: 1, wantID: "2", wantTime: recent.Truncate(time.Second)},
		{name: "unix milliseconds", body: `{"id": 2, "reading": 1, "timestamp": ` + strconv.FormatInt(recent.UnixMilli(), 10) + `}`, wantValue: 1, wantID: "2", wantTime: recent},
		{name: "null timestamp", body: `{"id": 3, "reading": 7, "timestamp": null}`, wantValue: 7, wantID: "3"},
		{name: "smallint bounds low", body: `{"id": 4, "reading": -32768}`, wantValue: -32768, wantID: "4"},
		{name: "smallint bounds high", body: `{"id": 4, "reading": 32767}`, wantValue: 32767, wantID: "4"},
		{name: "integral float", body: `{"id": 5.0, "reading": 5.0}`, wantValue: 5, wantID: "5"},
		{name: "exponent", body: `{"id": 1e3, "reading": 2E2}`, wantValue: 200, wantID: "1000"},
		{name: "numeric strings", body: `{"id": " 6 ", "reading": "-12"}`, wantValue: -12, wantID: "6"},
		{name: "string with decimal zeros", body: `{"id": "+7.000", "reading": "8."}`, wantValue: 8, wantID: "7"},
		{name: "booleans are integers", body: `{"id": true, "reading": false}`, wantValue: 0, wantID: "1"},
		{name: "escaped key and value", body: `{"i\u0064": "\u0039", "reading": 1}`, wantValue: 1, wantID: "9"},
		{name: "extra fields ignored", body: `{"id": 1, "reading": 2, "extra": {"a": [1, "}"]}, "Reading": 99}`, wantValue: 2, wantID: "1"},
		{name: "duplicate key: last wins", body: `{"id": 1, "reading": 99999, "reading": 3}`, wantValue: 3, wantID: "1"},
		{name: "id beyond smallint", body: `{"id": 9223372036854775807, "reading": 1}`, wantValue: 1, wantID: "9223372036854775807"},
		{name: "BOM and whitespace", body: "\xEF\xBB\xBF \n{\"id\":1,\"reading\":1}\n", wantValue: 1, wantID: "1"},
		{name: "X-Device-ID header", body: `{"id": 1, "reading": 1}`, header: []string{"X-Device-ID", "pump-7"}, device: "pump-7", wantValue: 1, wantID: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakeProducer{}
			s := newTestServer(t, Config{}, p)
			before := time.Now()
			rec := post(s.Handler(), "/readings/fast", tt.body, tt.header...)
			if rec.Code != http.StatusOK {
				t.Fatalf("code = %d, want 200; body %s", rec.Code, rec.Body)
			}
			a := decodeJSON[fastAnswer](t, rec)
			if a.Status != "buffered" || a.Message != "Reading buffered for processing" {
				t.Errorf("answer = %+v", a)
			}
			ts, err := time.Parse(time.RFC3339Nano, a.Timestamp)
			if err != nil || ts.Before(before) || ts.After(time.Now()) {
				t.Errorf("answer timestamp %q: want the time of receipt (err %v)", a.Timestamp, err)
			}
			got := p.got()
			if len(got) != 1 {
				t.Fatalf("producer got %d readings, want 1", len(got))
			}
			r := got[0]
			device := tt.device
			if device == "" {
				device = DefaultDevice
			}
			if r.DeviceID != device || r.Value != tt.wantValue || string(r.Payload) != `{"id":`+tt.wantID+`}` {
				t.Errorf("reading = %+v (payload %s), want device %q value %v id %s", r, r.Payload, device, tt.wantValue, tt.wantID)
			}
			if !r.ReceivedAt.Equal(ts) {
				t.Errorf("ReceivedAt %v != answer timestamp %v", r.ReceivedAt, ts)
			}
			wantTime := tt.wantTime
			if wantTime.IsZero() {
				wantTime = r.ReceivedAt
			}
			if !r.Time.Equal(wantTime) || r.Time.Location() != time.UTC {
				t.Errorf("Time = %v, want %v in UTC", r.Time, wantTime)
			}
			if err := r.Validate(ingest.DefaultLimits); err != nil {
				t.Errorf("accepted reading does not validate: %v", err)
			}
		})
	}
}

func TestFastRefused(t *testing.T) {
	type want struct {
		typ string
		loc string // loc joined with "."
	}
	future := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name   string
		body   string
		header []string
		want   []want
	}{
		{name: "missing reading", body: `{"id": 1}`, want: []want{{"missing", "body.reading"}}},
		{name: "missing both", body: `{}`, want: []want{{"missing", "body.id"}, {"missing", "body.reading"}}},
		{name: "empty body", body: ``, want: []want{{"missing", "body"}}},
		{name: "blank body", body: " \n", want: []want{{"missing", "body"}}},
		{name: "not JSON", body: `reading=5`, want: []want{{"json_invalid", "body.0"}}},
		{name: "truncated", body: `{"id": 1, "reading": `, want: []want{{"json_invalid", "body.21"}}},
		{name: "trailing comma", body: `{"id": 1, "reading": 2,}`, want: []want{{"json_invalid", "body.23"}}},
		{name: "NaN", body: `{"id": 1, "reading": NaN}`, want: []want{{"json_invalid", "body.21"}}},
		{name: "invalid UTF-8", body: "{\"id\": 1, \"reading\": 2, \"x\": \"\xff\"}", want: []want{{"json_invalid", "body.30"}}},
		{name: "array body", body: `[{"id": 1, "reading": 2}]`, want: []want{{"model_attributes_type", "body"}}},
		{name: "number body", body: `5`, want: []want{{"model_attributes_type", "body"}}},
		{name: "unparsable string", body: `{"id": "abc", "reading": "1.5"}`, want: []want{{"int_parsing", "body.id"}, {"int_parsing", "body.reading"}}},
		{name: "null and list", body: `{"id": null, "reading": [1]}`, want: []want{{"int_type", "body.id"}, {"int_type", "body.reading"}}},
		{name: "object", body: `{"id": 1, "reading": {"v": 1}}`, want: []want{{"int_type", "body.reading"}}},
		{name: "fraction", body: `{"id": 1.5, "reading": 2.25}`, want: []want{{"int_from_float", "body.id"}, {"int_from_float", "body.reading"}}},
		{name: "above smallint", body: `{"id": 1, "reading": 32768}`, want: []want{{"less_than_equal", "body.reading"}}},
		{name: "below smallint", body: `{"id": 1, "reading": -32769}`, want: []want{{"greater_than_equal", "body.reading"}}},
		{name: "huge integer", body: `{"id": 99999999999999999999999, "reading": -99999999999999999999999}`, want: []want{{"less_than_equal", "body.id"}, {"greater_than_equal", "body.reading"}}},
		{name: "huge float", body: `{"id": 1e30, "reading": 1e400}`, want: []want{{"less_than_equal", "body.id"}, {"finite_number", "body.reading"}}},
		{name: "huge string", body: `{"id": 1, "reading": "` + strings.Repeat("9", 5000) + `"}`, want: []want{{"int_parsing_size", "body.reading"}}},
		{name: "bad timestamp", body: `{"id": 1, "reading": 1, "timestamp": "yesterday"}`, want: []want{{"datetime_parsing", "body.timestamp"}}},
		{name: "timestamp type", body: `{"id": 1, "reading": 1, "timestamp": true}`, want: []want{{"datetime_type", "body.timestamp"}}},
		{name: "timestamp beyond 9999", body: `{"id": 1, "reading": 1, "timestamp": 1e300}`, want: []want{{"datetime_parsing", "body.timestamp"}}},
		{name: "timestamp in the future", body: `{"id": 1, "reading": 1, "timestamp": "` + future + `"}`, want: []want{{"value_error", "body.timestamp"}}},
		// The zero Time: taken for "not given", it would become the time of receipt.
		{name: "timestamp year 1", body: `{"id": 1, "reading": 1, "timestamp": "0001-01-01T00:00:00Z"}`, want: []want{{"value_error", "body.timestamp"}}},
		{name: "timestamp year 1, date only", body: `{"id": 1, "reading": 1, "timestamp": "0001-01-01"}`, want: []want{{"value_error", "body.timestamp"}}},
		{name: "timestamp year 1 and a bad device", body: `{"id": 1, "reading": 1, "timestamp": "0001-01-01"}`, header: []string{"X-Device-ID", "a+b"}, want: []want{{"value_error", "header.x-device-id"}, {"value_error", "body.timestamp"}}},
		{name: "bad device header and body", body: `{"id": 1}`, header: []string{"X-Device-ID", "a/b"}, want: []want{{"value_error", "header.x-device-id"}, {"missing", "body.reading"}}},
		{name: "empty device header", body: `{"id": 1, "reading": 1}`, header: []string{"X-Device-ID", ""}, want: []want{{"value_error", "header.x-device-id"}}},
		{name: "deep nesting", body: `{"id": 1, "x": ` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, want: []want{{"json_invalid", "body.10014"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakeProducer{}
			s := newTestServer(t, Config{}, p)
			rec := post(s.Handler(), "/readings/fast", tt.body, tt.header...)
			if rec.Code != http.StatusUnprocessableEntity {
				t.Fatalf("code = %d, want 422; body %s", rec.Code, rec.Body)
			}
			a := decodeJSON[struct{ Detail []fastDetail }](t, rec)
			var got []want
			for _, d := range a.Detail {
				var loc []string
				for _, l := range d.Loc {
					loc = append(loc, fmt.Sprint(l))
				}
				got = append(got, want{d.Type, strings.Join(loc, ".")})
				if d.Msg == "" || d.Input == nil {
					t.Errorf("detail %+v lacks msg or input", d)
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("details = %v, want %v; body %s", got, tt.want, rec.Body)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("detail %d = %v, want %v; body %s", i, got[i], tt.want[i], rec.Body)
				}
			}
			if p.calls != 0 {
				t.Errorf("producer called %d times for a refused body", p.calls)
			}
			if refused(s, reasonInvalid) != 1 {
				t.Errorf("refused{invalid} = %v, want 1", refused(s, reasonInvalid))
			}
		})
	}
}

// TestFastErrorShape pins the words and context FastAPI clients see.
func TestFastErrorShape(t *testing.T) {
	s := newTestServer(t, Config{}, &fakeProducer{})
	tests := []struct {
		name string
		body string
		want string // the whole answer
	}{
		{
			name: "missing echoes the body",
			body: `{"id": 1}`,
			want: `{"detail":[{"type":"missing","loc":["body","reading"],"msg":"Field required","input":{"id":1}}]}`,
		},
		{
			name: "range has ctx",
			body: `{"id":1,"reading":40000}`,
			want: `{"detail":[{"type":"less_than_equal","loc":["body","reading"],"msg":"Input should be less than or equal to 32767","input":40000,"ctx":{"le":32767}}]}`,
		},
		{
			name: "lower bound",
			body: `{"id":1,"reading":-40000}`,
			want: `{"detail":[{"type":"greater_than_equal","loc":["body","reading"],"msg":"Input should be greater than or equal to -32768","input":-40000,"ctx":{"ge":-32768}}]}`,
		},
		{
			name: "int parsing",
			body: `{"id":"x1","reading":1}`,
			want: `{"detail":[{"type":"int_parsing","loc":["body","id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"x1"}]}`,
		},
		{
			name: "int from float",
			body: `{"id":1,"reading":1.5}`,
			want: `{"detail":[{"type":"int_from_float","loc":["body","reading"],"msg":"Input should be a valid integer, got a number with a fractional part","input":1.5}]}`,
		},
		{
			name: "json invalid",
			body: `{"id":1,`,
			want: `{"detail":[{"type":"json_invalid","loc":["body",8],"msg":"JSON decode error","input":{},"ctx":{"error":"unexpected end of JSON input"}}]}`,
		},
		{
			name: "not an object",
			body: `[1]`,
			want: `{"detail":[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from","input":[1]}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := post(s.Handler(), "/readings/fast", tt.body)
			if rec.Code != http.StatusUnprocessableEntity || rec.Body.String() != tt.want {
				t.Errorf("answer %d %s\nwant 422 %s", rec.Code, rec.Body, tt.want)
			}
		})
	}
}

func TestFastDefaultDevice(t *testing.T) {
	p := &fakeProducer{}
	s := newTestServer(t, Config{DefaultDevice: "legacy-1"}, p)
	if rec := post(s.Handler(), "/readings/fast", `{"id":1,"reading":1}`); rec.Code != http.StatusOK {
		t.Fatalf("code = %d; body %s", rec.Code, rec.Body)
	}
	if got := p.got(); len(got) != 1 || got[0].DeviceID != "legacy-1" {
		t.Errorf("readings = %+v, want device legacy-1", got)
	}
}

func TestLaxInt(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		wantV   int64
		wantBig int
		wantTyp string
	}{
		{name: "min int64", raw: "-9223372036854775808", wantV: math.MinInt64},
		{name: "below int64", raw: "-9223372036854775809", wantBig: -1},
		{name: "above int64", raw: "9223372036854775808", wantBig: 1},
		{name: "float at 2^63", raw: "9.223372036854775808e18", wantBig: 1},
		{name: "float -2^63", raw: "-9.223372036854775808e18", wantV: math.MinInt64},
		{name: "negative zero", raw: "-0", wantV: 0},
		{name: "tiny float", raw: "1e-400", wantV: 0},
		{name: "string spaces", raw: `"\t 42 \n"`, wantV: 42},
		{name: "string exponent", raw: `"1e3"`, wantTyp: "int_parsing"},
		{name: "string fraction", raw: `"1.5"`, wantTyp: "int_parsing"},
		{name: "empty string", raw: `""`, wantTyp: "int_parsing"},
		{name: "sign only", raw: `"-"`, wantTyp: "int_parsing"},
		{name: "long string big", raw: `"` + strings.Repeat("9", 40) + `"`, wantBig: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, big, typ, _ := laxInt([]byte(tt.raw))
			if v != tt.wantV || big != tt.wantBig || typ != tt.wantTyp {
				t.Errorf("laxInt(%s) = %d, %d, %q; want %d, %d, %q", tt.raw, v, big, typ, tt.wantV, tt.wantBig, tt.wantTyp)
			}
		})
	}
}

// TestFastConcurrent: pooled request state never leaks between concurrent
// requests (run with -race): every answer and every stored reading belongs
// to its own request.
func TestFastConcurrent(t *testing.T) {
	p := &fakeProducer{}
	s := newTestServer(t, Config{}, p)
	const workers, each = 8, 100
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := w*each + i
				if i%2 == 0 {
					rec := post(s.Handler(), "/readings/fast", fmt.Sprintf(`{"id": %d, "reading": %d}`, id, i), "X-Device-ID", fmt.Sprintf("dev-%d", w))
					if rec.Code != http.StatusOK {
						t.Errorf("request %d: %d %s", id, rec.Code, rec.Body)
					}
					continue
				}
				body := fmt.Sprintf(`{"id": %d}`, id)
				rec := post(s.Handler(), "/readings/fast", body)
				if want := fmt.Sprintf(`"input":{"id":%d}`, id); !strings.Contains(rec.Body.String(), want) {
					t.Errorf("request %d: answer %s does not echo its own body", id, rec.Body)
				}
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, r := range p.got() {
		var v struct{ ID int }
		if err := json.Unmarshal(r.Payload, &v); err != nil {
			t.Fatalf("payload %q: %v", r.Payload, err)
		}
		key := string(r.Payload)
		if seen[key] || r.DeviceID != fmt.Sprintf("dev-%d", v.ID/each) || r.Value != float64(v.ID%each) {
			t.Errorf("reading %+v (payload %s) mixed up or repeated", r, r.Payload)
		}
		seen[key] = true
	}
	if len(seen) != workers*each/2 {
		t.Errorf("%d distinct readings stored, want %d", len(seen), workers*each/2)
	}
}
