package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/typed"
)

// The pure phases of a round trip (see Producer.write), without Redis: a
// client whose pipelines are built but never sent.

func testProducer(t *testing.T, cfg ProducerConfig) *Producer {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	return NewProducer(rdb, Streams{Prefix: "t", Count: 4, Layout: LayoutSpread}, cfg,
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
}

func readingsCall(rs ...ingest.Reading) *call { return &call{readings: rs, done: make(chan error, 1)} }

func onceCall(rs ...ingest.Reading) *call {
	return &call{readings: rs, once: &Once{Session: "s", PacketID: 1, Epoch: 1}, done: make(chan error, 1)}
}

func rd(device, metric, id string) ingest.Reading {
	return ingest.Reading{DeviceID: device, Metric: metric, ID: id, Value: 1,
		Time: time.Unix(100, 0).UTC(), ReceivedAt: time.Unix(100, 0).UTC()}
}

// typedRd is a typed row of table for device, with message id id.
func typedRd(device, table, id string) ingest.Reading {
	r := rd(device, "", id)
	r.Row = &typed.Row{Shape: &typed.Shape{Table: table, Columns: []typed.Column{{Name: "time", Type: typed.Timestamptz}}},
		Values: []typed.Value{typed.TimeValue(r.Time)}}
	return r
}

// TestRoundTripEncode: routing counts each shard's readings in call order,
// a shard with a metric writes version 4, and under --dedup a repeat within
// the round trip is left out of its shard's entry.
func TestRoundTripEncode(t *testing.T) {
	streams := Streams{Prefix: "t", Count: 4, Layout: LayoutSpread}
	a, b := "dev-a", "dev-b"
	for streams.Shard(b) == streams.Shard(a) {
		b += "x"
	}
	sa, sb := streams.Shard(a), streams.Shard(b)
	for _, tt := range []struct {
		name      string
		cfg       ProducerConfig
		batch     []*call
		counts    map[int]int    // per shard
		versions  map[int]string // per shard with readings
		repeats   map[int]int
		perReader int // --stream-codec 1: XADDs built
	}{
		{name: "one shard", batch: []*call{readingsCall(rd(a, "", ""), rd(a, "", ""))},
			counts: map[int]int{sa: 2}, versions: map[int]string{sa: ingest.CodecBatch}},
		{name: "two shards, one with a metric", batch: []*call{readingsCall(rd(a, "", "")), readingsCall(rd(b, "", ""), rd(b, "temp", ""))},
			counts: map[int]int{sa: 1, sb: 2}, versions: map[int]string{sa: ingest.CodecBatch, sb: ingest.CodecMetricBatch}},
		{name: "dedup id: a repeat in the round trip", cfg: ProducerConfig{Dedup: DedupID},
			batch:  []*call{readingsCall(rd(a, "", "m1")), readingsCall(rd(a, "", "m1"), rd(a, "", "m2"), rd(a, "", ""))},
			counts: map[int]int{sa: 3}, versions: map[int]string{sa: ingest.CodecBatch}, repeats: map[int]int{sa: 1}},
		{name: "dedup off keeps repeats", cfg: ProducerConfig{Dedup: DedupOff},
			batch:  []*call{readingsCall(rd(a, "", "m1"), rd(a, "", "m1"))},
			counts: map[int]int{sa: 2}, versions: map[int]string{sa: ingest.CodecBatch}},
		{name: "codec 1: an entry per reading", cfg: ProducerConfig{Codec: ingest.CodecVersion},
			batch:  []*call{readingsCall(rd(a, "", ""), rd(b, "temp", ""))},
			counts: map[int]int{sa: 1, sb: 1}, perReader: 2},
		{name: "a typed row makes its shard's entry version 7, not the other's", batch: []*call{readingsCall(rd(a, "temp", ""), typedRd(a, "t1", "")), readingsCall(rd(b, "temp", ""))},
			counts: map[int]int{sa: 2, sb: 1}, versions: map[int]string{sa: ingest.CodecTypedBatch, sb: ingest.CodecMetricBatch}},
		{name: "dedup id: the same id in two tables is two rows", cfg: ProducerConfig{Dedup: DedupID},
			batch:  []*call{readingsCall(typedRd(a, "t1", "m1"), typedRd(a, "t2", "m1"), typedRd(a, "t1", "m1"), rd(a, "", "m1"))},
			counts: map[int]int{sa: 3}, versions: map[int]string{sa: ingest.CodecTypedBatch}, repeats: map[int]int{sa: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := testProducer(t, tt.cfg)
			var rt roundTrip
			rt.reset(len(p.keys))
			p.encode(t.Context(), tt.batch, &rt)
			for shard := range p.keys {
				if rt.counts[shard] != tt.counts[shard] {
					t.Errorf("shard %d: %d readings, want %d", shard, rt.counts[shard], tt.counts[shard])
				}
				if rt.dedupRepeat[shard] != tt.repeats[shard] {
					t.Errorf("shard %d: %d repeats, want %d", shard, rt.dedupRepeat[shard], tt.repeats[shard])
				}
				if tt.perReader > 0 || rt.counts[shard] == 0 {
					continue
				}
				if v := rt.batchVersion(shard); v != tt.versions[shard] {
					t.Errorf("shard %d: version %s, want %s", shard, v, tt.versions[shard])
				}
				// The body is a batch of the shard's readings, in call order.
				body := ingest.FinishBatch(slices.Clone(rt.bodies[shard]), rt.counts[shard])
				items, err := ingest.SplitBatch(string(body))
				if err != nil || len(items) != rt.counts[shard] {
					t.Errorf("shard %d: %d items, %v; want %d", shard, len(items), err, rt.counts[shard])
				}
			}
			if len(rt.perReading) != tt.perReader {
				t.Errorf("%d XADDs of one reading, want %d", len(rt.perReading), tt.perReader)
			}
		})
	}
}

// cmdNames is the commands queued on a pipeline, by name.
func cmdNames(pipe redis.Pipeliner) []string {
	var out []string
	for _, c := range pipe.Cmds() {
		out = append(out, fmt.Sprint(c.Name()))
	}
	return out
}

// TestRoundTripPlan: per shard, the generation token, the XADD(s) and the
// backlog counter in that order, or the dedup script alone; one pipeline
// for the single node, ended by WAIT with --redis-min-replicas.
func TestRoundTripPlan(t *testing.T) {
	a := "dev-a"
	for _, tt := range []struct {
		name  string
		cfg   ProducerConfig
		batch []*call
		want  []string
	}{
		{name: "batch", batch: []*call{readingsCall(rd(a, "", ""), rd(a, "", ""))},
			want: []string{"hsetnx", "xadd", "hincrby"}},
		{name: "codec 1", cfg: ProducerConfig{Codec: ingest.CodecVersion}, batch: []*call{readingsCall(rd(a, "", ""), rd(a, "", ""))},
			want: []string{"hsetnx", "xadd", "xadd", "hincrby"}},
		{name: "dedup", cfg: ProducerConfig{Dedup: DedupID}, batch: []*call{readingsCall(rd(a, "", "m1"))},
			want: []string{"eval"}},
		{name: "dedup, no keyed reading", cfg: ProducerConfig{Dedup: DedupID}, batch: []*call{readingsCall(rd(a, "", ""))},
			want: []string{"hsetnx", "xadd", "hincrby"}},
		{name: "wait", cfg: ProducerConfig{MinReplicas: 1}, batch: []*call{readingsCall(rd(a, "", ""))},
			want: []string{"hsetnx", "xadd", "hincrby", "wait"}},
		{name: "dead letter", batch: []*call{{dead: &ingest.DeadLetter{Device: a}}},
			want: []string{"hsetnx", "xadd", "hincrby"}},
		{name: "once", batch: []*call{onceCall(rd(a, "", ""), rd(a, "", ""))},
			want: []string{"eval"}},
		{name: "once dead letter", batch: []*call{{dead: &ingest.DeadLetter{Device: a}, once: &Once{Session: "s", PacketID: 1, Epoch: 1}}},
			want: []string{"eval"}},
		{name: "once and plain in one round trip: the plain entry first, the once part before the wait", cfg: ProducerConfig{MinReplicas: 1},
			batch: []*call{onceCall(rd(a, "", "")), readingsCall(rd(a, "", "")), onceCall(rd(a, "", ""))},
			want:  []string{"hsetnx", "xadd", "hincrby", "eval", "eval", "wait"}},
		{name: "once bypasses dedup", cfg: ProducerConfig{Dedup: DedupID}, batch: []*call{onceCall(rd(a, "", "m1"))},
			want: []string{"eval"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := testProducer(t, tt.cfg)
			var rt roundTrip
			rt.reset(len(p.keys))
			ctx := t.Context()
			p.encode(ctx, tt.batch, &rt)
			p.plan(ctx, &rt, "gen")
			p.queueDeadLetters(ctx, &rt, tt.batch, "gen")
			p.queueOnce(ctx, &rt, tt.batch, "gen")
			p.queueWaits(ctx, &rt)
			if len(rt.pipes) != 1 {
				t.Fatalf("%d pipelines, want 1", len(rt.pipes))
			}
			if got := cmdNames(rt.pipes[0].pipe); !slices.Equal(got, tt.want) {
				t.Errorf("commands %v, want %v", got, tt.want)
			}
		})
	}
}

func intCmd(v int64, err error) *redis.IntCmd {
	c := redis.NewIntCmd(context.Background(), "wait", 1, 100)
	c.SetVal(v)
	c.SetErr(err)
	return c
}

func stringCmd(name string, err error) *redis.StringCmd {
	c := redis.NewStringCmd(context.Background(), name)
	c.SetErr(err)
	return c
}

// TestRoundTripClassify: which answers mark a node unreachable or a shard
// not served, and what a shard's callers hear.
func TestRoundTripClassify(t *testing.T) {
	moved := replyErr("MOVED 3999 127.0.0.1:7001")
	wrongType := replyErr("WRONGTYPE Operation against a key holding the wrong kind of value")
	for _, tt := range []struct {
		name        string
		cmds        []redis.Cmder
		wait        *redis.IntCmd
		wantErr     string // "" none
		wantRefused bool
	}{
		{name: "all fine", cmds: []redis.Cmder{stringCmd("hsetnx", nil), stringCmd("xadd", nil)}},
		{name: "first failure wins", cmds: []redis.Cmder{stringCmd("hsetnx", nil), stringCmd("hincrby", wrongType), stringCmd("xadd", moved)},
			wantErr: "redis unavailable: hincrby: WRONGTYPE"},
		{name: "moved: not served", cmds: []redis.Cmder{stringCmd("xadd", moved)},
			wantErr: "redis unavailable: xadd: MOVED", wantRefused: true},
		{name: "wait short", cmds: []redis.Cmder{stringCmd("xadd", nil)}, wait: intCmd(0, nil),
			wantErr: "redis unavailable: 0 of 1 replicas confirmed the write within 1s"},
		{name: "wait failed", cmds: []redis.Cmder{stringCmd("xadd", nil)}, wait: intCmd(0, errors.New("i/o timeout")),
			wantErr: "redis unavailable: wait: i/o timeout"},
		{name: "wait confirmed", cmds: []redis.Cmder{stringCmd("xadd", nil)}, wait: intCmd(1, nil)},
		{name: "a command's failure hides the wait", cmds: []redis.Cmder{stringCmd("xadd", wrongType)}, wait: intCmd(0, nil),
			wantErr: "redis unavailable: xadd: WRONGTYPE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := testProducer(t, ProducerConfig{MinReplicas: 1, ReplicaTimeout: time.Second})
			err, refused := cmdsErr(tt.cmds)
			if err == nil {
				err = p.waitErr(tt.wait)
			}
			switch {
			case tt.wantErr == "" && err != nil, tt.wantErr != "" && (err == nil || !startsWith(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want %q", err, tt.wantErr)
			case err != nil && !errors.Is(err, ingest.ErrUnavailable):
				t.Errorf("error %v does not wrap ErrUnavailable", err)
			case refused != tt.wantRefused:
				t.Errorf("refused %v, want %v", refused, tt.wantRefused)
			}
		})
	}
	for _, tt := range []struct {
		err         error
		unreachable bool
	}{
		{nil, false},
		{wrongType, false},
		{moved, false},
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), true},
		{context.DeadlineExceeded, true},
		{redis.ErrClosed, true},
	} {
		if got := unreachable(tt.err); got != tt.unreachable {
			t.Errorf("unreachable(%v) = %v, want %v", tt.err, got, tt.unreachable)
		}
	}
}

// replyErr is an error Redis answered (redis.Error).
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

func startsWith(s, prefix string) bool { return len(s) >= len(prefix) && s[:len(prefix)] == prefix }

// TestRoundTripAnswer: a call hears its dead letter's error, or the first
// error of a shard it wrote to, or of its own XADD (--stream-codec 1).
func TestRoundTripAnswer(t *testing.T) {
	down := fmt.Errorf("%w: down", ingest.ErrUnavailable)
	for _, tt := range []struct {
		name     string
		shardOf  []int
		shardErr []error
		perXadd  []error // --stream-codec 1, per reading
		calls    []int   // readings per call
		want     []error
	}{
		{name: "all stored", shardOf: []int{0, 1}, shardErr: []error{nil, nil}, calls: []int{1, 1}, want: []error{nil, nil}},
		{name: "a shard down fails its calls only", shardOf: []int{0, 1, 1}, shardErr: []error{nil, down}, calls: []int{1, 2},
			want: []error{nil, down}},
		{name: "one reading of a call fails it", shardOf: []int{0, 1}, shardErr: []error{nil, down}, calls: []int{2},
			want: []error{down}},
		{name: "codec 1: a failed XADD", shardOf: []int{0, 0}, shardErr: []error{nil}, perXadd: []error{nil, errors.New("OOM")},
			calls: []int{1, 1}, want: []error{nil, ingest.ErrUnavailable}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := testProducer(t, ProducerConfig{})
			rt := roundTrip{shardOf: tt.shardOf, shardErr: tt.shardErr}
			for _, e := range tt.perXadd {
				rt.perReading = append(rt.perReading, stringCmd("xadd", e))
			}
			var batch []*call
			for _, n := range tt.calls {
				batch = append(batch, readingsCall(make([]ingest.Reading, n)...))
			}
			p.answerAll(batch, &rt, nil)
			for i, c := range batch {
				if got := <-c.done; !errors.Is(got, tt.want[i]) || (got == nil) != (tt.want[i] == nil) {
					t.Errorf("call %d: %v, want %v", i, got, tt.want[i])
				}
			}
		})
	}
}

// TestRoundTripOnceParts: a once-call is split into one part per shard, in
// the order of their first reading, each a batch entry of its readings in
// call order (version 4 when one names a metric), or an entry per reading
// with --stream-codec 1; a once dead letter is one part.
func TestRoundTripOnceParts(t *testing.T) {
	streams := Streams{Prefix: "t", Count: 4, Layout: LayoutSpread}
	a, b := "dev-a", "dev-b"
	for streams.Shard(b) == streams.Shard(a) {
		b += "x"
	}
	sa, sb := streams.Shard(a), streams.Shard(b)
	type part struct {
		shard    int
		count    int
		nField   string
		versions []string // per entry
	}
	for _, tt := range []struct {
		name string
		cfg  ProducerConfig
		c    *call
		want []part
	}{
		{name: "two shards, a metric in the second", c: onceCall(rd(b, "", ""), rd(a, "", ""), rd(b, "temp", "")),
			want: []part{{sb, 2, "2", []string{ingest.CodecMetricBatch}}, {sa, 1, "1", []string{ingest.CodecBatch}}}},
		{name: "codec 1", cfg: ProducerConfig{Codec: ingest.CodecVersion}, c: onceCall(rd(a, "", ""), rd(a, "temp", ""), rd(b, "", "")),
			want: []part{{sa, 2, "", []string{ingest.CodecVersion, ingest.CodecMetric}}, {sb, 1, "", []string{ingest.CodecVersion}}}},
		{name: "typed rows", c: onceCall(typedRd(a, "t1", ""), rd(b, "", ""), rd(a, "temp", "")),
			want: []part{{sa, 2, "2", []string{ingest.CodecTypedBatch}}, {sb, 1, "1", []string{ingest.CodecBatch}}}},
		{name: "codec 1, typed rows", cfg: ProducerConfig{Codec: ingest.CodecVersion}, c: onceCall(typedRd(a, "t1", ""), rd(a, "", "")),
			want: []part{{sa, 2, "", []string{ingest.CodecTyped, ingest.CodecVersion}}}},
		{name: "dead letter", c: &call{dead: &ingest.DeadLetter{Device: b}, once: &Once{Session: "s", PacketID: 1, Epoch: 1}},
			want: []part{{sb, 1, "1", []string{ingest.CodecDeadLetter}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := testProducer(t, tt.cfg)
			parts := p.onceParts(tt.c)
			if len(parts) != len(tt.want) {
				t.Fatalf("%d parts, want %d", len(parts), len(tt.want))
			}
			for i, got := range parts {
				w := tt.want[i]
				var versions []string
				for j := 0; j < len(got.entries); j += 2 {
					versions = append(versions, got.entries[j].(string))
				}
				if got.shard != w.shard || got.count != w.count || got.nField != w.nField || !slices.Equal(versions, w.versions) {
					t.Errorf("part %d: shard %d, %d readings, n %q, versions %v; want %+v", i, got.shard, got.count, got.nField, versions, w)
				}
				if got.nField != "" && versions[0] != ingest.CodecDeadLetter {
					body := got.entries[1].([]byte)
					if items, err := ingest.SplitBatch(string(body)); err != nil || len(items) != w.count {
						t.Errorf("part %d: %d items, %v; want %d", i, len(items), err, w.count)
					}
				}
			}
		})
	}
}

// TestRoundTripOnceAnswer: a once-call hears its first failed part's error;
// it is redelivered only when every part was recorded before.
func TestRoundTripOnceAnswer(t *testing.T) {
	down := fmt.Errorf("%w: down", ingest.ErrUnavailable)
	script := func(n int64) *redis.Cmd {
		c := redis.NewCmd(context.Background(), "eval")
		c.SetVal(n)
		return c
	}
	for _, tt := range []struct {
		name            string
		results         []int64 // per part: what the script answered
		errs            []error // per part
		wantErr         error
		wantRedelivered bool
		wantMetric      float64
	}{
		{name: "stored", results: []int64{1, 1}, errs: []error{nil, nil}},
		{name: "recorded before", results: []int64{0, 0}, errs: []error{nil, nil}, wantRedelivered: true, wantMetric: 1},
		{name: "one part recorded before", results: []int64{0, 1}, errs: []error{nil, nil}, wantMetric: 1},
		{name: "a part failed", results: []int64{0, 0}, errs: []error{nil, down}, wantErr: down},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := testProducer(t, ProducerConfig{})
			plain, c := readingsCall(rd("x", "", "")), onceCall(rd("y", "", ""))
			rt := roundTrip{shardOf: []int{0}, shardErr: []error{nil}}
			for i, n := range tt.results {
				rt.once = append(rt.once, oncePart{c: c, cmd: script(n), err: tt.errs[i]})
			}
			p.answerAll([]*call{c, plain}, &rt, nil)
			if err := <-c.done; err != tt.wantErr {
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
			if c.redelivered != tt.wantRedelivered {
				t.Errorf("redelivered %v, want %v", c.redelivered, tt.wantRedelivered)
			}
			if err := <-plain.done; err != nil {
				t.Errorf("the plain call after it: %v", err)
			}
			if v := testutil.ToFloat64(p.m.redeliveries); v != tt.wantMetric {
				t.Errorf("redeliveries %g, want %g", v, tt.wantMetric)
			}
		})
	}
}
