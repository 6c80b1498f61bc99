package stream

import (
	"flag"
	"fmt"
	"time"

	"firehose/ingest"
)

// RegisterFlags registers the producer's tuning flags on fs.
func (c *ProducerConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.Pipelines, "producer-pipelines", 1, "XADD round trips in flight at once; callers arriving meanwhile share the next one (group commit)")
	fs.IntVar(&c.MaxBatch, "producer-max-batch", 1024, "most readings in one pipelined XADD round trip")
	fs.StringVar(&c.Codec, "stream-codec", ingest.CodecBatch, "stream entry encoding the edges write: 2, one entry per shard and round trip holding its readings;\n1, one entry per reading (for a rolling upgrade: bridges read both; upgrade them first, then switch edges to 2)")
	fs.IntVar(&c.QueueSize, "producer-queue", 65536, "most readings waiting for Redis before edges answer busy (503 / no ack)")
	fs.Int64Var(&c.HighWater, "high-water", 1_000_000, "backlog (readings in all streams not yet committed to PostgreSQL) above which edges refuse new readings;\n-1 disables; see BENCHMARKS.md for Redis memory per backlogged reading")
	fs.DurationVar(&c.BacklogInterval, "backlog-interval", 250*time.Millisecond, "how often the backlog is measured")
	fs.IntVar(&c.MinReplicas, "redis-min-replicas", 0, "replicas that must confirm a write (Redis WAIT, once per round trip) before readings are acknowledged;\n0: the primary's reply is the acknowledgement, and a failover loses what the replicas had not received")
	fs.DurationVar(&c.ReplicaTimeout, "redis-replica-timeout", time.Second, "how long a round trip waits for --redis-min-replicas replicas; past it its readings are refused (503 / 0x97), never acknowledged")
	fs.StringVar(&c.Dedup, "dedup", DedupOff, "store a resent reading once: off; id (readings with a message id: Idempotency-Key, MQTT 5 user property msg_id,\na JSON field msg_id, a rule's id); natural (the series: device, metric, a rule's tags, the seed's id; and the device's time).\nShared by every edge of a deployment: recorded by the first, another is refused at start")
	fs.DurationVar(&c.DedupWindow, "dedup-window", DefaultDedupWindow, "how long --dedup remembers a reading's key, at least (at most twice that): a resend later than that is stored again;\nshared by every edge of a deployment like --dedup")
}

// MaxReplicaTimeout is the longest --redis-replica-timeout: WAIT must answer
// well within the Redis client's read timeout (3s, cmd/firehose).
const MaxReplicaTimeout = 2 * time.Second

// Validate checks the configuration for values that cannot work.
func (c ProducerConfig) Validate() error {
	switch {
	case c.Pipelines < 0 || c.Pipelines > 256:
		return fmt.Errorf("--producer-pipelines %d: want 1 to 256", c.Pipelines)
	case c.MaxBatch < 0:
		return fmt.Errorf("--producer-max-batch %d: want a positive number", c.MaxBatch)
	case c.QueueSize < 0:
		return fmt.Errorf("--producer-queue %d: want a positive number", c.QueueSize)
	case c.HighWater < -1:
		return fmt.Errorf("--high-water %d: want a positive number, or -1 to disable", c.HighWater)
	case c.MinReplicas < 0:
		return fmt.Errorf("--redis-min-replicas %d: want 0 or more", c.MinReplicas)
	case c.MinReplicas > 0 && (c.ReplicaTimeout < time.Millisecond || c.ReplicaTimeout > MaxReplicaTimeout):
		// WAIT blocks the connection: past the client's read timeout the
		// reply would count as a lost connection.
		return fmt.Errorf("--redis-replica-timeout %s: want 1ms to %s", c.ReplicaTimeout, MaxReplicaTimeout)
	case c.Codec != "" && c.Codec != ingest.CodecVersion && c.Codec != ingest.CodecBatch:
		return fmt.Errorf("--stream-codec %q: want %s (batch entries) or %s (one reading per entry)", c.Codec, ingest.CodecBatch, ingest.CodecVersion)
	case c.Dedup != "" && c.Dedup != DedupOff && c.Dedup != DedupID && c.Dedup != DedupNatural:
		return fmt.Errorf("--dedup %q: want %s, %s or %s", c.Dedup, DedupOff, DedupID, DedupNatural)
	case c.Dedup != "" && c.Dedup != DedupOff && c.Codec == ingest.CodecVersion:
		return fmt.Errorf("--dedup %s needs --stream-codec %s: it writes batch entries", c.Dedup, ingest.CodecBatch)
	case c.DedupWindow < 0 || (c.DedupWindow > 0 && c.DedupWindow < time.Second) || c.DedupWindow > 7*24*time.Hour:
		return fmt.Errorf("--dedup-window %s: want 1s to 168h", c.DedupWindow)
	}
	return nil
}

// RegisterFlags registers the deployment's stream layout on fs.
func (s *Streams) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&s.Prefix, "redis-prefix", "firehose", "prefix of every Redis key of the deployment (streams are <prefix>:readings:{N})")
	fs.IntVar(&s.Count, "shards", 4, "number of shard streams; fixed when the deployment is first started")
}

// Validate checks the stream layout.
func (s Streams) Validate() error {
	if s.Count < 1 || s.Count > 1024 {
		return fmt.Errorf("--shards %d: want 1 to 1024", s.Count)
	}
	if s.Prefix == "" {
		return fmt.Errorf("--redis-prefix must not be empty")
	}
	return nil
}
