package sparkplug

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// The Redis store (stream.SparkplugStore) runs the scenarios of this
// package's tests, which can import neither stream nor testenv (both import
// stream, which imports sparkplug): redis_test.go, in package sparkplug_test,
// sets these.
var (
	// TestRedis returns a client of the test Redis and a key prefix of the
	// test's own.
	TestRedis func(t *testing.T) (redis.UniversalClient, string)
	// TestRedisCluster returns a client of a Redis Cluster of three primaries
	// started for the test.
	TestRedisCluster func(t *testing.T) redis.UniversalClient
	// NewRedisStore returns a store keeping its keys in rdb under prefix.
	NewRedisStore func(rdb redis.UniversalClient, prefix string) RedisStore
)

// RedisStore is a Store in Redis, as the tests look into it.
type RedisStore interface {
	Store
	// Key is the Redis key of node's hash.
	Key(node string) string
	// BytesKey is the Redis key of the total size of the state.
	BytesKey() string
}

// redisState is a RedisStore with what the tests look into Redis with.
type redisState struct {
	RedisStore
	rdb    redis.UniversalClient
	prefix string
}

func newRedisState(rdb redis.UniversalClient, prefix string) *redisState {
	return &redisState{RedisStore: NewRedisStore(rdb, prefix), rdb: rdb, prefix: prefix}
}
