package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"firehose/schema"
	"firehose/stream"
)

// redactURL hides a password in a connection URL for logs and errors.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// Settings of every Redis client of firehose: single node, a Redis Cluster,
// or through Sentinel. No automatic retries (MaxRetries -1): go-redis would
// resend a whole pipeline after a read error, storing an XADD twice though
// its caller is acked once; callers retry themselves where that is safe (the
// producer writes to a cluster through each node's own client for the same
// reason: see ingest's pipeFor). Deadlines of the producer's and bridge's
// contexts bound every call.
const (
	redisDialTimeout = 2 * time.Second
	redisIOTimeout   = 3 * time.Second // read and write
)

// --redis-cluster values.
const (
	clusterAuto = "auto"
	clusterYes  = "yes"
	clusterNo   = "no"
)

// newRedisClient parses --redis and builds its client without connecting:
//   - with sentinelMaster, the sentinels' URL (go-redis's failover form: the
//     host and any addr= parameters are sentinels; user and password are the
//     master's). Through Sentinel the client asks the sentinels for the
//     master at every new connection: after a failover the old master's
//     connections fail (their callers are refused, never acknowledged) and
//     new ones reach the promoted replica;
//   - with cluster "yes", or "auto" and addr= parameters, a Redis Cluster
//     client: the host and any addr= parameters are seed nodes, from which
//     the client learns every node and slot (go-redis's cluster URL form);
//   - otherwise a single node's client. connectRedis turns it into a cluster
//     client when cluster is "auto" and the server says it is a cluster node.
func newRedisClient(rawURL, sentinelMaster, cluster string, poolSize int) (redis.UniversalClient, error) {
	switch cluster {
	case clusterAuto, clusterYes, clusterNo:
	default:
		return nil, fmt.Errorf("--redis-cluster %q: want auto, yes or no", cluster)
	}
	if sentinelMaster != "" {
		if cluster == clusterYes {
			return nil, fmt.Errorf("--redis-cluster yes and --redis-sentinel-master %q: a Redis Cluster fails over by itself, without Sentinel; give one", sentinelMaster)
		}
		fo, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("--redis %q is not a Redis Sentinel URL (redis://sentinel1:26379/0?addr=sentinel2:26379): %v", redactURL(rawURL), err)
		}
		if fo.MasterName != "" && fo.MasterName != sentinelMaster {
			return nil, fmt.Errorf("--redis names master %q and --redis-sentinel-master %q: give it once", fo.MasterName, sentinelMaster)
		}
		fo.MasterName = sentinelMaster
		fo.PoolSize = max(fo.PoolSize, poolSize)
		fo.MaxRetries, fo.ContextTimeoutEnabled = -1, true
		fo.DialTimeout, fo.ReadTimeout, fo.WriteTimeout = redisDialTimeout, redisIOTimeout, redisIOTimeout
		return redis.NewFailoverClient(fo), nil
	}
	if cluster == clusterYes || (cluster == clusterAuto && hasAddrParams(rawURL)) {
		return newClusterClient(rawURL, poolSize)
	}
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--redis %q is not a Redis URL: %v", redactURL(rawURL), err)
	}
	opt.PoolSize = max(opt.PoolSize, poolSize)
	opt.MaxRetries, opt.ContextTimeoutEnabled = -1, true
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = redisDialTimeout, redisIOTimeout, redisIOTimeout
	return redis.NewClient(opt), nil
}

// newClusterClient builds a Redis Cluster client from a cluster URL
// (redis://node1:7000?addr=node2:7001&addr=node3:7002; a database number is
// ignored: a cluster has only database 0). PoolSize is per node.
func newClusterClient(rawURL string, poolSize int) (*redis.ClusterClient, error) {
	co, err := redis.ParseClusterURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--redis %q is not a Redis Cluster URL (redis://node1:7000?addr=node2:7001&addr=node3:7002): %v", redactURL(rawURL), err)
	}
	co.PoolSize = max(co.PoolSize, poolSize)
	co.MaxRetries, co.ContextTimeoutEnabled = -1, true
	// One dial per attempt: a primary that is down refuses its shards'
	// readings at once instead of after five dials, and the others' round
	// trips do not wait for it.
	co.DialerRetries = 1
	co.DialTimeout, co.ReadTimeout, co.WriteTimeout = redisDialTimeout, redisIOTimeout, redisIOTimeout
	return redis.NewClusterClient(co), nil
}

// hasAddrParams reports whether a Redis URL lists more nodes in addr=
// parameters.
func hasAddrParams(rawURL string) bool {
	u, err := url.Parse(rawURL)
	return err == nil && u.Query().Has("addr")
}

// connectRedis opens a client (see newRedisClient) and checks that Redis
// answers. With cluster "auto" and a single node's URL it asks the node
// (INFO cluster) and, if it is a cluster node, returns a cluster client
// seeded with it instead.
func connectRedis(ctx context.Context, rawURL, sentinelMaster, cluster string, poolSize int) (redis.UniversalClient, error) {
	rdb, err := newRedisClient(rawURL, sentinelMaster, cluster, poolSize)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %v; start it (scripts/services.sh ensure) or point --redis / FIREHOSE_REDIS_URL at it", redactURL(rawURL), err)
	}
	single, ok := rdb.(*redis.Client)
	if !ok || sentinelMaster != "" || cluster != clusterAuto {
		return rdb, nil
	}
	info, err := single.Info(pctx, "cluster").Result()
	if err != nil || !strings.Contains(info, "cluster_enabled:1") {
		return rdb, nil // INFO refused: taken for a single node (--redis-cluster yes says otherwise)
	}
	rdb.Close()
	cc, err := newClusterClient(rawURL, poolSize)
	if err != nil {
		return nil, err
	}
	if err := cc.Ping(pctx).Err(); err != nil {
		cc.Close()
		return nil, fmt.Errorf("cannot reach the Redis Cluster of %s: %v", redactURL(rawURL), err)
	}
	return cc, nil
}

// openPostgres builds the process's small pool (migrations, /health/db)
// without connecting: pgxpool connects on first use, so the edges start while
// PostgreSQL is down.
func openPostgres(rawURL string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--postgres %q is not a PostgreSQL URL: %v", redactURL(rawURL), err)
	}
	pc.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("postgres pool for %s: %w", redactURL(rawURL), err)
	}
	return pool, nil
}

// connectPostgres opens the pool and checks that the database answers.
func connectPostgres(ctx context.Context, rawURL string) (*pgxpool.Pool, error) {
	pool, err := openPostgres(rawURL)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, postgresError(err, rawURL)
	}
	return pool, nil
}

// checkPostgres tries the database once at start and, when it answers,
// applies the schema there and then, so the process is ready with its tables
// in place (clients that read readings right away find them). A mistake the
// operator must fix (no such database, authentication refused, a failed
// migration) is an error; an unreachable server only a warning: the bridge
// waits for it and migrates then (runBridge), and the edges do not need it.
// It reports whether the schema was applied.
func checkPostgres(ctx context.Context, pool *pgxpool.Pool, rawURL string, log *slog.Logger) (bool, error) {
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
	case permanentPostgresError(err):
		return false, postgresError(err, rawURL)
	}
	log.Warn("PostgreSQL is not reachable at start: serving the edges; the bridge commits once it answers",
		"postgres", redactURL(rawURL), "err", err)
	return false, nil
}

// permanentPostgresError reports whether err is PostgreSQL refusing us for a
// reason waiting will not change: an unknown database (3D000), failed
// authentication or authorization (class 28), or a missing privilege (42501).
func permanentPostgresError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return pe.Code == "3D000" || pe.Code == "42501" || strings.HasPrefix(pe.Code, "28")
}

// postgresError says what to do about a failed first contact.
func postgresError(err error, rawURL string) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "3D000" {
		pc, _ := pgconn.ParseConfig(rawURL)
		if pc != nil {
			return fmt.Errorf("database %q does not exist on %s: create it with `createdb -h %s -p %d %s` (make demo does), or point --postgres / FIREHOSE_POSTGRES_URL at another",
				pc.Database, redactURL(rawURL), pc.Host, pc.Port, pc.Database)
		}
	}
	return fmt.Errorf("cannot reach PostgreSQL at %s: %v; start it (scripts/services.sh ensure) or point --postgres / FIREHOSE_POSTGRES_URL at it", redactURL(rawURL), err)
}

// redisLogger sends go-redis's own messages (dial retries and the like) to
// slog at debug level: the errors that matter reach us as return values.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...), "component", "go-redis")
}

// checkRedisPersistence says at start how Redis can lose acknowledged
// readings (a warning each), and refuses a Redis that may evict keys unless
// the operator accepted it with --redis-allow-eviction. A Redis that refuses
// INFO is refused too: firehose cannot tell what an acknowledgement is worth.
// On a cluster every primary is asked, and its warnings name it.
func checkRedisPersistence(ctx context.Context, rdb redis.UniversalClient, allowEviction bool, minReplicas int, log *slog.Logger) error {
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

// checkDedupSupport refuses a Redis that cannot run --dedup's script: it
// asks every primary for SMISMEMBER (Redis 6.2), which the script calls.
func checkDedupSupport(ctx context.Context, rdb redis.UniversalClient) error {
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

// checkNodePersistence is checkRedisPersistence for one primary; addr, when
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
