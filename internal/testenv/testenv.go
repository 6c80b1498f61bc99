package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"firehose/schema"
)

// PostgresAdminURL is the URL tests use to create and drop their databases.
func PostgresAdminURL() string {
	if u := os.Getenv("FIREHOSE_TEST_POSTGRES"); u != "" {
		return u
	}
	return "postgres://127.0.0.1:5432/postgres?sslmode=disable"
}

// RedisURL is the Redis server tests use.
func RedisURL() string {
	if u := os.Getenv("FIREHOSE_TEST_REDIS"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// ID is a short random name part, unique per call.
func ID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

const hint = "start the services with `scripts/services.sh ensure` (make test does), or run unit tests only with -short"

// Postgres creates a database of its own for t, applies the schema, and drops
// the database when t ends. It returns the database's URL.
func Postgres(t testing.TB) string {
	t.Helper()
	dbURL := PostgresEmpty(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to %s: %v", dbURL, err)
	}
	defer conn.Close(ctx)
	if _, err := schema.Apply(ctx, conn); err != nil {
		t.Fatalf("apply schema to %s: %v", dbURL, err)
	}
	return dbURL
}

// PostgresEmpty is Postgres without the schema.
func PostgresEmpty(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped under -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, PostgresAdminURL())
	if err != nil {
		t.Fatalf("connect to PostgreSQL at %s: %v; %s", PostgresAdminURL(), err, hint)
	}
	defer admin.Close(ctx)
	name := "firehose_test_" + ID()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, PostgresAdminURL())
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(PostgresAdminURL())
	if err != nil {
		t.Fatalf("parse %s: %v", PostgresAdminURL(), err)
	}
	u.Path = "/" + name
	return u.String()
}

// Redis returns a client of the test Redis and a key prefix unique to t; every
// key under the prefix is deleted when t ends.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped under -short")
	}
	opt, err := redis.ParseURL(RedisURL())
	if err != nil {
		t.Fatalf("parse %s: %v", RedisURL(), err)
	}
	opt.MaxRetries = -1 // as firehose serve does: a retried pipeline could store an XADD twice
	opt.ContextTimeoutEnabled = true
	rdb := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("reach Redis at %s: %v; %s", RedisURL(), err, hint)
	}
	prefix := "fhtest-" + ID()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := DeleteKeys(ctx, rdb, prefix); err != nil {
			t.Errorf("delete keys %s*: %v", prefix, err)
		}
		rdb.Close()
	})
	return rdb, prefix
}

// DeleteKeys deletes every key starting with prefix.
func DeleteKeys(ctx context.Context, rdb *redis.Client, prefix string) error {
	iter := rdb.Scan(ctx, 0, escapeGlob(prefix)+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	if len(keys) > 0 {
		return rdb.Del(ctx, keys...).Err()
	}
	return nil
}

func escapeGlob(s string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`)
	return r.Replace(s)
}

// Eventually polls cond every 50ms until it returns true. timeout is how
// long the condition should take on an idle machine, not a bound: on a
// loaded one (2 cores shared by the whole suite and more) it may take
// longer, and the wait goes on, as Await's, until the test is about to run
// out of time, then fails t with msg. A wait past timeout is logged, so a
// test that became slow shows in -v output without failing.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	if took := Await(t, cond, msg, args...); took > timeout {
		t.Logf("slow: a condition took %s, expected within %s: "+msg, append([]any{took.Round(time.Millisecond), timeout}, args...)...)
	}
}
