package ingest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"firehose/ingest"
	"firehose/internal/testenv"
)

func TestDeadLetterRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    ingest.DeadLetter
	}{
		{name: "empty", d: ingest.DeadLetter{ReceivedAt: time.Unix(0, 0).UTC(), Payload: []byte{}}},
		{name: "sparkplug", d: ingest.DeadLetter{Source: ingest.SourceMQTT, Kind: ingest.KindSparkplug, Topic: "spBv1.0/g/NDATA/e",
			ClientID: "e", Username: "e", Device: "g/e", Reason: "not born", ReceivedAt: time.Now().UTC(), Payload: []byte{0, 1, 0xff, '\n'}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ingest.DecodeDeadLetter(string(ingest.AppendDeadLetter(nil, &tc.d)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Payload, tc.d.Payload) || !got.ReceivedAt.Equal(tc.d.ReceivedAt) {
				t.Fatalf("got %+v, want %+v", got, tc.d)
			}
			got.Payload, got.ReceivedAt = tc.d.Payload, tc.d.ReceivedAt
			if fmt.Sprint(got) != fmt.Sprint(tc.d) {
				t.Fatalf("got %+v, want %+v", got, tc.d)
			}
		})
	}
}

// FuzzDecodeDeadLetter: no body panics the decoder, and what decodes
// encodes back to the same bytes.
func FuzzDecodeDeadLetter(f *testing.F) {
	f.Add(string(ingest.AppendDeadLetter(nil, &ingest.DeadLetter{Topic: "t", Payload: []byte("x")})))
	f.Add("")
	f.Add("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
	f.Fuzz(func(t *testing.T, body string) {
		d, err := ingest.DecodeDeadLetter(body)
		if err != nil {
			if !errors.Is(err, ingest.ErrCorruptEntry) {
				t.Fatalf("error %v does not wrap ErrCorruptEntry", err)
			}
			return
		}
		// A varint may have more than one encoding: compare decoded values.
		again, err := ingest.DecodeDeadLetter(string(ingest.AppendDeadLetter(nil, &d)))
		if err != nil || fmt.Sprint(again) != fmt.Sprint(d) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, d)
		}
	})
}

// TestIntegrationProducerDeadLetter: a dead letter is one entry of its
// device's shard (CodecDeadLetter, count 1), written in the round trips of
// readings, and counted in the backlog the high-water mark is checked
// against.
func TestIntegrationProducerDeadLetter(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := ingest.Streams{Prefix: prefix, Count: 2}
	p, reg, _ := startProducer(t, rdb, streams, ingest.ProducerConfig{HighWater: 2, BacklogInterval: 10 * time.Millisecond})
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
	if n, err := rdb.HGet(ctx, streams.ShardMetaKey(streams.Shard("dl")), ingest.MetaBacklog).Int64(); err != nil || n != 2 {
		t.Fatalf("backlog counter %d, %v; want 2 (the dead letter and the reading)", n, err)
	}
	eventually(t, 10*time.Second, func() error { return backlogIs(p, 2) })
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
