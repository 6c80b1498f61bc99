package testenv_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"firehose/internal/testenv"
)

// TestDrained: a stream is drained when its checkpoint reached its last
// generated id, trimmed or not; a stream without entries is drained.
func TestDrained(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	dbURL := testenv.Postgres(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	key, empty := prefix+":readings:{0}", prefix+":readings:{1}"
	var ids []string
	for range 3 {
		ids = append(ids, rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []string{"f", "v"}}).Val())
	}
	check := func(want bool) {
		t.Helper()
		ok, pending, err := testenv.Drained(ctx, rdb, conn, []string{key, empty})
		if err != nil || ok != want {
			t.Fatalf("Drained = %v (%s), %v; want %v", ok, pending, err, want)
		}
	}
	check(false) // no checkpoint
	if _, err := conn.Exec(ctx, "INSERT INTO bridge_checkpoints (stream, last_id, rows) VALUES ($1, $2, 2)", key, ids[1]); err != nil {
		t.Fatal(err)
	}
	check(false) // behind the last entry
	if _, err := conn.Exec(ctx, "UPDATE bridge_checkpoints SET last_id = $2 WHERE stream = $1", key, ids[2]); err != nil {
		t.Fatal(err)
	}
	check(true)
	if err := rdb.XTrimMaxLen(ctx, key, 0).Err(); err != nil {
		t.Fatal(err)
	}
	check(true) // trimmed: the last generated id stays
	rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []string{"f", "v"}})
	check(false) // a new entry
}
