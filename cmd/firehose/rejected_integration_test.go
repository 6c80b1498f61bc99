package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"firehose/bridge"
	"firehose/deadletters"
	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// rejectedEnv is a deployment of the test's own: database, key prefix, and a
// bridge it starts and stops in process.
type rejectedEnv struct {
	t       *testing.T
	pgURL   string
	rdb     *redis.Client
	streams stream.Streams
	pg      *pgx.Conn
	stopped chan struct{}
	cancel  context.CancelFunc
}

func newRejectedEnv(t *testing.T) *rejectedEnv {
	t.Helper()
	pgURL := testenv.Postgres(t)
	rdb, prefix := testenv.Redis(t)
	e := &rejectedEnv{t: t, pgURL: pgURL, rdb: rdb, streams: stream.Streams{Prefix: prefix, Count: 2}}
	if err := e.streams.Check(t.Context(), rdb); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	e.pg = conn
	t.Cleanup(e.stopBridge)
	return e
}

func (e *rejectedEnv) startBridge() {
	e.t.Helper()
	b, err := bridge.New(bridge.Config{Postgres: e.pgURL, Streams: e.streams, BatchAge: 20 * time.Millisecond, LockRetry: 100 * time.Millisecond},
		e.rdb, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.stopped = cancel, make(chan struct{})
	go func() {
		defer close(e.stopped)
		_ = b.Run(ctx)
	}()
}

func (e *rejectedEnv) stopBridge() {
	if e.cancel != nil {
		e.cancel()
		<-e.stopped
		e.cancel = nil
	}
}

// cli runs `firehose rejected args...` against the deployment.
func (e *rejectedEnv) cli(args ...string) (code int, stdout, stderr string) {
	args = append(append([]string{"rejected"}, args...),
		"--postgres", e.pgURL, "--redis", testenv.RedisURL(), "--redis-prefix", e.streams.Prefix, "--shards", "2")
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// reject writes an entry of fields to device's shard and waits for its
// readings_rejected row; it returns the row's id.
func (e *rejectedEnv) reject(device string, values ...any) int64 {
	e.t.Helper()
	key := e.streams.Key(e.streams.Shard(device))
	id, err := e.rdb.XAdd(e.t.Context(), &redis.XAddArgs{Stream: key, Values: values}).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	var row int64
	testenv.Eventually(e.t, 10*time.Second, func() bool {
		return e.pg.QueryRow(e.t.Context(), "SELECT id FROM readings_rejected WHERE stream = $1 AND entry_id = $2", key, id).Scan(&row) == nil
	}, "entry %s of %s not rejected", id, key)
	return row
}

// corrupt is the fields of an entry of device whose body is cut short.
func corrupt(device string) []any {
	r := ingest.Reading{DeviceID: device, Time: time.Now(), ReceivedAt: time.Now(), Value: 1}
	body := ingest.AppendEncode(nil, &r)
	return []any{ingest.FieldVersion, ingest.CodecVersion, ingest.FieldBody, body[:len(body)-2]}
}

func encoded(r ingest.Reading) []any {
	return []any{ingest.FieldVersion, ingest.CodecVersion, ingest.FieldBody, ingest.AppendEncode(nil, &r)}
}

func (e *rejectedEnv) rows(device string) int {
	e.t.Helper()
	var n int
	if err := e.pg.QueryRow(e.t.Context(), "SELECT count(*) FROM readings WHERE device_id = $1", device).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// settle waits until a marker reading on every shard has landed: what was
// in the streams before is committed.
func (e *rejectedEnv) settle() {
	e.t.Helper()
	marker := "marker-" + testenv.ID()
	have := map[int]bool{}
	for i := 0; len(have) < e.streams.Len(); i++ {
		dev := fmt.Sprintf("%s-%d", marker, i)
		if sh := e.streams.Shard(dev); !have[sh] {
			have[sh] = true
			r := ingest.Reading{DeviceID: dev, Time: time.Now(), ReceivedAt: time.Now(), Value: 0}
			if err := e.rdb.XAdd(e.t.Context(), &redis.XAddArgs{Stream: e.streams.Key(sh), Values: encoded(r)}).Err(); err != nil {
				e.t.Fatal(err)
			}
		}
	}
	testenv.Eventually(e.t, 10*time.Second, func() bool {
		var n int
		_ = e.pg.QueryRow(e.t.Context(), "SELECT count(*) FROM readings WHERE starts_with(device_id, $1)", marker).Scan(&n)
		return n == e.streams.Len()
	}, "markers did not land")
}

func listJSON(t *testing.T, out string) map[int64]deadletters.JSON {
	t.Helper()
	rows := map[int64]deadletters.JSON{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var r deadletters.JSON
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("--json line %q: %v", sc.Text(), err)
		}
		rows[r.ID] = r
	}
	return rows
}

func TestIntegrationRejectedListAndReplay(t *testing.T) {
	t.Parallel()
	e := newRejectedEnv(t)
	e.startBridge()

	now := time.Now().UTC().Truncate(time.Microsecond)
	poison := e.reject("cli-poison", corrupt("cli-poison")...)
	notJSON := e.reject("cli-not-json", encoded(ingest.Reading{DeviceID: "cli-not-json", Time: now, ReceivedAt: now, Value: 2, Payload: []byte(`{"a":`)})...)
	// A reading the edges accept that PostgreSQL refused at the time (a
	// constraint since dropped): replayed as it is.
	if _, err := e.pg.Exec(t.Context(), "ALTER TABLE readings ADD CONSTRAINT held CHECK (device_id <> 'cli-held') NOT VALID"); err != nil {
		t.Fatal(err)
	}
	held := e.reject("cli-held", encoded(ingest.Reading{DeviceID: "cli-held", Time: now, ReceivedAt: now, Value: 3, Payload: []byte(`{"seq":3}`)})...)
	if _, err := e.pg.Exec(t.Context(), "ALTER TABLE readings DROP CONSTRAINT held"); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := e.cli("list")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errOut)
	}
	// The check names the partition the row was routed to, so the error column may cut it short.
	for _, want := range []string{"ID", "STATUS", fmt.Sprintf("%d ", poison), "(does not decode)", "corrupt stream entry",
		"cli-held reading=3", `{"seq":3}`, "pending", "new row for relation"} {
		if !strings.Contains(out, want) {
			t.Errorf("list does not show %q:\n%s", want, out)
		}
	}
	code, out, errOut = e.cli("list", "--json")
	if code != 0 {
		t.Fatalf("list --json: exit %d: %s", code, errOut)
	}
	rows := listJSON(t, out)
	if len(rows) != 3 || rows[poison].DecodeError == "" || rows[held].Reading == nil || rows[held].Reading.DeviceID != "cli-held" ||
		rows[notJSON].Reading == nil || rows[notJSON].Reading.PayloadText != `{"a":` || rows[held].Status != "pending" {
		t.Fatalf("list --json: %+v", rows)
	}

	// A corrupt entry needs its repair; with it, it lands.
	code, _, errOut = e.cli("replay", "--id", fmt.Sprint(poison))
	if code != 1 || !strings.Contains(errOut, "does not decode") || !strings.Contains(errOut, "--reading") {
		t.Fatalf("replay of a corrupt entry without --reading: exit %d: %s", code, errOut)
	}
	code, out, errOut = e.cli("replay", "--id", fmt.Sprint(poison), "--reading", `{"device_id":"cli-fixed","reading":21.5,"ts":"`+now.Format(time.RFC3339Nano)+`","seq":1}`)
	if code != 0 || !strings.Contains(out, "1 landed") {
		t.Fatalf("replay --reading: exit %d: %s %s", code, out, errOut)
	}
	var payload string
	var ts time.Time
	if err := e.pg.QueryRow(t.Context(), "SELECT payload::text, ts FROM readings WHERE device_id = 'cli-fixed'").Scan(&payload, &ts); err != nil ||
		payload != `{"seq": 1}` || !ts.Equal(now) {
		t.Fatalf("the repaired reading landed as payload %q ts %s (%v)", payload, ts, err)
	}
	// Never twice.
	code, _, errOut = e.cli("replay", "--id", fmt.Sprint(poison), "--reading", `{"device_id":"cli-fixed","reading":21.5}`)
	if code != 1 || !strings.Contains(errOut, "replayed already") {
		t.Fatalf("second replay: exit %d, stderr %q; want it refused", code, errOut)
	}
	code, _, errOut = e.cli("replay", "--id", fmt.Sprintf("%d,%d", held, poison))
	if code != 1 || !strings.Contains(errOut, "nothing replayed") || !strings.Contains(errOut, fmt.Sprintf("row %d was replayed already", poison)) {
		t.Fatalf("replay of a list with a replayed row: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = e.cli("replay", "--id", "999999")
	if code != 1 || !strings.Contains(errOut, "no such row") {
		t.Fatalf("replay of a missing row: exit %d, stderr %q", code, errOut)
	}

	// --all: the held reading lands; the one the edges would refuse is skipped.
	code, out, errOut = e.cli("replay", "--all")
	if code != 1 || !strings.Contains(out, "1 landed") || !strings.Contains(errOut, fmt.Sprintf("skipped row %d: the edges would refuse", notJSON)) {
		t.Fatalf("replay --all: exit %d: %s %s", code, out, errOut)
	}
	e.settle()
	for dev, want := range map[string]int{"cli-fixed": 1, "cli-held": 1, "cli-not-json": 0, "cli-poison": 0} {
		if n := e.rows(dev); n != want {
			t.Errorf("%s landed %d times, want %d", dev, n, want)
		}
	}
	code, out, _ = e.cli("list")
	if code != 0 || strings.Contains(out, "cli-held") || !strings.Contains(out, "cli-not-json") {
		t.Fatalf("list after replays shows pending rows only: %s", out)
	}
	code, out, _ = e.cli("list", "--replayed", "--json")
	if rows := listJSON(t, out); code != 0 || rows[held].Status != "replayed" || rows[held].ReplayedEntry == nil || rows[notJSON].Status != "pending" {
		t.Fatalf("list --replayed --json: %+v", rows)
	}
}

func TestIntegrationRejectedReplayRacesLandOnce(t *testing.T) {
	t.Parallel()
	e := newRejectedEnv(t)
	e.startBridge()
	for round := range 3 {
		dev := fmt.Sprintf("race-%d", round)
		row := e.reject(dev, corrupt(dev)...)
		repair := fmt.Sprintf(`{"device_id":"%s-fixed","reading":%d}`, dev, round)
		var wg sync.WaitGroup
		codes := make([]int, 2)
		outs := make([]string, 2)
		for i := range codes {
			wg.Go(func() {
				var errOut string
				codes[i], outs[i], errOut = e.cli("replay", "--id", fmt.Sprint(row), "--reading", repair)
				outs[i] += errOut
			})
		}
		wg.Wait()
		e.settle()
		if n := e.rows(dev + "-fixed"); n != 1 {
			t.Fatalf("round %d: two replays at once landed %d times, want once; outputs %q", round, n, outs)
		}
		if codes[0] != 0 && codes[1] != 0 {
			t.Fatalf("round %d: both replays failed: %q", round, outs)
		}
	}
}

// The command crashes after writing its entries and before the bridge marks
// the rows (here: it does not wait, and the bridge is down), and is run again:
// the rows are still waiting, so the entries are written twice. Then an
// entry is duplicated in the stream by hand. Each row lands once.
func TestIntegrationRejectedReplayAfterCrashAndDuplicateLandsOnce(t *testing.T) {
	t.Parallel()
	e := newRejectedEnv(t)
	e.startBridge()
	now := time.Now().UTC()
	if _, err := e.pg.Exec(t.Context(), "ALTER TABLE readings ADD CONSTRAINT held CHECK (NOT starts_with(device_id, 'held-')) NOT VALID"); err != nil {
		t.Fatal(err)
	}
	var rows []int64
	for i := range 20 {
		dev := fmt.Sprintf("held-%d", i)
		rows = append(rows, e.reject(dev, encoded(ingest.Reading{DeviceID: dev, Time: now, ReceivedAt: now, Value: float64(i)})...))
	}
	e.stopBridge()
	if _, err := e.pg.Exec(t.Context(), "ALTER TABLE readings DROP CONSTRAINT held"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if code, out, errOut := e.cli("replay", "--all", "--wait", "0"); code != 0 || !strings.Contains(out, "sent 20 replays") {
			t.Fatalf("replay --all --wait 0: exit %d: %s %s", code, out, errOut)
		}
	}
	code, out, _ := e.cli("list", "--json")
	if code != 0 || len(listJSON(t, out)) != 20 {
		t.Fatalf("before the bridge commits, all 20 rows still wait: %s", out)
	}
	e.startBridge()
	code, out, errOut := e.cli("replay", "--all") // whatever it finds still waiting
	if code != 0 {
		t.Fatalf("third replay --all: exit %d: %s %s", code, out, errOut)
	}
	e.settle()
	// A replay entry of a landed row, duplicated in the stream.
	dup := ingest.Reading{DeviceID: "held-0", Time: now, ReceivedAt: now, Value: 0}
	if err := e.rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: e.streams.Key(e.streams.Shard(dup.DeviceID)),
		Values: ingest.ReplayValues(rows[0], ingest.AppendEncode(nil, &dup))}).Err(); err != nil {
		t.Fatal(err)
	}
	e.settle()
	for i := range 20 {
		if n := e.rows(fmt.Sprintf("held-%d", i)); n != 1 {
			t.Errorf("held-%d landed %d times, want once", i, n)
		}
	}
	var waiting, total int
	if err := e.pg.QueryRow(t.Context(), "SELECT count(*) FILTER (WHERE replayed_at IS NULL), count(*) FROM readings_rejected").Scan(&waiting, &total); err != nil {
		t.Fatal(err)
	}
	if waiting != 0 || total != 20 {
		t.Fatalf("readings_rejected: %d of %d rows waiting, want 0 of 20 (no duplicate became a row)", waiting, total)
	}
}
