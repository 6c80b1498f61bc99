package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"firehose/internal/testenv"
)

// chromiumPath is Debian's headless browser (scripts/testtools.sh installs
// it, as make test does).
const chromiumPath = "/usr/bin/chromium"

// needChromium skips t when Chromium is not installed, and fails it under
// CI=true, where a missing browser must not pass unnoticed.
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		msg := "Chromium is not installed at " + chromiumPath + " (scripts/testtools.sh, or apt-get install -y chromium): the console is not checked in a browser"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if testing.Short() {
		t.Skip("starts a browser: skipped under -short")
	}
}

// newBrowser is a headless Chromium tab that ends with the test.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromiumPath), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// browse runs steps in the tab, bounded so that a page that never shows
// what the steps wait for fails the test instead of hanging it.
func browse(ctx context.Context, steps ...chromedp.Action[chromedp.Void]) error {
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return chromedp.Do(bctx, steps...)
}

// read runs one action of the tab that reads the page, bounded as browse.
func read[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(bctx, a)
	if err != nil {
		t.Fatalf("read %s: %v", what, err)
	}
	return v
}

// TestIntegrationConsoleOverviewInChromium logs in to the console of a
// serve process in headless Chromium, with a wrong token first, runs a
// short simulated fleet against it, and checks what a person would see:
// the committed rows PostgreSQL holds, a plot of a positive rate, and
// Redis and PostgreSQL healthy, all updated without reloading the page.
func TestIntegrationConsoleOverviewInChromium(t *testing.T) {
	needChromium(t)
	t.Parallel()
	const token = "console-test-token"
	adminAddr := freeAddr(t)
	st := startSimStack(t, "--admin-addr", adminAddr, "--admin-token", token)
	page := "http://" + adminAddr + "/console/"
	ctx := newBrowser(t)

	if err := browse(ctx,
		chromedp.Navigate(page),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token"),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#error")),
	); err != nil {
		t.Fatalf("log in with a wrong token: %v", err)
	}
	errText := read(t, ctx, "the error", chromedp.Text(chromedp.CSS("#error")))
	figures := read(t, ctx, "the figures", chromedp.Evaluate[int](`document.querySelectorAll("#rows-committed").length`))
	if errText != "Wrong token." || figures != 0 {
		t.Fatalf("a wrong token: the page says %q and shows %d overview figures; want \"Wrong token.\" and none", errText, figures)
	}

	if err := browse(ctx,
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#rows-committed")),
		chromedp.WaitVisible(`//span[@id="status" and starts-with(., "live")]`), // the events stream is open
	); err != nil {
		t.Fatalf("log in: %v", err)
	}

	fleet := []string{"--http", st.http, "--postgres", st.pgURL, "--metrics", "off", "--duration", "4s", "--rate", "300", "--devices", "10"}
	if st.mqtt != "" {
		fleet = append(fleet, "--protocol", "mixed", "--mqtt", st.mqtt, "--qos", "1")
	}
	code, out, _ := simulate(t, fleet...)
	if code != 0 {
		t.Fatalf("simulate exited %d:\n%s", code, out)
	}
	if code, body := post(t, st.http+"/v1/readings", "application/json", "", `{"device_id":"no-reading"}`); code != http.StatusUnprocessableEntity {
		t.Fatalf("an invalid reading answered %d %s, want 422", code, body)
	}
	rows := countRows(t, st.pgURL, "SELECT count(*) FROM readings")
	if rows == 0 {
		t.Fatal("the fleet landed no rows")
	}

	// The page is not reloaded: what it shows arrived over the events stream.
	testenv.Eventually(t, 30*time.Second, func() bool {
		shown := read(t, ctx, "rows committed", chromedp.Text(chromedp.CSS("#rows-committed")))
		return shown == strconv.Itoa(rows)
	}, "the console never showed the %d rows committed PostgreSQL holds", rows)
	testenv.Eventually(t, 30*time.Second, func() bool {
		refusals := read(t, ctx, "refusals", chromedp.Evaluate[string](`Array.from(document.querySelectorAll("#refusals td"), td => td.textContent).join(" ")`))
		return refusals == "http invalid 1"
	}, "the refusals table never showed the one invalid reading (http, invalid, 1)")
	byPath := map[string]string{}
	for _, id := range []string{"http-in", "mqtt-in"} {
		byPath[id] = read(t, ctx, id, chromedp.Text(chromedp.CSS("#"+id)))
	}
	if n, err := strconv.Atoi(byPath["http-in"]); err != nil || n == 0 {
		t.Errorf("readings in over HTTP shows %q, want the fleet's", byPath["http-in"])
	}
	if n, err := strconv.Atoi(byPath["mqtt-in"]); st.mqtt != "" && (err != nil || n == 0) {
		t.Errorf("readings in over MQTT shows %q, want the fleet's", byPath["mqtt-in"])
	}
	// This process's bridge owns every shard (host:pid), and the latencies
	// count what the fleet sent over each path (the window of 10 s may have
	// passed since: then nothing is counted, and that is what it shows).
	testenv.Eventually(t, 30*time.Second, func() bool {
		owners := read(t, ctx, "owners", chromedp.Evaluate[string](`Array.from(document.querySelectorAll("#shards tr"), tr => tr.lastElementChild.textContent).join(" ")`))
		host, _ := os.Hostname()
		want := strings.TrimSpace(strings.Repeat(fmt.Sprintf("%s:%d ", host, st.pid), 4))
		return owners == want
	}, "the shards table never showed this process's bridge as the owner of every shard")
	testenv.Eventually(t, 30*time.Second, func() bool {
		tables := read(t, ctx, "tables", chromedp.Evaluate[string](`Array.from(document.querySelectorAll("#tables td"), td => td.textContent).slice(0, 2).join(" ")`))
		return tables == "readings "+strconv.Itoa(rows)
	}, "the rows committed by table never showed readings with the %d rows PostgreSQL holds", rows)
	latencies := read(t, ctx, "latencies", chromedp.Evaluate[string](`Array.from(document.querySelectorAll("#latencies td:first-child"), td => td.textContent).join(",")`))
	if latencies != "HTTP ack,MQTT ack,receipt to commit" {
		t.Errorf("the latency table lists %q: want HTTP ack, MQTT ack and receipt to commit", latencies)
	}
	plotMax := read(t, ctx, "the plot's scale", chromedp.Text(chromedp.CSS("#plot-max")))
	points := read(t, ctx, "the plot", chromedp.AttributeValue(chromedp.CSS("#plot-rows"), "points")).Value
	health := read(t, ctx, "health", chromedp.Text(chromedp.CSS("#health")))
	if dir := os.Getenv("FIREHOSE_SCREENSHOTS"); dir != "" { // the picture docs/console.md shows
		png := read(t, ctx, "a screenshot", chromedp.FullScreenshot(100))
		if err := os.WriteFile(filepath.Join(dir, "console-overview.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if max, err := strconv.Atoi(plotMax); err != nil || max <= 1 {
		t.Errorf("the plot's scale is %q: want the fleet's rows/s, above 1", plotMax)
	}
	if n := len(strings.Fields(points)); n < 2 {
		t.Errorf("the rows/s plot has %d points, want a line", n)
	}
	if !strings.Contains(health, "Redis") || !strings.Contains(health, "PostgreSQL") || strings.Count(health, "ok") != 2 {
		t.Errorf("health shows %q: want Redis and PostgreSQL ok", health)
	}
}
