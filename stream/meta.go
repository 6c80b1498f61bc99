package stream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Each shard has a metadata hash beside its stream, <prefix>:meta:{tag}, in the
// stream's hash slot (same hash tag), so that on Redis Cluster it lives and
// dies with the node that holds the stream, and a script may touch both.
// Its fields:
const (
	// MetaGeneration is a random token created (HSETNX) by whichever role
	// first touches the shard after Redis started without it: the producer
	// before it writes (EnsureGeneration), the bridge at the start of each
	// session. Redis keeps it as long as it keeps the stream: a restart from
	// an RDB snapshot or an AOF, or a promoted replica, brings back the same
	// token with whatever entries it kept, because the token was written
	// before any of them. A Redis that lost everything has no token, and the
	// next one differs: that is how the bridge tells "the stream lost its
	// tail" (keep the checkpoint) from "the stream is new" (read it from the
	// start).
	MetaGeneration = "generation"
	// MetaDeployment is the id of the PostgreSQL database the shard's
	// entries are committed to (firehose_deployment.id), set by the bridge.
	// A bridge of another database refuses the shard instead of committing
	// or trimming its entries.
	MetaDeployment = "deployment"
	// MetaBacklog counts the readings in the shard's stream not yet
	// trimmed: the producer adds each round trip's readings (HINCRBY, in
	// the same pipeline as their XADD), the bridge's trim takes off those of
	// the entries it trims (the FieldCount of each, in the same script as
	// the XTRIM) and sets it to 0 when the stream is empty, which mends any
	// drift. With batch entries the stream's length counts entries, not
	// readings: this counter is what the high-water mark compares with
	// (entries without a count, version 1, count by the stream's length:
	// the producer takes the larger of the two).
	MetaBacklog = "backlog"
)

// ShardMetaKey is the metadata hash of shard, 0 <= shard < Len(), e.g.
// "firehose:meta:{firehose:3.2}" beside "firehose:readings:{firehose:3.2}".
func (s Streams) ShardMetaKey(shard int) string {
	return s.prefix() + ":meta:{" + s.tag(shard) + "}"
}

// ShardMeta is what a shard's metadata hash holds; "" for a missing field.
type ShardMeta struct {
	Generation string
	Deployment string
}

// NewGeneration returns a fresh random generation token (128 bits, hex).
func NewGeneration() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// EnsureGeneration gives every shard a generation token if it has none, in
// one round trip. The producer calls it before its first write and again
// after each reconnection to Redis (after any failed round trip), so that no
// stream entry is ever stored in a Redis that has no generation: were an
// entry stored first, a snapshot could catch it without the token, and the
// bridge would take the restored stream for a new one and write it again.
func EnsureGeneration(ctx context.Context, rdb redis.UniversalClient, streams Streams) error {
	cmds, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for shard := range streams.count() {
			QueueEnsureGeneration(pipe, streams, shard)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create generation tokens in %s: %w", streams.ShardMetaKey(0), err)
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return fmt.Errorf("create generation tokens in %s: %w", streams.ShardMetaKey(0), err)
		}
	}
	return nil
}

// QueueEnsureGeneration queues, on pipe, the HSETNX that gives shard a
// generation token if it has none. A producer may put it ahead of each
// round trip's XADDs to a shard (one small command per shard and round trip,
// no extra round trip): then even a Redis wiped and restarted between two
// round trips gets its token before the first new entry.
func QueueEnsureGeneration(pipe redis.Pipeliner, streams Streams, shard int) *redis.BoolCmd {
	return pipe.HSetNX(context.Background(), streams.ShardMetaKey(shard), MetaGeneration, NewGeneration())
}

// ClaimShardMeta creates shard's generation token if it has none and, when
// deployment is not "", records deployment as the shard's deployment if it
// has none; then it returns what the hash holds, in one atomic round trip.
func ClaimShardMeta(ctx context.Context, rdb redis.UniversalClient, streams Streams, shard int, deployment string) (ShardMeta, error) {
	key := streams.ShardMetaKey(shard)
	var get *redis.SliceCmd
	_, err := rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.HSetNX(ctx, key, MetaGeneration, NewGeneration())
		if deployment != "" {
			pipe.HSetNX(ctx, key, MetaDeployment, deployment)
		}
		get = pipe.HMGet(ctx, key, MetaGeneration, MetaDeployment)
		return nil
	})
	if err != nil {
		return ShardMeta{}, fmt.Errorf("claim %s: %w", key, err)
	}
	m, err := shardMetaOf(get)
	if err != nil {
		return ShardMeta{}, fmt.Errorf("claim %s: %w", key, err)
	}
	return m, nil
}

// ReadShardMeta reads shard's metadata hash.
func ReadShardMeta(ctx context.Context, rdb redis.UniversalClient, streams Streams, shard int) (ShardMeta, error) {
	key := streams.ShardMetaKey(shard)
	m, err := shardMetaOf(rdb.HMGet(ctx, key, MetaGeneration, MetaDeployment))
	if err != nil {
		return ShardMeta{}, fmt.Errorf("read %s: %w", key, err)
	}
	return m, nil
}

func shardMetaOf(cmd *redis.SliceCmd) (ShardMeta, error) {
	vals, err := cmd.Result()
	if err != nil {
		return ShardMeta{}, err
	}
	if len(vals) != 2 {
		return ShardMeta{}, errors.New("HMGET answered with a wrong number of fields")
	}
	var m ShardMeta
	m.Generation, _ = vals[0].(string) // nil when absent
	m.Deployment, _ = vals[1].(string)
	return m, nil
}
