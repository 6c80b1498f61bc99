package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// TestIntegrationConsoleDeadLettersInChromium makes two dead letters in a
// serve process of its own, a reading PostgreSQL refused (a constraint the
// test then drops) and an entry that does not decode, finds them on the
// console's dead letters page in headless Chromium, replays the first from
// its page and checks that its row is in readings and the list shows it
// replayed; "replay all pending" then skips the second, which needs a
// repair.
func TestIntegrationConsoleDeadLettersInChromium(t *testing.T) {
	needChromium(t)
	t.Parallel()
	const token = "console-dlq-token"
	pgURL := testenv.Postgres(t)
	rdb, prefix := testenv.Redis(t)
	httpAddr, adminAddr := freeAddr(t), freeAddr(t)
	p := start(t, stackArgs(t, pgURL, prefix, httpAddr, "--shards", "2", "--batch-age", "50ms",
		"--admin-addr", adminAddr, "--admin-token", token)...)
	waitReady(t, p, "http://"+httpAddr)
	conn, err := pgx.Connect(t.Context(), pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(t.Context()) })
	rejectedID := func(where string, args ...any) int64 {
		t.Helper()
		var id int64
		testenv.Eventually(t, 30*time.Second, func() bool {
			return conn.QueryRow(t.Context(), "SELECT id FROM readings_rejected WHERE "+where, args...).Scan(&id) == nil
		}, "no dead letter where %s %v", where, args)
		return id
	}

	// A reading the edges accept that PostgreSQL refuses for now.
	if _, err := conn.Exec(t.Context(), "ALTER TABLE readings ADD CONSTRAINT console_held CHECK (device_id <> 'console-held') NOT VALID"); err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, "http://"+httpAddr+"/v1/readings", "application/json", "", `{"device_id":"console-held","reading":7.5}`); code != http.StatusOK {
		t.Fatalf("post a reading: %d %s", code, body)
	}
	held := rejectedID("error LIKE '%console_held%'")
	// An entry cut short: it does not decode, and replays only with a repair.
	streams := stream.Streams{Prefix: prefix, Count: 2}
	if err := streams.Load(t.Context(), rdb); err != nil {
		t.Fatal(err)
	}
	body := ingest.AppendEncode(nil, &ingest.Reading{DeviceID: "console-poison", Time: time.Now(), ReceivedAt: time.Now(), Value: 1})
	key := streams.Key(streams.Shard("console-poison"))
	entry, err := rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: key, Values: []any{ingest.FieldVersion, ingest.CodecVersion, ingest.FieldBody, body[:len(body)-2]}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	poison := rejectedID("stream = $1 AND entry_id = $2", key, entry)

	ctx := newBrowser(t)
	list := "http://" + adminAddr + "/console/deadletters"
	heldRow := `#row-` + strconv.FormatInt(held, 10)
	if err := browse(ctx,
		chromedp.Navigate(list),
		chromedp.WaitVisible(chromedp.CSS("#token")), // the page asks for the token first
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#nav-deadletters")),
		chromedp.Click(chromedp.CSS("#nav-deadletters")),
		chromedp.WaitVisible(chromedp.CSS(heldRow)),
	); err != nil {
		t.Fatalf("open the dead letters page: %v", err)
	}
	rows := read(t, ctx, "the list", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#deadletters tr"), tr => tr.id)`))
	want := []string{"row-" + strconv.FormatInt(max(held, poison), 10), "row-" + strconv.FormatInt(min(held, poison), 10)}
	if strings.Join(rows, " ") != strings.Join(want, " ") {
		t.Errorf("the list shows rows %q, want %q (newest first)", rows, want)
	}
	heldText := read(t, ctx, "the held row", chromedp.Text(chromedp.CSS(heldRow)))
	poisonText := read(t, ctx, "the poison row", chromedp.Text(chromedp.CSS("#row-"+strconv.FormatInt(poison, 10))))
	for _, w := range []string{"console-held", "new row for relation", "pending", "reading=7.5"} {
		if !strings.Contains(heldText, w) {
			t.Errorf("the held row shows %q: want %q in it", heldText, w)
		}
	}
	if !strings.Contains(poisonText, "(does not decode)") || !strings.Contains(poisonText, "pending") {
		t.Errorf("the poison row shows %q: want it pending and not decoding", poisonText)
	}

	// The cause fixed, replay the held row from its page.
	if _, err := conn.Exec(t.Context(), "ALTER TABLE readings DROP CONSTRAINT console_held"); err != nil {
		t.Fatal(err)
	}
	if err := browse(ctx,
		chromedp.Click(chromedp.CSS(heldRow+" a")),
		chromedp.WaitVisible(chromedp.CSS("#replay")),
	); err != nil {
		t.Fatalf("open the held row's page: %v", err)
	}
	if e := read(t, ctx, "its error", chromedp.Text(chromedp.CSS("#error-text"))); !strings.Contains(e, `violates check constraint "console_held"`) {
		t.Errorf("the row's page shows the error %q", e)
	}
	if r := read(t, ctx, "its reading", chromedp.Text(chromedp.CSS("#reading"))); !strings.Contains(r, `"device_id": "console-held"`) {
		t.Errorf("the row's page shows the reading %q", r)
	}
	if err := browse(ctx,
		chromedp.Click(chromedp.CSS("#replay")),
		chromedp.WaitVisible(chromedp.CSS("#landed")),
	); err != nil {
		t.Fatalf("replay: %v", err)
	}
	outcome := read(t, ctx, "the outcome", chromedp.Evaluate[string](`Array.from(document.querySelectorAll("#outcome td"), td => td.textContent).join(" ")`))
	if outcome != "1 1 0 0 0" { // sent, landed, refused again, not yet committed, skipped
		t.Errorf("the replay's outcome shows %q, want 1 sent and 1 landed", outcome)
	}
	if n := countRows(t, pgURL, "SELECT count(*) FROM readings WHERE device_id = 'console-held' AND reading = 7.5"); n != 1 {
		t.Errorf("readings holds %d rows of the replayed reading, want 1", n)
	}

	// Replaying everything pending sends nothing more: the held row is
	// replayed already, and the poison needs a repair.
	if err := browse(ctx,
		chromedp.Click(chromedp.CSS("#back")),
		chromedp.WaitVisible(chromedp.CSS("#replay-all")),
		chromedp.Click(chromedp.CSS("#replay-all")),
		chromedp.WaitVisible(chromedp.CSS("#skipped")),
	); err != nil {
		t.Fatalf("replay all pending: %v", err)
	}
	if sent, skipped := read(t, ctx, "sent", chromedp.Text(chromedp.CSS("#sent"))), read(t, ctx, "skipped", chromedp.Text(chromedp.CSS("#skipped"))); sent != "0" || skipped != "1" {
		t.Errorf("replay all pending: %s sent and %s skipped, want 0 and 1 (the poison)", sent, skipped)
	}
	if err := browse(ctx,
		chromedp.Click(chromedp.CSS("#back")),
		chromedp.WaitVisible(chromedp.CSS(heldRow)),
	); err != nil {
		t.Fatalf("back to the list: %v", err)
	}
	if s := read(t, ctx, "the held row's status", chromedp.Text(chromedp.CSS(heldRow+" td.status"))); s != "replayed" {
		t.Errorf("after the replay the list shows the held row %q, want replayed", s)
	}
	if n := countRows(t, pgURL, "SELECT count(*) FROM readings WHERE device_id = 'console-held'"); n != 1 {
		t.Errorf("readings holds %d rows of the replayed reading after replay all, want 1", n)
	}
	if dir := os.Getenv("FIREHOSE_SCREENSHOTS"); dir != "" { // the picture docs/console.md shows
		png := read(t, ctx, "a screenshot", chromedp.FullScreenshot(100))
		if err := os.WriteFile(filepath.Join(dir, "console-deadletters.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
