package faults

// Dead letters replayed: rows of readings_rejected sent through the pipeline
// again by `firehose rejected replay`, killed, rerun, raced and duplicated,
// land once each.

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// rrWritten is what one round wrote into a shard stream: held readings
// (valid, refused by PostgreSQL while a constraint holds them back) and one
// corrupt entry, each between two good neighbours.
type rrWritten struct {
	held       []string // device ids, one reading each, payload {"seq": i}
	neighbours []string
}

// TestRejectedReplayed writes, under load, readings that PostgreSQL refuses
// (a CHECK constraint on their device ids, standing for a bug fixed since)
// and corrupt entries straight into the shard streams, each between two good
// neighbours; all land in readings_rejected. Then the constraint goes and,
// with the bridge stopped (SIGSTOP) so that nothing is marked replayed yet:
// `firehose rejected replay --all` is killed after sending (a crash between
// the XADD and the marking), two more run at once, each corrupt row is
// repaired by two `replay --id N --reading ...` at once, and some replay
// entries are duplicated by hand. The bridge resumes; afterwards more
// duplicates are written and a replay of a replayed row must be refused.
// Verified by device and sequence in PostgreSQL: every replayed reading
// landed once, its neighbours once, the load exactly once, every row is
// marked replayed, and no replay became a new rejected row.
func TestRejectedReplayed(t *testing.T) {
	skipShort(t)
	t.Parallel()
	svc := SharedServices(t)
	edges := StartStack(t, svc, "--roles", "broker,httpgw")
	br := StartBridge(t, svc)
	rdb := edgeRedis(t, edges)
	execSQL(t, svc.Postgres, "ALTER TABLE readings ADD CONSTRAINT rr_held CHECK (NOT starts_with(device_id, 'held-')) NOT VALID")

	l := StartLoad(t, edges, LoadOpts{Devices: 100, Rate: scale(500.0, 2000.0), Duration: scale(12*time.Second, 60*time.Second)})
	edgeWaitLoadRunning(t, edges, l)

	rounds, perRound := scale(3, 10), scale(20, 100)
	var written []rrWritten
	for round := range rounds {
		written = append(written, rrWrite(t, rdb, edgeStreams(edges).Key(round%edgeShards), round, perRound))
		time.Sleep(scale(time.Second, 3*time.Second)) // pacing: spread the rounds over the load
	}
	held, corrupt := rounds*perRound, rounds
	rejected := func() int64 { return QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings_rejected") }
	testenv.Eventually(t, 2*time.Minute, func() bool { return rejected() >= int64(held+corrupt) },
		"readings_rejected has %d rows, want %d", edgeLazy(func() string { return fmt.Sprint(rejected()) }), held+corrupt)
	execSQL(t, svc.Postgres, "ALTER TABLE readings DROP CONSTRAINT rr_held")

	// Nothing is marked replayed while the bridge is stopped: every run
	// below sends every row again.
	br.Proc.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	crashed := rrReplay(t, svc, "--all")
	testenv.Eventually(t, 30*time.Second, func() bool { return strings.Contains(crashed.Output(), "sent ") },
		"replay --all did not send: %s", edgeLazy(crashed.Output))
	crashed.Kill()
	runs := []*Proc{rrReplay(t, svc, "--all"), rrReplay(t, svc, "--all")}
	testenv.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(runs[0].Output(), "sent ") && strings.Contains(runs[1].Output(), "sent ")
	}, "concurrent replay --all runs did not send: %s / %s", edgeLazy(runs[0].Output), edgeLazy(runs[1].Output))
	corruptRows := rrRows(t, svc.Postgres, "error LIKE 'corrupt stream entry%'")
	if len(corruptRows) != corrupt {
		t.Fatalf("%d corrupt rows, want %d", len(corruptRows), corrupt)
	}
	var repairs []*Proc
	for i, row := range corruptRows {
		repair := fmt.Sprintf(`{"device_id":"fixed-%d","reading":%d,"seq":%d}`, i, i, i)
		for range 2 {
			repairs = append(repairs, rrReplay(t, svc, "--id", fmt.Sprint(row), "--reading", repair))
		}
	}
	dups := rrDuplicate(t, rdb, edgeStreams(edges), svc.Postgres, scale(10, 50))
	time.Sleep(time.Second) // a deliberate gap: the repairs send while the bridge is stopped
	br.Proc.Signal(syscall.SIGCONT)
	paused := time.Since(stopped)

	repaired := make([]int, len(repairs)/2) // per row, the repairs that exited 0
	for i, p := range append(runs, repairs...) {
		code, ok := p.Wait(2 * time.Minute)
		out := p.Output()
		switch {
		case !ok:
			t.Fatalf("replay run %d still running: %s", i, out)
		case i < len(runs) && (!strings.Contains(out, "landed in readings") || strings.Contains(out, "refused again")):
			// --all skips the corrupt rows (they need a repair): exit 1.
			t.Errorf("replay --all run %d (exit %d): %s", i, code, out)
		case i >= len(runs) && code == 0:
			repaired[(i-len(runs))/2]++
		case i >= len(runs) && !strings.Contains(out, "was replayed already"):
			// The twin of a repair may come after the bridge resumed and
			// committed the first (a busy box is slow to start them): it
			// is then refused, the row being replayed once.
			t.Errorf("replay --id --reading run %d: exit %d: %s", i-len(runs), code, out)
		}
	}
	for row, n := range repaired {
		if n == 0 {
			t.Errorf("corrupt row %d: neither of its two repairs exited 0", row)
		}
	}
	edgeWaitDrained(t, edges, rdb, 2*time.Minute)

	// Once landed, more duplicates are left out and a replay is refused.
	dups += rrDuplicate(t, rdb, edgeStreams(edges), svc.Postgres, scale(10, 50))
	again := rrReplay(t, svc, "--id", fmt.Sprint(corruptRows[0]), "--reading", `{"device_id":"fixed-0","reading":0,"seq":0}`)
	if code, _ := again.Wait(time.Minute); code != 1 || !strings.Contains(again.Output(), "replayed already") {
		t.Errorf("replay of a replayed row: exit %d: %s", code, again.Output())
	}

	rep := l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	edgeWaitDrained(t, edges, rdb, 2*time.Minute)

	for _, w := range written {
		for i, dev := range w.held {
			if n := QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings WHERE device_id = $1 AND (payload->>'seq')::int = $2", dev, i); n != 1 {
				t.Errorf("%s seq %d landed %d times, want once", dev, i, n)
			}
		}
		for _, dev := range w.neighbours {
			if n := edgeRowsOf(t, svc.Postgres, dev, nil); n != 1 {
				t.Errorf("neighbour %s landed %d times, want once", dev, n)
			}
		}
	}
	for i := range corrupt {
		if n := QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings WHERE device_id = $1 AND (payload->>'seq')::int = $2", fmt.Sprintf("fixed-%d", i), i); n != 1 {
			t.Errorf("repair fixed-%d landed %d times, want once", i, n)
		}
	}
	if n := rejected(); n != int64(held+corrupt) {
		t.Errorf("readings_rejected has %d rows, want %d: a replay became a row", n, held+corrupt)
	}
	if n := QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings_rejected WHERE replayed_at IS NULL"); n != 0 {
		t.Errorf("%d rows of readings_rejected not marked replayed", n)
	}
	if n := QueryInt(t, svc.Postgres, `SELECT count(*) FROM readings WHERE device_id NOT LIKE 'sim-%' AND device_id NOT LIKE 'ok-%'
		AND device_id NOT LIKE 'held-%' AND device_id NOT LIKE 'fixed-%'`); n != 0 {
		t.Errorf("%d rows of unknown devices landed", n)
	}
	if br.Proc.Exited() {
		t.Fatalf("the bridge exited: %s", br.Proc.Output())
	}

	r := ResultOf(rep)
	r.Scenario = "15. dead letters replayed"
	r.Load = LoadDesc(rep)
	r.Faults = fmt.Sprintf("%d readings refused by PostgreSQL (a constraint, then dropped) and %d corrupt entries written into the streams; bridge SIGSTOPped %.1fs while "+
		"`rejected replay --all` was SIGKILLed after sending and run twice more at once, each corrupt row repaired by two `replay --id --reading` at once, %d replay entries duplicated by hand",
		held, corrupt, paused.Seconds(), dups)
	r.Notes = fmt.Sprintf("each of the %d rows landed once (by device and sequence) and is marked replayed; %d neighbours once each; no replay became a rejected row; "+
		"a replay of a replayed row refused", held+corrupt, 2*(held+corrupt))
	Record(t, r)
	edges.Stop(30 * time.Second)
	br.Stop(30 * time.Second)
}

// rrReplay starts `firehose rejected replay args...` against svc.
func rrReplay(t *testing.T, svc Services, args ...string) *Proc {
	t.Helper()
	full := append([]string{"rejected", "replay", "--postgres", svc.Postgres, "--redis", svc.Redis, "--redis-prefix", svc.Prefix,
		"--shards", fmt.Sprint(edgeShards), "--wait", "2m"}, args...)
	return StartProc(t, "firehose rejected replay", binary, full...)
}

// rrWrite adds, in one MULTI to stream key, perRound held readings and one
// corrupt entry, each between two good neighbours.
func rrWrite(t *testing.T, rdb *redis.Client, key string, round, perRound int) rrWritten {
	t.Helper()
	now := time.Now()
	var w rrWritten
	entry := func(dev string, value int, payload string) map[string]any {
		r := ingest.Reading{DeviceID: dev, Time: now, ReceivedAt: now, Value: float64(value), Payload: []byte(payload)}
		return poEntry(ingest.CodecVersion, ingest.AppendEncode(nil, &r))
	}
	var entries []map[string]any
	around := func(i int, what map[string]any) {
		before, after := fmt.Sprintf("ok-rr-%d-%d-before", round, i), fmt.Sprintf("ok-rr-%d-%d-after", round, i)
		w.neighbours = append(w.neighbours, before, after)
		entries = append(entries, entry(before, i, `{"rr_neighbour":true}`), what, entry(after, i, `{"rr_neighbour":true}`))
	}
	for i := range perRound {
		dev := fmt.Sprintf("held-%d-%d", round, i)
		w.held = append(w.held, dev)
		around(i, entry(dev, i, fmt.Sprintf(`{"seq":%d}`, i)))
	}
	bad := entry(fmt.Sprintf("lost-%d", round), 0, "")
	bad[ingest.FieldBody] = bad[ingest.FieldBody].([]byte)[:4]
	around(perRound, bad)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, e := range entries {
			p.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: e})
		}
		return nil
	}); err != nil {
		t.Fatalf("write round %d into %s: %v", round, key, err)
	}
	return w
}

// rrDuplicate writes, by hand, replay entries of n held rows, as a
// duplicated entry would be; it returns how many it wrote.
func rrDuplicate(t *testing.T, rdb *redis.Client, streams stream.Streams, dbURL string, n int) int {
	t.Helper()
	ctx, conn, done := dbConn(t, dbURL, 30*time.Second)
	defer done()
	rows, err := conn.Query(ctx, "SELECT id, raw FROM readings_rejected WHERE error LIKE '%rr_held%' ORDER BY random() LIMIT $1", n)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	written := 0
	for rows.Next() {
		var id int64
		var raw []byte
		if err := rows.Scan(&id, &raw); err != nil {
			t.Fatal(err)
		}
		r, err := ingest.Decode(ingest.CodecVersion, string(raw))
		if err != nil {
			t.Fatalf("held row %d does not decode: %v", id, err)
		}
		key := streams.Key(streams.Shard(r.DeviceID))
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: ingest.ReplayValues(id, raw)}).Err(); err != nil {
			t.Fatal(err)
		}
		written++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return written
}

// execSQL runs one statement against dbURL.
func execSQL(t *testing.T, dbURL, sql string) {
	t.Helper()
	ctx, conn, done := dbConn(t, dbURL, 30*time.Second)
	defer done()
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// rrRows lists the ids of readings_rejected rows matching where, in order.
func rrRows(t *testing.T, dbURL, where string) []int64 {
	t.Helper()
	ctx, conn, done := dbConn(t, dbURL, 30*time.Second)
	defer done()
	rows, err := conn.Query(ctx, "SELECT id FROM readings_rejected WHERE "+where+" ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}
