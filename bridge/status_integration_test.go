package bridge

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// TestIntegrationStatus reads a deployment's shards as they are: backlog in
// Redis, no owner until a session holds the shard's lock, the checkpoint and
// rows committed, the rejected entries, the lag of what is uncommitted, and
// the live bridges.
func TestIntegrationStatus(t *testing.T) {
	t.Parallel()
	pgURL := testenv.Postgres(t)
	rdb, prefix := testenv.Redis(t)
	ctx := t.Context()
	streams := stream.Streams{Prefix: prefix, Count: 2}
	dev := "status-dev"
	shard := streams.Shard(dev)
	key := streams.Key(shard)
	now := time.Now()
	for i := range 3 {
		body := ingest.AppendEncode(nil, &ingest.Reading{DeviceID: dev, Time: now, ReceivedAt: now, Value: float64(i)})
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{ingest.FieldVersion, ingest.CodecVersion, ingest.FieldBody, body}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	owner, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(context.Background())
	reader, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close(context.Background())
	for _, q := range []string{
		"SET application_name = 'firehose bridge testhost:42'",
		"INSERT INTO bridge_checkpoints (stream, last_id, rows) VALUES ('" + key + "', '0-1', 42)",
		"INSERT INTO readings_rejected (stream, entry_id, raw, error) VALUES ('" + key + "', '0-1', 'x', 'test')",
		"INSERT INTO bridge_members (id, prefix, host, pid, lock_key, shards_owned) VALUES ('m1', '" + prefix + "', 'testhost', 42, 7, 1)",
	} {
		if _, err := owner.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := owner.Exec(ctx, "SELECT pg_advisory_lock($1)", LockKey(key)); err != nil {
		t.Fatal(err)
	}

	st, err := Status(ctx, reader, rdb, streams, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 {
		t.Fatalf("%d shards, want 2: %+v", len(st), st)
	}
	got, other := st[shard], st[1-shard]
	if got.Backlog != 3 || got.Checkpoint != "0-1" || got.Committed != 42 || got.Rejected != 1 || got.LagSeconds > 60 || got.LagSeconds < 0 {
		t.Errorf("shard %d: %+v, want backlog 3, checkpoint 0-1, 42 rows, 1 rejected, lag under a minute", shard, got)
	}
	if !strings.HasPrefix(got.Owner, "pid ") || got.Bridge != "testhost:42" {
		t.Errorf("shard %d owner %q of bridge %q, want the lock holder's session, of testhost:42", shard, got.Owner, got.Bridge)
	}
	if other.Owner != "" || other.Backlog != 0 || other.Checkpoint != "" || other.LagSeconds != 0 {
		t.Errorf("idle shard %d: %+v, want no owner, backlog or checkpoint", 1-shard, other)
	}
	members, err := Members(ctx, reader, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || members[0].ID != "m1" || members[0].Host != "testhost" || members[0].PID != 42 || members[0].Owned != 1 {
		t.Errorf("members %+v, want m1 on testhost:42 owning 1 shard", members)
	}
}
