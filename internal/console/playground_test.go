package console

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// newPagesServer is a console with the given page sources.
func newPagesServer(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	cfg.Token, cfg.Gatherer = "s3cret", prometheus.NewRegistry()
	mux := http.NewServeMux()
	New(cfg, slog.New(slog.DiscardHandler)).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// postForm posts form to url with the bearer token (unless "") and Origin
// (unless "").
func postForm(t *testing.T, url, token, origin string, form url.Values) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var hdr []string
	if token != "" {
		hdr = append(hdr, "Authorization", "Bearer "+token)
	}
	if origin != "" {
		hdr = append(hdr, "Origin", origin)
	}
	return do(t, req, hdr...)
}

// fakeMap maps every MQTT sample with "rpm": 1450 to a typed row, any other
// to a refusal, and an HTTP one to a readings row; the samples it was
// given are kept.
type fakeMap struct{ got []Sample }

func (f *fakeMap) Map(s Sample) (*Mapped, error) {
	f.got = append(f.got, s)
	switch {
	case s.Protocol == "http" && s.Path != "/v1/readings":
		return nil, errors.New(`path "/nope": want /v1/readings`)
	case s.Protocol == "http":
		return &Mapped{Rows: []ReadingRow{{DeviceID: "pump-7", Metric: "value", Reading: "21.5", Payload: "null", Stream: "fh:{0}"}}}, nil
	case strings.Contains(s.Payload, `"rpm": 1450`):
		return &Mapped{TypedRows: []TypedRow{{Table: "press_telemetry", Stream: "fh:{1}", Columns: []Column{
			{Name: "device_id", Type: "text", Value: `"press-1"`}, {Name: "rpm", Type: "integer", Value: "1450"}}}},
			Note: "mapped by rule press"}, nil
	}
	return &Mapped{Refused: &Refused{Reason: `rule "press": column "rpm": path "rpm": integer: want an integer, found a string`}}, nil
}

func TestPlayground(t *testing.T) {
	f := &fakeMap{}
	srv := newPagesServer(t, Config{Map: f.Map})
	page := srv.URL + "/console/playground"
	good := url.Values{"protocol": {"mqtt"}, "topic": {"factory/a/press-1/telemetry"}, "payload": {`{"rpm": 1450}`}}

	for _, tc := range []struct {
		name         string
		token        string
		origin       string
		form         url.Values
		code         int
		want, reject []string
	}{
		{name: "without the token", form: good, code: http.StatusUnauthorized, want: []string{`name="token"`}, reject: []string{"press_telemetry"}},
		{name: "from another origin", token: "s3cret", origin: "https://evil.example", form: good, code: http.StatusForbidden, reject: []string{"press_telemetry"}},
		{name: "a typed row", token: "s3cret", origin: srv.URL, form: good, code: http.StatusOK,
			want:   []string{`data-table="press_telemetry"`, `<tr data-column="rpm"><td>rpm</td><td>integer</td><td class="value">1450</td></tr>`, "note: mapped by rule press"},
			reject: []string{`id="refusal"`}},
		{name: "a refusal", token: "s3cret", form: url.Values{"protocol": {"mqtt"}, "topic": {"factory/a/press-1/telemetry"}, "payload": {`{"rpm": "fast"}`}}, code: http.StatusOK,
			want: []string{`id="refusal"`, `rule &#34;press&#34;: column &#34;rpm&#34;: path &#34;rpm&#34;: integer: want an integer, found a string`}},
		{name: "an HTTP readings row", token: "s3cret", form: url.Values{"protocol": {"http"}, "path": {"/v1/readings"}, "payload": {`{"device_id":"pump-7","reading":21.5}`}}, code: http.StatusOK,
			want: []string{`<table id="rows">`, "<td>pump-7</td><td>value</td>", "<td>21.5</td>"}},
		{name: "an unknown path", token: "s3cret", form: url.Values{"protocol": {"http"}, "path": {"/nope"}}, code: http.StatusBadRequest,
			want: []string{`id="error"`, "want /v1/readings"}},
		{name: "an unknown protocol", token: "s3cret", form: url.Values{"protocol": {"coap"}}, code: http.StatusBadRequest,
			want: []string{"protocol: want mqtt or http"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := postForm(t, page, tc.token, tc.origin, tc.form)
			if code != tc.code {
				t.Errorf("answered %d, want %d:\n%s", code, tc.code, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("the page lacks %q:\n%s", w, body)
				}
			}
			for _, r := range tc.reject {
				if strings.Contains(body, r) {
					t.Errorf("the page shows %q:\n%s", r, body)
				}
			}
		})
	}
	if len(f.got) != 4 || f.got[0] != (Sample{Protocol: "mqtt", Topic: "factory/a/press-1/telemetry", Path: "", Payload: `{"rpm": 1450}`}) {
		t.Errorf("samples mapped: %+v; want the four of the authorized, same-origin posts with a known protocol", f.got)
	}

	if code, _ := get(t, page); code != http.StatusUnauthorized {
		t.Errorf("the form without the token: %d, want 401", code)
	}
	code, body := get(t, page, "Authorization", "Bearer s3cret")
	if code != http.StatusOK || !strings.Contains(body, `<textarea id="payload"`) || strings.Contains(body, `id="result"`) {
		t.Errorf("the form: %d, want 200, the form and no result:\n%s", code, body)
	}
}

func TestPlaygroundWithoutAMapping(t *testing.T) {
	srv := newPagesServer(t, Config{})
	code, body := postForm(t, srv.URL+"/console/playground", "s3cret", "", url.Values{"protocol": {"mqtt"}, "topic": {"a"}})
	if code != http.StatusBadRequest || !strings.Contains(body, "this process has no mapping to try") {
		t.Errorf("answered %d:\n%s", code, body)
	}
}
