package httpgw

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"testing"
	"time"

	"firehose/ingest"
)

// The seed corpora are in testdata/fuzz/<FuzzName>: valid bodies, truncated
// JSON, NaN, huge numbers, invalid UTF-8, NUL bytes, deep nesting.

// FuzzFastBody: the /readings/fast decoder never panics, every refusal renders
// as JSON, and whatever it accepts is a valid reading of a JSON object.
func FuzzFastBody(f *testing.F) {
	f.Add([]byte(`{"id": 1, "reading": 21, "timestamp": "2026-11-28T08:00:00Z"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		now := time.Now()
		r := ingest.Reading{DeviceID: DefaultDevice, ReceivedAt: now}
		payload, errs := parseFast(body, &r, ingest.Limits{}, nil)
		if errs != nil {
			if _, err := json.Marshal(errs); err != nil {
				t.Fatalf("422 answer does not render: %v (%+v)", err, errs)
			}
			return
		}
		if err := r.Validate(ingest.DefaultLimits); err != nil {
			t.Fatalf("accepted %q: reading %+v does not validate: %v", body, r, err)
		}
		if r.Value != math.Trunc(r.Value) || r.Value < smallintMin || r.Value > smallintMax {
			t.Fatalf("accepted %q: reading %v is not a smallint", body, r.Value)
		}
		var id struct{ ID *int64 }
		if err := json.Unmarshal(payload, &id); err != nil || id.ID == nil || !bytes.Equal(r.Payload, payload) {
			t.Fatalf("accepted %q: payload %q is not {\"id\":N}", body, payload)
		}
		var m map[string]any
		if err := json.Unmarshal(bytes.TrimPrefix(body, utf8BOM), &m); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses as an object: %v", body, err)
		}
	})
}

// FuzzV1Body: the /v1/readings decoder (JSON and NDJSON) never panics,
// refuses only with the documented answers, and whatever it accepts is a
// non-empty set of valid readings within the item limit.
func FuzzV1Body(f *testing.F) {
	f.Add([]byte(`[{"device_id": "pump-7", "reading": 21.5, "battery": 97}]`), false)
	f.Add([]byte("{\"device_id\": \"a\", \"reading\": 1}\n{\"device_id\": \"b\", \"reading\": 2}\n"), true)
	const maxItems = 50
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		rs, err := decodeV1(body, ndjson, maxItems, ingest.Limits{}, time.Now())
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				t.Fatalf("error %v is not an answer", err)
			}
			switch ae.code {
			case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
			default:
				t.Fatalf("unexpected code %d for %q", ae.code, body)
			}
			if !json.Valid(ae.body) {
				t.Fatalf("answer %q is not JSON", ae.body)
			}
			return
		}
		if len(rs) == 0 || len(rs) > maxItems {
			t.Fatalf("accepted %d readings from %q", len(rs), body)
		}
		for i := range rs {
			if err := rs[i].Validate(ingest.DefaultLimits); err != nil {
				t.Fatalf("accepted %q: reading %d %+v does not validate: %v", body, i, rs[i], err)
			}
		}
	})
}
