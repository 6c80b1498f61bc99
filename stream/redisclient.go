package stream

import (
	"fmt"

	"github.com/redis/go-redis/v9"
)

// checkNoRetries refuses a Redis client that resends commands after a failed
// round trip. go-redis retries a whole pipeline after a read error or a
// timeout (MaxRetries, 3 unless set to -1): Redis may already have stored the
// XADDs of the first attempt, so the retry would store every entry twice
// while each caller is acknowledged once. Exactly-once must not depend on how
// the caller built its client, so the producer checks it itself.
func checkNoRetries(rdb redis.UniversalClient) error {
	var retries int
	switch c := rdb.(type) {
	case *redis.Client: // single node, and Sentinel's failover client
		retries = c.Options().MaxRetries
	case *redis.ClusterClient:
		retries = c.Options().MaxRetries
	case *redis.Ring:
		retries = c.Options().MaxRetries
	default:
		return fmt.Errorf("redis client %T: cannot tell whether it retries failed commands; use *redis.Client or *redis.ClusterClient", rdb)
	}
	if retries > 0 {
		return fmt.Errorf("redis client retries failed commands (MaxRetries %d): a retried pipeline can store a reading twice; "+
			"build the client with MaxRetries -1 (or max_retries=-1 in the URL)", retries)
	}
	return nil
}
