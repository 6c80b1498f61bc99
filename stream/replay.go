package stream

import (
	"context"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
)

// Replay is one replay entry to write (see ingest.ReplayReadings): the row
// of readings_rejected it replays and the readings that row resolved to.
type Replay struct {
	// Row is the id of the readings_rejected row.
	Row int64
	// Readings are one reading, or those one dead letter resolved to; at
	// least one.
	Readings []ingest.Reading
}

// WriteReplays writes one replay entry per replay, in one pipelined round
// trip that rdb must not retry (a retried pipeline would write entries
// twice; harmless for replays, since the bridge lands a row once, but the
// client is the producer's). Each entry goes to the shard of the first
// reading's device, and, as the producer does, no entry is stored in a
// Redis without its shard's generation token (see MetaGeneration).
//
// It returns, per replay, where Redis stored its entry, "<stream key>
// <entry id>", or "" when Redis did not confirm it, and the round trip's
// error: some entries may be stored even then, and writing them again is
// safe.
func WriteReplays(ctx context.Context, rdb redis.UniversalClient, streams Streams, replays []Replay) ([]string, error) {
	pipe := rdb.Pipeline()
	shards := map[int]bool{}
	cmds := make([]*redis.StringCmd, len(replays))
	keys := make([]string, len(replays))
	for i, rp := range replays {
		// A row's readings go in one entry: the bridge lands them with the
		// row's claim.
		shard := streams.Shard(rp.Readings[0].DeviceID)
		if !shards[shard] {
			QueueEnsureGeneration(pipe, streams, shard)
			shards[shard] = true
		}
		keys[i] = streams.Key(shard)
		cmds[i] = pipe.XAdd(ctx, &redis.XAddArgs{Stream: keys[i], Values: ingest.ReplayReadings(rp.Row, rp.Readings)})
	}
	_, err := pipe.Exec(ctx)
	out := make([]string, len(replays))
	for i, c := range cmds {
		if c.Err() == nil {
			out[i] = keys[i] + " " + c.Val()
		}
	}
	return out, err
}
