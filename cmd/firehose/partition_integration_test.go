package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"firehose/internal/testenv"
)

// The first bridge records --partition-interval and makes the partitions
// ahead of time; a bridge started later with another interval exits with a
// line that says why, while one without the flag runs on the recorded one.
func TestIntegrationServeKeepsPartitionInterval(t *testing.T) {
	t.Parallel()
	pgURL := testenv.Postgres(t)
	_, prefix := testenv.Redis(t)
	bridge := func(extra ...string) *proc {
		args := []string{"serve", "--roles", "bridge", "--postgres", pgURL, "--redis", testenv.RedisURL(),
			"--redis-prefix", prefix, "--log-level", "warn"}
		return start(t, append(args, extra...)...)
	}
	conn, err := pgx.Connect(t.Context(), pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	count := func() int {
		var n int
		if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	first := bridge("--partition-interval", "12h")
	testenv.Eventually(t, 15*time.Second, func() bool { return count() == 5 },
		"partitions of readings: %d, want the default and 4 of 12 hours; output: %s", count(), first.stderr.String())
	var secs int64
	if err := conn.QueryRow(t.Context(), "SELECT interval_seconds FROM firehose_partitioning").Scan(&secs); err != nil || secs != 12*3600 {
		t.Fatalf("recorded interval %d s (%v), want 43200", secs, err)
	}

	other := bridge("--partition-interval", "1d")
	code, ok := other.wait(15 * time.Second)
	if !ok || code == 0 || !strings.Contains(other.stderr.String(), "readings is partitioned by 12h0m0s") {
		t.Errorf("a bridge with --partition-interval 1d on a 12h database: exited %v with %d, output %q; want an error naming the recorded interval",
			ok, code, other.stderr.String())
	}
	same := bridge()
	if code, exited := same.wait(2 * time.Second); exited {
		t.Errorf("a bridge without --partition-interval exited with %d: %s", code, same.stderr.String())
	}
	if n := count(); n != 5 {
		t.Errorf("%d partitions after the other bridges, want 5", n)
	}
}
