package stream_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
	"firehose/typed"
)

// storedReadings decodes every entry of every shard stream, whatever its
// version, and fails t on one that does not decode.
func storedReadings(t *testing.T, rdb redis.UniversalClient, streams stream.Streams) []ingest.Reading {
	t.Helper()
	var out []ingest.Reading
	for _, key := range streams.Keys() {
		msgs, err := rdb.XRange(t.Context(), key, "-", "+").Result()
		if err != nil {
			t.Fatalf("XRANGE %s: %v", key, err)
		}
		for _, m := range msgs {
			rs, err := ingest.DecodeEntry(m.Values)
			if err != nil {
				t.Fatalf("entry %s of %s: %v", m.ID, key, err)
			}
			if n, _ := strconv.Atoi(fmt.Sprint(m.Values[ingest.FieldCount])); n != len(rs) {
				t.Fatalf("entry %s of %s counts %v readings and holds %d", m.ID, key, m.Values[ingest.FieldCount], len(rs))
			}
			out = append(out, rs...)
		}
	}
	return out
}

// countBy counts readings by device/metric/value.
func countBy(rs []ingest.Reading) map[string]int {
	n := map[string]int{}
	for _, r := range rs {
		n[fmt.Sprintf("%s/%s/%g", r.DeviceID, r.Metric, r.Value)]++
	}
	return n
}

// TestIntegrationDedupID: with --dedup id a reading sent again with its id,
// alone, in another call or twice in one round trip, is acknowledged and
// stored once; readings without an id, and the same id of another device or
// metric, are stored as they come; the backlog counts what was stored.
func TestIntegrationDedupID(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 3}
	p, reg, _ := startProducer(t, rdb, streams, stream.ProducerConfig{Dedup: stream.DedupID, BacklogInterval: 10 * time.Millisecond})
	msg := func(dev string, v float64, id string, metrics ...string) []ingest.Reading {
		var rs []ingest.Reading
		for _, m := range metrics {
			r := newReading(dev, v)
			r.Metric = m
			rs = append(rs, r)
		}
		ingest.NameRows(rs, id)
		return rs
	}
	first := [][]ingest.Reading{
		msg("dd-a", 1, "m1", "temp", "rpm"),
		msg("dd-b", 2, "m1", "temp", "rpm"), // same id, other device
		msg("dd-a", 3, "m2", ""),
		msg("dd-c", 4, "", "temp"), // no id
	}
	for _, rs := range first {
		if err := p.Add(t.Context(), rs); err != nil {
			t.Fatal(err)
		}
	}
	// Resends: each message again (the one without an id lands again), and
	// m2 twice in one call.
	resend := append(msg("dd-a", 1, "m1", "temp", "rpm"), msg("dd-b", 2, "m1", "temp", "rpm")...)
	resend = append(resend, msg("dd-a", 3, "m2", "")...)
	resend = append(resend, msg("dd-a", 3, "m2", "")...)
	resend = append(resend, msg("dd-c", 4, "", "temp")...)
	if err := p.Add(t.Context(), resend); err != nil {
		t.Fatal(err)
	}
	// Two new readings with one id in one call: the second is a duplicate.
	twice := append(msg("dd-d", 5, "m9", "x"), msg("dd-d", 5, "m9", "x")...)
	if err := p.Add(t.Context(), twice); err != nil {
		t.Fatal(err)
	}
	got := countBy(storedReadings(t, rdb, streams))
	want := map[string]int{
		"dd-a/temp/1": 1, "dd-a/rpm/1": 1, "dd-b/temp/2": 1, "dd-b/rpm/2": 1,
		"dd-a//3": 1, "dd-c/temp/4": 2, "dd-d/x/5": 1,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	if d, _, _ := metricValue(t, reg, "firehose_producer_duplicates_total"); d != 7 {
		t.Fatalf("firehose_producer_duplicates_total = %g, want 7", d)
	}
	eventually(t, 5*time.Second, func() error { return backlogIs(p, 8) })
}

// TestIntegrationDedupNatural: the natural key is device, metric and the
// device's time; readings timed by their receipt are never taken for
// duplicates.
func TestIntegrationDedupNatural(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 2}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{Dedup: stream.DedupNatural})
	at := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	timed := func(v float64, metric string, ts time.Time) ingest.Reading {
		r := ingest.Reading{DeviceID: "nat-a", Metric: metric, Time: ts, ReceivedAt: time.Now(), Value: v}
		r.Normalize()
		return r
	}
	untimed := func(v float64) ingest.Reading {
		r := ingest.Reading{DeviceID: "nat-a", ReceivedAt: at.Add(time.Minute), Value: v}
		r.Normalize()
		return r
	}
	for range 2 {
		rs := []ingest.Reading{
			timed(1, "temp", at), timed(2, "rpm", at), timed(3, "temp", at.Add(time.Millisecond)),
			untimed(4), untimed(4),
		}
		if err := p.Add(t.Context(), rs); err != nil {
			t.Fatal(err)
		}
	}
	got := countBy(storedReadings(t, rdb, streams))
	want := map[string]int{"nat-a/temp/1": 1, "nat-a/rpm/2": 1, "nat-a/temp/3": 1, "nat-a//4": 4}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
}

// TestIntegrationDedupSeries: under both modes, readings of one device,
// metric, time and id whose Series differ (two sites' press7, two seed ids
// of the default device) are two readings; each one's resend is still a
// duplicate.
func TestIntegrationDedupSeries(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{stream.DedupID, stream.DedupNatural} {
		rdb, prefix := testenv.Redis(t)
		streams := stream.Streams{Prefix: prefix, Count: 2}
		p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{Dedup: mode})
		at := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
		r := func(v float64, series string) ingest.Reading {
			rd := ingest.Reading{DeviceID: "press7", Metric: "temp", Time: at, ReceivedAt: time.Now(), Value: v, ID: "1", Series: []byte(series)}
			rd.Normalize()
			return rd
		}
		for range 2 {
			if err := p.Add(t.Context(), []ingest.Reading{r(1, "berlin"), r(2, "munich"), r(3, "")}); err != nil {
				t.Fatal(err)
			}
		}
		got := countBy(storedReadings(t, rdb, streams))
		want := map[string]int{"press7/temp/1": 1, "press7/temp/2": 1, "press7/temp/3": 1}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("--dedup %s: stored %v, want %v", mode, got, want)
		}
	}
}

// TestIntegrationDedupWindow: a key is forgotten after at most two windows,
// and then a resend is stored again; within one window it is not.
func TestIntegrationDedupWindow(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 1}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{Dedup: stream.DedupID, DedupWindow: time.Second})
	send := func() {
		r := newReading("win-a", 1)
		r.ID = "w1"
		if err := p.Add(t.Context(), []ingest.Reading{r}); err != nil {
			t.Fatal(err)
		}
	}
	send()
	time.Sleep(900 * time.Millisecond) // within one window: still remembered
	send()
	if n := len(storedReadings(t, rdb, streams)); n != 1 {
		t.Fatalf("%d readings stored within the window, want 1", n)
	}
	time.Sleep(2100 * time.Millisecond) // past two windows: forgotten
	send()
	if n := len(storedReadings(t, rdb, streams)); n != 2 {
		t.Fatalf("%d readings stored after two windows, want 2", n)
	}
	// The dedup sets expire with the window: a quiet deployment frees them.
	sets := streams.ShardDedupKeys(0)
	for _, k := range sets {
		if ttl := rdb.PTTL(t.Context(), k).Val(); ttl > 2*time.Second {
			t.Fatalf("%s expires in %s, want at most two windows", k, ttl)
		}
	}
}

// TestIntegrationDedupFailedWriteRemembersNothing: when the entry cannot be
// written the script stops before it remembers any key, so the device's
// resend is stored, not taken for a duplicate of a reading that was lost.
func TestIntegrationDedupFailedWriteRemembersNothing(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 1}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{Dedup: stream.DedupID})
	// A key of the wrong type where the stream goes: XADD answers WRONGTYPE.
	if err := rdb.Set(t.Context(), streams.Key(0), "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r := newReading("fail-a", 1)
	r.ID = "f1"
	if err := p.Add(t.Context(), []ingest.Reading{r}); err == nil {
		t.Fatal("Add succeeded with the stream key of the wrong type")
	}
	if err := rdb.Del(t.Context(), streams.Key(0)).Err(); err != nil {
		t.Fatal(err)
	}
	// The backlog measurement saw the wrong type too and refuses the shard
	// until it measures again.
	eventually(t, 5*time.Second, func() error { return p.Add(t.Context(), []ingest.Reading{r}) })
	if n := len(storedReadings(t, rdb, streams)); n != 1 {
		t.Fatalf("%d readings stored after the resend, want 1", n)
	}
}

// BenchmarkIntegrationProducerDedup measures Add of one reading per call
// from 128×GOMAXPROCS callers, every reading with its own id, with --dedup
// off, id and natural against the real Redis: readings/s, Redis's CPU per
// reading (INFO cpu, the whole server: run it on a quiet Redis), and, with
// dedup on, the memory one remembered key takes (MEMORY USAGE of the sets
// over their members).
func BenchmarkIntegrationProducerDedup(b *testing.B) {
	for _, mode := range []string{stream.DedupOff, stream.DedupID, stream.DedupNatural} {
		b.Run(mode, func(b *testing.B) {
			rdb, prefix := testenv.Redis(b)
			streams := stream.Streams{Prefix: prefix, Count: 4}
			p, _, _ := startProducer(b, rdb, streams, stream.ProducerConfig{HighWater: -1, Dedup: mode})
			var n atomic.Int64
			cpu0 := redisCPU(b, rdb)
			b.SetParallelism(128)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				device := fmt.Sprintf("bench-%d", n.Add(1))
				i := 0
				for pb.Next() {
					i++
					r := newReading(device, float64(i))
					r.ID = strconv.Itoa(i)
					if err := p.Add(context.Background(), []ingest.Reading{r}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
			b.ReportMetric((redisCPU(b, rdb)-cpu0)*1e6/float64(b.N), "redis-µs/reading")
			if mode == stream.DedupOff {
				return
			}
			var keys, bytes int64
			for shard := range streams.Len() {
				for _, k := range streams.ShardDedupKeys(shard) {
					keys += rdb.SCard(context.Background(), k).Val()
					bytes += rdb.MemoryUsage(context.Background(), k, 0).Val()
				}
			}
			if keys > 0 {
				b.ReportMetric(float64(bytes)/float64(keys), "B/key")
			}
		})
	}
}

// redisCPU is the Redis server's CPU time so far, user and system, in
// seconds.
func redisCPU(b *testing.B, rdb redis.UniversalClient) float64 {
	info := rdb.Info(context.Background(), "cpu").Val()
	var sum float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu %s: %v", k, err)
			}
			sum += f
		}
	}
	return sum
}

// TestDedupFlagsValidate: what --dedup and --dedup-window refuse, and why.
func TestDedupFlagsValidate(t *testing.T) {
	for _, tt := range []struct {
		cfg  stream.ProducerConfig
		want string // "" valid
	}{
		{stream.ProducerConfig{Dedup: stream.DedupID}, ""},
		{stream.ProducerConfig{Dedup: stream.DedupNatural, DedupWindow: time.Hour}, ""},
		{stream.ProducerConfig{Dedup: "yes"}, `--dedup "yes": want off, id or natural`},
		{stream.ProducerConfig{Dedup: stream.DedupID, Codec: ingest.CodecVersion}, "--dedup id needs --stream-codec 2"},
		{stream.ProducerConfig{Dedup: stream.DedupID, DedupWindow: time.Millisecond}, "--dedup-window 1ms: want 1s to 168h"},
		{stream.ProducerConfig{Dedup: stream.DedupID, DedupWindow: 200 * time.Hour}, "--dedup-window 200h0m0s: want 1s to 168h"},
	} {
		err := tt.cfg.Validate()
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%+v: Validate() = %v, want %q", tt.cfg, err, tt.want)
		}
	}
}

// TestIntegrationDedupTypedRows: typed rows travel in version-7 entries
// and come back with their table and values; under --dedup a row sent again
// with its id and series is stored once, while the same device, id and
// series in another table (another rule's) is another row.
func TestIntegrationDedupTypedRows(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{stream.DedupOff, stream.DedupID, stream.DedupNatural} {
		rdb, prefix := testenv.Redis(t)
		streams := stream.Streams{Prefix: prefix, Count: 2}
		p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{Dedup: mode})
		at := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
		row := func(table string, v int64) ingest.Reading {
			r := ingest.Reading{DeviceID: "press7", Time: at, ReceivedAt: time.Now(), ID: "1", Series: []byte("berlin"),
				Row: &typed.Row{Shape: &typed.Shape{Table: table, Columns: []typed.Column{
					{Name: "time", Type: typed.Timestamptz}, {Name: "rpm", Type: typed.Integer}}},
					Values: []typed.Value{typed.TimeValue(at), {Int: v}}}}
			r.Normalize()
			return r
		}
		for range 2 {
			if err := p.Add(t.Context(), []ingest.Reading{row("press_a", 1), row("press_b", 2), newReading("press7", 3)}); err != nil {
				t.Fatal(err)
			}
		}
		got := map[string]int{}
		for _, r := range storedReadings(t, rdb, streams) {
			if r.Row == nil {
				got[fmt.Sprintf("readings/%g", r.Value)]++
				continue
			}
			if !r.Row.Values[0].Time().Equal(at) || r.DeviceID != "press7" {
				t.Errorf("row %+v of %s: time %v, want %v", r.Row.Values, r.DeviceID, r.Row.Values[0].Time(), at)
			}
			got[fmt.Sprintf("%s/%d", r.Row.Shape.Table, r.Row.Values[1].Int)]++
		}
		want := map[string]int{"press_a/1": 1, "press_b/2": 1, "readings/3": 2}
		if mode == stream.DedupOff {
			want = map[string]int{"press_a/1": 2, "press_b/2": 2, "readings/3": 2}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("--dedup %s: stored %v, want %v", mode, got, want)
		}
	}
}
