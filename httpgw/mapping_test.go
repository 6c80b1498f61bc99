package httpgw

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"firehose/mapping"
)

// TestV1MappingRule: POST /v1/readings?rule=NAME maps the body by that rule:
// a sample array becomes a row per sample, all stored in one call; NDJSON
// takes a message per line; an unmappable message is 422 naming the rule,
// the path and the line, and nothing is stored; an unknown rule is 400.
func TestV1MappingRule(t *testing.T) {
	rules, err := mapping.New([]mapping.Rule{
		{Name: "upload", Endpoint: "/v1/readings", Device: "device", Samples: "samples", Time: "ts", Metrics: []string{"flow=v"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &fakeProducer{}
	s := newTestServer(t, Config{Rules: rules}, p)
	ts := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	body := `{"device": "pump-7", "samples": [{"ts": "` + ts + `", "v": 1.2}, {"ts": "` + ts + `", "v": 1.3}]}`
	rec := post(s.Handler(), "/v1/readings?rule=upload", body, "Content-Type", "application/json")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"accepted":2`) {
		t.Fatalf("mapped upload: %d %s", rec.Code, rec.Body)
	}
	if p.calls != 1 || len(p.readings) != 2 || p.readings[0].Metric != "flow" || p.readings[1].Value != 1.3 {
		t.Fatalf("stored %d calls, readings %+v", p.calls, p.readings)
	}
	nd := body + "\n\n" + strings.Replace(body, "pump-7", "pump-8", 1) + "\n"
	rec = post(s.Handler(), "/v1/readings?rule=upload", nd, "Content-Type", "application/x-ndjson")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"accepted":4`) || p.calls != 2 {
		t.Fatalf("NDJSON: %d %s, %d calls", rec.Code, rec.Body, p.calls)
	}

	bad := body + "\n" + `{"device": "pump-9", "samples": [{"ts": "` + ts + `"}]}` + "\n"
	rec = post(s.Handler(), "/v1/readings?rule=upload", bad, "Content-Type", "application/x-ndjson")
	if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(rec.Body.String(), `"rule":"upload"`) ||
		!strings.Contains(rec.Body.String(), `"path":"samples.0.v"`) || !strings.Contains(rec.Body.String(), `"line":2`) {
		t.Errorf("unmappable line: %d %s", rec.Code, rec.Body)
	}
	rec = post(s.Handler(), "/v1/readings?rule=nope", body, "Content-Type", "application/json")
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `no mapping rule \"nope\"`) {
		t.Errorf("unknown rule: %d %s", rec.Code, rec.Body)
	}
	if p.calls != 2 {
		t.Errorf("%d producer calls after refused requests, want 2", p.calls)
	}
	if got := refused(s, "invalid"); got != 2 {
		t.Errorf("refused{invalid} = %v, want 2", got)
	}
}
