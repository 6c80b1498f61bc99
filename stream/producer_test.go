package stream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// startProducer runs a Producer on rdb until the test ends; the cleanup
// cancels Run and waits for it to return.
func startProducer(t testing.TB, rdb redis.UniversalClient, streams stream.Streams, cfg stream.ProducerConfig) (*stream.Producer, *prometheus.Registry, context.CancelFunc) {
	t.Helper()
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	p := stream.NewProducer(rdb, streams, cfg, logger, reg)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ran:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return within 30s of cancel")
		}
	})
	return p, reg, cancel
}

// eventually calls cond every 10ms until it returns nil, and fails t with
// cond's last error if that takes longer than timeout.
func eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond) // the poll interval
	}
}

// wantErr is nil if err is target, or else says what was got instead.
func wantErr(what string, err, target error) error {
	if errors.Is(err, target) {
		return nil
	}
	return fmt.Errorf("%s = %v, want %v", what, err, target)
}

// newReading is a valid reading of device whose value tells readings apart.
func newReading(device string, value float64) ingest.Reading {
	now := time.Now()
	r := ingest.Reading{DeviceID: device, Time: now.Add(-time.Second), ReceivedAt: now, Value: value}
	r.Normalize()
	return r
}

type entry struct {
	id stream.StreamID
	r  ingest.Reading
}

func backlogIs(p *stream.Producer, want int64) error {
	if got := p.Backlog(); got != want {
		return fmt.Errorf("Backlog() = %d, want %d", got, want)
	}
	return nil
}

// readStreams returns the decoded entries of every shard stream, in stream
// order, failing t on any entry that is not exactly {v: CodecVersion, b: body}.
func readStreams(t testing.TB, rdb redis.UniversalClient, streams stream.Streams) [][]entry {
	t.Helper()
	ctx := context.Background()
	out := make([][]entry, streams.Len())
	for shard, key := range streams.Keys() {
		msgs, err := rdb.XRange(ctx, key, "-", "+").Result()
		if err != nil {
			t.Fatalf("XRANGE %s: %v", key, err)
		}
		for _, m := range msgs {
			id, err := stream.ParseStreamID(m.ID)
			if err != nil {
				t.Fatalf("entry id: %v", err)
			}
			if v := m.Values[ingest.FieldVersion]; v != ingest.CodecBatch || m.Values[ingest.FieldCount] == nil {
				t.Fatalf("entry %s of %s has fields %v (%s=%v), want a batch entry: %s=%s, %s and %s", m.ID, key, slices.Collect(maps.Keys(m.Values)), ingest.FieldVersion, v,
					ingest.FieldVersion, ingest.CodecBatch, ingest.FieldCount, ingest.FieldBody)
			}
			rs, err := ingest.DecodeEntry(m.Values)
			if err != nil {
				t.Fatalf("entry %s of %s: %v", m.ID, key, err)
			}
			for _, r := range rs {
				out[shard] = append(out[shard], entry{id: id, r: r})
			}
		}
	}
	return out
}

// metricValue returns the value of a counter or gauge, or the sample count
// and sum of a histogram, named name in reg with the given label pairs; it
// fails t if there is no such metric.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) (value float64, count uint64, sum float64) {
	t.Helper()
	m := testenv.Metric(t, reg, name, labels...)
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue(), 0, 0
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue(), 0, 0
	case m.GetHistogram() != nil:
		h := m.GetHistogram()
		return 0, h.GetSampleCount(), h.GetSampleSum()
	}
	t.Fatalf("metric %s%v has no value", name, labels)
	return 0, 0, 0
}

// TestIntegrationProducerRouting: every reading lands once, decodable, in its
// device's shard stream, and one device's readings keep their order.
func TestIntegrationProducerRouting(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 5}
	p, reg, _ := startProducer(t, rdb, streams, stream.ProducerConfig{})

	const devices, perDevice = 60, 30
	added := map[string][]ingest.Reading{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for d := range devices {
		device := fmt.Sprintf("dev-%03d-ü", d)
		wg.Go(func() {
			// Calls of 1, 2 and 3 readings, one after the other: each call
			// returns only once Redis has its entries.
			for v := 0; v < perDevice; {
				var rs []ingest.Reading
				for range v%3 + 1 {
					r := newReading(device, float64(v))
					if v%4 == 0 {
						r.Payload = fmt.Appendf(nil, `{"seq":%d}`, v)
					}
					rs = append(rs, r)
					v++
				}
				if err := p.Add(t.Context(), rs); err != nil {
					t.Errorf("Add: %v", err)
					return
				}
				mu.Lock()
				added[device] = append(added[device], rs...)
				mu.Unlock()
			}
		})
	}
	// Readings of many devices in one call, too.
	var mixed []ingest.Reading
	for d := range devices {
		mixed = append(mixed, newReading(fmt.Sprintf("mixed-%d", d), float64(d)))
	}
	if err := p.Add(t.Context(), mixed); err != nil {
		t.Fatalf("Add of %d devices in one call: %v", len(mixed), err)
	}
	wg.Wait()
	for _, r := range mixed {
		added[r.DeviceID] = []ingest.Reading{r}
	}
	if t.Failed() {
		return
	}

	got := map[string][]ingest.Reading{}
	total := 0
	for shard, entries := range readStreams(t, rdb, streams) {
		for i, e := range entries {
			if want := streams.Shard(e.r.DeviceID); want != shard {
				t.Errorf("device %s in shard %d, want %d", e.r.DeviceID, shard, want)
			}
			// Readings of one batch entry share its id.
			if i > 0 && e.id.Less(entries[i-1].id) {
				t.Errorf("stream ids out of order: %v then %v", entries[i-1].id, e.id)
			}
			got[e.r.DeviceID] = append(got[e.r.DeviceID], e.r)
			total++
		}
	}
	if len(got) != len(added) {
		t.Errorf("%d devices in the streams, want %d", len(got), len(added))
	}
	for device, want := range added {
		rs := got[device]
		if len(rs) != len(want) {
			t.Errorf("device %s: %d entries, want %d", device, len(rs), len(want))
			continue
		}
		for i := range want {
			assertSameReading(t, rs[i], want[i])
		}
	}
	if v, _, _ := metricValue(t, reg, "firehose_producer_entries_written_total"); v != float64(total) {
		t.Errorf("firehose_producer_entries_written_total = %v, want %d", v, total)
	}
}

// TestIntegrationProducerGroupCommit: concurrent callers share round trips;
// each is answered once its own entry is in Redis.
func TestIntegrationProducerGroupCommit(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 4}
	p, reg, _ := startProducer(t, rdb, streams, stream.ProducerConfig{})

	const callers = 200
	start := make(chan struct{})
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			errs <- p.Add(t.Context(), []ingest.Reading{newReading(fmt.Sprintf("gc-%d", i), float64(i))})
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Add: %v", err)
		}
	}

	seen := make([]int, callers)
	for _, entries := range readStreams(t, rdb, streams) {
		for _, e := range entries {
			i := int(e.r.Value)
			if e.r.DeviceID != fmt.Sprintf("gc-%d", i) {
				t.Fatalf("unexpected entry %+v", e.r)
			}
			seen[i]++
		}
	}
	for i, n := range seen {
		if n != 1 {
			t.Errorf("reading %d stored %d times, want once", i, n)
		}
	}
	_, trips, entries := metricValue(t, reg, "firehose_producer_xadd_batch_entries")
	t.Logf("%d readings in %d round trips (%.1f per round trip)", int(entries), trips, entries/float64(trips))
	if entries != callers {
		t.Errorf("firehose_producer_xadd_batch_entries sum = %v, want %d", entries, callers)
	}
	if trips == 0 || entries/float64(trips) <= 1 {
		t.Errorf("%d round trips for %d concurrent readings: no group commit", trips, callers)
	}
}

// TestIntegrationProducerHighWater: past the high-water mark Add refuses with
// ErrBacklogFull until the bridge (here: DEL) shrinks the streams.
func TestIntegrationProducerHighWater(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 2}
	p, reg, _ := startProducer(t, rdb, streams, stream.ProducerConfig{HighWater: 10, BacklogInterval: 20 * time.Millisecond})
	ctx := t.Context()

	var rs []ingest.Reading
	for i := range 10 {
		rs = append(rs, newReading(fmt.Sprintf("hw-%d", i), float64(i)))
	}
	if err := p.Add(ctx, rs); err != nil {
		t.Fatalf("Add of 10 readings: %v", err)
	}
	// At the mark, not above it: still accepting.
	eventually(t, 5*time.Second, func() error { return backlogIs(p, 10) })
	// The estimate between measurements may count a write twice (once in
	// XLEN, once as written since): it settles at the next measurement.
	eventually(t, 5*time.Second, func() error {
		if err := p.Ready(); err != nil {
			return fmt.Errorf("Ready() with a backlog of 10 = %v, want nil (the mark is not exceeded)", err)
		}
		return nil
	})
	if err := p.Add(ctx, []ingest.Reading{newReading("hw-10", 10)}); err != nil {
		t.Fatalf("Add at the mark: %v", err)
	}

	// Above the mark: refused, once the backlog has been measured.
	eventually(t, 5*time.Second, func() error {
		return wantErr("Add over the high-water mark", p.Add(ctx, []ingest.Reading{newReading("hw-more", 1)}), ingest.ErrBacklogFull)
	})
	if err := p.Ready(); !errors.Is(err, ingest.ErrBacklogFull) {
		t.Errorf("Ready() = %v, want ErrBacklogFull", err)
	}
	// Add refuses as soon as its estimate (the last measurement plus what was
	// written since) is over the mark; the measurement follows.
	eventually(t, 5*time.Second, func() error {
		if p.Backlog() <= 10 {
			return fmt.Errorf("Backlog() = %d, want > 10", p.Backlog())
		}
		return nil
	})
	if v, _, _ := metricValue(t, reg, "firehose_producer_refused_total", "reason", "backlog_full"); v < 1 {
		t.Errorf("refusals for backlog_full = %v, want >= 1", v)
	}
	var sum float64
	for shard := range streams.Len() {
		v, _, _ := metricValue(t, reg, "firehose_stream_backlog_entries", "shard", fmt.Sprint(shard))
		sum += v
	}
	if sum != float64(p.Backlog()) {
		t.Errorf("firehose_stream_backlog_entries sum to %v, Backlog() = %d", sum, p.Backlog())
	}

	// The bridge trims what it committed (and counts the backlog down):
	// accepting again.
	if err := rdb.Del(ctx, streams.Keys()...).Err(); err != nil {
		t.Fatal(err)
	}
	for shard := range streams.Len() {
		if err := rdb.HSet(ctx, streams.ShardMetaKey(shard), stream.MetaBacklog, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, func() error {
		return wantErr("Add after the streams were trimmed", p.Add(ctx, []ingest.Reading{newReading("hw-after", 1)}), nil)
	})
	if err := p.Ready(); err != nil {
		t.Errorf("Ready() after the streams were trimmed = %v", err)
	}
}

// TestIntegrationProducerHighWaterDisabled: HighWater -1 never refuses.
func TestIntegrationProducerHighWaterDisabled(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 1}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{HighWater: -1, BacklogInterval: 5 * time.Millisecond})
	for i := range 20 {
		if err := p.Add(t.Context(), []ingest.Reading{newReading("d", float64(i))}); err != nil {
			t.Fatalf("Add %d: %v", i, err)
		}
	}
	eventually(t, 5*time.Second, func() error { return backlogIs(p, 20) })
	if err := p.Add(t.Context(), []ingest.Reading{newReading("d", 20)}); err != nil {
		t.Fatalf("Add with the check disabled: %v", err)
	}
}

// TestIntegrationProducerShutdown: callers racing with shutdown are all
// answered, nil exactly for the readings that are in Redis; after Run has
// returned Add answers ErrClosed.
func TestIntegrationProducerShutdown(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 3}
	p, _, cancel := startProducer(t, rdb, streams, stream.ProducerConfig{Pipelines: 2})

	// Callers add until the producer refuses as closed.
	const callers = 50
	var next, closed atomic.Int64
	var mu sync.Mutex
	acked := map[float64]bool{}
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for {
				v := float64(next.Add(1))
				err := p.Add(t.Context(), []ingest.Reading{newReading(fmt.Sprintf("sd-%d", c), v)})
				switch {
				case err == nil:
					mu.Lock()
					acked[v] = true
					mu.Unlock()
				case errors.Is(err, ingest.ErrClosed):
					closed.Add(1)
					return
				default:
					t.Errorf("Add during shutdown: %v", err)
					return
				}
			}
		})
	}
	eventually(t, 10*time.Second, func() error {
		if n := next.Load(); n <= 10*callers {
			return fmt.Errorf("only %d readings added", n)
		}
		return nil
	})
	cancel()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed 10s after cancel")
	}
	wg.Wait()
	t.Logf("%d readings acknowledged, %d callers refused as closed", len(acked), closed.Load())
	if closed.Load() != callers {
		t.Errorf("%d callers saw ErrClosed, want %d", closed.Load(), callers)
	}

	stored := 0
	for _, entries := range readStreams(t, rdb, streams) {
		for _, e := range entries {
			if !acked[e.r.Value] {
				t.Errorf("reading %v is in Redis but its Add did not return nil", e.r.Value)
			}
			stored++
		}
	}
	if stored != len(acked) {
		t.Errorf("%d entries in Redis, %d acknowledged", stored, len(acked))
	}

	if err := p.Add(t.Context(), []ingest.Reading{newReading("late", 1)}); !errors.Is(err, ingest.ErrClosed) {
		t.Errorf("Add after Run returned = %v, want ErrClosed", err)
	}
	if err := p.Ready(); !errors.Is(err, ingest.ErrClosed) {
		t.Errorf("Ready() after Run returned = %v, want ErrClosed", err)
	}
	if err := p.Add(t.Context(), nil); err != nil {
		t.Errorf("Add of no readings = %v, want nil", err)
	}
	if err := p.Run(context.Background()); err == nil {
		t.Errorf("second Run returned nil, want an error")
	}
}

// TestIntegrationProducerLargeCall: a call of more readings than QueueSize
// goes through when nothing else waits.
func TestIntegrationProducerLargeCall(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 2}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{QueueSize: 2, MaxBatch: 2})
	var rs []ingest.Reading
	for i := range 5 {
		rs = append(rs, newReading("big", float64(i)))
	}
	if err := p.Add(t.Context(), rs); err != nil {
		t.Fatalf("Add of 5 readings with QueueSize 2: %v", err)
	}
	n := 0
	for _, entries := range readStreams(t, rdb, streams) {
		for i, e := range entries {
			if e.r.Value != float64(i) {
				t.Errorf("entry %d has value %v", i, e.r.Value)
			}
			n++
		}
	}
	if n != 5 {
		t.Errorf("%d entries, want 5", n)
	}
}

func TestIntegrationStreamsCheck(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	ctx := t.Context()
	four := stream.Streams{Prefix: prefix} // default count 4
	if err := four.Check(ctx, rdb); err != nil {
		t.Fatalf("first Check: %v", err)
	}
	if got, err := rdb.HGet(ctx, four.MetaKey(), "shards").Result(); err != nil || got != "4" {
		t.Fatalf("shards recorded in %s = %q, %v; want 4", four.MetaKey(), got, err)
	}
	same := stream.Streams{Prefix: prefix, Count: 4}
	if err := same.Check(ctx, rdb); err != nil {
		t.Fatalf("Check with the same count: %v", err)
	}
	eight := stream.Streams{Prefix: prefix, Count: 8}
	err := eight.Check(ctx, rdb)
	if !errors.Is(err, stream.ErrShardMismatch) {
		t.Fatalf("Check with 8 shards = %v, want ErrShardMismatch", err)
	}
	if !strings.Contains(err.Error(), "--shards 4") || !strings.Contains(err.Error(), prefix) {
		t.Errorf("error %q does not say to use --shards 4 for %s", err, prefix)
	}
	// The mismatch did not overwrite the record.
	if got, _ := rdb.HGet(ctx, four.MetaKey(), "shards").Result(); got != "4" {
		t.Errorf("shards recorded = %q after a mismatch, want 4", got)
	}
	// Another deployment (prefix) has its own count.
	other := stream.Streams{Prefix: prefix + "-other", Count: 8}
	if err := other.Check(ctx, rdb); err != nil {
		t.Errorf("Check of another prefix: %v", err)
	}
}

func TestRefusalReason(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"backlog", ingest.ErrBacklogFull, "backlog_full"},
		{"unavailable wrapped", fmt.Errorf("%w: xadd: EOF", ingest.ErrUnavailable), "redis_unavailable"},
		{"overloaded", ingest.ErrOverloaded, "overloaded"},
		{"closed", ingest.ErrClosed, "closed"},
		{"other", context.Canceled, "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ingest.RefusalReason(tt.err); got != tt.want {
				t.Errorf("RefusalReason(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

// BenchmarkIntegrationProducerAdd measures Add of one reading per call from
// many concurrent callers (the HTTP and MQTT edges' pattern) against the real
// Redis, and reports readings/s.
func BenchmarkIntegrationProducerAdd(b *testing.B) {
	for _, par := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("Callers%dxGOMAXPROCS", par), func(b *testing.B) {
			rdb, prefix := testenv.Redis(b)
			streams := stream.Streams{Prefix: prefix, Count: 4}
			p, reg, _ := startProducer(b, rdb, streams, stream.ProducerConfig{HighWater: -1})
			var n atomic.Int64
			b.SetParallelism(par)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				device := fmt.Sprintf("bench-%d", n.Add(1))
				rs := []ingest.Reading{newReading(device, 1)}
				for pb.Next() {
					if err := p.Add(context.Background(), rs); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
			if _, trips, entries := metricValue(b, reg, "firehose_producer_xadd_batch_entries"); trips > 0 {
				b.ReportMetric(entries/float64(trips), "readings/roundtrip")
			}
		})
	}
}

// TestIntegrationProducerGenerationBeforeEntries: no entry is stored in a
// Redis without its shard's generation token. Every shard written to has one
// after an Add; a token Redis lost (a wipe) is created anew, different, by
// the next round trip, and a token Redis kept is never replaced.
func TestIntegrationProducerGenerationBeforeEntries(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 3}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{})
	ctx := t.Context()
	gens := func() []string {
		var g []string
		for shard := range streams.Count {
			m, err := stream.ReadShardMeta(ctx, rdb, streams, shard)
			if err != nil {
				t.Fatal(err)
			}
			g = append(g, m.Generation)
		}
		return g
	}
	var rs []ingest.Reading
	for d := range 30 {
		rs = append(rs, newReading(fmt.Sprintf("gen-%d", d), 1))
	}
	if err := p.Add(ctx, rs); err != nil {
		t.Fatal(err)
	}
	first := gens()
	for shard, g := range first {
		if g == "" {
			t.Fatalf("shard %d has entries but no generation token", shard)
		}
	}
	if err := p.Add(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if again := gens(); !slices.Equal(again, first) {
		t.Errorf("tokens changed while Redis kept them: %v -> %v", first, again)
	}
	if err := rdb.Del(ctx, streams.ShardMetaKey(1)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(ctx, rs); err != nil {
		t.Fatal(err)
	}
	after := gens()
	if after[1] == "" || after[1] == first[1] {
		t.Errorf("shard 1's token after it was lost = %q (before %q), want a new one", after[1], first[1])
	}
	if after[0] != first[0] || after[2] != first[2] {
		t.Errorf("kept tokens replaced: %v -> %v", first, after)
	}
}

// TestIntegrationProducerStreamCodecs: the batch encoding writes one entry
// per shard and round trip, counting its readings in the entry and in the
// shard's backlog counter; --stream-codec 1 writes one entry per reading, as
// builds before batch entries did (for a rolling upgrade). Either way the
// backlog is counted in readings.
func TestIntegrationProducerStreamCodecs(t *testing.T) {
	t.Parallel()
	for _, codec := range []string{ingest.CodecBatch, ingest.CodecVersion} {
		t.Run("codec "+codec, func(t *testing.T) {
			rdb, prefix := testenv.Redis(t)
			streams := stream.Streams{Prefix: prefix, Count: 1}
			p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{Codec: codec, BacklogInterval: 10 * time.Millisecond})
			rs := make([]ingest.Reading, 10)
			for i := range rs {
				rs[i] = newReading("codec-dev", float64(i))
			}
			if err := p.Add(t.Context(), rs); err != nil {
				t.Fatal(err)
			}
			msgs, err := rdb.XRange(t.Context(), streams.Key(0), "-", "+").Result()
			if err != nil {
				t.Fatal(err)
			}
			wantEntries := 1
			if codec == ingest.CodecVersion {
				wantEntries = 10
			}
			if len(msgs) != wantEntries {
				t.Fatalf("%d entries for one call of 10 readings, want %d", len(msgs), wantEntries)
			}
			var got []ingest.Reading
			for _, m := range msgs {
				if m.Values[ingest.FieldVersion] != codec {
					t.Fatalf("entry %s names encoding %v, want %s", m.ID, m.Values[ingest.FieldVersion], codec)
				}
				part, err := ingest.DecodeEntry(m.Values)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, part...)
			}
			for i := range rs {
				assertSameReading(t, got[i], rs[i])
			}
			eventually(t, 5*time.Second, func() error { return backlogIs(p, 10) })
		})
	}
}

// assertSameReading (as ingest's codec tests have it) fails t unless got is want as the codec gives it back:
// times equal and in UTC, the value's bits equal (NaN and -0 included), the
// payload's bytes equal (an empty payload comes back nil).
func assertSameReading(t testing.TB, got, want ingest.Reading) {
	t.Helper()
	if got.DeviceID != want.DeviceID {
		t.Errorf("DeviceID = %q, want %q", got.DeviceID, want.DeviceID)
	}
	if !got.Time.Equal(want.Time) || got.Time.Location() != time.UTC {
		t.Errorf("Time = %v, want %v in UTC", got.Time, want.Time)
	}
	if !got.ReceivedAt.Equal(want.ReceivedAt) || got.ReceivedAt.Location() != time.UTC {
		t.Errorf("ReceivedAt = %v, want %v in UTC", got.ReceivedAt, want.ReceivedAt)
	}
	if math.Float64bits(got.Value) != math.Float64bits(want.Value) {
		t.Errorf("Value = %v (%#x), want %v (%#x)", got.Value, math.Float64bits(got.Value), want.Value, math.Float64bits(want.Value))
	}
	if got.Metric != want.Metric {
		t.Errorf("Metric = %q, want %q", got.Metric, want.Metric)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("Payload = %q, want %q", got.Payload, want.Payload)
	}
	if len(got.Payload) == 0 && got.Payload != nil {
		t.Errorf("empty Payload decoded as non-nil")
	}
}
