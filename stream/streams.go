package stream

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
// stream, in order. Each shard's keys carry one Redis Cluster hash tag, so a
// shard's stream and metadata live on one cluster node (see keys.go for the
// layouts). Count is fixed when a deployment is created (see Check): changing
// it would send a device's readings to another stream and lose their order.
type Streams struct {
	// Prefix starts every Redis key of the deployment. Default "firehose".
	Prefix string
	// Count is the number of shard streams. Default 4.
	Count int
	// Layout is how shard keys are named: LayoutSpread (the default) or,
	// for deployments created before it, LayoutLegacy. Check reads it from
	// Redis; it is never a flag.
	Layout int
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

// Key is the stream key of shard, 0 <= shard < Len(), e.g.
// "firehose:readings:{firehose:3.2}" (see keys.go).
func (s Streams) Key(shard int) string {
	return s.prefix() + ":readings:{" + s.tag(shard) + "}"
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

// RecordedShards reads the shard count the deployment recorded when it was
// first started (see Check); ok is false when Redis holds no deployment
// under s's prefix.
func (s Streams) RecordedShards(ctx context.Context, rdb redis.UniversalClient) (n string, ok bool, err error) {
	n, err = rdb.HGet(ctx, s.MetaKey(), metaShards).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("read the shard count from %s: %w", s.MetaKey(), err)
	}
	return n, true, nil
}

// ErrShardMismatch means the deployment was created with another shard count.
var ErrShardMismatch = errors.New("shard count differs from the deployment's")

// Check records the shard count and key layout in Redis the first time a
// deployment starts, and afterwards refuses, with ErrShardMismatch, to run
// with a different count. It sets s.Layout to the deployment's (see Load).
func (s *Streams) Check(ctx context.Context, rdb redis.UniversalClient) error {
	if err := s.Load(ctx, rdb); err != nil {
		return err
	}
	want := strconv.Itoa(s.count())
	if _, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.HSetNX(ctx, s.MetaKey(), metaShards, want)
		pipe.HSetNX(ctx, s.MetaKey(), metaLayout, strconv.Itoa(s.Layout))
		return nil
	}); err != nil {
		return fmt.Errorf("record shard count and key layout in %s: %w", s.MetaKey(), err)
	}
	vals, err := rdb.HMGet(ctx, s.MetaKey(), metaShards, metaLayout).Result()
	if err != nil {
		return fmt.Errorf("read shard count and key layout from %s: %w", s.MetaKey(), err)
	}
	got, _ := vals[0].(string)
	if got != want {
		return fmt.Errorf("%w: deployment %q was created with %s shards and this process was started with %s; start it with --shards %s, or use another --redis-prefix for a new deployment",
			ErrShardMismatch, s.prefix(), got, want, got)
	}
	layout, _ := vals[1].(string)
	return s.setLayout(layout)
}

// Load sets s.Layout to the deployment's key layout without writing
// anything: the one recorded in its metadata (MetaKey); for a deployment
// started by a build before LayoutSpread (metadata with a shard count and no
// layout, or legacy streams and no metadata) LayoutLegacy, so that no stream,
// nor the checkpoint named after it, changes its name under it; for a new
// deployment LayoutSpread.
func (s *Streams) Load(ctx context.Context, rdb redis.UniversalClient) error {
	meta, err := rdb.HGetAll(ctx, s.MetaKey()).Result()
	if err != nil {
		return fmt.Errorf("read deployment settings from %s: %w", s.MetaKey(), err)
	}
	if l := meta[metaLayout]; l != "" {
		return s.setLayout(l)
	}
	s.Layout = LayoutSpread
	legacy := meta[metaShards] != ""
	if !legacy {
		if legacy, err = s.hasLegacyStreams(ctx, rdb); err != nil {
			return err
		}
	}
	if legacy {
		s.Layout = LayoutLegacy
	}
	return nil
}

func (s *Streams) setLayout(v string) error {
	switch n, _ := strconv.Atoi(v); n {
	case LayoutLegacy, LayoutSpread:
		s.Layout = n
		return nil
	}
	return fmt.Errorf("deployment %q has key layout %q in %s, which this build does not know: run a newer firehose", s.prefix(), v, s.MetaKey())
}

// hasLegacyStreams reports whether any shard stream of LayoutLegacy exists:
// a deployment that ran before its metadata hash was written.
func (s Streams) hasLegacyStreams(ctx context.Context, rdb redis.UniversalClient) (bool, error) {
	legacy := s
	legacy.Layout = LayoutLegacy
	cmds, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, k := range legacy.Keys() {
			pipe.Exists(ctx, k) // one key per command: keys of a cluster are in different slots
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("look for streams of %s's earlier key layout: %w", s.prefix(), err)
	}
	for _, c := range cmds {
		if c.(*redis.IntCmd).Val() > 0 {
			return true, nil
		}
	}
	return false, nil
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
