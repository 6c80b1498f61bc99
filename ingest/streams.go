package ingest

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Streams names a deployment's shard streams and routes devices to them.
//
// Shard = FNV-1a(device id) mod Count, so one device's readings stay in one
// stream, in order. Keys look like "firehose:readings:{3}": the braces are a
// Redis Cluster hash tag, so shards spread over cluster nodes by number.
// Count is fixed when a deployment is created (see Check): changing it would
// send a device's readings to another stream and lose their order.
type Streams struct {
	// Prefix starts every Redis key of the deployment. Default "firehose".
	Prefix string
	// Count is the number of shard streams. Default 4.
	Count int
}

func (s Streams) prefix() string {
	if s.Prefix == "" {
		return "firehose"
	}
	return s.Prefix
}

func (s Streams) count() int {
	if s.Count <= 0 {
		return 4
	}
	return s.Count
}

// Len is the number of shards, defaults applied.
func (s Streams) Len() int { return s.count() }

// Key is the stream key of shard, 0 <= shard < Len().
func (s Streams) Key(shard int) string {
	return s.prefix() + ":readings:{" + strconv.Itoa(shard) + "}"
}

// Keys lists every shard's stream key in shard order.
func (s Streams) Keys() []string {
	keys := make([]string, s.count())
	for i := range keys {
		keys[i] = s.Key(i)
	}
	return keys
}

// Shard routes a device to its shard.
func (s Streams) Shard(deviceID string) int {
	h := fnv.New32a()
	h.Write([]byte(deviceID))
	return int(h.Sum32() % uint32(s.count()))
}

// MetaKey is the hash holding the deployment's fixed settings.
func (s Streams) MetaKey() string { return s.prefix() + ":meta" }

// ErrShardMismatch means the deployment was created with another shard count.
var ErrShardMismatch = errors.New("shard count differs from the deployment's")

// Check records the shard count in Redis the first time a deployment starts
// and refuses, with ErrShardMismatch, to run with a different one afterwards.
func (s Streams) Check(ctx context.Context, rdb redis.UniversalClient) error {
	want := strconv.Itoa(s.count())
	if err := rdb.HSetNX(ctx, s.MetaKey(), "shards", want).Err(); err != nil {
		return fmt.Errorf("record shard count in %s: %w", s.MetaKey(), err)
	}
	got, err := rdb.HGet(ctx, s.MetaKey(), "shards").Result()
	if err != nil {
		return fmt.Errorf("read shard count from %s: %w", s.MetaKey(), err)
	}
	if got != want {
		return fmt.Errorf("%w: deployment %q was created with %s shards and this process was started with %s; start it with --shards %s, or use another --redis-prefix for a new deployment",
			ErrShardMismatch, s.prefix(), got, want, got)
	}
	return nil
}

// StreamID is a Redis stream entry id, "<ms>-<seq>".
type StreamID struct {
	MS, Seq uint64
}

// ParseStreamID parses "<ms>-<seq>" (or "<ms>", meaning sequence 0).
func ParseStreamID(s string) (StreamID, error) {
	ms, seq, found := strings.Cut(s, "-")
	var id StreamID
	var err error
	if id.MS, err = strconv.ParseUint(ms, 10, 64); err != nil {
		return StreamID{}, fmt.Errorf("parse stream id %q: %w", s, err)
	}
	if found {
		if id.Seq, err = strconv.ParseUint(seq, 10, 64); err != nil {
			return StreamID{}, fmt.Errorf("parse stream id %q: %w", s, err)
		}
	}
	return id, nil
}

// String formats the id as Redis does.
func (id StreamID) String() string {
	return strconv.FormatUint(id.MS, 10) + "-" + strconv.FormatUint(id.Seq, 10)
}

// Less orders ids as Redis does.
func (id StreamID) Less(o StreamID) bool {
	return id.MS < o.MS || (id.MS == o.MS && id.Seq < o.Seq)
}

// Next is the smallest id greater than id.
func (id StreamID) Next() StreamID {
	if id.Seq == ^uint64(0) {
		return StreamID{MS: id.MS + 1}
	}
	return StreamID{MS: id.MS, Seq: id.Seq + 1}
}
