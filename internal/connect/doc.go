// Package connect opens firehose's connections to Redis and PostgreSQL from
// their URLs, the same way for every command: the Redis client's settings
// (single node, Redis Cluster or Sentinel), waiting for a Redis that answers
// but does not serve yet (a Redis Cluster forming), and what to tell the
// operator when a service cannot be reached.
//
//	rdb, err := connect.Redis(ctx, connect.RedisOptions{URL: "redis://localhost:6379/0", Cluster: connect.ClusterAuto, PoolSize: 4})
//	pg, err := connect.Postgres(ctx, "postgres://localhost:5432/firehose")
package connect
