package partition_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"firehose/internal/testenv"
	"firehose/partition"
)

func open(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func newMaintainer(pool *pgxpool.Pool, cfg partition.Config) *partition.Maintainer {
	return partition.New(cfg, pool, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
}

// where maps each device's rows to the partition holding them.
func where(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	rows, err := pool.Query(t.Context(), "SELECT device_id, tableoid::regclass::text FROM readings")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var d, p string
		if err := rows.Scan(&d, &p); err != nil {
			t.Fatal(err)
		}
		out[d] = p
	}
	return out
}

func insert(t *testing.T, pool *pgxpool.Pool, device string, ts time.Time) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), "INSERT INTO readings (device_id, ts, received_at, reading) VALUES ($1, $2, now(), 1)", device, ts); err != nil {
		t.Fatal(err)
	}
}

func partitions(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'readings'::regclass ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// Readings spanning several days land in their day's partition; one far in
// the past or future lands in the default partition; rows written before
// the first pass (in the default partition) move to the partition made for
// them.
func TestIntegrationReadingsLandInTheirPartitions(t *testing.T) {
	pool := open(t)
	now := time.Now().UTC()
	today := partition.Floor(now, 24*time.Hour)
	insert(t, pool, "early", now) // before any partition exists
	m := newMaintainer(pool, partition.Config{})
	if err := m.Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"early": partition.Name(today)}
	for d := range 4 {
		day := today.Add(time.Duration(d) * 24 * time.Hour)
		name := partition.Name(day)
		for _, at := range []time.Duration{0, 12 * time.Hour, 24*time.Hour - time.Microsecond} {
			dev := name + "@" + at.String()
			insert(t, pool, dev, day.Add(at))
			want[dev] = name
		}
	}
	insert(t, pool, "past", now.AddDate(-3, 0, 0))
	insert(t, pool, "future", now.AddDate(0, 0, 30))
	want["past"], want["future"] = partition.Default, partition.Default
	got := where(t, pool)
	for dev, p := range want {
		if got[dev] != p {
			t.Errorf("%s landed in %q, want %q", dev, got[dev], p)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d devices have rows, want %d", len(got), len(want))
	}
	// A second pass has nothing to do.
	before := partitions(t, pool)
	if err := m.Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if after := partitions(t, pool); len(after) != len(before) {
		t.Errorf("second pass: partitions %v, then %v", before, after)
	}
	// The primary key (id, ts) and the (device_id, ts) index are each
	// partition's, as the parent's.
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_indexes WHERE tablename = $1`, partition.Name(today)).Scan(&n); err != nil || n != 2 {
		t.Errorf("%s has %d indexes (%v), want 2", partition.Name(today), n, err)
	}
}

// The first bridge records the interval; one given another refuses; one
// given none uses the recorded one, which drives the partitions' span.
func TestIntegrationIntervalIsRecorded(t *testing.T) {
	pool := open(t)
	if err := newMaintainer(pool, partition.Config{Interval: 6 * time.Hour}).Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	err := newMaintainer(pool, partition.Config{Interval: 24 * time.Hour}).Maintain(t.Context())
	if !errors.Is(err, partition.ErrIntervalMismatch) {
		t.Errorf("a bridge with --partition-interval 1d on a 6h database: %v, want ErrIntervalMismatch", err)
	}
	if err := newMaintainer(pool, partition.Config{}).Maintain(t.Context()); err != nil {
		t.Errorf("a bridge with no --partition-interval: %v", err)
	}
	// The current 6-hour interval and the 3 after it.
	if ps := partitions(t, pool); len(ps) != 5 {
		t.Errorf("partitions %v: want the default and 4 of 6 hours", ps)
	}
}

// Bridges starting at once: each partition is made once, no pass fails.
func TestIntegrationConcurrentMaintainers(t *testing.T) {
	pool := open(t)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() { errs[i] = newMaintainer(pool, partition.Config{}).Maintain(t.Context()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("maintainer %d: %v", i, err)
		}
	}
	// Some passes found the lock taken and did nothing; one more makes sure.
	if err := newMaintainer(pool, partition.Config{}).Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ps := partitions(t, pool); len(ps) != 5 {
		t.Errorf("partitions %v: want the default and 4 days", ps)
	}
}

// Retention drops the partitions wholly older than it, never the current
// one, and deletes the default partition's old rows, while a writer keeps
// committing rows into the current partition.
func TestIntegrationRetentionDropsOldPartitions(t *testing.T) {
	pool := open(t)
	ctx := t.Context()
	now := time.Now().UTC()
	today := partition.Floor(now, 24*time.Hour)
	// Earlier days, as a deployment running for a while has them.
	for d := 1; d <= 10; d++ {
		lo := today.Add(-time.Duration(d) * 24 * time.Hour)
		if _, err := pool.Exec(ctx, "CREATE TABLE "+partition.Name(lo)+" PARTITION OF readings FOR VALUES FROM ('"+
			lo.Format(time.RFC3339)+"') TO ('"+lo.Add(24*time.Hour).Format(time.RFC3339)+"')"); err != nil {
			t.Fatal(err)
		}
		insert(t, pool, partition.Name(lo), lo.Add(time.Hour))
	}
	insert(t, pool, "ancient", now.AddDate(-1, 0, 0))
	keep := newMaintainer(pool, partition.Config{})
	if err := keep.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if ps := partitions(t, pool); len(ps) != 15 {
		t.Fatalf("without --retention: partitions %v, want the default, 10 past days and 4 from today", ps)
	}

	wctx, stop := context.WithCancel(ctx)
	var (
		wg   sync.WaitGroup
		werr error
	)
	var written atomic.Int64
	writerDone := make(chan struct{}) // closed when the writer stops (its error is werr)
	wg.Go(func() {
		defer close(writerDone)
		for wctx.Err() == nil {
			if _, err := pool.Exec(wctx, "INSERT INTO readings (device_id, ts, received_at, reading) VALUES ('live', now(), now(), 1)"); err != nil {
				if wctx.Err() == nil {
					werr = err
				}
				return
			}
			written.Add(1)
		}
	})
	// 3 days and a bit: the partitions of 4 days ago and before go.
	m := newMaintainer(pool, partition.Config{Retention: 3*24*time.Hour + time.Duration(now.Sub(today))/2})
	err := m.Maintain(ctx)
	// The writer goes on after the maintenance: a write that began after it.
	after := written.Load() + 1
	testenv.Await(t, func() bool {
		select {
		case <-writerDone:
			return true // its error is checked below
		default:
			return written.Load() > after
		}
	}, "the writer wrote nothing after the maintenance")
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	got := where(t, pool)
	for d := 1; d <= 10; d++ {
		name := partition.Name(today.Add(-time.Duration(d) * 24 * time.Hour))
		_, kept := got[name]
		if kept != (d <= 3) {
			t.Errorf("%s (%d days ago) kept %v, want %v", name, d, kept, d <= 3)
		}
	}
	if _, ok := got["ancient"]; ok {
		t.Error("a year-old row in the default partition survived a 3-day retention")
	}
	if got["live"] != partition.Name(today) {
		t.Errorf("the writer's rows are in %q, want %q", got["live"], partition.Name(today))
	}
	if ps := partitions(t, pool); len(ps) != 8 {
		t.Errorf("partitions %v: want the default, 3 past days and 4 from today", ps)
	}
	// The shortest retention keeps the current partition.
	if err := newMaintainer(pool, partition.Config{Retention: time.Minute}).Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := where(t, pool); got["live"] != partition.Name(today) {
		t.Errorf("with --retention 1m the current partition went (live rows in %q)", got["live"])
	}
}

func TestFloorAndName(t *testing.T) {
	at := time.Date(2026, 12, 3, 13, 47, 5, 0, time.UTC) // a Thursday
	for _, tc := range []struct {
		name string
		iv   time.Duration
		lo   time.Time
		part string
	}{
		{"day", 24 * time.Hour, time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC), "readings_p20261203"},
		{"6h", 6 * time.Hour, time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC), "readings_p20261203_1200"},
		{"week starts Monday", 7 * 24 * time.Hour, time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), "readings_p20261130"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lo := partition.Floor(at, tc.iv)
			if !lo.Equal(tc.lo) || partition.Name(lo) != tc.part {
				t.Errorf("Floor = %s (%s), want %s (%s)", lo, partition.Name(lo), tc.lo, tc.part)
			}
		})
	}
}
