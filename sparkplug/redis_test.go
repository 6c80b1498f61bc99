package sparkplug_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"firehose/internal/testenv"
	"firehose/sparkplug"
	"firehose/stream"
)

func init() {
	sparkplug.TestRedis = func(t *testing.T) (redis.UniversalClient, string) { return testenv.Redis(t) }
	sparkplug.TestRedisCluster = func(t *testing.T) redis.UniversalClient {
		return testenv.StartRedisCluster(t, 3, 0).Client(t)
	}
	sparkplug.NewRedisStore = func(rdb redis.UniversalClient, prefix string) sparkplug.RedisStore {
		return stream.NewSparkplugStore(rdb, prefix)
	}
}
