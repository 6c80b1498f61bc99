package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"firehose/internal/testenv"
	"firehose/partition"
)

// docsPressRule is docs/tables.md's typed-table rule.
const docsPressRule = `rules:
  - name: press
    topic: factory/{site}/{device_id}/telemetry
    time: t
    time_format: unix_ms
    id: msg_id
    table: press_telemetry
    columns:
      - {name: device_id,   type: text,             source: device}
      - {name: site,        type: text,             capture: site}
      - {name: time,        type: timestamptz,      source: time}
      - {name: received_at, type: timestamptz,      source: received}
      - {name: temp,        type: real,             path: temp}
      - {name: pressure,    type: double precision, path: pressure}
      - {name: rpm,         type: integer,          path: rpm, required: true}
      - {name: msg_id,      type: text,             source: id}
    unknown: keep
    identity: [site]
    indexes:
      - {columns: [device_id, time]}
      - {columns: [msg_id], unique: true}
`

// TestIntegrationConsolePlaygroundInChromium logs in to the console of a
// serve process whose rules hold a typed table, maps a good press message
// in the playground (the page shows its row column by column) and a bad one
// (the page shows the refusal with its reason), and checks nothing landed;
// then it finds a device that posted a reading on its page, and the
// partitions of readings and of the typed table on theirs.
func TestIntegrationConsolePlaygroundInChromium(t *testing.T) {
	needChromium(t)
	t.Parallel()
	const token = "console-playground-token"
	adminAddr := freeAddr(t)
	file := writeConfig(t, docsPressRule)
	_, base, pgURL := startServe(t, "--config", file, "--admin-addr", adminAddr, "--admin-token", token)
	console := "http://" + adminAddr + "/console/"
	ctx := newBrowser(t)

	if err := browse(ctx,
		chromedp.Navigate(console+"playground"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#rows-committed")),
		chromedp.Click(chromedp.CSS(`nav a[href="/console/playground"]`)),
		chromedp.WaitVisible(chromedp.CSS("#payload")),
	); err != nil {
		t.Fatalf("log in and open the playground: %v", err)
	}

	ms := time.Now().Add(-time.Second).UnixMilli()
	good := `{"t": ` + strconv.FormatInt(ms, 10) + `, "temp": 71.5, "pressure": 3.25, "rpm": 1450, "msg_id": "m-1", "shift": "night"}`
	if err := browse(ctx,
		chromedp.Click(chromedp.CSS("#protocol-mqtt")),
		chromedp.SetValue(chromedp.CSS("#topic"), "factory/berlin/press-7/telemetry"),
		chromedp.SetValue(chromedp.CSS("#payload"), good),
		chromedp.Click(chromedp.CSS("#try")),
		chromedp.WaitVisible(chromedp.CSS(`table.typed-row[data-table="press_telemetry"]`)),
	); err != nil {
		t.Fatalf("map a good message: %v", err)
	}
	cells := read(t, ctx, "the typed row", chromedp.Evaluate[map[string]string](
		`Object.fromEntries(Array.from(document.querySelectorAll("table.typed-row tbody tr"), tr => [tr.dataset.column, tr.querySelector("td.value").textContent]))`))
	for col, want := range map[string]string{"device_id": `"press-7"`, "site": `"berlin"`, "rpm": "1450", "pressure": "3.25", "temp": "71.5",
		"msg_id": `"m-1"`, "time": time.UnixMilli(ms).UTC().Format(time.RFC3339Nano), "extra": `{"shift":"night"}`} {
		if cells[col] != want {
			t.Errorf("column %s shows %q, want %q (the row: %v)", col, cells[col], want, cells)
		}
	}
	screenshot(t, ctx, "console-playground.png")

	bad := `{"t": ` + strconv.FormatInt(ms, 10) + `, "rpm": "fast", "msg_id": "m-2"}`
	if err := browse(ctx,
		chromedp.SetValue(chromedp.CSS("#payload"), bad),
		chromedp.Click(chromedp.CSS("#try")),
		chromedp.WaitVisible(chromedp.CSS("#refusal")),
	); err != nil {
		t.Fatalf("map a bad message: %v", err)
	}
	reason := read(t, ctx, "the refusal", chromedp.Text(chromedp.CSS("#reason")))
	if want := `rule "press": column "rpm": path "rpm": integer: want an integer, found a string`; reason != want {
		t.Errorf("the refusal says %q, want %q", reason, want)
	}
	if typed := read(t, ctx, "typed rows", chromedp.Evaluate[int](`document.querySelectorAll("table.typed-row").length`)); typed != 0 {
		t.Errorf("the refused message shows %d typed rows, want none", typed)
	}
	// The playground maps; it stores nothing.
	if n := countRows(t, pgURL, "SELECT count(*) FROM press_telemetry"); n != 0 {
		t.Errorf("press_telemetry holds %d rows after the playground, want 0", n)
	}

	// A device's page: found by the search, its reading from readings; not
	// connected to the broker (it posted over HTTP).
	if code, body := post(t, base+"/v1/readings", "application/json", "", `{"device_id": "pump-7", "reading": 21.5}`); code != http.StatusOK {
		t.Fatalf("post a reading: %d %s", code, body)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		return countRows(t, pgURL, "SELECT count(*) FROM readings WHERE device_id = 'pump-7'") == 1
	}, "the reading never landed")
	if err := browse(ctx,
		chromedp.Click(chromedp.CSS(`nav a[href="/console/devices"]`)),
		chromedp.WaitVisible(chromedp.CSS("#q")),
		chromedp.SendKeys(chromedp.CSS("#q"), "pump-7"),
		chromedp.Click(chromedp.CSS("#search")),
		chromedp.WaitVisible(chromedp.CSS("#device-id")),
	); err != nil {
		t.Fatalf("find the device: %v", err)
	}
	readings := read(t, ctx, "the readings", chromedp.Evaluate[string](`Array.from(document.querySelectorAll("#readings td"), td => td.textContent).slice(1, 3).join(" ")`))
	connected := read(t, ctx, "connected", chromedp.Text(chromedp.CSS("#connected")))
	screenshot(t, ctx, "console-device.png")
	if readings != "reading 21.5" || connected != "no" {
		t.Errorf("the device page shows readings %q and connected %q; want \"reading 21.5\" and \"no\"", readings, connected)
	}

	// The partitions of readings and of the typed table, the default ones last.
	if err := browse(ctx,
		chromedp.Click(chromedp.CSS(`nav a[href="/console/partitions"]`)),
		chromedp.WaitVisible(chromedp.CSS("#retention")),
	); err != nil {
		t.Fatalf("open the partitions: %v", err)
	}
	parts := read(t, ctx, "the partitions", chromedp.Evaluate[map[string][]string](
		`Object.fromEntries(Array.from(document.querySelectorAll("table.partitions"), t => [t.dataset.table, Array.from(t.querySelectorAll("tbody tr"), tr => tr.dataset.partition)]))`))
	screenshot(t, ctx, "console-partitions.png")
	today := partition.Floor(time.Now(), 24*time.Hour)
	for _, table := range []string{"readings", "press_telemetry"} {
		ps := parts[table]
		if len(ps) < 2 || !slices.Contains(ps, partition.PartitionName(table, today)) || ps[len(ps)-1] != table+"_default" {
			t.Errorf("%s shows partitions %v: want today's, and the default one last", table, ps)
		}
	}
	if r := read(t, ctx, "the retention", chromedp.Text(chromedp.CSS("#retention"))); r != "none: everything is kept" {
		t.Errorf("the retention shows %q, want none", r)
	}
}

// screenshot saves the tab's page as FIREHOSE_SCREENSHOTS/name, for the
// pictures of docs/console.md; without FIREHOSE_SCREENSHOTS it does nothing.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("FIREHOSE_SCREENSHOTS")
	if dir == "" {
		return
	}
	png := read(t, ctx, "a screenshot", chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
