package stream_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// TestIntegrationProducerMinReplicas runs a primary with one replica of its
// own: with MinReplicas 1 a call is answered only once the replica has the
// entry; with the replica stopped, a call is refused ErrUnavailable after the
// replica timeout, never acknowledged; resumed, calls succeed again.
func TestIntegrationProducerMinReplicas(t *testing.T) {
	t.Parallel()
	primary := testenv.StartRedisServer(t)
	replica := testenv.StartRedisServer(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port))
	rdb := redis.NewClient(&redis.Options{Addr: primary.Addr(), MaxRetries: -1})
	rrdb := redis.NewClient(&redis.Options{Addr: replica.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close(); rrdb.Close() })
	ctx := context.Background()
	eventually(t, 10*time.Second, func() error {
		info, err := rrdb.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return errors.New("replica not linked yet")
		}
		return nil
	})

	streams := stream.Streams{Prefix: "replicas", Count: 2}
	p, reg, _ := startProducer(t, rdb, streams, stream.ProducerConfig{MinReplicas: 1, ReplicaTimeout: 300 * time.Millisecond})

	// Confirmed: the replica holds every entry the moment Add returns.
	for i := range 20 {
		if err := p.Add(ctx, []ingest.Reading{newReading("rep-"+strconv.Itoa(i%3), float64(i))}); err != nil {
			t.Fatalf("Add %d with the replica up: %v", i, err)
		}
	}
	var onReplica int64
	for _, k := range streams.Keys() {
		n, err := rrdb.XLen(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		onReplica += n
	}
	if onReplica == 0 {
		t.Fatal("the replica holds no entry after 20 confirmed calls")
	}

	// Replica stopped: refused after the timeout, not acknowledged.
	replica.Pause()
	start := time.Now()
	err := p.Add(ctx, []ingest.Reading{newReading("rep-0", 100)})
	if !errors.Is(err, ingest.ErrUnavailable) {
		t.Fatalf("Add with the replica stopped: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("refused after %s, want about the 300ms replica timeout", d)
	}
	if v, _, _ := metricValue(t, reg, "firehose_producer_replica_timeouts_total"); v < 1 {
		t.Errorf("firehose_producer_replica_timeouts_total = %v, want >= 1", v)
	}
	// Not taken for Redis being down: the next call is tried, not refused
	// at once.
	if err := p.Ready(); err != nil {
		t.Errorf("Ready after a replica timeout: %v, want nil (the primary answers)", err)
	}

	replica.Resume()
	eventually(t, 10*time.Second, func() error {
		return p.Add(ctx, []ingest.Reading{newReading("rep-1", 101)})
	})
}
