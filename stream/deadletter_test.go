package stream_test

import (
	"context"
	"testing"
	"time"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// TestIntegrationProducerDeadLetter: a dead letter is one entry of its
// device's shard (CodecDeadLetter, count 1), written in the round trips of
// readings, and counted in the backlog the high-water mark is checked
// against.
func TestIntegrationProducerDeadLetter(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 2}
	p, reg, _ := startProducer(t, rdb, streams, stream.ProducerConfig{HighWater: 2, BacklogInterval: 10 * time.Millisecond})
	ctx := context.Background()
	d := ingest.DeadLetter{Source: ingest.SourceMQTT, Kind: ingest.KindTopic, Topic: "devices/dl/readings", ClientID: "c",
		Device: "dl", Reason: "invalid", ReceivedAt: time.Now().UTC(), Payload: []byte("twenty")}
	if err := p.AddDeadLetter(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(ctx, []ingest.Reading{newReading("dl", 1)}); err != nil {
		t.Fatal(err)
	}
	key := streams.Key(streams.Shard("dl"))
	msgs, err := rdb.XRange(ctx, key, "-", "+").Result()
	if err != nil || len(msgs) != 2 {
		t.Fatalf("%s: %d entries, %v; want the dead letter and the reading", key, len(msgs), err)
	}
	m := msgs[0].Values
	if m[ingest.FieldVersion] != ingest.CodecDeadLetter || m[ingest.FieldCount] != "1" {
		t.Fatalf("dead letter entry %v", m)
	}
	got, err := ingest.DecodeDeadLetter(m[ingest.FieldBody].(string))
	if err != nil || string(got.Payload) != "twenty" || got.Topic != d.Topic || got.Device != "dl" {
		t.Fatalf("dead letter %+v, %v", got, err)
	}
	if n, err := rdb.HGet(ctx, streams.ShardMetaKey(streams.Shard("dl")), stream.MetaBacklog).Int64(); err != nil || n != 2 {
		t.Fatalf("backlog counter %d, %v; want 2 (the dead letter and the reading)", n, err)
	}
	eventually(t, 10*time.Second, func() error { return backlogIs(p, 2) })
	// The estimate between measurements may count a write twice (once in
	// XLEN, once as written since): it settles at the next measurement.
	eventually(t, 10*time.Second, p.Ready)
	// One more over the mark of 2: refused, like a reading.
	if err := p.AddDeadLetter(ctx, d); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		return wantErr("dead letter over the high-water mark", p.AddDeadLetter(ctx, d), ingest.ErrBacklogFull)
	})
	if v, _, _ := metricValue(t, reg, "firehose_producer_dead_letters_total"); v != 2 {
		t.Errorf("firehose_producer_dead_letters_total = %v, want 2", v)
	}
}
