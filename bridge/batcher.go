package bridge

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// Flush triggers decided by the batcher (label values of
// firehose_bridge_flushes_total; the session adds read_error, shutdown and
// handover).
const (
	triggerSize = "size" // the batch holds BatchSize readings
	triggerAge  = "age"  // its oldest reading has waited BatchAge (a quiet stream included)
	// triggerQuiet: a read that waited found nothing new after a burst:
	// the stream went quiet before the batch was full or its age came
	// (see quiet).
	triggerQuiet = "quiet"
)

// maxIdleBlock bounds one blocking read, so a shard notices the end of its
// context within this time (go-redis does not interrupt a blocked read).
const maxIdleBlock = time.Second

const maxReadPace = 50 * time.Millisecond

// maxFillPause bounds the wait of a shard whose batch fills slowly (see
// untilFull): with a long batch age the session must still come round to
// its lease's ping and its context, and the buffer keep up with the
// stream, at least this often.
const maxFillPause = 200 * time.Millisecond

// batcher is a shard's buffer of decoded entries and the decisions on it:
// when the batch is due (by size or by age, a quiet stream included), how
// long the next read may wait, and how many entries it may take. It does no
// I/O and reads no clock: the session passes the time in, reads the stream,
// commits what flush hands out and then calls reset. Like benthos's batch
// policy: add, due, flush, reset.
//
// Not safe for concurrent use: one session's loop owns it.
type batcher struct {
	size int           // Config.BatchSize: the readings that make a batch full
	age  time.Duration // Config.BatchAge: the oldest reading's wait that makes it due

	buf    []entry
	oldest time.Time // when the first buffered entry was added
	newest time.Time // when the last one was added
	// declared: the readings the buffer's entries count in the shard's
	// backlog (see appendDecoded); the session's trim counts them down.
	declared int64
	perEntry int // most readings in one entry added so far (0: none yet): XREAD counts entries
}

// newBatcher returns an empty batcher for batches of size readings or age.
func newBatcher(size int, age time.Duration) *batcher {
	// The buffer at its working size from the start (a read may bring a
	// batch entry's worth past size): growing it to there would copy it
	// over and over.
	return &batcher{size: size, age: age, buf: make([]entry, 0, size+size/4)}
}

// add decodes one stream message into the batch, read at now, and reports
// whether the batch is now full.
func (b *batcher) add(msg redis.XMessage, now time.Time) (full bool) {
	if len(b.buf) == 0 {
		b.oldest = now
	}
	b.newest = now
	before := len(b.buf)
	var declared int64
	b.buf, declared = appendDecoded(b.buf, msg)
	b.declared += declared
	b.perEntry = max(b.perEntry, len(b.buf)-before)
	return len(b.buf) >= b.size
}

// len is the number of readings (and rejected entries) in the batch.
func (b *batcher) len() int { return len(b.buf) }

// full reports whether the batch holds BatchSize readings.
func (b *batcher) full() bool { return len(b.buf) >= b.size }

// due is the trigger that makes the batch due at now, or "" when it is not:
// size when it is full, age when its oldest reading has waited BatchAge
// (less than a millisecond left). Reads that bring nothing do not change
// it: a quiet stream's batch is due by age like any other.
func (b *batcher) due(now time.Time) string {
	switch {
	case len(b.buf) == 0:
		return ""
	case b.full():
		return triggerSize
	case b.untilAge(now) < time.Millisecond:
		return triggerAge
	}
	return ""
}

// untilAge is how long until the batch is due by age; meaningless when the
// batch is empty.
func (b *batcher) untilAge(now time.Time) time.Duration {
	return b.age - now.Sub(b.oldest)
}

// readPlan is what the session does for its next read of the stream.
type readPlan struct {
	// pause: wait this long first, gathering what arrives (see readPace);
	// 0: read at once.
	pause time.Duration
	// block: how long the read may wait for entries (XREAD BLOCK): at most
	// maxIdleBlock, and with a batch in hand at most a pace and never past
	// its age, so a quiet stream's batch is flushed on time; -1: not at all
	// (what is there now).
	block time.Duration
	count int64 // entries to read (XREAD COUNT; see entriesFor)
}

// next is the session's next read at now, for a shard that has caught up
// with its stream (the last read returned entries, fewer than asked) or not.
// Call it only when due(now) is "".
func (b *batcher) next(now time.Time, caughtUp bool) readPlan {
	r := readPlan{block: maxIdleBlock, count: b.entriesFor(b.size - len(b.buf))}
	if len(b.buf) > 0 {
		// At least a millisecond (as due promises): XREAD BLOCK 0 would
		// wait for ever.
		left := max(b.untilAge(now), time.Millisecond)
		// Not past a pace either: a read that waits that long for nothing
		// may find a burst's end (quiet), as a paced one does.
		r.block = min(r.block, left, readPace(b.age))
		if caughtUp {
			// Gather what arrives for a while, then take it in one read.
			r.pause = min(max(readPace(b.age), min(b.untilFull(now), maxFillPause)), left)
			r.block = -1
		}
	}
	return r
}

// burstFill: a batch that fills within this (or its age, if shorter) at
// the rate it has filled is a burst's (see quiet).
const burstFill = 200 * time.Millisecond

// quiet reports whether a read made by plan found that a burst ended: the
// read waited (paced, or blocked for up to a pace) and brought nothing, and
// the batch had been filling fast enough to be full within burstFill (or
// its age, if shorter), judged by its readings over the time from its first
// entry to its last, or a pace if longer (one read's worth tells no rate),
// not counting the wait for nothing. The batch is then committed at once:
// nothing came in a whole wait, so waiting out the age would only delay
// its readings. It is the end of a drained backlog or of a large burst. A
// batch that fills slower is left to its age (read once more just before
// it, see untilFull), so a trickle of readings, or a fleet's small bursts
// under a long age, still commits once per age, not once per burst.
func (b *batcher) quiet(plan readPlan, read int) bool {
	waited := plan.pause > 0 || plan.block > 0
	if !waited || read > 0 || len(b.buf) == 0 || b.full() {
		return false
	}
	// filled·size/len < limit: at its rate the batch would fill within
	// the limit (floats: filled·size overflows past ~9e18 ns).
	limit := min(b.age, burstFill)
	filled := max(b.newest.Sub(b.oldest), readPace(b.age))
	return float64(filled)*float64(b.size) < float64(limit)*float64(len(b.buf))
}

// shutdownRead is the count of the one read without blocking a shutdown
// makes of what the stream holds after the batch: what fits in the batch;
// false when nothing fits.
func (b *batcher) shutdownRead() (count int64, ok bool) {
	room := b.size - len(b.buf)
	if room <= 0 {
		return 0, false
	}
	return b.entriesFor(room), true
}

// untilFull is how long the batch takes to fill at the rate it has filled
// since its first entry (0 when that is not known yet: no time has passed).
// A shard whose batch fills slower than its age reads once more just before
// the age (or after maxFillPause, whichever is first), not every readPace:
// at 5,000 readings a second over 4 shards, 2 or 3 reads a batch instead of
// 5, each a round trip and a metadata check.
func (b *batcher) untilFull(now time.Time) time.Duration {
	elapsed := now.Sub(b.oldest)
	if elapsed <= 0 || len(b.buf) == 0 {
		return 0
	}
	room := b.size - len(b.buf)
	if room <= 0 {
		return 0
	}
	// room / (len/elapsed), in float: room * elapsed overflows past ~9e18 ns.
	return time.Duration(float64(elapsed) * float64(room) / float64(len(b.buf)))
}

// readPace is how long a shard that has caught up with its stream waits
// between reads while its buffer fills: a quarter of the batch age, at most
// maxReadPace (a long batch age still sees a full batch soon). Read at
// once, every entry the producer writes (one per round trip) would wake a
// blocked XREAD of its own, then a metadata check: Redis and the bridge
// would work per round trip, not per batch. Paced, one read takes what the
// pace brought. A shard behind its stream (a read returned all it asked
// for) reads again at once, so a backlog drains at full speed; the commit
// still comes when the batch is full (noticed within one pace) or its oldest
// reading is BatchAge old, with a last read just before it.
func readPace(batchAge time.Duration) time.Duration { return min(batchAge/4, maxReadPace) }

// entriesFor is how many entries to read for room more readings: XREAD
// counts entries, and a batch entry holds up to the producer's round trip of
// readings. Counted by the largest entry seen, so a read brings at most room
// readings unless entries grow; before any entry is known, one entry (a
// first read of room entries of a thousand readings each would take a whole
// backlog into memory).
func (b *batcher) entriesFor(room int) int64 {
	if b.perEntry == 0 {
		return 1
	}
	return int64(max(1, room/b.perEntry))
}

// flush hands out the batch to commit and the readings its entries declared
// (see declared). The batch stays in the batcher until reset: a commit that
// fails leaves it there (the session then ends, and the next one reads the
// entries again from the checkpoint).
func (b *batcher) flush() (batch []entry, declared int64) {
	return b.buf, b.declared
}

// reset empties the batch after its commit. The size of the largest entry
// is kept: it sizes the reads that follow.
func (b *batcher) reset() {
	b.buf = b.buf[:0]
	b.declared = 0
	b.oldest, b.newest = time.Time{}, time.Time{}
}
