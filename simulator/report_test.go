package simulator

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sampleReport is the report of a made-up 20-second run with a hiccup in the
// middle, built the way Run builds one.
func sampleReport(t *testing.T, land *Landing) *Report {
	t.Helper()
	cfg := DefaultConfig()
	cfg.RunID, cfg.Devices, cfg.Rate, cfg.Duration, cfg.Batch = "abc123", 500, 5000, 20*time.Second, 10
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f := newFleet(&cfg, nil)
	f.start = time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)
	interval := newHist()
	for s := range 23 {
		sending := s < 20
		smp := Sample{T: float64(s + 1), Backlog: int64(200 + 40*s), Committed: 5000}
		if sending {
			smp.Sent, smp.Acked = 5000, 5000
			for i := range 500 {
				lat := time.Duration(800+i*5) * time.Microsecond
				if s == 9 {
					lat *= 40 // a slow second
				}
				f.lat.record(i, lat)
			}
		} else {
			smp.Backlog = 0
		}
		if s == 9 {
			smp.Refused, smp.Backlog = 12, 90000
		}
		f.lat.drain(interval)
		l := summarize(interval)
		smp.AckP50Ms, smp.AckP90Ms, smp.AckP99Ms, smp.AckMaxMs = l.P50Ms, l.P90Ms, l.P99Ms, l.MaxMs
		f.series = append(f.series, smp)
	}
	f.addLanded(map[int64]int64{0: 4000, 1: 5200, 5: 5000, 20: 800})
	f.c.sent.Store(100000)
	f.c.acked.Store(100000)
	f.c.requests.Store(10012)
	f.c.refused.Store(12)
	f.c.ackedResent.Store(120)
	return f.report(f.start.Add(20*time.Second), false, land)
}

func goodLanding() *Landing {
	return &Landing{WaitedS: 0.8, Rows: 100003, Readings: 100000, DupAfterResend: 3, HasCommitTimes: true,
		ReceiptToCommit:  Latency{Count: 100003, P50Ms: 120, P90Ms: 210, P99Ms: 290, P999Ms: 320, MaxMs: 340},
		MeasuredToCommit: Latency{Count: 100003, P50Ms: 240, P90Ms: 410, P99Ms: 480, P999Ms: 500, MaxMs: 520}}
}

func TestReportJSON(t *testing.T) {
	rep := sampleReport(t, goodLanding())
	if !rep.OK || len(rep.Failures) != 0 {
		t.Fatalf("a clean run failed: %v", rep.Failures)
	}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatalf("report.json does not decode: %v", err)
	}
	if back.Send.Acked != rep.Send.Acked || back.Send.Refused != 12 || back.Send.AckedAfterResend != 120 {
		t.Errorf("send stats changed on the way: %+v", back.Send)
	}
	if back.Version != ReportVersion || back.RunID != "abc123" || back.Landing.Rows != 100003 || len(back.Series) != 23 ||
		len(back.Histogram) == 0 || back.AckLatency.Count != 10000 || back.Send.Scheduled != 100000 {
		t.Errorf("report.json lost numbers: %s", buf.String()[:min(buf.Len(), 2000)])
	}
	if back.Series[0].Landed != 4000 || back.Series[20].Landed != 800 {
		t.Errorf("landed per second: %+v", back.Series[:2])
	}
	// The machine-readable names are a contract: check a few.
	for _, key := range []string{`"acked_per_s"`, `"dup_once_acked"`, `"receipt_to_commit"`, `"p99_ms"`, `"backlog"`, `"ack_latency_histogram"`, `"missing"`} {
		if !bytes.Contains(buf.Bytes(), []byte(key)) {
			t.Errorf("report.json has no %s", key)
		}
	}
}

func TestReportFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		land *Landing
		want []string
	}{
		{"missing", &Landing{Rows: 99998, Readings: 99998, Missing: 2, MissingSample: []Ref{{"sim-abc123-7", 12}, {"sim-abc123-9", 1}}},
			[]string{"2 acknowledged readings are missing (e.g. sim-abc123-7 seq 12, sim-abc123-9 seq 1)"}},
		{"duplicated", &Landing{Rows: 100001, Readings: 100000, DupOnceAcked: 1, DupOnceAckedSample: []Ref{{"sim-abc123-1", 5}}},
			[]string{"1 duplicate rows of readings acknowledged on their first and only attempt (e.g. sim-abc123-1 seq 5)"}},
		{"unexpected", &Landing{Rows: 100001, Readings: 100001, Unexpected: 1}, []string{"never sent"}},
		{"allowed duplicates pass", &Landing{Rows: 100005, Readings: 100000, DupAfterResend: 5, LandedWithoutAck: 2}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := sampleReport(t, tc.land)
			if rep.OK != (tc.want == nil) || len(rep.Failures) != len(tc.want) {
				t.Fatalf("OK %v, failures %q; want %q", rep.OK, rep.Failures, tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(rep.Failures[i], w) {
					t.Errorf("failure %q does not say %q", rep.Failures[i], w)
				}
			}
			var out bytes.Buffer
			if err := rep.WriteSummary(&out); err != nil {
				t.Fatal(err)
			}
			last := strings.TrimSpace(out.String())
			last = last[strings.LastIndexByte(last, '\n')+1:]
			if wantOK := tc.want == nil; strings.HasPrefix(last, "OK") != wantOK || strings.HasPrefix(last, "FAILED") == wantOK {
				t.Errorf("summary ends %q", last)
			}
		})
	}
}

func TestSummaryTable(t *testing.T) {
	var out bytes.Buffer
	if err := sampleReport(t, goodLanding()).WriteSummary(&out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"run abc123: 500 devices over HTTP POST /v1/readings, 10 readings a request, open loop at 5,000 readings/s, 20s",
		"sim-abc123-1 .. sim-abc123-500", "scheduled", "100,000 readings", "acknowledged", "5,000/s", "refused (503)",
		"ack latency", "p99", "missing", "duplicates, acked once", "duplicates after resend", "receipt -> commit",
		"OK: every acknowledged reading landed exactly once.",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	var noDB bytes.Buffer
	_ = sampleReport(t, nil).WriteSummary(&noDB)
	if !strings.Contains(noDB.String(), "NOT VERIFIED") {
		t.Errorf("a run without PostgreSQL must say it proved nothing:\n%s", noDB.String())
	}
}

// TestReportHTMLIsSelfContained checks the page without a browser: its
// charts are inline SVG and it refers to nothing outside itself.
func TestReportHTMLIsSelfContained(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport(t, goodLanding()).WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	if n := strings.Count(page, "<svg"); n != 4 {
		t.Errorf("%d inline SVGs, want 4 (throughput, latency, backlog, histogram)", n)
	}
	for _, bad := range []string{"<script", " src=", "<link", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q: it must need nothing from the network", bad)
		}
	}
	if m := regexp.MustCompile(`href="[^#]`).FindString(page); m != "" {
		t.Errorf("the page links out: %s", m)
	}
	for _, want := range []string{"Throughput", "Backlog in Redis", "Acknowledgement latency distribution", "every acknowledged reading landed exactly once"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func TestReportHTMLWithoutData(t *testing.T) {
	rep := &Report{RunID: "x", DevicePrefix: "sim-x-", Config: RunConfig{Protocol: ProtocolHTTP, Devices: 1}}
	rep.Failures = rep.failures()
	var buf bytes.Buffer
	if err := rep.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "No data") || !strings.Contains(buf.String(), "FAILED: nothing was sent") {
		t.Errorf("an empty run's page: %s", buf.String())
	}
}

// chromium is Debian's headless browser, when installed (make test installs
// it as root on Debian: scripts/testtools.sh).
const chromium = "/usr/bin/chromium"

func runChromium(t *testing.T, args ...string) (stdout, stderr []byte) {
	t.Helper()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0"}
	cmd := exec.CommandContext(t.Context(), chromium, append(base, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errOut.String())
	}
	return out.Bytes(), errOut.Bytes()
}

// TestReportRendersInChromium opens report.html in headless Chromium: the
// page loads without errors, its DOM holds the four charts with their
// lines and bars, and a screenshot is made (kept with -args -keep).
func TestReportRendersInChromium(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("Chromium is not installed at %s (apt-get install -y chromium, or run make test as root): the HTML report is not checked in a browser", chromium)
	}
	if testing.Short() {
		t.Skip("starts a browser: skipped under -short")
	}
	dir := t.TempDir()
	rep := sampleReport(t, goodLanding())
	if err := rep.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	page := "file://" + filepath.Join(dir, "report.html")

	dom, logs := runChromium(t, "--dump-dom", page)
	if n := strings.Count(string(dom), "<svg"); n != 4 {
		t.Errorf("the rendered DOM has %d SVG charts, want 4", n)
	}
	for _, id := range []string{"chart-throughput", "chart-latency", "chart-backlog", "chart-histogram", "summary", "verdict"} {
		if !strings.Contains(string(dom), `id="`+id+`"`) {
			t.Errorf("the rendered DOM lacks #%s", id)
		}
	}
	// Lines are <path>s with a stroke; each chart has many.
	if n := strings.Count(string(dom), "<path"); n < 50 {
		t.Errorf("the charts have only %d paths: are they drawn?", n)
	}
	for _, bad := range []string{"CONSOLE", "Uncaught", "Failed to load resource", "net::ERR_"} {
		if strings.Contains(string(logs), bad) {
			t.Errorf("Chromium reported %q while loading the page:\n%s", bad, logs)
		}
	}

	shot := filepath.Join(dir, "report.png")
	runChromium(t, "--screenshot="+shot, "--window-size=1280,2000", "--hide-scrollbars", page)
	st, err := os.Stat(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	// A blank 1280x2000 page compresses to a few KB; charts and text do not.
	if st.Size() < 50_000 {
		t.Errorf("screenshot is %d bytes: the page looks empty", st.Size())
	}
	if keep := os.Getenv("FIREHOSE_KEEP_REPORT"); keep != "" {
		_ = os.MkdirAll(keep, 0o755)
		for _, f := range []string{"report.html", "report.json", "report.png"} {
			if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
				_ = os.WriteFile(filepath.Join(keep, f), b, 0o644)
			}
		}
	}
}
