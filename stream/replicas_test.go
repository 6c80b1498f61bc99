package stream_test

import (
	"context"
	"errors"
	"fmt"
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

// TestIntegrationOnceMinReplicas: with MinReplicas 1 a QoS 2 message that
// the replica did not confirm is not acknowledged, nor is its redelivery
// while the replica still lacks it, even through another connection (another
// producer) that wrote nothing since. (WAIT promises only the connection's
// own writes; onceScript rewrites a redelivery's record so that it covers the
// first write by that promise. Redis 7.0 happens to cover it without.) A
// Release the replica did not confirm fails. Once the replica is back, the
// redelivery is acknowledged as such and nothing is stored twice.
func TestIntegrationOnceMinReplicas(t *testing.T) {
	t.Parallel()
	primary := testenv.StartRedisServer(t)
	replica := testenv.StartRedisServer(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port))
	client := func() *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: primary.Addr(), MaxRetries: -1})
		t.Cleanup(func() { c.Close() })
		return c
	}
	rdb, rdb2 := client(), client()
	rrdb := redis.NewClient(&redis.Options{Addr: replica.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rrdb.Close() })
	ctx := context.Background()
	eventually(t, 10*time.Second, func() error {
		if info, err := rrdb.Info(ctx, "replication").Result(); err != nil || !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica not linked yet: %v", err)
		}
		return nil
	})
	streams := stream.Streams{Prefix: "oncerep", Count: 2}
	cfg := stream.ProducerConfig{MinReplicas: 1, ReplicaTimeout: 300 * time.Millisecond}
	p, _, _ := startProducer(t, rdb, streams, cfg)
	p2, _, _ := startProducer(t, rdb2, streams, cfg)
	s := p.SessionState("sub")
	epochs, err := s.Epochs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o := stream.Once{Session: s.Session(), PacketID: 4, Epoch: epochs[4]}
	msg := []ingest.Reading{newReading("orep", 1)}
	// p2's connection answers once, while the replica is up.
	if _, err := p2.AddOnce(ctx, []ingest.Reading{newReading("orep-warm", 1)}, stream.Once{Session: "warm", PacketID: 1, Epoch: 1}); err != nil {
		t.Fatal(err)
	}

	replica.Pause()
	if _, err := p.AddOnce(ctx, msg, o); !errors.Is(err, ingest.ErrUnavailable) {
		t.Fatalf("AddOnce with the replica stopped: %v, want ErrUnavailable", err)
	}
	if _, err := p2.AddOnce(ctx, msg, o); !errors.Is(err, ingest.ErrUnavailable) {
		t.Fatalf("its redelivery through another connection, the replica still stopped: %v, want ErrUnavailable", err)
	}
	if _, err := s.Release(ctx, 4); !errors.Is(err, ingest.ErrUnavailable) {
		t.Fatalf("Release with the replica stopped: %v, want ErrUnavailable", err)
	}

	replica.Resume()
	eventually(t, 10*time.Second, func() error {
		redelivered, err := p2.AddOnce(ctx, msg, o)
		if err == nil && !redelivered {
			t.Fatal("the redelivery once the replica is back: stored again")
		}
		return err
	})
	if n := len(storedReadings(t, rdb, streams)); n != 2 {
		t.Fatalf("%d readings stored, want 2 (the warm-up and the message)", n)
	}
}
