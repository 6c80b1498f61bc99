package bridge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
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

// snapshot is what an RDB snapshot keeps of one stream: its entries.
func (e *env) snapshot(key string) []redis.XMessage {
	e.t.Helper()
	msgs, err := e.rdb.XRange(e.t.Context(), key, "-", "+").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return msgs
}

// restore replaces the stream with msgs, ids and all, as Redis restarted
// from a snapshot does; the metadata hash is left as it is (the snapshot
// holds it too).
func (e *env) restore(key string, msgs []redis.XMessage) {
	e.t.Helper()
	if err := e.rdb.Del(e.t.Context(), key).Err(); err != nil {
		e.t.Fatal(err)
	}
	for _, m := range msgs {
		if err := e.rdb.XAdd(e.t.Context(), &redis.XAddArgs{Stream: key, ID: m.ID, Values: m.Values}).Err(); err != nil {
			e.t.Fatal(err)
		}
	}
}

// xaddAt stores r at an explicit id, as a Redis whose clock is behind would.
func (e *env) xaddAt(key, id string, r ingest.Reading) {
	e.t.Helper()
	err := e.rdb.XAdd(e.t.Context(), &redis.XAddArgs{Stream: key, ID: id, Values: []any{
		ingest.FieldVersion, ingest.CodecVersion, ingest.FieldBody, ingest.AppendEncode(nil, &r)}}).Err()
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) checkpoint(key string) (last, gen string) {
	e.t.Helper()
	var g *string
	if err := e.pg.QueryRow(e.t.Context(), "SELECT last_id, generation FROM bridge_checkpoints WHERE stream = $1", key).Scan(&last, &g); err != nil {
		e.t.Fatal(err)
	}
	if g != nil {
		gen = *g
	}
	return last, gen
}

func (e *env) lastGeneratedID(key string) stream.StreamID {
	e.t.Helper()
	info, err := e.rdb.XInfoStream(e.t.Context(), key).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	id, err := stream.ParseStreamID(info.LastGeneratedID)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// A stream restored from a snapshot keeps its generation: the entries the
// snapshot holds were committed and must not be written again, and the
// stream's last id is raised to the checkpoint.
func TestIntegrationRestoredStreamIsNotWrittenAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	key := e.streams.Key(0)
	// The first session claims the shard's generation.
	r := e.start(Config{BatchAge: 20 * time.Millisecond})
	testenv.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(r.b.m.owned) == 1 }, "the bridge did not take the shard")
	r.stop()
	for i := 1; i <= 5; i++ {
		e.add(reading("restored", i))
	}
	// The snapshot: three of the five entries (taken before the last two
	// were stored).
	snap := e.snapshot(key)[:3]
	r = e.start(Config{BatchAge: 20 * time.Millisecond})
	e.waitRows(5, 5*time.Second)
	r.stop()
	cp, gen := e.checkpoint(key)
	if gen == "" {
		t.Fatalf("checkpoint %s has no generation", cp)
	}
	e.restore(key, snap)

	e.start(Config{BatchAge: 20 * time.Millisecond})
	testenv.Eventually(t, 5*time.Second, func() bool { return !e.lastGeneratedID(key).Less(mustID(t, cp)) },
		"the restored stream's last id %v was not raised to the checkpoint %s", e.lastGeneratedID(key), cp)
	e.add(reading("restored", 6))
	e.waitRows(6, 5*time.Second)
	e.waitDrained() // a wrong bridge would have written the snapshot's entries again by now
	if n := e.count("SELECT count(*) FROM readings"); n != 6 {
		t.Errorf("rows = %d, want 6: entries of the snapshot were written again", n)
	}
	if _, g := e.checkpoint(key); g != gen {
		t.Errorf("generation after the restore %q, want the same %q", g, gen)
	}
}

// Restored from a snapshot taken before the first entry: the stream key is
// absent, the generation is the checkpoint's. The stream is created with its
// last id at the checkpoint, so entries stored by a clock that is behind
// still get ids above it.
func TestIntegrationRestoredWithoutStreamKeepsCheckpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	key := e.streams.Key(0)
	r := e.start(Config{BatchAge: 20 * time.Millisecond})
	e.add(reading("nostream", 1))
	e.waitRows(1, 5*time.Second)
	r.stop()
	cp, _ := e.checkpoint(key)
	if err := e.rdb.Del(t.Context(), key).Err(); err != nil {
		t.Fatal(err)
	}
	e.start(Config{BatchAge: 20 * time.Millisecond})
	testenv.Eventually(t, 5*time.Second, func() bool {
		n, err := e.rdb.Exists(t.Context(), key).Result()
		return err == nil && n == 1 && e.lastGeneratedID(key) == mustID(t, cp)
	}, "the stream was not created with its last id at the checkpoint %s", cp)
	e.add(reading("nostream", 2))
	e.waitRows(2, 5*time.Second)
	if n := e.count("SELECT count(*) FROM readings"); n != 2 {
		t.Errorf("rows = %d, want 2", n)
	}
}

// A Redis that lost everything (no generation) has new streams: read from
// their start even when the bridge restarts before any entry arrives and the
// new ids are below the checkpoint.
func TestIntegrationWipedRedisIsReadFromStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	key := e.streams.Key(0)
	r := e.start(Config{BatchAge: 20 * time.Millisecond})
	e.add(reading("wiped", 1))
	e.waitRows(1, 5*time.Second)
	r.stop()
	_, gen := e.checkpoint(key)
	if err := e.rdb.Del(t.Context(), key, e.streams.ShardMetaKey(0)).Err(); err != nil {
		t.Fatal(err)
	}
	// Two sessions against the empty Redis, before any entry.
	for range 2 {
		r := e.start(Config{BatchAge: 20 * time.Millisecond})
		testenv.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(r.b.m.newStream) >= 1 },
			"the bridge did not see the new stream")
		r.stop()
	}
	// The new Redis's clock is behind the checkpoint.
	e.xaddAt(key, "1-1", reading("wiped", 2))
	e.start(Config{BatchAge: 20 * time.Millisecond})
	e.waitRows(2, 5*time.Second)
	if last, g := e.checkpoint(key); last != "1-1" || g == gen || g == "" {
		t.Errorf("checkpoint (%s, %q) after the new stream's first commit, want (1-1, a generation other than %q)", last, g, gen)
	}
}

// Redis wiped while a session runs: the session notices the lost generation
// and the next one reads the new stream from its start, ids below the old
// checkpoint included.
func TestIntegrationWipeDuringSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	key := e.streams.Key(0)
	e.start(Config{BatchAge: 20 * time.Millisecond})
	e.add(reading("midwipe", 1))
	e.waitRows(1, 5*time.Second)
	if err := e.rdb.Del(t.Context(), key, e.streams.ShardMetaKey(0)).Err(); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"1-1", "1-2"} {
		e.xaddAt(key, id, reading("midwipe", 2+i))
	}
	e.waitRows(3, 10*time.Second)
	e.waitDrained()
	if n := e.count("SELECT count(*) FROM readings"); n != 3 {
		t.Errorf("rows = %d, want 3", n)
	}
}

// A checkpoint written before schema 003 has no generation: the bridge
// adopts the stream's and keeps the checkpoint.
func TestIntegrationCheckpointWithoutGenerationIsAdopted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	key := e.streams.Key(0)
	ids := e.addIDs(key, "adopt", 4)
	e.setCheckpoint(key, ids[1], 2)
	e.start(Config{BatchAge: 20 * time.Millisecond})
	e.waitRows(2, 5*time.Second)
	e.waitDrained()
	if n := e.count("SELECT count(*) FROM readings"); n != 2 {
		t.Errorf("rows = %d, want the 2 after the checkpoint", n)
	}
	meta, err := stream.ReadShardMeta(t.Context(), e.rdb, e.streams, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, g := e.checkpoint(key); g != meta.Generation {
		t.Errorf("checkpoint generation %q, want the adopted %q", g, meta.Generation)
	}
}

// A shard claimed by another deployment (database) is refused: Run returns
// ErrDeploymentMismatch at once, nothing is committed or trimmed.
func TestIntegrationOtherDeploymentIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	const other = "00000000-0000-4000-8000-000000000001"
	if err := e.rdb.HSet(t.Context(), e.streams.ShardMetaKey(1), stream.MetaDeployment, other).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		e.add(reading("other", i))
	}
	b, err := New(Config{Postgres: e.pgURL, Streams: e.streams, BatchAge: 20 * time.Millisecond, LockRetry: 100 * time.Millisecond},
		e.rdb, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err = b.Run(ctx)
	if !errors.Is(err, ErrDeploymentMismatch) || ctx.Err() != nil {
		t.Fatalf("Run = %v (ctx %v), want ErrDeploymentMismatch at once", err, ctx.Err())
	}
	for _, want := range []string{e.streams.Prefix, other, e.streams.ShardMetaKey(1), "--redis-prefix"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if n, err := e.rdb.XLen(t.Context(), e.streams.Key(1)).Result(); err != nil || n == 0 {
		t.Errorf("the other deployment's stream holds %d entries (%v): it was trimmed", n, err)
	}
	var ours string
	if err := e.pg.QueryRow(t.Context(), "SELECT id::text FROM firehose_deployment").Scan(&ours); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(err.Error(), ours) {
		t.Errorf("error %q does not name this database's deployment %s", err, ours)
	}
}

// A quiet bridge keeps its lock across PostgreSQL's idle_session_timeout
// (it pings), and a holder silent for the session timeout is ended by a
// bridge that waits for its lock.
func TestIntegrationSessionTimeoutPingsAndEvicts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	key := e.streams.Key(0)

	// A silent holder: a session that took the lock and went quiet.
	holder, err := pgx.Connect(t.Context(), e.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	if _, err := holder.Exec(t.Context(), "SELECT pg_advisory_lock($1)", LockKey(key)); err != nil {
		t.Fatal(err)
	}
	const timeout = 3 * time.Second
	took := time.Now()
	r := e.start(Config{BatchAge: 20 * time.Millisecond, SessionTimeout: timeout, LockRetry: 200 * time.Millisecond})
	testenv.Eventually(t, 10*time.Second, func() bool { return testutil.ToFloat64(r.b.m.owned) == 1 },
		"the bridge did not take the shard from the silent holder")
	// Not before the session timeout (the holder might only be slow);
	// how long after it is the machine's business, and only logged.
	if d := time.Since(took); d < timeout-500*time.Millisecond {
		t.Errorf("took the shard after %s, before the session timeout %s", d, timeout)
	} else if d > timeout+2*time.Second {
		t.Logf("took the shard after %s, well after the session timeout %s (a loaded machine?)", d, timeout)
	}
	if n := testutil.ToFloat64(r.b.m.evicted); n != 1 {
		t.Errorf("evicted = %v, want 1", n)
	}
	if err := holder.Ping(t.Context()); err == nil {
		t.Error("the silent holder's session is still alive")
	}

	// Quiet for more than twice the timeout: the bridge keeps its session.
	time.Sleep(2*timeout + time.Second) // a deliberate quiet gap: the session must outlive it
	if n := testutil.ToFloat64(r.b.m.errors.WithLabelValues("ping")) + testutil.ToFloat64(r.b.m.errors.WithLabelValues("read")) +
		testutil.ToFloat64(r.b.m.errors.WithLabelValues("commit")); n != 0 {
		t.Errorf("%v session errors while quiet", n)
	}
	if testutil.ToFloat64(r.b.m.owned) != 1 {
		t.Error("the quiet bridge lost its shard")
	}
	e.add(reading("quiet", 1))
	e.waitRows(1, 5*time.Second)
}

func mustID(t *testing.T, s string) stream.StreamID {
	t.Helper()
	id, err := stream.ParseStreamID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
