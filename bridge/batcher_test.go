package bridge

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
)

// The batcher's decisions without Redis or PostgreSQL: the time is passed in.

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// single is a stream message of one version-1 reading.
func single(id string, seq int) redis.XMessage {
	r := ingest.Reading{DeviceID: "dev", Time: t0, ReceivedAt: t0, Value: float64(seq)}
	return redis.XMessage{ID: id, Values: map[string]any{
		ingest.FieldVersion: ingest.CodecVersion,
		ingest.FieldBody:    string(ingest.AppendEncode(nil, &r)),
	}}
}

// batchOf is a stream message of one batch entry (version 2) of n readings.
func batchOf(id string, n int) redis.XMessage {
	rs := make([]*ingest.Reading, n)
	for i := range rs {
		rs[i] = &ingest.Reading{DeviceID: "dev", Time: t0, ReceivedAt: t0, Value: float64(i)}
	}
	return redis.XMessage{ID: id, Values: map[string]any{
		ingest.FieldVersion: ingest.CodecBatch,
		ingest.FieldCount:   strconv.Itoa(n),
		ingest.FieldBody:    string(ingest.AppendBatch(nil, rs)),
	}}
}

func TestBatcherFlushBySize(t *testing.T) {
	b := newBatcher(4, time.Second)
	for i := range 3 {
		if full := b.add(single("1-"+strconv.Itoa(i), i), t0); full {
			t.Fatalf("full after %d of 4 readings", i+1)
		}
	}
	if got := b.due(t0); got != "" {
		t.Fatalf("due with 3 of 4 readings: %q", got)
	}
	if !b.add(single("1-3", 3), t0) {
		t.Fatal("add of the 4th reading did not report the batch full")
	}
	if got := b.due(t0); got != triggerSize {
		t.Fatalf("due = %q, want %q", got, triggerSize)
	}
	// A read may overshoot: a batch entry counts its readings.
	b.add(batchOf("1-4", 3), t0)
	batch, _ := b.flush()
	if len(batch) != 7 {
		t.Fatalf("flush handed out %d entries, want 7", len(batch))
	}
	b.reset()
	if b.len() != 0 || b.due(t0) != "" {
		t.Fatalf("after reset: len %d, due %q", b.len(), b.due(t0))
	}
}

func TestBatcherFlushByAge(t *testing.T) {
	const age = 200 * time.Millisecond
	b := newBatcher(100, age)
	b.add(single("1-0", 0), t0)
	// Later readings do not move the batch's deadline: its oldest decides.
	b.add(single("1-1", 1), t0.Add(150*time.Millisecond))
	tests := []struct {
		name string
		at   time.Duration // after the first add
		want string
	}{
		{"fresh", 0, ""},
		{"just before", age - 2*time.Millisecond, ""},
		{"within a millisecond", age - time.Millisecond/2, triggerAge},
		{"at its age", age, triggerAge},
		{"long after", 10 * age, triggerAge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := b.due(t0.Add(tt.at)); got != tt.want {
				t.Errorf("due at +%s = %q, want %q", tt.at, got, tt.want)
			}
		})
	}
	// After the flush the next batch's age runs from its own first reading.
	b.reset()
	b.add(single("1-2", 2), t0.Add(time.Second))
	if got := b.due(t0.Add(time.Second + age/2)); got != "" {
		t.Errorf("new batch due at half its age: %q", got)
	}
}

// A quiet stream: nothing arrives after the first readings. The reads that
// follow may block only for a pace and never past the batch's age, and the
// batch is then due, so its readings are not stranded waiting for a next
// entry (the seed's bug).
func TestBatcherFlushWhenStreamGoesQuiet(t *testing.T) {
	const age = 200 * time.Millisecond
	b := newBatcher(5000, age)

	// Empty: a read blocks for the idle bound.
	if r := b.next(t0, false); r.block != maxIdleBlock || r.pause != 0 || r.count != 1 {
		t.Fatalf("empty batcher's read = %+v, want block %s, no pause, count 1", r, maxIdleBlock)
	}
	b.add(batchOf("1-0", 10), t0)
	now := t0
	for _, elapsed := range []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond, 150 * time.Millisecond, 199 * time.Millisecond} {
		now = t0.Add(elapsed)
		if got := b.due(now); got != "" {
			t.Fatalf("due at +%s: %q", elapsed, got)
		}
		r := b.next(now, false)
		if want := min(age-elapsed, readPace(age)); r.block != want {
			t.Fatalf("read at +%s blocks %s, want a pace at most and not past the batch's age: %s", elapsed, r.block, want)
		}
		// The read returns nothing: the batch is unchanged, and 10
		// readings fill 5,000 slowly: not quiet.
		if b.quiet(r, 0) {
			t.Fatalf("10 readings then nothing until +%s: quiet", now.Add(r.block).Sub(t0))
		}
		now = now.Add(r.block)
	}
	if got := b.due(now); got != triggerAge {
		t.Fatalf("quiet stream: due after the blocked reads = %q, want %q", got, triggerAge)
	}

	// A shard at the end of its stream paces its reads and does not block.
	b.reset()
	b.add(batchOf("1-1", 10), t0)
	r := b.next(t0.Add(190*time.Millisecond), true)
	if r.block != -1 || r.pause != 10*time.Millisecond {
		t.Fatalf("caught-up read near the age = %+v, want pause 10ms (the time left), no block", r)
	}
	if r := b.next(t0, true); r.pause != readPace(age) {
		t.Fatalf("caught-up read = %+v, want pause %s", r, readPace(age))
	}
}

// A shard that has caught up paces its reads by the rate its batch fills:
// one that fills slower than its age reads once more, just before the age;
// one that fills within a pace reads every pace, as before.
func TestBatcherPaceFollowsFillRate(t *testing.T) {
	const age = 200 * time.Millisecond
	b := newBatcher(5000, age)
	b.add(batchOf("1-0", 10), t0)
	b.add(batchOf("1-1", 240), t0.Add(50*time.Millisecond))
	// 250 readings in 50 ms: 5,000 a second, full in another 950 ms.
	now := t0.Add(50 * time.Millisecond)
	if r := b.next(now, true); r.pause != 150*time.Millisecond || r.block != -1 {
		t.Fatalf("slow shard's read = %+v, want pause 150ms (the time left to the age), no block", r)
	}

	b.reset()
	b.add(batchOf("2-0", 10), t0)
	b.add(batchOf("2-1", 3990), t0.Add(10*time.Millisecond))
	// 4,000 readings in 10 ms: full in 2.5 ms, sooner than a pace.
	if r := b.next(t0.Add(10*time.Millisecond), true); r.pause != readPace(age) {
		t.Fatalf("fast shard's read = %+v, want pause %s", r, readPace(age))
	}

	// A long batch age: the wait is still bounded (the lease's ping, the
	// context, a buffer that keeps up with the stream).
	long := newBatcher(100000, time.Hour)
	long.add(batchOf("4-0", 10), t0)
	long.add(batchOf("4-1", 10), t0.Add(10*time.Millisecond))
	if r := long.next(t0.Add(10*time.Millisecond), true); r.pause != maxFillPause {
		t.Fatalf("slow shard with an hour's batch age: read = %+v, want pause %s", r, maxFillPause)
	}

	b.reset()
	b.add(batchOf("3-0", 1000), t0)
	b.add(batchOf("3-1", 1000), t0.Add(40*time.Millisecond))
	// 2,000 in 40 ms: full in 60 ms more, between the pace and the age.
	if r := b.next(t0.Add(40*time.Millisecond), true); r.pause != 60*time.Millisecond {
		t.Fatalf("read = %+v, want pause 60ms (until full)", r)
	}
}

// A paced read that finds nothing ends a burst: a batch that was filling
// fast enough to be full within burstFill commits at once (the end of a
// drained backlog); one that fills slower waits for its age, so a trickle
// commits once per age, not once per reading.
func TestBatcherQuietAfterBurst(t *testing.T) {
	const age = 200 * time.Millisecond
	b := newBatcher(5000, age)
	b.add(batchOf("1-0", 4000), t0)
	b.add(batchOf("1-1", 500), t0.Add(60*time.Millisecond))
	now := t0.Add(60 * time.Millisecond)
	plan := b.next(now, true)
	if plan.pause <= 0 {
		t.Fatalf("caught-up read = %+v, want a pause", plan)
	}
	if !b.quiet(plan, 0) {
		t.Fatalf("4,500 readings in %s, then a paced read brought nothing: not quiet", now.Sub(t0))
	}
	// However long the box took between the reads that brought them, the
	// wait for nothing does not count: 4,500 in 150 ms is still a burst.
	slow := newBatcher(5000, age)
	slow.add(batchOf("5-0", 4000), t0)
	slow.add(batchOf("5-1", 500), t0.Add(150*time.Millisecond))
	if !slow.quiet(readPlan{pause: maxFillPause, block: -1}, 0) {
		t.Fatal("4,500 readings in 150 ms, then a long pace for nothing: not quiet")
	}
	if b.quiet(plan, 1) {
		t.Fatal("a read that brought an entry is quiet")
	}
	if !b.quiet(readPlan{block: readPace(age)}, 0) {
		t.Fatal("a read that blocked a pace for nothing (a shard that was behind) is not quiet")
	}
	if b.quiet(readPlan{block: -1}, 0) {
		t.Fatal("a read that did not wait is quiet")
	}

	// A trickle: 3 readings in 50 ms fill 5,000 long after the age.
	b.reset()
	b.add(single("2-0", 1), t0)
	b.add(single("2-1", 1), t0.Add(20*time.Millisecond))
	b.add(single("2-2", 1), t0.Add(50*time.Millisecond))
	plan = b.next(t0.Add(50*time.Millisecond), true)
	if b.quiet(plan, 0) {
		t.Fatal("a trickle is quiet: it would commit per reading")
	}
	// Small bursts under a long age: 100 readings at once fill 5,000 in
	// seconds. They wait for the age, gathering the bursts that follow.
	long := newBatcher(5000, 10*time.Second)
	long.add(batchOf("3-0", 100), t0)
	plan = long.next(t0, true)
	if long.quiet(plan, 0) {
		t.Fatalf("100 readings, then nothing for %s, under a 10s age: quiet", plan.pause)
	}
	b.reset()
	if b.quiet(plan, 0) {
		t.Fatal("an empty batch is quiet")
	}
}

// At shutdown the session takes one more read of what fits, then flushes
// whatever the batch holds, neither full nor old.
func TestBatcherFlushAtShutdown(t *testing.T) {
	b := newBatcher(100, time.Second)
	if count, ok := b.shutdownRead(); !ok || count != 1 {
		t.Fatalf("shutdown read of an empty batcher that knows no entry = %d, %v; want 1, true", count, ok)
	}
	b.add(batchOf("1-0", 10), t0)
	b.add(single("1-1", 1), t0)
	if count, ok := b.shutdownRead(); !ok || count != 8 { // 89 readings of room, entries of up to 10
		t.Fatalf("shutdown read = %d, %v; want 8, true", count, ok)
	}
	if got := b.due(t0); got != "" {
		t.Fatalf("due = %q: the test wants a batch that is not", got)
	}
	batch, declared := b.flush()
	if len(batch) != 11 || declared != 10 {
		t.Fatalf("flush = %d entries declaring %d readings, want 11 and 10", len(batch), declared)
	}
	if batch[0].entryID() != "1-0/1" || batch[10].entryID() != "1-1" {
		t.Errorf("entry ids %q .. %q", batch[0].entryID(), batch[10].entryID())
	}
	// Until reset the batch stays (a failed commit leaves it to the session).
	if b.len() != 11 {
		t.Fatalf("flush emptied the batcher: len %d", b.len())
	}
	b.reset()
	if batch, declared := b.flush(); len(batch) != 0 || declared != 0 {
		t.Fatalf("after reset: %d entries, %d declared", len(batch), declared)
	}

	// A full batch leaves no room: no read at shutdown.
	b.add(batchOf("1-2", 100), t0)
	if _, ok := b.shutdownRead(); ok {
		t.Fatal("full batch: shutdown read planned")
	}
}

func TestBatcherReadCountFollowsLargestEntry(t *testing.T) {
	b := newBatcher(1000, time.Second)
	tests := []struct {
		name string
		add  redis.XMessage
		want int64 // entries to read next
	}{
		{"entry of one", single("1-0", 0), 999},
		{"batch of 100", batchOf("1-1", 100), 8}, // 899 readings of room / 100
		{"smaller entry keeps the largest", single("1-2", 2), 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.add(tt.add, t0)
			if got := b.next(t0, false).count; got != tt.want {
				t.Errorf("count = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestAppendDecoded(t *testing.T) {
	deadLetter := ingest.DeadLetter{}
	tests := []struct {
		name         string
		msg          redis.XMessage
		entries      int
		declared     int64
		firstBad     error // errors.Is of the first entry's bad; nil: decodes
		firstDumpRaw bool
	}{
		{"single", single("1-0", 0), 1, 0, nil, false},
		{"batch", batchOf("1-1", 3), 3, 3, nil, false},
		{"no body", redis.XMessage{ID: "1-2", Values: map[string]any{ingest.FieldVersion: "1"}}, 1, 0, ingest.ErrCorruptEntry, true},
		{"broken batch framing", redis.XMessage{ID: "1-3", Values: map[string]any{
			ingest.FieldVersion: ingest.CodecBatch, ingest.FieldCount: "2", ingest.FieldBody: "\x02\x05ab",
		}}, 1, 2, ingest.ErrCorruptEntry, false},
		{"dead letter", redis.XMessage{ID: "1-4", Values: map[string]any{
			ingest.FieldVersion: ingest.CodecDeadLetter, ingest.FieldBody: string(ingest.AppendDeadLetter(nil, &deadLetter)),
		}}, 1, 1, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf, declared := appendDecoded(nil, tt.msg)
			if len(buf) != tt.entries || declared != tt.declared {
				t.Fatalf("%d entries declaring %d, want %d and %d", len(buf), declared, tt.entries, tt.declared)
			}
			e := buf[0]
			switch {
			case tt.firstBad == nil && e.bad != nil:
				t.Errorf("first entry rejected: %v", e.bad)
			case tt.firstBad != nil && !errors.Is(e.bad, tt.firstBad):
				t.Errorf("first entry's error %v, want %v", e.bad, tt.firstBad)
			}
			if e.dump != tt.firstDumpRaw {
				t.Errorf("dump = %v, want %v", e.dump, tt.firstDumpRaw)
			}
		})
	}
}
