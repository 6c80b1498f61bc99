package connect

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedactURL hides a password in a connection URL for logs and errors.
func RedactURL(s string) string {
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
	ClusterAuto = "auto"
	ClusterYes  = "yes"
	ClusterNo   = "no"
)

// RedisOptions says how to reach Redis: the flags --redis,
// --redis-sentinel-master and --redis-cluster, and the pool size the
// caller needs (per node on a cluster).
type RedisOptions struct {
	URL            string
	SentinelMaster string
	Cluster        string // ClusterAuto, ClusterYes or ClusterNo
	PoolSize       int
}

// NewRedis parses the URL and builds its client without connecting:
//   - with SentinelMaster, the sentinels' URL (go-redis's failover form: the
//     host and any addr= parameters are sentinels; user and password are the
//     master's). Through Sentinel the client asks the sentinels for the
//     master at every new connection: after a failover the old master's
//     connections fail (their callers are refused, never acknowledged) and
//     new ones reach the promoted replica;
//   - with Cluster "yes", or "auto" and addr= parameters, a Redis Cluster
//     client: the host and any addr= parameters are seed nodes, from which
//     the client learns every node and slot (go-redis's cluster URL form);
//   - otherwise a single node's client. Redis turns it into a cluster
//     client when Cluster is "auto" and the server says it is a cluster node.
func NewRedis(o RedisOptions) (redis.UniversalClient, error) {
	rawURL, sentinelMaster, cluster, poolSize := o.URL, o.SentinelMaster, o.Cluster, o.PoolSize
	switch cluster {
	case ClusterAuto, ClusterYes, ClusterNo:
	default:
		return nil, fmt.Errorf("--redis-cluster %q: want auto, yes or no", cluster)
	}
	if sentinelMaster != "" {
		if cluster == ClusterYes {
			return nil, fmt.Errorf("--redis-cluster yes and --redis-sentinel-master %q: a Redis Cluster fails over by itself, without Sentinel; give one", sentinelMaster)
		}
		fo, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("--redis %q is not a Redis Sentinel URL (redis://sentinel1:26379/0?addr=sentinel2:26379): %v", RedactURL(rawURL), err)
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
	if cluster == ClusterYes || (cluster == ClusterAuto && hasAddrParams(rawURL)) {
		return newClusterClient(rawURL, poolSize)
	}
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--redis %q is not a Redis URL: %v", RedactURL(rawURL), err)
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
		return nil, fmt.Errorf("--redis %q is not a Redis Cluster URL (redis://node1:7000?addr=node2:7001&addr=node3:7002): %v", RedactURL(rawURL), err)
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

// Redis opens a client (see NewRedis) and checks that Redis answers. With
// Cluster "auto" and a single node's URL it asks the node (INFO cluster)
// and, if it is a cluster node, returns a cluster client seeded with it
// instead.
func Redis(ctx context.Context, o RedisOptions) (redis.UniversalClient, error) {
	rdb, err := NewRedis(o)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %v; start it (scripts/services.sh ensure) or point --redis / FIREHOSE_REDIS_URL at it", RedactURL(o.URL), err)
	}
	single, ok := rdb.(*redis.Client)
	if !ok || o.SentinelMaster != "" || o.Cluster != ClusterAuto {
		return rdb, nil
	}
	info, err := single.Info(pctx, "cluster").Result()
	if err != nil || !strings.Contains(info, "cluster_enabled:1") {
		return rdb, nil // INFO refused: taken for a single node (--redis-cluster yes says otherwise)
	}
	rdb.Close()
	cc, err := newClusterClient(o.URL, o.PoolSize)
	if err != nil {
		return nil, err
	}
	if err := cc.Ping(pctx).Err(); err != nil {
		cc.Close()
		return nil, fmt.Errorf("cannot reach the Redis Cluster of %s: %v", RedactURL(o.URL), err)
	}
	return cc, nil
}

// RedisLogger sends go-redis's own messages (dial retries and the like) to
// slog at debug level: the errors that matter reach us as return values.
// Install it with redis.SetLogger(connect.RedisLogger{Log: logger}).
type RedisLogger struct{ Log *slog.Logger }

// Printf logs one message of go-redis.
func (l RedisLogger) Printf(_ context.Context, format string, v ...any) {
	l.Log.Debug(fmt.Sprintf(format, v...), "component", "go-redis")
}
