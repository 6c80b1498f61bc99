package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// env is one test's own database, key prefix and streams.
type env struct {
	t       *testing.T
	pgURL   string
	rdb     *redis.Client
	streams stream.Streams
	pg      *pgx.Conn
}

func newEnv(t *testing.T, shards int) *env {
	t.Helper()
	pgURL := testenv.Postgres(t)
	rdb, prefix := testenv.Redis(t)
	conn, err := pgx.Connect(t.Context(), pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return &env{t: t, pgURL: pgURL, rdb: rdb, streams: stream.Streams{Prefix: prefix, Count: shards}, pg: conn}
}

// running is a bridge started by a test.
type running struct {
	reg    *prometheus.Registry
	b      *Bridge
	cancel context.CancelFunc
	done   chan struct{}
}

func (e *env) start(cfg Config) *running {
	e.t.Helper()
	cfg.Postgres = e.pgURL
	cfg.Streams = e.streams
	if cfg.LockRetry == 0 {
		cfg.LockRetry = 100 * time.Millisecond
	}
	reg := prometheus.NewRegistry()
	b, err := New(cfg, e.rdb, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{reg: reg, b: b, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_ = b.Run(ctx)
	}()
	e.t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	<-r.done
}

// add writes readings straight to their streams, as a producer would.
func (e *env) add(rs ...ingest.Reading) {
	e.t.Helper()
	for i := range rs {
		body := ingest.AppendEncode(nil, &rs[i])
		e.xadd(e.streams.Key(e.streams.Shard(rs[i].DeviceID)), ingest.FieldVersion, ingest.CodecVersion, ingest.FieldBody, body)
	}
}

// addIDs stores n readings of device (sequence 0 to n-1) in the stream key
// and returns their ids.
func (e *env) addIDs(key, device string, n int) []string {
	e.t.Helper()
	var ids []string
	for i := range n {
		r := reading(device, i)
		ids = append(ids, e.xadd(key, ingest.FieldVersion, ingest.CodecVersion, ingest.FieldBody, ingest.AppendEncode(nil, &r)))
	}
	return ids
}

// setCheckpoint writes the checkpoint of a bridge that committed the stream
// key up to id, rows rows in all, and crashed before trimming: no generation,
// as before schema 003.
func (e *env) setCheckpoint(key, id string, rows int) {
	e.t.Helper()
	if _, err := e.pg.Exec(e.t.Context(), "INSERT INTO bridge_checkpoints (stream, last_id, rows) VALUES ($1, $2, $3)", key, id, rows); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) xadd(key string, values ...any) string {
	e.t.Helper()
	id, err := e.rdb.XAdd(e.t.Context(), &redis.XAddArgs{Stream: key, Values: values}).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func reading(device string, seq int) ingest.Reading {
	now := time.Now().UTC().Truncate(time.Microsecond)
	return ingest.Reading{
		DeviceID:   device,
		Time:       now.Add(-time.Duration(seq) * time.Millisecond),
		ReceivedAt: now,
		Value:      float64(seq) + 0.25,
		Payload:    fmt.Appendf(nil, `{"seq": %d}`, seq),
	}
}

// readingsOf is n readings of device, sequence 0 to n-1.
func readingsOf(device string, n int) []ingest.Reading {
	rs := make([]ingest.Reading, n)
	for i := range rs {
		rs[i] = reading(device, i)
	}
	return rs
}

func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pg.QueryRow(e.t.Context(), query, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) waitRows(want int, timeout time.Duration) {
	e.t.Helper()
	testenv.Eventually(e.t, timeout, func() bool { return e.count("SELECT count(*) FROM readings") >= want },
		"want %d rows in readings, have %d", want, e.count("SELECT count(*) FROM readings"))
}

// waitOnce waits for want rows, then checks that readings holds each
// (device, reading) once and no more rows.
func (e *env) waitOnce(want int, timeout time.Duration) {
	e.t.Helper()
	e.waitRows(want, timeout)
	if n := e.count("SELECT count(*) - count(DISTINCT (device_id, reading)) FROM readings"); n != 0 {
		e.t.Errorf("%d duplicate rows", n)
	}
	if n := e.count("SELECT count(*) FROM readings"); n != want {
		e.t.Errorf("rows = %d, want %d", n, want)
	}
}

func (e *env) streamLen() int64 {
	var n int64
	for _, k := range e.streams.Keys() {
		n += e.rdb.XLen(e.t.Context(), k).Val()
	}
	return n
}

func TestIntegrationLandsExactlyOnceWithValues(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	var want []ingest.Reading
	for d := range 20 {
		for s := range 50 {
			want = append(want, reading(fmt.Sprintf("dev-%d", d), s))
		}
	}
	want[0].Payload = nil
	e.add(want...)
	r := e.start(Config{BatchSize: 300, BatchAge: 50 * time.Millisecond})
	e.waitRows(len(want), 10*time.Second)

	rows, err := e.pg.Query(t.Context(), "SELECT device_id, ts, received_at, reading, payload FROM readings")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]ingest.Reading{}
	for rows.Next() {
		var g ingest.Reading
		if err := rows.Scan(&g.DeviceID, &g.Time, &g.ReceivedAt, &g.Value, &g.Payload); err != nil {
			t.Fatal(err)
		}
		k := fmt.Sprintf("%s/%v", g.DeviceID, g.Value)
		if _, dup := got[k]; dup {
			t.Errorf("duplicate row %s", k)
		}
		got[k] = g
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d distinct rows, want %d", len(got), len(want))
	}
	for _, w := range want {
		g, ok := got[fmt.Sprintf("%s/%v", w.DeviceID, w.Value)]
		switch {
		case !ok:
			t.Errorf("missing %s %v", w.DeviceID, w.Value)
		case !g.Time.Equal(w.Time) || !g.ReceivedAt.Equal(w.ReceivedAt):
			t.Errorf("%s %v: times %v/%v, want %v/%v", w.DeviceID, w.Value, g.Time, g.ReceivedAt, w.Time, w.ReceivedAt)
		case (w.Payload == nil) != (g.Payload == nil):
			t.Errorf("%s %v: payload %s, want %s", w.DeviceID, w.Value, g.Payload, w.Payload)
		}
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return e.streamLen() == 0 }, "streams not trimmed after commit: %d entries left", e.streamLen())
	if n := testutil.ToFloat64(r.b.m.committed); n != float64(len(want)) {
		t.Errorf("rows committed metric = %v, want %d", n, len(want))
	}
	if n := e.count("SELECT coalesce(sum(rows), 0)::int FROM bridge_checkpoints"); n != len(want) {
		t.Errorf("checkpoints count %d rows, want %d", n, len(want))
	}
}

func TestIntegrationQuietStreamFlushesByAge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	r := e.start(Config{BatchSize: 5000, BatchAge: 300 * time.Millisecond})
	testenv.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(r.b.m.owned) == 2 }, "bridge did not take its shards")
	start := time.Now()
	e.add(reading("quiet-1", 1), reading("quiet-2", 2), reading("quiet-3", 3))
	e.waitRows(3, 5*time.Second)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("three readings on a quiet stream took %s to land, batch age is 300ms", d)
	}
	if n := testutil.ToFloat64(r.b.m.flushes.WithLabelValues("age")); n < 1 {
		t.Errorf("age-triggered flushes = %v, want >= 1", n)
	}
	if n := testutil.ToFloat64(r.b.m.flushes.WithLabelValues("size")); n != 0 {
		t.Errorf("size-triggered flushes = %v, want 0", n)
	}
}

// The end of a burst commits when its stream goes quiet: 3,000 readings
// read at once, then nothing. Whether they came fast enough to be a burst
// depends on the box (TestBatcherQuietAfterBurst has the rule), so the test
// asks only that they land by quiet or by age, not by size, and says which.
func TestIntegrationBurstFlushesWhenQuiet(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.add(readingsOf("burst", 3000)...)
	r := e.start(Config{BatchSize: 5000, BatchAge: 10 * time.Second})
	e.waitRows(3000, time.Minute)
	flushes := func(trigger string) float64 { return testutil.ToFloat64(r.b.m.flushes.WithLabelValues(trigger)) }
	testenv.Await(t, func() bool { return flushes(triggerQuiet)+flushes(triggerAge) >= 1 },
		"quiet and age flushes = %v and %v, want one", flushes(triggerQuiet), flushes(triggerAge))
	if n := flushes(triggerSize); n != 0 {
		t.Errorf("size flushes = %v, want 0", n)
	}
	if flushes(triggerQuiet) == 0 {
		t.Logf("the burst landed by its age: this box read it slower than a burst (5,000 readings within 200 ms)")
	}
}

func TestIntegrationFlushesBySize(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.add(readingsOf("sized", 1000)...)
	r := e.start(Config{BatchSize: 100, BatchAge: time.Minute})
	e.waitRows(1000, 10*time.Second)
	// The metric counts a flush after its commit: the last one's rows can
	// be seen before it is counted.
	flushes := func() float64 { return testutil.ToFloat64(r.b.m.flushes.WithLabelValues("size")) }
	testenv.Await(t, func() bool { return flushes() >= 10 }, "size-triggered flushes = %v, want 10", flushes())
	if n := flushes(); n != 10 {
		t.Errorf("size-triggered flushes = %v, want 10", n)
	}
}

func TestIntegrationShutdownCommitsBuffer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	r := e.start(Config{BatchSize: 5000, BatchAge: time.Hour})
	var rs []ingest.Reading
	for i := range 100 {
		rs = append(rs, reading(fmt.Sprintf("sd-%d", i%7), i))
	}
	e.add(rs...)
	testenv.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(r.b.m.buffered) == 100 },
		"bridge buffered %v entries, want 100", testutil.ToFloat64(r.b.m.buffered))
	if n := e.count("SELECT count(*) FROM readings"); n != 0 {
		t.Fatalf("%d rows before shutdown with a one-hour batch age", n)
	}
	r.stop()
	if n := e.count("SELECT count(*) FROM readings"); n != 100 {
		t.Fatalf("after shutdown %d rows, want 100", n)
	}
	if n := testutil.ToFloat64(r.b.m.flushes.WithLabelValues("shutdown")); n < 1 {
		t.Errorf("shutdown flushes = %v", n)
	}
}

// TestIntegrationShutdownFinishesCommitUnderWay ends the bridge's context
// while a batch's COPY waits on a table lock and more entries arrive: the
// shutdown must not cut that commit off (the batch would stay in Redis for
// the next start), and it commits what the stream holds after it, so a
// clean stop leaves nothing uncommitted.
func TestIntegrationShutdownFinishesCommitUnderWay(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	// A connection of its own: statistics views read inside a transaction
	// stay as they were at its first read.
	other, err := pgx.Connect(t.Context(), e.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	blocker, err := other.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(context.Background()) //nolint:errcheck // after Commit, a no-op
	if _, err := blocker.Exec(t.Context(), "LOCK TABLE readings IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	r := e.start(Config{BatchSize: 5000, BatchAge: 20 * time.Millisecond, ShutdownTimeout: 10 * time.Second})
	var first, later []ingest.Reading
	for i := range 50 {
		first = append(first, reading("under-way", i))
		later = append(later, reading("after", i))
	}
	e.add(first...)
	waiting := func() bool {
		var n int
		err := e.pg.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE 'copy%'`).Scan(&n)
		return err == nil && n > 0
	}
	testenv.Eventually(t, 5*time.Second, waiting, "the bridge's COPY is not waiting on the lock: %v", e.activity())
	e.add(later...)
	r.cancel()
	// A deliberate gap: long enough for a cancellation to reach PostgreSQL
	// if the shutdown cut the commit off (nothing to wait on: the bug would
	// be an event that does not come).
	time.Sleep(300 * time.Millisecond)
	if err := blocker.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the bridge did not stop within its shutdown timeout")
	}
	if n := e.count("SELECT count(*) FROM readings WHERE device_id = 'under-way'"); n != 50 {
		t.Errorf("the batch under way at shutdown: %d rows committed, want 50", n)
	}
	if n := e.count("SELECT count(*) FROM readings WHERE device_id = 'after'"); n != 50 {
		t.Errorf("entries written during that commit: %d rows committed at shutdown, want 50", n)
	}
	if n := e.streamLen(); n != 0 {
		t.Errorf("%d entries left in the stream after a clean stop", n)
	}
}

func TestIntegrationRejectsPoisonAndCommitsTheRest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	key := e.streams.Key(0)
	e.add(reading("good", 1))
	e.xadd(key, ingest.FieldVersion, "99", ingest.FieldBody, "from the future")
	e.xadd(key, "foo", "bar")
	e.add(reading("good", 2))
	e.xadd(key, ingest.FieldVersion, ingest.CodecVersion, ingest.FieldBody, "\x05ab")
	bad := reading("good", 3)
	bad.DeviceID = "bad\xffutf8" // PostgreSQL refuses invalid UTF-8 in text
	e.add(bad)
	nul := reading("good", 4)
	nul.Payload = []byte(`{"s":"\u0000"}`) // jsonb refuses \u0000
	e.add(nul)
	for i := 5; i < 50; i++ {
		e.add(reading("good", i))
	}
	r := e.start(Config{BatchSize: 5000, BatchAge: 50 * time.Millisecond})
	testenv.Eventually(t, 10*time.Second, func() bool {
		return e.count("SELECT count(*) FROM readings")+e.count("SELECT count(*) FROM readings_rejected") >= 49+3
	}, "batch with poison did not commit")
	if n := e.count("SELECT count(*) FROM readings"); n != 47 {
		t.Errorf("readings = %d, want 47", n)
	}
	type rej struct{ version, errText string }
	rows, err := e.pg.Query(t.Context(), "SELECT coalesce(version, ''), error FROM readings_rejected ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (rej, error) {
		var r rej
		return r, row.Scan(&r.version, &r.errText)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("rejected rows = %d (%v), want 5", len(got), got)
	}
	if n := testutil.ToFloat64(r.b.m.rejected.WithLabelValues("decode")); n != 3 {
		t.Errorf("decode rejections metric = %v, want 3", n)
	}
	if n := testutil.ToFloat64(r.b.m.rejected.WithLabelValues("refused")); n != 2 {
		t.Errorf("refused rejections metric = %v, want 2", n)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return e.streamLen() == 0 }, "stream not trimmed: %d left", e.streamLen())
}

func TestIntegrationResumesAfterCheckpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	key := e.streams.Key(0)
	ids := e.addIDs(key, "resume", 10)
	// A bridge committed the first four and crashed before trimming them.
	e.setCheckpoint(key, ids[3], 4)
	e.start(Config{BatchAge: 50 * time.Millisecond})
	e.waitRows(6, 5*time.Second)
	e.waitDrained() // a wrong bridge would have written the other four by now
	if n := e.count("SELECT count(*) FROM readings"); n != 6 {
		t.Fatalf("rows = %d, want the 6 after the checkpoint", n)
	}
	if n := e.count("SELECT count(*) FROM readings WHERE reading < 4"); n != 0 {
		t.Errorf("%d rows at or below the checkpoint were written again", n)
	}
}

func TestIntegrationRetriesTransientFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	if _, err := e.pg.Exec(t.Context(), "ALTER TABLE readings RENAME TO readings_away"); err != nil {
		t.Fatal(err)
	}
	r := e.start(Config{BatchAge: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	e.add(reading("retry", 1), reading("retry", 2))
	testenv.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(r.b.m.errors.WithLabelValues("commit")) >= 2 },
		"bridge did not retry the failing commit")
	if n := e.count("SELECT count(*) FROM readings_rejected"); n != 0 {
		t.Fatalf("a transient failure rejected %d entries", n)
	}
	if _, err := e.pg.Exec(t.Context(), "ALTER TABLE readings_away RENAME TO readings"); err != nil {
		t.Fatal(err)
	}
	e.waitRows(2, 5*time.Second)
}

func TestIntegrationOneOwnerPerShardAndTakeover(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	cfg := Config{BatchAge: 20 * time.Millisecond, LockRetry: 50 * time.Millisecond}
	a := e.start(cfg)
	testenv.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(a.b.m.owned) == 4 }, "first bridge did not take the shards")
	b := e.start(cfg)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 500 {
			e.add(reading(fmt.Sprintf("own-%d", i%13), i))
		}
	})
	// The second takes its share from the first, never a shard the first
	// still holds.
	testenv.Eventually(t, 5*time.Second, func() bool {
		if owned := testutil.ToFloat64(a.b.m.owned) + testutil.ToFloat64(b.b.m.owned); owned > 4 {
			t.Fatalf("shards owned by both bridges = %v, over 4", owned)
		}
		return testutil.ToFloat64(a.b.m.owned) == 2 && testutil.ToFloat64(b.b.m.owned) == 2
	}, "the two bridges did not share the shards 2 and 2: %v and %v", testutil.ToFloat64(a.b.m.owned), testutil.ToFloat64(b.b.m.owned))
	a.stop()
	testenv.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(b.b.m.owned) == 4 }, "second bridge did not take over")
	wg.Wait()
	e.waitOnce(500, 10*time.Second)
}

func TestIntegrationRecreatedStreamIsReadFromStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	key := e.streams.Key(0)
	// A checkpoint far in the future, taken on a stream of another
	// generation: as if Redis lost everything and its ids restarted below
	// the checkpoint.
	future := stream.StreamID{MS: uint64(time.Now().Add(time.Hour).UnixMilli())}
	if _, err := e.pg.Exec(t.Context(), "INSERT INTO bridge_checkpoints (stream, last_id, generation) VALUES ($1, $2, 'a-lost-redis')", key, future.String()); err != nil {
		t.Fatal(err)
	}
	e.add(reading("recreated", 1))
	e.start(Config{BatchAge: 20 * time.Millisecond})
	e.waitRows(1, 5*time.Second)
}

func TestRowRefusedClassifiesSQLState(t *testing.T) {
	for _, tc := range []struct {
		name string
		code string
		want bool
	}{
		{"invalid utf8", "22021", true},
		{"unique violation", "23505", true},
		{"index row too big", "54000", true},
		{"undefined table", "42P01", false},
		{"deadlock", "40P01", false},
		{"admin shutdown", "57P01", false},
		{"disk full", "53100", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rowRefused(pgErr(tc.code)); got != tc.want {
				t.Errorf("rowRefused(%s) = %v, want %v", tc.code, got, tc.want)
			}
		})
	}
	if rowRefused(io.EOF) {
		t.Error("a connection error counted as a refused row")
	}

}

// activity lists the test database's sessions: state, wait, query.
func (e *env) activity() []string {
	rows, err := e.pg.Query(e.t.Context(), `SELECT concat_ws(' ', state, wait_event_type, left(query, 60))
		FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		return []string{err.Error()}
	}
	out, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	return out
}
