package faults

// Scenario 17: readings spanning several days land in their time partitions
// of readings, and a retention drops old partitions while the load goes on.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"firehose/internal/testenv"
	"firehose/partition"
)

// TestTimePartitionsUnderLoad starts from a database a deployment ran for 10
// days (a daily partition per earlier day, a marker row in each) and runs a
// fleet whose clocks are spread from 5 days behind to 5 days ahead, so its
// readings fall into 11 days: 5 earlier partitions, today's and the 3 the
// bridge makes ahead, and the default partition (4 and 5 days ahead). Mid-
// load a second bridge starts with --retention 7d: its first pass detaches
// and drops the partitions of 8 to 10 days ago while the first bridge keeps
// committing (both then run maintenance passes, one at a time). Checked: every acknowledged reading landed
// exactly once (by device and sequence), each row is in the partition whose
// range holds its ts (or the default one, for days without a partition), the
// partitions past retention and only those are gone, none of the load's.
func TestTimePartitionsUnderLoad(t *testing.T) {
	skipShort(t)
	t.Parallel()
	svc := SharedServices(t)
	const day = 24 * time.Hour
	today := partition.Floor(time.Now(), day)
	for d := 1; d <= 10; d++ {
		lo := today.Add(-time.Duration(d) * day)
		execSQL(t, svc.Postgres, fmt.Sprintf("CREATE TABLE %s PARTITION OF readings FOR VALUES FROM ('%s') TO ('%s')",
			partition.Name(lo), lo.Format(time.RFC3339), lo.Add(day).Format(time.RFC3339)))
		execSQL(t, svc.Postgres, fmt.Sprintf("INSERT INTO readings (device_id, ts, received_at, reading) VALUES ('tp-old-%d', '%s', now(), 1)",
			d, lo.Add(time.Hour).Format(time.RFC3339)))
	}

	// The edge accepts readings measured up to 6 days ahead. The load runs
	// until the test has seen the drop happen in its middle (rows landed
	// before the second bridge and after the drop), then it is interrupted:
	// its --duration only bounds a run that never gets there.
	edges := StartStack(t, svc, "--max-clock-skew", "144h")
	l := StartLoad(t, edges, LoadOpts{Devices: 100, Rate: scale(1000.0, 2000.0), Duration: 10 * time.Minute,
		Extra: []string{"--clock-spread", "120h"}})
	edgeWaitLoadRunning(t, edges, l)
	landed := func() int64 {
		return QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings WHERE starts_with(device_id, 'sim-')")
	}
	testenv.Await(t, func() bool { return landed() > 0 }, "none of the load's rows landed")
	if Long() {
		time.Sleep(20 * time.Second) // pacing: the long form loads the partitions a while before the drop
	}

	dropped := func() []string {
		var gone []string
		for d := 1; d <= 10; d++ {
			name := partition.Name(today.Add(-time.Duration(d) * day))
			if QueryInt(t, svc.Postgres, "SELECT count(*) FROM pg_class WHERE relname = $1", name) == 0 {
				gone = append(gone, name)
			}
		}
		return gone
	}
	landedBefore := landed()
	start := time.Now()
	br := StartBridge(t, svc, "--retention", "7d")
	testenv.Await(t, func() bool {
		if l.proc.Exited() {
			t.Fatalf("the load ended before the drop; output:\n%s", l.Output())
		}
		return len(dropped()) == 3
	}, "the bridge with --retention 7d did not drop the partitions of 8-10 days ago (gone: %v); its output: %s",
		edgeLazy(func() string { return strings.Join(dropped(), ",") }), edgeLazy(br.Proc.Output))
	took := time.Since(start)
	landedAtDrop := landed()
	// The load goes on after the drop: more of it lands, then it stops.
	testenv.Await(t, func() bool {
		if l.proc.Exited() {
			t.Fatalf("the load ended before rows landed after the drop; output:\n%s", l.Output())
		}
		return landed() > landedAtDrop
	}, "no row of the load landed after the drop")
	if Long() {
		time.Sleep(20 * time.Second) // pacing: the long form loads a while after the drop
	}
	l.Interrupt()

	rep := l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	if landedAtDrop <= landedBefore || rep.Send.Acked <= landedAtDrop {
		t.Errorf("rows of the load: %d before the second bridge, %d when the partitions were gone, %d acked in all: want the drop in the middle of the load",
			landedBefore, landedAtDrop, rep.Send.Acked)
	}
	gone := dropped()
	for d := 8; d <= 10; d++ {
		if n := QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings WHERE device_id = $1", fmt.Sprintf("tp-old-%d", d)); n != 0 {
			t.Errorf("the marker of %d days ago survived the retention", d)
		}
	}
	if n := QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings WHERE starts_with(device_id, 'tp-old-')"); n != 7 {
		t.Errorf("%d markers left, want the 7 of the last 7 days", n)
	}

	// Each row is in its partition: a named one's rows lie in its day, the
	// default partition holds only days without a partition.
	ctx, conn, done := dbConn(t, svc.Postgres, 30*time.Second)
	defer done()
	rows, err := conn.Query(ctx, `SELECT tableoid::regclass::text, count(*), min(ts), max(ts) FROM readings
		WHERE starts_with(device_id, 'sim-') GROUP BY 1 ORDER BY 3`)
	if err != nil {
		t.Fatal(err)
	}
	var (
		spread []string
		named  int
	)
	for rows.Next() {
		var (
			name   string
			n      int64
			lo, hi time.Time
		)
		if err := rows.Scan(&name, &n, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		spread = append(spread, fmt.Sprintf("%s %d", strings.TrimPrefix(name, "readings_"), n))
		if name == partition.Default {
			if !lo.After(today.Add(4 * day)) {
				t.Errorf("readings_default holds a row of %s: that day has a partition", lo)
			}
			continue
		}
		named++
		if partition.Name(partition.Floor(lo, day)) != name || partition.Name(partition.Floor(hi, day)) != name {
			t.Errorf("%s holds rows from %s to %s", name, lo, hi)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if named != 9 {
		t.Errorf("the load's rows are in %d day partitions (%v), want 9 (5 days ago to 3 ahead)", named, spread)
	}

	r := ResultOf(rep)
	r.Scenario, r.Load = "18. time partitions and retention", LoadDesc(rep)+", device clocks spread over ±5 days (--clock-spread 120h)"
	r.Faults = "a database of 10 earlier daily partitions; mid-load a second bridge starts with --retention 7d and detaches and drops 3 of them while the first bridge commits"
	r.Notes = fmt.Sprintf("dropped %s %s after the second bridge started, with %d of the load's rows landed; rows by partition: %s; the markers of the last 7 days kept",
		strings.Join(gone, ", "), took.Round(time.Millisecond), landedAtDrop, strings.Join(spread, ", "))
	Record(t, r)
}
