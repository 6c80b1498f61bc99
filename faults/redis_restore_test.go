package faults

// Scenario: Redis restarted from an older state than the bridge committed
// (an RDB snapshot, an AOF fsynced every second, or nothing at all). Helpers
// start with rr.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/internal/testenv"
	"firehose/simulator"
	"firehose/stream"
)

// rrCase is one way Redis comes back.
type rrCase struct {
	name    string
	persist string // "rdb", "aof-everysec" or "none"
	wipe    bool   // remove the data directory before the restart: a fresh, empty Redis
	// drained: the load ends and is committed before the kill (the issue's
	// reproduction: the restored snapshot holds only committed entries);
	// otherwise Redis is killed under load.
	drained bool
	// restartStack: firehose is restarted as soon as Redis is back, before
	// any new entry arrives, so the bridge starts against the restored (or
	// empty) streams.
	restartStack bool
	long         bool // only in the long form
}

// TestRedisRestoredFromOlderState kills the stack's own redis-server with
// SIGKILL and starts it again with less than the bridge committed:
//
//   - rdb: no AOF; an explicit BGSAVE mid-load is the only snapshot. Either
//     the load ends and commits before the kill (the snapshot then holds
//     only committed entries, which must not be written again), or Redis is
//     killed under load a moment after the snapshot;
//   - aof-everysec: Redis is killed under load and comes back with up to a
//     second less than it confirmed;
//   - none: the data directory is wiped: a genuinely new, empty Redis, whose
//     streams must be read from their start; once under load, once with
//     firehose restarted before any new entry arrives.
//
// Every case checks, by device and sequence number in PostgreSQL, that no
// reading acknowledged once landed twice (and no stream entry was committed
// twice), and that nothing was lost but what Redis itself could lose: the
// readings acknowledged after the snapshot (rdb), in the last second (AOF
// everysec) or not yet committed (wiped) when Redis died. Those are counted
// apart as "lost by Redis persistence"; every other acknowledged reading
// must land.
func TestRedisRestoredFromOlderState(t *testing.T) {
	skipShort(t)
	cases := []rrCase{
		{name: "rdb-snapshot-committed", persist: "rdb", drained: true},
		{name: "rdb-snapshot-under-load", persist: "rdb", long: true},
		{name: "aof-everysec-under-load", persist: "aof-everysec"},
		{name: "wiped-under-load", persist: "none", wipe: true, long: true},
		{name: "wiped-restart-before-entries", persist: "none", wipe: true, drained: true, restartStack: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.long && !Long() {
				t.Skip("long form only (FIREHOSE_FAULTS=long)")
			}
			rrRun(t, c)
		})
	}
}

func rrRun(t *testing.T, c rrCase) {
	rs := rrStartRedis(t, c.persist)
	svc := Services{Postgres: testenv.Postgres(t), Redis: rs.URL(), Prefix: "fhtest-" + testenv.ID()}
	s := StartStack(t, svc)
	rdb := rrClient(t, rs.URL())

	var (
		loads      []*Load
		reps       []*simulator.Report
		killed     time.Time
		windowFrom time.Time // readings received from here to the kill may be lost by Redis
		note       string
	)
	if c.drained {
		l := StartLoad(t, s, LoadOpts{Duration: scale(5*time.Second, 20*time.Second)})
		loads = append(loads, l)
		rrWaitAccepted(t, s, l, 2000)
		if c.persist == "rdb" {
			rrBGSave(t, rdb)
		}
		rep := l.Wait(5 * time.Minute)
		AssertExactlyOnce(t, rep, l)
		reps = append(reps, rep)
		outWaitFor(t, time.Minute, "the backlog did not drain before the kill", func() (bool, string) {
			b, ok := outMetricSum(s, "firehose_stream_backlog_entries")
			return ok && b == 0, fmt.Sprintf("backlog %.0f (read: %v)", b, ok)
		})
		untrimmed := rrStreamEntries(t, rdb, svc.Prefix)
		rs.Kill()
		killed = time.Now()
		windowFrom = killed // nothing may be lost: it was all committed
		rrRestart(t, rs, c.wipe)
		restored := rrStreamEntries(t, rdb, svc.Prefix)
		note = fmt.Sprintf("load committed before the kill (%d entries untrimmed then); Redis came back with %d stream entries", untrimmed, restored)
		if c.restartStack {
			s.Restart()
			note += "; firehose restarted before any new entry"
		}
		s.WaitReady(60 * time.Second)
		// The bridge's shards reconnect with backoff (up to 5 s); give their
		// new sessions time to start against the restored streams before
		// new entries arrive.
		bkPause(6 * time.Second)
		l2 := StartLoad(t, s, LoadOpts{Duration: scale(5*time.Second, 20*time.Second)})
		loads = append(loads, l2)
		rep2 := l2.Wait(5 * time.Minute)
		reps = append(reps, rep2)
	} else {
		l := StartLoad(t, s, LoadOpts{Duration: scale(12*time.Second, 45*time.Second)})
		loads = append(loads, l)
		rrWaitAccepted(t, s, l, 4000)
		switch c.persist {
		case "rdb":
			windowFrom = time.Now()
			rrBGSave(t, rdb)
			bkPause(time.Second)
		case "aof-everysec":
			bkPause(time.Second)
		}
		rs.Kill()
		killed = time.Now()
		switch c.persist {
		case "aof-everysec":
			// At most a second of writes (plus the fsync under way) is lost.
			windowFrom = killed.Add(-2 * time.Second)
		case "none":
			// What the bridge had not committed: it commits every 50 ms
			// under this load; a few seconds cover a loaded machine.
			windowFrom = killed.Add(-5 * time.Second)
		}
		bkPause(time.Second)
		rrRestart(t, rs, c.wipe)
		note = fmt.Sprintf("killed under load; Redis came back with %d stream entries", rrStreamEntries(t, rdb, svc.Prefix))
		rep := l.Wait(5 * time.Minute)
		reps = append(reps, rep)
	}

	// Every entry now in Redis must be committed; then count.
	outWaitFor(t, 2*time.Minute, "the backlog did not drain after the restart", func() (bool, string) {
		b, ok := outMetricSum(s, "firehose_stream_backlog_entries")
		return ok && b == 0, fmt.Sprintf("backlog %.0f (read: %v)", b, ok)
	})
	bkPause(time.Second)

	var acked, landed, missing, lostByRedis, dupOnce, sameEntry, dupResend, refused int64
	for i, rep := range reps {
		if rep.Landing == nil {
			t.Fatalf("load %d was not verified; simulator output:\n%s", i+1, loads[i].Output())
		}
		prefix := rep.DevicePrefix
		acked += rep.Send.Acked
		refused += rep.Send.Refused + rep.Send.Errors
		dupResend += rep.Landing.DupAfterResend
		missing += rep.Landing.Missing
		dupOnce += rep.Landing.DupOnceAcked
		// The simulator verified load i when it ended; a later replay of
		// its entries shows only in PostgreSQL now.
		sameEntry += outSameEntryTwice(t, svc.Postgres, prefix)
		rows := QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings WHERE starts_with(device_id, $1)", prefix)
		if extra := rows - rep.Landing.Rows; extra != 0 {
			t.Errorf("load %d: %d rows in readings now, %d when its run was verified: %+d rows written after the restart", i+1, rows, rep.Landing.Rows, extra)
			if extra > 0 {
				dupOnce += extra
			}
		}
		landed += rep.Landing.Readings
		lostByRedis += rrGapsIn(t, svc.Postgres, prefix, windowFrom, killed)
	}
	lost := max(0, missing-lostByRedis)
	t.Logf("acked %d, landed %d, missing %d of which in Redis's loss window %d, lost otherwise %d, dup of once-acked %d, stream entries committed twice %d, dup after resend %d",
		acked, landed, missing, lostByRedis, lost, dupOnce, sameEntry, dupResend)
	if dupOnce != 0 || sameEntry != 0 {
		t.Errorf("%d once-acknowledged readings landed twice, %d stream entries were committed twice: entries at or below the checkpoint were written again after the restart", dupOnce, sameEntry)
	}
	if lost != 0 {
		t.Errorf("%d acknowledged readings missing, only %d of them in the window Redis could lose (%s .. %s): readings that were committed or persisted were lost",
			missing, lostByRedis, windowFrom.Format(time.StampMilli), killed.Format(time.StampMilli))
	}
	if c.drained && missing != 0 {
		t.Errorf("%d acknowledged readings missing, though everything was committed before the kill", missing)
	}

	// sameEntry counts rows that dupOnce counts too (an entry committed
	// twice is a reading landed twice): the larger is the duplicates.
	r := Result{Acked: acked, Landed: landed, Lost: lost, DupOnceAcked: max(dupOnce, sameEntry), DupResend: dupResend, Refused: refused}
	r.Scenario = "11. Redis restored from an older state: " + c.name
	r.Load = LoadDesc(reps[0])
	if len(reps) > 1 {
		r.Load += fmt.Sprintf(", then again after the restart (%s)", LoadDesc(reps[1]))
	}
	r.Faults = fmt.Sprintf("own redis-server (%s) killed with SIGKILL", rrPersistDesc(c))
	r.Notes = fmt.Sprintf("%s; lost by Redis persistence (acked after the snapshot / in the last second / uncommitted when wiped): %d; stream entries committed twice: %d",
		note, lostByRedis, sameEntry)
	Record(t, r)
	s.Stop(30 * time.Second)
}

func rrPersistDesc(c rrCase) string {
	switch {
	case c.persist == "rdb" && c.drained:
		return "RDB only, explicit BGSAVE mid-load, the load committed, then restarted from the snapshot"
	case c.persist == "rdb":
		return "RDB only, explicit BGSAVE mid-load, killed under load 1 s later, restarted from the snapshot"
	case c.persist == "aof-everysec":
		return "AOF appendfsync everysec, killed under load, restarted from the AOF"
	case c.restartStack:
		return "no persistence, load committed, data dir wiped, restarted empty; firehose restarted before any new entry"
	default:
		return "no persistence, killed under load, data dir wiped, restarted empty"
	}
}

// rrStartRedis starts a redis-server persisting as persist.
func rrStartRedis(t *testing.T, persist string) *RedisServer {
	t.Helper()
	r := &RedisServer{t: t, Port: FreePort(t), Dir: t.TempDir()}
	r.args = []string{"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--dir", r.Dir,
		"--daemonize", "no", "--logfile", "", "--save", ""}
	switch persist {
	case "rdb":
		// Snapshots only when the test asks (BGSAVE), so the restored state
		// is exactly the snapshot's.
		r.args = append(r.args, "--appendonly", "no")
	case "aof-everysec":
		r.args = append(r.args, "--appendonly", "yes", "--appendfsync", "everysec")
	default:
		r.args = append(r.args, "--appendonly", "no")
	}
	r.Start()
	return r
}

// rrRestart starts the killed server again, from an empty data directory
// when wipe is set.
func rrRestart(t *testing.T, rs *RedisServer, wipe bool) {
	t.Helper()
	if wipe {
		entries, err := os.ReadDir(rs.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(rs.Dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	rs.Start()
}

func rrClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries = 3
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// rrWaitAccepted waits until the edges have accepted n readings.
func rrWaitAccepted(t *testing.T, s *Stack, l *Load, n float64) {
	t.Helper()
	outWaitFor(t, 60*time.Second, "the load did not start flowing", func() (bool, string) {
		if l.proc.Exited() {
			t.Fatalf("the simulator ended early; output:\n%s", l.Output())
		}
		a, _ := outMetricSum(s, "firehose_http_readings_accepted_total")
		b, _ := outMetricSum(s, "firehose_mqtt_readings_accepted_total")
		return a+b >= n, fmt.Sprintf("accepted %.0f", a+b)
	})
}

// rrBGSave takes a snapshot and waits until it is on disk.
func rrBGSave(t *testing.T, rdb *redis.Client) {
	t.Helper()
	ctx := context.Background()
	before, _ := rrInfoField(ctx, rdb, "rdb_last_save_time")
	if err := rdb.BgSave(ctx).Err(); err != nil {
		t.Fatalf("BGSAVE: %v", err)
	}
	outWaitFor(t, 30*time.Second, "BGSAVE did not finish", func() (bool, string) {
		inProgress, _ := rrInfoField(ctx, rdb, "rdb_bgsave_in_progress")
		status, _ := rrInfoField(ctx, rdb, "rdb_last_bgsave_status")
		last, _ := rrInfoField(ctx, rdb, "rdb_last_save_time")
		return inProgress == "0" && status == "ok" && last != before, fmt.Sprintf("in progress %s, status %s", inProgress, status)
	})
}

func rrInfoField(ctx context.Context, rdb *redis.Client, field string) (string, error) {
	info, err := rdb.Info(ctx, "persistence").Result()
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("no %s in INFO persistence", field)
}

// rrStreamEntries counts the entries in the deployment's streams.
func rrStreamEntries(t *testing.T, rdb *redis.Client, prefix string) int64 {
	t.Helper()
	ctx := context.Background()
	var total int64
	streams := stream.Streams{Prefix: prefix, Count: bkShards}
	if err := streams.Load(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	for _, k := range streams.Keys() {
		n, err := rdb.XLen(ctx, k).Result()
		if err != nil && err != redis.Nil {
			t.Fatalf("XLEN: %v", err)
		}
		total += n
	}
	return total
}

// rrGapsIn counts the readings missing from a device's sequence in
// PostgreSQL between two landed readings received on either side of
// [from, to]: readings an edge acknowledged in that window (or gave up on)
// that never landed.
func rrGapsIn(t *testing.T, dbURL, prefix string, from, to time.Time) int64 {
	t.Helper()
	return QueryInt(t, dbURL, `WITH r AS (
		SELECT device_id, coalesce(payload->>'seq', payload->>'id')::bigint AS seq, min(received_at) AS at
		FROM readings WHERE starts_with(device_id, $1) GROUP BY 1, 2),
	g AS (SELECT seq, at, lag(seq) OVER w AS pseq, lag(at) OVER w AS pat FROM r
		WINDOW w AS (PARTITION BY device_id ORDER BY seq))
	SELECT coalesce(sum(seq - pseq - 1), 0)::bigint FROM g WHERE seq - pseq > 1 AND at >= $2 AND pat <= $3`,
		prefix, from.Add(-100*time.Millisecond), to.Add(100*time.Millisecond))
}
