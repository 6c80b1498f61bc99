package testenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"firehose/stream"

	"firehose/internal/pgretry"
)

// awaitDefault bounds Await when the test has no deadline (go test
// -timeout 0).
const awaitDefault = 10 * time.Minute

// awaitMargin is kept before the test's deadline, so that Await fails with
// its message before go test panics with a stack dump.
const awaitMargin = 20 * time.Second

// Await polls cond every 50 ms until it returns true, and fails t with msg
// only when the test is about to run out of time (its deadline, go test
// -timeout, minus awaitMargin). It is the wait for a condition of
// correctness: how long the condition takes on a loaded machine is not the
// test's business, only that it holds eventually. It returns how long the
// wait took, for the log.
func Await(t testing.TB, cond func() bool, msg string, args ...any) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(awaitDefault)
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			deadline = dl.Add(-awaitMargin)
		}
	}
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s (the test's time ran out): "+msg, append([]any{time.Since(start).Round(time.Millisecond)}, args...)...)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TransientPG reports whether a PostgreSQL error may go away by itself, so a
// checker should retry rather than fail (pgretry.Transient).
func TransientPG(err error) bool { return pgretry.Transient(err) }

// RetryPG runs f until it returns nil or an error that is not transient
// (TransientPG), backing off from 100 ms to 2 s between attempts; ctx bounds
// the whole. It returns f's last error.
func RetryPG(ctx context.Context, f func(context.Context) error) error {
	wait := 100 * time.Millisecond
	for {
		err := f(ctx)
		if err == nil || !TransientPG(err) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (still failing when the time ran out: %w)", err, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// QueryInt runs a query returning one integer on dbURL, in a connection of
// its own, retrying transient failures (TransientPG) for up to 2 minutes;
// any other error fails t.
func QueryInt(t testing.TB, dbURL, query string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var n int64
	err := RetryPG(ctx, func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		return conn.QueryRow(ctx, query, args...).Scan(&n)
	})
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// Drained reports whether the bridge has committed (or set aside as
// rejected) every entry ever written to the streams keys: each stream's
// checkpoint in bridge_checkpoints has reached its last-generated-id
// (XINFO STREAM), which the bridge's trimming does not lower. A stream that
// does not exist, or never had an entry, is drained. pending says what is
// not, for a message.
func Drained(ctx context.Context, rdb redis.Cmdable, db *pgx.Conn, keys []string) (ok bool, pending string, err error) {
	for _, key := range keys {
		info, err := rdb.XInfoStream(ctx, key).Result()
		if err != nil {
			if strings.Contains(err.Error(), "no such key") {
				continue
			}
			return false, "", fmt.Errorf("XINFO STREAM %s: %w", key, err)
		}
		last, err := stream.ParseStreamID(info.LastGeneratedID)
		if err != nil {
			return false, "", fmt.Errorf("stream %s: %w", key, err)
		}
		if last == (stream.StreamID{}) {
			continue
		}
		var s string
		err = db.QueryRow(ctx, "SELECT last_id FROM bridge_checkpoints WHERE stream = $1", key).Scan(&s)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, fmt.Sprintf("%s: no checkpoint, last entry %s", key, last), nil
		}
		if err != nil {
			return false, "", fmt.Errorf("read the checkpoint of %s: %w", key, err)
		}
		cp, err := stream.ParseStreamID(s)
		if err != nil {
			return false, "", fmt.Errorf("checkpoint of %s: %w", key, err)
		}
		if cp.Less(last) {
			return false, fmt.Sprintf("%s: checkpoint %s, last entry %s", key, cp, last), nil
		}
	}
	return true, "", nil
}

// WaitDrained waits (Await: as long as the test may run) until the bridge
// has committed every entry written to the streams keys so far (Drained).
// Once it returns, no further row can land from those streams unless
// something writes to them again: a test counts rows once, after it,
// instead of sleeping and hoping a late duplicate would have shown. Errors
// of Redis or PostgreSQL while waiting are retried; they are reported if the
// wait fails.
func WaitDrained(t testing.TB, rdb redis.Cmdable, dbURL string, keys []string) {
	t.Helper()
	state := "not checked yet"
	took := Await(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			state = err.Error()
			return false
		}
		defer conn.Close(context.Background())
		ok, pending, err := Drained(ctx, rdb, conn, keys)
		switch {
		case err != nil:
			state = err.Error()
		case !ok:
			state = pending
		}
		return ok && err == nil
	}, "the bridge did not commit everything written to the streams: %s", lazy(func() string { return state }))
	if took > 5*time.Second {
		t.Logf("the streams drained after %s", took.Round(time.Millisecond))
	}
}

// lazy formats as what f returns when formatted.
type lazy func() string

func (l lazy) String() string { return l() }

// StreamKeys lists the shard streams of the deployment of prefix on a
// single Redis server (keys prefix:readings:*, of type stream), for
// WaitDrained. It fails t if Redis does not answer.
func StreamKeys(t testing.TB, rdb *redis.Client, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var keys []string
	iter := rdb.ScanType(ctx, 0, escapeGlob(prefix)+":readings:*", 1000, "stream").Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("list the streams of %s: %v", prefix, err)
	}
	return keys
}
