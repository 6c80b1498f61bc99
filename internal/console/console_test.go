package console

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func newTestServer(t *testing.T) (*httptest.Server, prometheus.Counter) {
	t.Helper()
	reg := prometheus.NewRegistry()
	committed := prometheus.NewCounter(prometheus.CounterOpts{Name: metricCommitted})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricHTTPRefused}, []string{"reason"})
	backlog := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricBacklog}, []string{"shard"})
	reg.MustRegister(committed, refused, backlog)
	committed.Add(42)
	refused.WithLabelValues("invalid").Add(3)
	refused.WithLabelValues("backlog_full") // zero: not shown
	backlog.WithLabelValues("1").Set(7)
	backlog.WithLabelValues("0").Set(5)
	c := New(Config{Token: "s3cret", Gatherer: reg, Checks: []Check{
		{Name: "Redis", Ping: func(context.Context) error { return nil }},
		{Name: "PostgreSQL", Ping: func(context.Context) error { return errors.New("connection refused") }},
	}}, slog.New(slog.DiscardHandler))
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, committed
}

func get(t *testing.T, url string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	return do(t, req, hdr...)
}

// do sends req with the header pairs hdr (name, value, ...) and returns
// the answer's status and body.
func do(t *testing.T, req *http.Request, hdr ...string) (int, string) {
	t.Helper()
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestPagesNeedTheToken(t *testing.T) {
	srv, _ := newTestServer(t)
	if code, body := get(t, srv.URL+"/console/"); code != http.StatusUnauthorized || !strings.Contains(body, `name="token"`) {
		t.Errorf("without a token: %d, want 401 and the login form:\n%s", code, body)
	}
	if code, _ := get(t, srv.URL+"/console/", "Authorization", "Bearer wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong bearer token: %d, want 401", code)
	}
	if code, _ := get(t, srv.URL+"/console/events"); code != http.StatusUnauthorized {
		t.Errorf("events without a token: %d, want 401", code)
	}
	if code, _ := get(t, srv.URL+"/console/", "Cookie", cookieName+"=s3cret"); code != http.StatusUnauthorized {
		t.Errorf("the token itself as the cookie: %d, want 401", code)
	}
	code, body := get(t, srv.URL+"/console/", "Authorization", "Bearer s3cret")
	if code != http.StatusOK {
		t.Fatalf("bearer token: %d, want 200", code)
	}
	for _, want := range []string{`<span id="rows-committed" class="value">42</span>`, "<td>invalid</td><td>3</td>", "connection refused"} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "backlog_full") {
		t.Error("overview lists a reason with no refusal")
	}
	if i, j := strings.Index(body, "<td>0</td><td>5</td>"), strings.Index(body, "<td>1</td><td>7</td>"); i < 0 || j < i {
		t.Errorf("shards not listed in order (0 at %d, 1 at %d)", i, j)
	}
}

func TestLoginSetsAStrictHttpOnlyCookie(t *testing.T) {
	srv, _ := newTestServer(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.PostForm(srv.URL+"/console/login", url.Values{"token": {"nope"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), "Wrong token") || len(resp.Cookies()) != 0 {
		t.Errorf("wrong token: %d, cookies %v:\n%s", resp.StatusCode, resp.Cookies(), b)
	}
	resp, err = noRedirect.PostForm(srv.URL+"/console/login", url.Values{"token": {"s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cs := resp.Cookies()
	if resp.StatusCode != http.StatusSeeOther || len(cs) != 1 {
		t.Fatalf("right token: %d, cookies %v", resp.StatusCode, cs)
	}
	if c := cs[0]; !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || strings.Contains(c.Value, "s3cret") {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, not the token", c)
	}
	if code, _ := get(t, srv.URL+"/console/", "Cookie", cs[0].Name+"="+cs[0].Value); code != http.StatusOK {
		t.Errorf("with the cookie: %d, want 200", code)
	}
}

func TestEventsGiveRates(t *testing.T) {
	srv, committed := newTestServer(t)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/console/events", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() Snapshot {
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var s Snapshot
				if err := json.Unmarshal([]byte(data), &s); err != nil {
					t.Fatal(err)
				}
				return s
			}
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return Snapshot{}
	}
	first := next()
	if first.RowsRate != nil || first.RowsCommitted != 42 {
		t.Errorf("first snapshot: rate %v, committed %v; want no rate yet and 42", first.RowsRate, first.RowsCommitted)
	}
	committed.Add(10)
	second := next()
	if second.RowsRate == nil || *second.RowsRate <= 0 || second.RowsCommitted != 52 {
		t.Errorf("second snapshot: rate %v, committed %v; want a positive rate and 52", second.RowsRate, second.RowsCommitted)
	}
}

func TestLoginRefusesAnotherOrigin(t *testing.T) {
	srv, _ := newTestServer(t)
	req, _ := http.NewRequest("POST", srv.URL+"/console/login", strings.NewReader("token=s3cret"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("a login from another origin: %d, cookies %v; want 403 and none", resp.StatusCode, resp.Cookies())
	}
}
