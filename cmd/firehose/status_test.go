package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"firehose/bridge"
	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// TestIntegrationStatus shows a deployment's shards as they are: backlog in
// Redis, no owner until a session holds the shard's lock, the checkpoint and
// rows committed, the rejected entries, and the lag of what is uncommitted.
func TestIntegrationStatus(t *testing.T) {
	t.Parallel()
	pgURL := testenv.Postgres(t)
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	var out, errOut bytes.Buffer
	streams := stream.Streams{Prefix: prefix, Count: 2}
	// Three readings of one device: one shard holds them all.
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
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO bridge_checkpoints (stream, last_id, rows) VALUES ($1, '0-1', 42)`, key); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO readings_rejected (stream, entry_id, raw, error) VALUES ($1, '0-1', 'x', 'test')`, key); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", bridge.LockKey(key)); err != nil {
		t.Fatal(err)
	}
	// As a bridge process's session names itself, and its member row.
	if _, err := conn.Exec(ctx, "SET application_name = 'firehose bridge testhost:42'"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO bridge_members (id, prefix, host, pid, lock_key, shards_owned) VALUES ('m1', $1, 'testhost', 42, 7, 1)`, prefix); err != nil {
		t.Fatal(err)
	}

	status := func() []bridge.ShardStatus {
		t.Helper()
		out.Reset()
		errOut.Reset()
		args := []string{"status", "--json", "--postgres", pgURL, "--redis", testenv.RedisURL(), "--redis-prefix", prefix, "--shards", "2"}
		if code := run(ctx, args, &out, &errOut); code != 0 {
			t.Fatalf("status: exit %d: %s", code, errOut.String())
		}
		var st []bridge.ShardStatus
		if err := json.Unmarshal(out.Bytes(), &st); err != nil {
			t.Fatalf("status --json: %v: %s", err, out.String())
		}
		return st
	}
	st := status()
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

	out.Reset()
	if code := run(ctx, []string{"status", "--postgres", pgURL, "--redis", testenv.RedisURL(), "--redis-prefix", prefix, "--shards", "2"}, &out, &errOut); code != 0 {
		t.Fatalf("status: %s", errOut.String())
	}
	// The table form names every shard, and the live bridges.
	if !strings.Contains(out.String(), key) || !strings.Contains(out.String(), "(none)") || !strings.Contains(out.String(), "testhost:42  m1") {
		t.Errorf("status table:\n%s", out.String())
	}
}
