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

// TestIntegrationMetricsLand writes, through the producer, a message of many
// metrics (one reading per metric, the same device, time and receipt),
// readings of the default metric beside them in the same round trips, and
// the same with one entry per reading (--stream-codec 1): every reading
// lands once, in its metric's row, and the default metric lands as
// 'reading'.
func TestIntegrationMetricsLand(t *testing.T) {
	t.Parallel()
	for _, codec := range []string{ingest.CodecBatch, ingest.CodecVersion} {
		t.Run("codec-"+codec, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, 2)
			ctx, cancel := context.WithCancel(context.Background())
			p := stream.NewProducer(e.rdb, e.streams, stream.ProducerConfig{Codec: codec}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			e.start(Config{BatchAge: 50 * time.Millisecond})

			now := time.Now().UTC().Truncate(time.Microsecond)
			var calls [][]ingest.Reading
			for i := range 20 {
				ts := now.Add(-time.Duration(i) * time.Second)
				msg := []ingest.Reading{
					{DeviceID: "press-7", Metric: "temp", Time: ts, ReceivedAt: now, Value: 70 + float64(i)},
					{DeviceID: "press-7", Metric: "pressure", Time: ts, ReceivedAt: now, Value: 3 + float64(i)/10},
					{DeviceID: "press-7", Metric: "rpm", Time: ts, ReceivedAt: now, Value: 1200, Payload: []byte(`{"line":"3"}`)},
				}
				plain := []ingest.Reading{{DeviceID: "pump-" + strconv.Itoa(i%3), Time: ts, ReceivedAt: now, Value: float64(i)}}
				calls = append(calls, msg, plain)
			}
			errs := make(chan error, len(calls))
			for _, c := range calls {
				go func() { errs <- p.Add(t.Context(), c) }()
			}
			for range calls {
				if err := <-errs; err != nil {
					t.Fatalf("Add: %v", err)
				}
			}
			testenv.Eventually(t, 10*time.Second, func() bool { return e.count("SELECT count(*) FROM readings") >= 80 },
				"rows did not land: %d of 80", e.count("SELECT count(*) FROM readings"))
			for _, q := range []struct {
				sql  string
				want int
			}{
				{"SELECT count(*) FROM readings", 80},
				{"SELECT count(*) FROM readings WHERE device_id = 'press-7' AND metric = 'temp' AND reading >= 70", 20},
				{"SELECT count(*) FROM readings WHERE device_id = 'press-7' AND metric = 'pressure'", 20},
				{"SELECT count(*) FROM readings WHERE device_id = 'press-7' AND metric = 'rpm' AND payload->>'line' = '3'", 20},
				{"SELECT count(*) FROM readings WHERE device_id LIKE 'pump-%' AND metric = 'reading'", 20},
				// One message's rows share their time: 20 distinct times of press-7, 3 rows each.
				{"SELECT count(*) FROM (SELECT ts FROM readings WHERE device_id = 'press-7' GROUP BY ts HAVING count(*) = 3) m", 20},
				{"SELECT count(*) FROM readings_rejected", 0},
			} {
				if got := e.count(q.sql); got != q.want {
					t.Errorf("%s = %d, want %d", q.sql, got, q.want)
				}
			}
		})
	}
}
