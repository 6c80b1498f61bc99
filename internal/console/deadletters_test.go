package console

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"firehose/deadletters"
	"firehose/ingest"
)

// fakeLetters is a DeadLetters over rows in memory.
type fakeLetters struct {
	mu       sync.Mutex
	rows     []deadletters.Row // newest first
	replayed [][]int64         // the ids of each Replay call
}

func (f *fakeLetters) List(_ context.Context, q DeadLetterQuery) ([]deadletters.Row, error) {
	var out []deadletters.Row
	for _, r := range f.rows {
		if (q.Before == 0 || r.ID < q.Before) && (!q.Pending || r.ReplayedAt == nil) && len(out) < q.Limit {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeLetters) Get(_ context.Context, id int64) (*deadletters.Row, error) {
	for i := range f.rows {
		if f.rows[i].ID == id {
			return &f.rows[i], nil
		}
	}
	return nil, nil
}

func (f *fakeLetters) Replay(_ context.Context, ids []int64) (ReplayResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.replayed = append(f.replayed, ids)
	return ReplayResult{Sent: 2, Skipped: []string{"row 9 does not decode"}, Outcome: deadletters.Outcome{Landed: 1, Refused: []deadletters.Refusal{{Row: 8, As: 12}}}}, nil
}

func (f *fakeLetters) calls() [][]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.replayed)
}

func newLettersServer(t *testing.T, letters DeadLetters) *httptest.Server {
	t.Helper()
	c := New(Config{Token: "s3cret", Gatherer: prometheus.NewRegistry(), DeadLetters: letters}, slog.New(slog.DiscardHandler))
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func sampleLetters() *fakeLetters {
	at := time.Date(2026, 12, 6, 1, 2, 3, 0, time.UTC)
	v := ingest.CodecVersion
	body := ingest.AppendEncode(nil, &ingest.Reading{DeviceID: "dev-<b>", Value: 1.5, Time: at, ReceivedAt: at})
	topic, client, kind := "plant/7/temp", "c1", "mapping"
	replayedAt := at.Add(time.Minute)
	return &fakeLetters{rows: []deadletters.Row{
		{ID: 3, Stream: "fh:{0}", EntryID: "1-0", Version: &v, Raw: body, Error: `new row violates check constraint "<script>alert(1)</script>"`, RejectedAt: at, Source: "bridge"},
		{ID: 2, Stream: "fh:{1}", EntryID: "2-0", Raw: []byte("{\"t\":\x01<i>}"), Error: "no rule maps it", RejectedAt: at, Source: "edge",
			EdgeKind: &kind, Topic: &topic, ClientID: &client},
		{ID: 1, Stream: "fh:{1}", EntryID: "0-1", Version: &v, Raw: body, Error: "gone", RejectedAt: at, ReplayedAt: &replayedAt, Source: "bridge"},
	}}
}

func TestDeadLettersNeedTheToken(t *testing.T) {
	srv := newLettersServer(t, sampleLetters())
	for _, path := range []string{"/console/deadletters", "/console/deadletters/3"} {
		if code, body := get(t, srv.URL+path); code != http.StatusUnauthorized || !strings.Contains(body, `name="token"`) {
			t.Errorf("%s without a token: %d, want 401 and the login form", path, code)
		}
		if code, _ := get(t, srv.URL+path, "Authorization", "Bearer wrong"); code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d, want 401", path, code)
		}
	}
}

func TestDeadLettersList(t *testing.T) {
	srv := newLettersServer(t, sampleLetters())
	code, body := get(t, srv.URL+"/console/deadletters", "Authorization", "Bearer s3cret")
	if code != http.StatusOK {
		t.Fatalf("list: %d", code)
	}
	for _, want := range []string{
		`<a href="/console/deadletters/3">3</a>`, "dev-&lt;b&gt;", "&lt;script&gt;alert(1)&lt;/script&gt;", // escaped
		"fh:{1} (edge)", "pending", "replayed", `<input type="checkbox" name="id" value="3"`, `id="nav-deadletters"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the list lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "<i>") {
		t.Error("the list shows an error or payload unescaped")
	}
	if strings.Contains(body, `value="1"`+" aria-label") {
		t.Error("a replayed row has a checkbox")
	}
	if i, j := strings.Index(body, `id="row-3"`), strings.Index(body, `id="row-1"`); i < 0 || j < i {
		t.Errorf("rows not newest first (3 at %d, 1 at %d)", i, j)
	}
	_, body = get(t, srv.URL+"/console/deadletters?pending=1", "Authorization", "Bearer s3cret")
	if strings.Contains(body, `id="row-1"`) || !strings.Contains(body, `id="row-2"`) {
		t.Errorf("pending=1 lists a replayed row or leaves out a pending one:\n%s", body)
	}
	if code, _ := get(t, srv.URL+"/console/deadletters?before=x", "Authorization", "Bearer s3cret"); code != http.StatusBadRequest {
		t.Errorf("before=x: %d, want 400", code)
	}
}

func TestDeadLetterInspect(t *testing.T) {
	srv := newLettersServer(t, sampleLetters())
	code, body := get(t, srv.URL+"/console/deadletters/2", "Authorization", "Bearer s3cret")
	if code != http.StatusOK {
		t.Fatalf("inspect: %d", code)
	}
	for _, want := range []string{"plant/7/temp", `{&#34;t&#34;:\x01&lt;i&gt;}`, "no rule maps it", `<button id="replay"`, `name="id" value="2"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the page of row 2 lacks %q:\n%s", want, body)
		}
	}
	_, body = get(t, srv.URL+"/console/deadletters/1", "Authorization", "Bearer s3cret")
	if !strings.Contains(body, `&#34;device_id&#34;: &#34;dev-&lt;b&gt;&#34;`) || strings.Contains(body, `id="replay"`) {
		t.Errorf("the page of replayed row 1: want its decoded reading and no replay button:\n%s", body)
	}
	if code, _ := get(t, srv.URL+"/console/deadletters/99", "Authorization", "Bearer s3cret"); code != http.StatusNotFound {
		t.Errorf("no such row: %d, want 404", code)
	}
}

// postReplay posts the replay form with the headers hdr (name, value...).
func postReplay(t *testing.T, srv *httptest.Server, form string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+"/console/deadletters/replay", strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(t, req, hdr...)
}

func TestReplayNeedsTheTokenAndTheSameOrigin(t *testing.T) {
	f := sampleLetters()
	srv := newLettersServer(t, f)
	for _, tc := range []struct {
		name string
		hdr  []string
		want int
	}{
		{name: "no token", want: http.StatusUnauthorized},
		{name: "wrong token", hdr: []string{"Authorization", "Bearer wrong"}, want: http.StatusUnauthorized},
		{name: "another origin", hdr: []string{"Authorization", "Bearer s3cret", "Origin", "https://evil.example"}, want: http.StatusForbidden},
		{name: "cross-site fetch", hdr: []string{"Authorization", "Bearer s3cret", "Sec-Fetch-Site", "cross-site"}, want: http.StatusForbidden},
		{name: "same-site fetch", hdr: []string{"Authorization", "Bearer s3cret", "Sec-Fetch-Site", "same-site"}, want: http.StatusForbidden},
		{name: "cookie from another origin", hdr: []string{"Cookie", cookieName + "=" + sessionValue("s3cret"), "Origin", "http://evil.example"}, want: http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := postReplay(t, srv, "id=3", tc.hdr...); code != tc.want {
				t.Errorf("%d, want %d: %s", code, tc.want, body)
			}
		})
	}
	if n := len(f.calls()); n != 0 {
		t.Fatalf("%d replays ran for refused requests", n)
	}
}

func TestReplayShowsTheOutcome(t *testing.T) {
	f := sampleLetters()
	srv := newLettersServer(t, f)
	u, _ := http.NewRequest("GET", srv.URL, nil)
	code, body := postReplay(t, srv, "id=3&id=2", "Cookie", cookieName+"="+sessionValue("s3cret"), "Origin", "http://"+u.URL.Host, "Sec-Fetch-Site", "same-origin")
	if code != http.StatusOK {
		t.Fatalf("replay: %d: %s", code, body)
	}
	for _, want := range []string{`<td id="sent">2</td>`, `<td id="landed">1</td>`, `<td id="refused">1</td>`, `<a href="/console/deadletters/12">#12</a>`, "row 9 does not decode"} {
		if !strings.Contains(body, want) {
			t.Errorf("the outcome lacks %q:\n%s", want, body)
		}
	}
	if code, _ := postReplay(t, srv, "all=1", "Authorization", "Bearer s3cret"); code != http.StatusOK {
		t.Errorf("replay all: %d", code)
	}
	for _, tc := range []struct{ name, form string }{{"no rows", ""}, {"not an id", "id=x"}, {"both", "id=3&all=1"}} {
		if code, _ := postReplay(t, srv, tc.form, "Authorization", "Bearer s3cret"); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", tc.name, code)
		}
	}
	if got := f.calls(); len(got) != 2 || !slices.Equal(got[0], []int64{3, 2}) || got[1] != nil {
		t.Errorf("replays called with %v, want [[3 2] []] (nil: all pending)", got)
	}
}

func TestDeadLettersWithoutPostgreSQL(t *testing.T) {
	srv := newLettersServer(t, nil)
	code, body := get(t, srv.URL+"/console/deadletters", "Authorization", "Bearer s3cret")
	if code != http.StatusOK || !strings.Contains(body, "not available in this process") {
		t.Errorf("without PostgreSQL: %d:\n%s", code, body)
	}
	if code, _ := postReplay(t, srv, "id=1", "Authorization", "Bearer s3cret"); code != http.StatusNotFound {
		t.Errorf("replay without PostgreSQL: %d, want 404", code)
	}
}
