package stream_test

import (
	"encoding/binary"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// devicesOfShards is one device per shard of streams, named after prefix.
func devicesOfShards(streams stream.Streams, prefix string) []string {
	out := make([]string, streams.Len())
	for i, left := 0, streams.Len(); left > 0; i++ {
		d := prefix + strconv.Itoa(i)
		if s := streams.Shard(d); out[s] == "" {
			out[s] = d
			left--
		}
	}
	return out
}

// addOnce is AddOnce failing t on error; it returns redelivered.
func addOnce(t *testing.T, p *stream.Producer, rs []ingest.Reading, o stream.Once) bool {
	t.Helper()
	redelivered, err := p.AddOnce(t.Context(), rs, o)
	if err != nil {
		t.Fatalf("AddOnce %+v: %v", o, err)
	}
	return redelivered
}

// TestIntegrationOnce: a QoS 2 message is stored once however often it is
// delivered with its once key; after Release a new message with the packet
// id is stored; the record is the epoch at 8 x packet id of the shard's once
// key; the backlog counts what was stored.
func TestIntegrationOnce(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 3}
	p, reg, _ := startProducer(t, rdb, streams, stream.ProducerConfig{BacklogInterval: 10 * time.Millisecond})
	s := p.SessionState("sub-1@" + prefix)
	epochs, err := s.Epochs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(epochs) != 65535 || epochs[1] == 0 || epochs[1] != epochs[65535] {
		t.Fatalf("Epochs: %d packet ids, epoch of 1 %d, of 65535 %d; want 65535 ids sharing a base other than 0", len(epochs), epochs[1], epochs[65535])
	}
	again, err := s.Epochs(t.Context())
	if err != nil || again[7] != epochs[7] {
		t.Fatalf("Epochs again: %d, %v; want the base %d kept", again[7], err, epochs[7])
	}

	const pid = 7
	o := stream.Once{Session: s.Session(), PacketID: pid, Epoch: epochs[pid]}
	msg := []ingest.Reading{newReading("once-a", 1), newReading("once-a", 2)}
	if addOnce(t, p, msg, o) {
		t.Fatal("first delivery: redelivered, want stored")
	}
	if !addOnce(t, p, msg, o) {
		t.Fatal("second delivery with the same once key: stored again, want redelivered")
	}
	shard := streams.Shard("once-a")
	if got := readStreams(t, rdb, streams)[shard]; len(got) != 2 || got[0].id != got[1].id {
		t.Fatalf("shard %d holds %d readings, want the message's 2 in one entry: %+v", shard, len(got), got)
	}
	record, err := rdb.Get(t.Context(), streams.ShardOnceKey(shard, s.Session())).Bytes()
	if err != nil || len(record) != 8*(pid+1) || binary.BigEndian.Uint64(record[8*pid:]) != o.Epoch {
		t.Fatalf("once record %x, %v; want epoch %x at %d", record, err, o.Epoch, 8*pid)
	}

	e, err := s.Release(t.Context(), pid)
	if err != nil {
		t.Fatal(err)
	}
	if e == o.Epoch || e == 0 {
		t.Fatalf("Release gave epoch %d, was %d", e, o.Epoch)
	}
	if epochs, err = s.Epochs(t.Context()); err != nil || epochs[pid] != e || epochs[pid+1] != o.Epoch {
		t.Fatalf("Epochs after Release: %d and %d, %v; want %d and the base %d", epochs[pid], epochs[pid+1], err, e, o.Epoch)
	}
	next := []ingest.Reading{newReading("once-a", 3)}
	if addOnce(t, p, next, stream.Once{Session: s.Session(), PacketID: pid, Epoch: e}) {
		t.Fatal("a new message reusing the packet id after Release: redelivered, want stored")
	}
	// Another session's packet id 7 is its own.
	other := stream.Once{Session: "sub-2@" + prefix, PacketID: pid, Epoch: e}
	if addOnce(t, p, next, other) {
		t.Fatal("the same packet id and epoch of another session: redelivered, want stored")
	}
	got := countBy(storedReadings(t, rdb, streams))
	if want := map[string]int{"once-a//1": 1, "once-a//2": 1, "once-a//3": 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	if v, _, _ := metricValue(t, reg, "firehose_producer_redeliveries_total"); v != 1 {
		t.Errorf("firehose_producer_redeliveries_total = %g, want 1", v)
	}
	if v, _, _ := metricValue(t, reg, "firehose_producer_entries_written_total"); v != 6 {
		t.Errorf("firehose_producer_entries_written_total = %g, want 6 (acknowledged, redelivery included)", v)
	}
	eventually(t, 10*time.Second, func() error { return backlogIs(p, 4) })
}

// TestIntegrationOnceStoresOnlyMissingParts: a message whose readings span
// two shards, of which one stored its part before (as when the other
// shard's node was down), stores only the missing part; delivered again,
// nothing.
func TestIntegrationOnceStoresOnlyMissingParts(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 2}
	p, reg, _ := startProducer(t, rdb, streams, stream.ProducerConfig{})
	dev := devicesOfShards(streams, "part-")
	s := p.SessionState("sub@" + prefix)
	epochs, err := s.Epochs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	o := stream.Once{Session: s.Session(), PacketID: 65535, Epoch: epochs[65535]}
	a, b := newReading(dev[0], 1), newReading(dev[1], 2)
	if addOnce(t, p, []ingest.Reading{a}, o) {
		t.Fatal("the part of shard 0: redelivered, want stored")
	}
	if addOnce(t, p, []ingest.Reading{a, b}, o) {
		t.Fatal("the whole message, shard 0's part stored before: redelivered, want the part of shard 1 stored")
	}
	if !addOnce(t, p, []ingest.Reading{a, b}, o) {
		t.Fatal("the whole message again: stored, want redelivered")
	}
	got := countBy(storedReadings(t, rdb, streams))
	if want := map[string]int{dev[0] + "//1": 1, dev[1] + "//2": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	if v, _, _ := metricValue(t, reg, "firehose_producer_redeliveries_total"); v != 2 {
		t.Errorf("firehose_producer_redeliveries_total = %g, want 2 (one in part, one whole)", v)
	}
}

// TestIntegrationOnceDeadLetter: a QoS 2 message that cannot become
// readings is one dead letter entry however often it is delivered.
func TestIntegrationOnceDeadLetter(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 2}
	p, reg, _ := startProducer(t, rdb, streams, stream.ProducerConfig{})
	d := ingest.DeadLetter{Source: ingest.SourceMQTT, Kind: ingest.KindTopic, Topic: "devices/odl/readings", ClientID: "c",
		Device: "odl", Reason: "invalid", ReceivedAt: time.Now().UTC(), Payload: []byte("x")}
	o := stream.Once{Session: "s@" + prefix, PacketID: 1, Epoch: 42}
	for i, want := range []bool{false, true} {
		redelivered, err := p.AddDeadLetterOnce(t.Context(), d, o)
		if err != nil || redelivered != want {
			t.Fatalf("delivery %d: redelivered %v, %v; want %v", i+1, redelivered, err, want)
		}
	}
	key := streams.Key(streams.Shard("odl"))
	msgs, err := rdb.XRange(t.Context(), key, "-", "+").Result()
	if err != nil || len(msgs) != 1 || msgs[0].Values[ingest.FieldVersion] != ingest.CodecDeadLetter || msgs[0].Values[ingest.FieldCount] != "1" {
		t.Fatalf("%s: %v, %v; want one dead letter entry", key, msgs, err)
	}
	if v, _, _ := metricValue(t, reg, "firehose_producer_dead_letters_total"); v != 2 {
		t.Errorf("firehose_producer_dead_letters_total = %g, want 2 (acknowledged)", v)
	}
}

// TestIntegrationOnceStreamCodec1: with --stream-codec 1 a once part is an
// entry per reading (version 1, or 3 with a metric), written and skipped
// together.
func TestIntegrationOnceStreamCodec1(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 1}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{Codec: ingest.CodecVersion, BacklogInterval: 10 * time.Millisecond})
	rs := []ingest.Reading{newReading("c1", 1), newReading("c1", 2), newReading("c1", 3)}
	rs[1].Metric = "rpm"
	o := stream.Once{Session: "s@" + prefix, PacketID: 3, Epoch: 9}
	if addOnce(t, p, rs, o) || !addOnce(t, p, rs, o) {
		t.Fatal("want stored, then redelivered")
	}
	msgs, err := rdb.XRange(t.Context(), streams.Key(0), "-", "+").Result()
	if err != nil || len(msgs) != 3 {
		t.Fatalf("%d entries, %v; want 3", len(msgs), err)
	}
	for i, want := range []string{ingest.CodecVersion, ingest.CodecMetric, ingest.CodecVersion} {
		m := msgs[i].Values
		if m[ingest.FieldVersion] != want || m[ingest.FieldCount] != nil {
			t.Fatalf("entry %d: %v, want version %s without a count", i, m, want)
		}
		got, err := ingest.DecodeEntry(m)
		if err != nil || len(got) != 1 {
			t.Fatalf("entry %d: %v, %v", i, got, err)
		}
		assertSameReading(t, got[0], rs[i])
	}
	eventually(t, 10*time.Second, func() error { return backlogIs(p, 3) })
}

// TestIntegrationOnceBypassesDedup: under --dedup a once-call is stored once
// by its once key, and its readings' keys are not remembered: the same
// readings sent by Add are stored again.
func TestIntegrationOnceBypassesDedup(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 2}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{Dedup: stream.DedupID})
	r := newReading("dd-once", 1)
	r.ID = "m1"
	rs := []ingest.Reading{r}
	o := stream.Once{Session: "s@" + prefix, PacketID: 5, Epoch: 1}
	if addOnce(t, p, rs, o) || !addOnce(t, p, rs, o) {
		t.Fatal("want stored, then redelivered")
	}
	if err := p.Add(t.Context(), rs); err != nil {
		t.Fatal(err)
	}
	if n := len(storedReadings(t, rdb, streams)); n != 2 {
		t.Fatalf("%d readings stored, want 2: the once-call's and Add's", n)
	}
}

// TestIntegrationOnceRefusesBadKeys: a once key that SessionState could not
// have given is refused before anything is written.
func TestIntegrationOnceRefusesBadKeys(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 1}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{})
	for _, tt := range []struct {
		name string
		o    stream.Once
	}{
		{name: "no session", o: stream.Once{PacketID: 1, Epoch: 1}},
		{name: "packet id 0", o: stream.Once{Session: "s", Epoch: 1}},
		{name: "epoch 0", o: stream.Once{Session: "s", PacketID: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := p.AddOnce(t.Context(), []ingest.Reading{newReading("bad", 1)}, tt.o); err == nil {
				t.Error("AddOnce: nil, want an error")
			}
			if _, err := p.AddDeadLetterOnce(t.Context(), ingest.DeadLetter{Device: "bad"}, tt.o); err == nil {
				t.Error("AddDeadLetterOnce: nil, want an error")
			}
		})
	}
	if _, err := p.SessionState("s").Release(t.Context(), 0); err == nil {
		t.Error("Release(0): nil, want an error")
	}
	if n := len(storedReadings(t, rdb, streams)); n != 0 {
		t.Fatalf("%d readings stored, want none", n)
	}
}

// TestIntegrationOnceWithPlainAdds: once-calls and plain Adds share round
// trips; every plain reading is stored once, every once message once
// whichever of two concurrent deliveries with its key wins (exactly one
// answers stored), and a message after Release again; the backlog counts
// what was stored.
func TestIntegrationOnceWithPlainAdds(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 4}
	p, reg, _ := startProducer(t, rdb, streams, stream.ProducerConfig{BacklogInterval: 10 * time.Millisecond})
	s := p.SessionState("sub@" + prefix)
	epochs, err := s.Epochs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const workers, perWorker, plainPer = 6, 20, 40
	var wg sync.WaitGroup
	var stored, redelivered atomic.Int64
	for w := range workers {
		wg.Go(func() { // plain readings
			for i := range plainPer {
				if err := p.Add(t.Context(), []ingest.Reading{newReading(fmt.Sprintf("plain-%d", w), float64(i))}); err != nil {
					t.Errorf("Add: %v", err)
					return
				}
			}
		})
		wg.Go(func() { // QoS 2 messages of packet ids of its own
			epochs := maps.Clone(epochs)
			for i := range perWorker {
				pid := uint16(1 + w*perWorker + i%5) // five ids, each used four times
				o := stream.Once{Session: s.Session(), PacketID: pid, Epoch: epochs[pid]}
				msg := []ingest.Reading{newReading(fmt.Sprintf("q2-%d-%d", w, i), 1), newReading(fmt.Sprintf("q2b-%d-%d", w, i), 2)}
				var twice sync.WaitGroup
				for range 2 {
					twice.Go(func() {
						again, err := p.AddOnce(t.Context(), msg, o)
						switch {
						case err != nil:
							t.Errorf("AddOnce: %v", err)
						case again:
							redelivered.Add(1)
						default:
							stored.Add(1)
						}
					})
				}
				twice.Wait()
				e, err := s.Release(t.Context(), pid)
				if err != nil {
					t.Errorf("Release: %v", err)
					return
				}
				epochs[pid] = e
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Two devices per message, maybe in two shards: one delivery may store
	// one part and the other the other, so both answer stored. Count what
	// landed instead.
	got := countBy(storedReadings(t, rdb, streams))
	want := map[string]int{}
	for w := range workers {
		for i := range plainPer {
			want[fmt.Sprintf("plain-%d//%d", w, i)] = 1
		}
		for i := range perWorker {
			want[fmt.Sprintf("q2-%d-%d//1", w, i)] = 1
			want[fmt.Sprintf("q2b-%d-%d//2", w, i)] = 1
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stored %d kinds of readings, want %d; got %v", len(got), len(want), got)
	}
	if n := stored.Load() + redelivered.Load(); n != 2*workers*perWorker {
		t.Fatalf("%d answers, want %d", n, 2*workers*perWorker)
	}
	if redelivered.Load() == 0 {
		t.Error("no concurrent delivery was recognised as a redelivery")
	}
	if v, _, _ := metricValue(t, reg, "firehose_producer_redeliveries_total"); v < float64(redelivered.Load()) {
		t.Errorf("firehose_producer_redeliveries_total = %g, want at least %d", v, redelivered.Load())
	}
	eventually(t, 10*time.Second, func() error { return backlogIs(p, int64(workers*(plainPer+2*perWorker))) })
}

// TestIntegrationSessionStart: a session the broker kept keeps its epochs;
// one it did not moves every packet id to a new epoch, so that a message
// stored and never released is not taken for the new session's message that
// reuses its packet id.
func TestIntegrationSessionStart(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	streams := stream.Streams{Prefix: prefix, Count: 2}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{})
	s := p.SessionState("sub-start@" + prefix)
	first, err := s.Start(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	const pid = 9
	msg := []ingest.Reading{newReading("start-a", 1)}
	if addOnce(t, p, msg, stream.Once{Session: s.Session(), PacketID: pid, Epoch: first[pid]}) {
		t.Fatal("first delivery: redelivered, want stored")
	}
	kept, err := s.Start(t.Context(), true)
	if err != nil || !maps.Equal(kept, first) {
		t.Fatalf("Start with the session present changed the epochs (%v)", err)
	}
	if !addOnce(t, p, msg, stream.Once{Session: s.Session(), PacketID: pid, Epoch: kept[pid]}) {
		t.Fatal("resent in the resumed session: stored again, want redelivered")
	}
	fresh, err := s.Start(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if fresh[pid] == first[pid] || fresh[1] != fresh[65535] {
		t.Fatalf("Start without a session: epoch of %d %d (was %d), want a new base for every id", pid, fresh[pid], first[pid])
	}
	if addOnce(t, p, []ingest.Reading{newReading("start-a", 2)}, stream.Once{Session: s.Session(), PacketID: pid, Epoch: fresh[pid]}) {
		t.Fatal("a new session's message reusing the packet id: redelivered, want stored")
	}
	if got := countBy(storedReadings(t, rdb, streams)); fmt.Sprint(got) != fmt.Sprint(map[string]int{"start-a//1": 1, "start-a//2": 1}) {
		t.Fatalf("stored %v", got)
	}
}
