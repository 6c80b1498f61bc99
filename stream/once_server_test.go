//go:build unix

package stream_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/stream"
)

// TestIntegrationOnceUnavailableShard: a once-call with a reading for a
// shard whose Redis is down is refused like Add (ErrUnavailable), and a
// resend with the same key once Redis is back stores it once.
func TestIntegrationOnceUnavailableShard(t *testing.T) {
	t.Parallel()
	srv := startRedisServer(t)
	rdb := srv.client(redis.Options{})
	streams := stream.Streams{Prefix: "ou", Count: 2}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{BacklogInterval: 20 * time.Millisecond, Timeout: time.Second})
	o := stream.Once{Session: "s", PacketID: 2, Epoch: 3}
	rs := []ingest.Reading{newReading("ou-1", 1)}
	srv.kill()
	eventually(t, 10*time.Second, func() error {
		_, err := p.AddOnce(t.Context(), rs, o)
		return wantErr("AddOnce with Redis down", err, ingest.ErrUnavailable)
	})
	srv.restart()
	eventually(t, 20*time.Second, func() error {
		_, err := p.AddOnce(t.Context(), rs, o)
		return err
	})
	if again := addOnce(t, p, rs, o); !again {
		t.Fatal("the resend after Redis came back: stored, want redelivered")
	}
	if n := len(storedReadings(t, rdb, streams)); n != 1 {
		t.Fatalf("%d readings stored, want 1", n)
	}
}
