package bridge

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// TestIntegrationOnceLands: the entries of the producer's once-calls (a QoS 2
// message spanning both shards, delivered twice; a dead letter, delivered
// twice), written in the round trips of plain readings, land once each, and
// the bridge's trim brings every shard's backlog counter back to 0.
func TestIntegrationOnceLands(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	p := stream.NewProducer(e.rdb, e.streams, stream.ProducerConfig{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	e.start(Config{BatchAge: 50 * time.Millisecond})

	now := time.Now().UTC().Truncate(time.Microsecond)
	var msg []ingest.Reading
	for i := range 8 {
		msg = append(msg, ingest.Reading{DeviceID: "q2-" + strconv.Itoa(i), Metric: "temp", Time: now, ReceivedAt: now, Value: float64(i)})
	}
	dl := ingest.DeadLetter{Source: ingest.SourceMQTT, Kind: ingest.KindTopic, Topic: "x/y", ClientID: "sub", Device: "q2-dl",
		Reason: "no rule", ReceivedAt: now, Payload: []byte("?")}
	o := stream.Once{Session: "sub@" + e.streams.Prefix, PacketID: 9, Epoch: 77}
	errs := make(chan error, 14)
	for range 2 {
		go func() { _, err := p.AddOnce(t.Context(), msg, o); errs <- err }()
		go func() {
			// Another message: its own packet id.
			_, err := p.AddDeadLetterOnce(t.Context(), dl, stream.Once{Session: o.Session, PacketID: 10, Epoch: 77})
			errs <- err
		}()
	}
	for i := range 10 {
		go func() {
			errs <- p.Add(t.Context(), []ingest.Reading{{DeviceID: "plain-" + strconv.Itoa(i%4), Time: now, ReceivedAt: now, Value: float64(i)}})
		}()
	}
	for range 14 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return e.count("SELECT count(*) FROM readings") >= 18 },
		"rows did not land: %d of 18", e.count("SELECT count(*) FROM readings"))
	testenv.Eventually(t, 10*time.Second, func() bool {
		for shard := range e.streams.Len() {
			if n, _ := e.rdb.HGet(t.Context(), e.streams.ShardMetaKey(shard), stream.MetaBacklog).Int64(); n != 0 {
				return false
			}
		}
		return true
	}, "the backlog counters did not come back to 0")
	for _, q := range []struct {
		sql  string
		want int
	}{
		{"SELECT count(*) FROM readings", 18},
		{"SELECT count(*) FROM readings WHERE device_id LIKE 'q2-%' AND metric = 'temp'", 8},
		{"SELECT count(DISTINCT device_id) FROM readings WHERE device_id LIKE 'q2-%'", 8},
		{"SELECT count(*) FROM readings_rejected", 1},
		{"SELECT count(*) FROM readings_rejected WHERE source = 'edge'", 1},
	} {
		if got := e.count(q.sql); got != q.want {
			t.Errorf("%s = %d, want %d", q.sql, got, q.want)
		}
	}
}
