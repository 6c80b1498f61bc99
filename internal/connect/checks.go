package connect

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"firehose/schema"
	"firehose/stream"
)

// Start-up checks: what the services reached promise, and the schema.

// CheckPostgres tries the database once at start and, when it answers,
// applies the schema there and then, so the process is ready with its tables
// in place (clients that read readings right away find them). A mistake the
// operator must fix (no such database, authentication refused, a failed
// migration) is an error; an unreachable server only a warning: the bridge
// waits for it and migrates then (ApplySchemaWaiting), and the edges do not need it.
// It reports whether the schema was applied.
func CheckPostgres(ctx context.Context, pool *pgxpool.Pool, rawURL string, log *slog.Logger) (bool, error) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := pool.Ping(pctx)
	switch {
	case err == nil:
		applied, err := schema.Apply(ctx, pool)
		if err != nil {
			return false, fmt.Errorf("apply schema: %w", err)
		}
		if len(applied) > 0 {
			log.Info("schema migrations applied", "migrations", strings.Join(applied, ","))
		}
		return true, nil
	case PermanentPostgresError(err):
		return false, PostgresError(err, rawURL)
	}
	log.Warn("PostgreSQL is not reachable at start: serving the edges; the bridge commits once it answers",
		"postgres", RedactURL(rawURL), "err", err)
	return false, nil
}

// CheckRedisPersistence says at start how Redis can lose acknowledged
// readings (a warning each), and refuses a Redis that may evict keys unless
// the operator accepted it with --redis-allow-eviction. A Redis that refuses
// INFO is refused too: firehose cannot tell what an acknowledgement is worth.
// On a cluster every primary is asked, and its warnings name it.
func CheckRedisPersistence(ctx context.Context, rdb redis.UniversalClient, allowEviction bool, minReplicas int, log *slog.Logger) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return checkNodePersistence(pctx, rdb, "", allowEviction, minReplicas, log)
	}
	return cc.ForEachMaster(pctx, func(ctx context.Context, node *redis.Client) error {
		return checkNodePersistence(ctx, node, node.Options().Addr, allowEviction, minReplicas, log)
	})
}

// CheckDedupSupport refuses a Redis that cannot run --dedup's script: it
// asks every primary for SMISMEMBER (Redis 6.2), which the script calls.
func CheckDedupSupport(ctx context.Context, rdb redis.UniversalClient) error {
	check := func(ctx context.Context, node redis.UniversalClient, where string) error {
		v, err := node.Do(ctx, "COMMAND", "INFO", "SMISMEMBER").Slice()
		if err != nil {
			return fmt.Errorf("%s: ask for SMISMEMBER (--dedup): %w", where, err)
		}
		if len(v) != 1 || v[0] == nil {
			return fmt.Errorf("%s has no SMISMEMBER: --dedup needs Redis 6.2 or newer; upgrade Redis or run --dedup off", where)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return check(ctx, node, "redis cluster node "+node.Options().Addr)
		})
	}
	return check(ctx, rdb, "redis")
}

// checkNodePersistence is CheckRedisPersistence for one primary; addr, when
// not "", names it in what it says.
func checkNodePersistence(ctx context.Context, rdb redis.UniversalClient, addr string, allowEviction bool, minReplicas int, log *slog.Logger) error {
	p, err := stream.InspectRedis(ctx, rdb)
	if err != nil {
		if addr != "" {
			return fmt.Errorf("cluster node %s: %w", addr, err)
		}
		return err
	}
	if p.Evicting() && !allowEviction {
		where := "redis"
		if addr != "" {
			where = "redis cluster node " + addr
		}
		return fmt.Errorf("%s maxmemory-policy is %s: under memory pressure Redis would delete streams of acknowledged readings; "+
			"set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf), "+
			"or start with --redis-allow-eviction to accept that risk", where, p.Policy)
	}
	for _, r := range append(p.Risks(), p.ReplicaRisks(minReplicas)...) {
		if addr != "" {
			log.Warn(r, "node", addr)
		} else {
			log.Warn(r)
		}
	}
	return nil
}

// ApplySchemaWaiting applies the schema, waiting until PostgreSQL answers
// (retrying with backoff, so a process whose database is down still serves
// its edges); it returns nil once applied or when ctx ends, and an error
// only for a refusal waiting will not change (PermanentPostgresError).
func ApplySchemaWaiting(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	wait := 250 * time.Millisecond
	for {
		applied, err := schema.Apply(ctx, pool)
		if err == nil {
			if len(applied) > 0 {
				log.Info("schema migrations applied", "migrations", strings.Join(applied, ","))
			}
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if PermanentPostgresError(err) {
			return fmt.Errorf("apply schema: %w", err)
		}
		log.Warn("PostgreSQL not reachable: the bridge waits for it (the edges keep taking readings into Redis)",
			"err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, 10*time.Second)
	}
}
