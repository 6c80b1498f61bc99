package schema_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"firehose/internal/testenv"
	"firehose/schema"
)

// Migration 005 on a table an older release filled: every row is kept, with
// its id, in the partition the old table becomes; rows dated after the
// cutover move to the default partition; ids go on after the old ones; the
// (device_id, ts) index is adopted, not rebuilt; and writers running during
// the migration wait for it and then land in the partitioned table. Applied
// as firehose does (a pool: the (id, ts) index is built first, concurrently)
// and inside a caller's transaction (ATTACH builds it under the lock).
func TestIntegrationPartitionMigrationKeepsEveryRow(t *testing.T) {
	for _, tc := range []struct {
		name string
		inTx bool
	}{{"pool", false}, {"transaction", true}} {
		t.Run(tc.name, func(t *testing.T) { testPartitionMigration(t, tc.inTx) })
	}
}

func testPartitionMigration(t *testing.T, inTx bool) {
	dbURL := testenv.PostgresEmpty(t)
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := schema.ApplyUpTo(ctx, pool, 4); err != nil {
		t.Fatal(err)
	}
	const n, future = 200_000, 37
	// n rows over the last 10 days, 1,000 devices, then some dated next week.
	if _, err := pool.Exec(ctx, `INSERT INTO readings (device_id, ts, received_at, reading, payload)
		SELECT 'dev-' || (i % 1000), now() - (i % 864000) * interval '1 second', now(), i, jsonb_build_object('seq', i)
		FROM generate_series(1, $1) AS i`, n); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO readings (device_id, ts, received_at, reading)
		SELECT 'clock-ahead', now() + interval '7 days' + i * interval '1 minute', now(), i FROM generate_series(1, $1) AS i`, future); err != nil {
		t.Fatal(err)
	}
	type digest struct {
		rows, maxID int64
		sumID       float64
		sumReading  float64
	}
	var before, after digest
	sum := func(d *digest) {
		t.Helper()
		if err := pool.QueryRow(ctx, "SELECT count(*), max(id), sum(id), sum(reading) FROM readings WHERE device_id <> 'writer'").
			Scan(&d.rows, &d.maxID, &d.sumID, &d.sumReading); err != nil {
			t.Fatal(err)
		}
	}
	sum(&before)
	var oldIndex uint32
	if err := pool.QueryRow(ctx, "SELECT 'readings_device_ts_idx'::regclass::oid").Scan(&oldIndex); err != nil {
		t.Fatal(err)
	}

	// A writer inserting one row per transaction all along, as a bridge does.
	wctx, stopWriter := context.WithCancel(ctx)
	var (
		wg      sync.WaitGroup
		written atomic.Int64
		werr    error
		longest time.Duration
	)
	writerDone := make(chan struct{}) // closed when the writer stops (its error is werr)
	writing := func(after int64) bool {
		select {
		case <-writerDone:
			return true // checked below
		default:
			return written.Load() > after
		}
	}
	wg.Go(func() {
		defer close(writerDone)
		for wctx.Err() == nil {
			began := time.Now()
			_, err := pool.Exec(wctx, "INSERT INTO readings (device_id, ts, received_at, reading) VALUES ('writer', now(), now(), 1)")
			longest = max(longest, time.Since(began))
			if err != nil {
				if wctx.Err() == nil {
					werr = err
				}
				return
			}
			written.Add(1)
		}
	})
	// The writer runs before the migration starts ...
	testenv.Await(t, func() bool { return writing(0) }, "the writer wrote nothing")
	start := time.Now()
	var applied []string
	if inTx {
		var tx pgx.Tx
		if tx, err = pool.Begin(ctx); err == nil {
			if applied, err = schema.Apply(ctx, tx); err == nil {
				err = tx.Commit(ctx)
			}
		}
	} else {
		applied, err = schema.Apply(ctx, pool)
	}
	took := time.Since(start)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	// ... and goes on after it: a write that began after the migration.
	since := written.Load() + 1
	testenv.Await(t, func() bool { return writing(since) }, "the writer wrote nothing after the migration")
	stopWriter()
	wg.Wait()
	if werr != nil {
		t.Fatalf("writer during the migration: %v", werr)
	}
	t.Logf("applied %v to %d rows in %s; the longest insert of a concurrent writer took %s", applied, n+future,
		took.Round(time.Millisecond), longest.Round(time.Millisecond))

	sum(&after)
	if after != before {
		t.Errorf("after the migration %+v, before %+v: want every row kept as it was", after, before)
	}
	var writerRows int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM readings WHERE device_id = 'writer'").Scan(&writerRows); err != nil {
		t.Fatal(err)
	}
	// The last insert may have committed as the writer was cancelled.
	if w := written.Load(); w == 0 || writerRows < w || writerRows > w+1 {
		t.Errorf("%d rows of the writer in readings, %d inserts succeeded", writerRows, w)
	}
	var kind string
	if err := pool.QueryRow(ctx, "SELECT relkind::text FROM pg_class WHERE oid = 'readings'::regclass").Scan(&kind); err != nil || kind != "p" {
		t.Fatalf("readings relkind %q (%v), want p (partitioned)", kind, err)
	}
	where := map[string]int64{}
	rows, err := pool.Query(ctx, "SELECT tableoid::regclass::text, count(*) FROM readings WHERE device_id <> 'writer' GROUP BY 1")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p string
		var c int64
		if err := rows.Scan(&p, &c); err != nil {
			t.Fatal(err)
		}
		where[p] = c
	}
	if where["readings_unpartitioned"] != n || where["readings_default"] != future || len(where) != 2 {
		t.Errorf("rows by partition %v: want %d in readings_unpartitioned and %d (dated next week) in readings_default", where, n, future)
	}
	var adopted bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = $1 AND indrelid = 'readings_unpartitioned'::regclass)
		AND EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = $1 AND inhparent = 'readings_device_ts_idx'::regclass)`, oldIndex).Scan(&adopted); err != nil {
		t.Fatal(err)
	}
	if !adopted {
		t.Error("the old (device_id, ts) index was not adopted as the partition's")
	}
	var newID int64
	if err := pool.QueryRow(ctx, "INSERT INTO readings (device_id, ts, received_at, reading) VALUES ('new', now(), now(), 1) RETURNING id").Scan(&newID); err != nil {
		t.Fatal(err)
	}
	if newID <= before.maxID {
		t.Errorf("a new row got id %d, want more than the old maximum %d", newID, before.maxID)
	}
	if again, err := schema.Apply(ctx, pool); err != nil || len(again) != 0 {
		t.Errorf("second apply: %v, %v; want nothing to do", again, err)
	}
}

// Migration 005 on a new database: no old table is kept.
func TestIntegrationPartitionMigrationOnEmptyTable(t *testing.T) {
	dbURL := testenv.Postgres(t)
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var parts []string
	rows, err := conn.Query(t.Context(), "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'readings'::regclass")
	if err != nil {
		t.Fatal(err)
	}
	parts, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 1 || parts[0] != "readings_default" {
		t.Errorf("partitions %v, want only readings_default", parts)
	}
}
