package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"firehose/stream"
)

// session is one tenure of a shard: from taking its lock to losing it, an
// error, or the end of the context. A new session starts from the checkpoint
// in PostgreSQL, never from what an earlier one held in memory. Its parts:
// the lease (lease.go), the fencing against the shard's metadata in Redis
// (fence.go), the batch (batcher.go), and the read loop here.
type session struct {
	b     *Bridge
	shard int
	key   string
	log   *slog.Logger

	lease
	deployment string          // firehose_deployment.id of the database
	gen        string          // the stream's generation token (stream.MetaGeneration)
	cursor     stream.StreamID // last entry read; equals the checkpoint after a flush
	// The shard's backlog counter (stream.MetaBacklog) counts the readings
	// of batch entries; trim counts down those it removes. untrimmed: those
	// of entries committed and not yet trimmed, or -1 when unknown (entries
	// a previous owner committed), which trim then counts.
	untrimmed  int64
	batch      *batcher
	caughtUp   bool             // the last read returned entries, fewer than asked: the stream's end
	lagGauge   prometheus.Gauge // firehose_bridge_shard_lag_seconds of this shard
	progressed bool             // a batch committed: the next failure starts a fresh backoff
}

func (s *session) run(ctx context.Context) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	defer s.release(ctx)

	if err := s.lock(ctx); err != nil {
		return err
	}
	// Handing the shard over ends the session like a shutdown: it commits
	// the batch in hand (and what the stream holds after it, up to a batch)
	// before the lock goes with the connection.
	sctx, handOver := context.WithCancel(ctx)
	defer handOver()
	s.b.bal.acquired(s.shard, handOver)
	s.b.m.owned.Inc()
	defer s.b.m.owned.Dec()
	label := strconv.Itoa(s.shard)
	s.b.m.shardOwned.WithLabelValues(label).Set(1)
	s.lagGauge = s.b.m.shardLag.WithLabelValues(label)
	defer func() {
		s.b.m.shardOwned.DeleteLabelValues(label)
		s.b.m.shardLag.DeleteLabelValues(label)
	}()
	s.log.Info("shard acquired")

	defer func() { s.b.m.buffered.Sub(float64(s.batch.len())) }()
	if err := s.start(sctx); err != nil {
		if sctx.Err() != nil && ctx.Err() == nil {
			return nil // handed over before it started
		}
		s.b.m.countError(err)
		return err
	}
	err := s.consume(sctx)
	s.b.m.countError(err)
	if err == nil && ctx.Err() == nil {
		s.log.Info("shard handed over")
	}
	return err
}

// consume reads the stream after the cursor into the batch and flushes it
// when the batcher says it is due; when ctx ends it flushes what it holds
// and returns nil.
//
// Commits run under dctx, which ends ShutdownTimeout after ctx does: a commit
// under way when the shutdown begins finishes instead of being cut off (the
// cancellation would close the connection and leave the batch to the next
// start), and the shutdown's own commit shares that bound.
func (s *session) consume(ctx context.Context) error {
	dctx, cancel := drainContext(ctx, s.b.cfg.ShutdownTimeout)
	defer cancel()
	for {
		if ctx.Err() != nil {
			return s.shutdown(dctx)
		}
		if err := s.ping(ctx); err != nil {
			if ctx.Err() != nil {
				return s.shutdown(dctx)
			}
			return err
		}
		now := time.Now()
		if trigger := s.batch.due(now); trigger != "" {
			if err := s.flush(dctx, trigger); err != nil {
				return err
			}
			continue
		}
		next := s.batch.next(now, s.caughtUp)
		if next.pause > 0 && !sleepCtx(ctx, next.pause) {
			return s.shutdown(dctx)
		}
		res, err := s.b.rdb.XRead(ctx, &redis.XReadArgs{
			Streams: []string{s.key, s.cursor.String()},
			Count:   next.count,
			Block:   next.block,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			if ctx.Err() != nil {
				return s.shutdown(dctx)
			}
			// Commit what was read before Redis failed; the next session
			// reads the rest from the checkpoint.
			if ferr := s.flush(dctx, "read_error"); ferr != nil {
				return ferr
			}
			return opErr("read", fmt.Errorf("read %s: %w", s.key, err))
		}
		// After every read, also an empty one: a new stream whose ids are
		// below the cursor (Redis wiped, its clock behind) returns nothing.
		if err := s.checkMeta(ctx); err != nil {
			if ctx.Err() != nil {
				return s.shutdown(dctx)
			}
			// What this read returned may be a new stream's: leave it to
			// the next session, which decides from the metadata.
			if ferr := s.flush(dctx, "read_error"); ferr != nil {
				return ferr
			}
			return err
		}
		read, full := s.addAll(res)
		s.caughtUp = read > 0 && int64(read) < next.count
		s.reportLag(read == 0)
		trigger := ""
		switch {
		case full:
			trigger = triggerSize
		case s.batch.quiet(next, read):
			trigger = triggerQuiet
		}
		if trigger != "" {
			if err := s.flush(dctx, trigger); err != nil {
				return err
			}
		}
	}
}

// reportLag sets the shard's lag gauge: the age of the oldest entry in the
// buffer (since Redis stored it: its id's time), or 0 when the buffer is
// empty and the stream has nothing more (atEnd, or the last read reached its
// end). An empty buffer behind a longer stream keeps the last value until
// the next read.
func (s *session) reportLag(atEnd bool) {
	if s.lagGauge == nil { // not owned yet
		return
	}
	switch {
	case s.batch.len() > 0:
		if id, err := stream.ParseStreamID(s.batch.buf[0].id); err == nil {
			s.lagGauge.Set(max(0, time.Since(time.UnixMilli(int64(id.MS))).Seconds()))
		}
	case atEnd || s.caughtUp:
		s.lagGauge.Set(0)
	}
}

// addAll adds what one XREAD returned to the batch and advances the cursor;
// it returns the number of entries and whether the batch is full.
func (s *session) addAll(res []redis.XStream) (entries int, full bool) {
	n := s.batch.len()
	now := time.Now()
	for _, st := range res {
		for _, msg := range st.Messages {
			entries++
			id, err := stream.ParseStreamID(msg.ID)
			if err != nil {
				// Redis never sends a malformed id; if it did, moving on
				// would corrupt the cursor, so keep it (the entry is re-read
				// next session).
				s.log.Error("malformed stream id", "id", msg.ID, "err", err)
				continue
			}
			s.cursor = id
			s.batch.add(msg, now)
		}
	}
	s.b.m.buffered.Add(float64(s.batch.len() - n))
	return entries, s.batch.full()
}

// drainContext returns a context that is not cancelled with ctx but ends
// grace after ctx does (or when the returned cancel is called).
func drainContext(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(grace, cancel)
		context.AfterFunc(dctx, func() { t.Stop() })
	})
	return dctx, func() {
		stop()
		cancel()
	}
}

// shutdown commits the buffer, and what the stream holds after it, under
// dctx (see consume) and reports what it could not commit.
func (s *session) shutdown(dctx context.Context) error {
	// Entries stored after the last read (while a batch was committing, or
	// while the read was being cut short) are committed too, so a stop after
	// the edges' leaves nothing behind. One read without blocking, of what
	// fits in the batch: a larger backlog is left to the next owner rather
	// than stretch the shutdown.
	if count, ok := s.batch.shutdownRead(); ok {
		res, err := s.b.rdb.XRead(dctx, &redis.XReadArgs{
			Streams: []string{s.key, s.cursor.String()},
			Count:   count,
			Block:   -1,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			s.log.Warn("shutdown: could not read the stream's last entries; left for the next owner", "err", err)
		}
		if err := s.checkMeta(dctx); err != nil {
			// Perhaps a new stream's entries: the next session decides.
			s.log.Warn("shutdown: the stream's last entries left for the next owner", "err", err)
			res = nil
		}
		s.addAll(res)
	}
	if s.batch.len() == 0 {
		return nil
	}
	n := s.batch.len()
	trigger := "shutdown"
	if s.b.bal.handingOver(s.shard) {
		trigger = "handover"
	}
	if err := s.flush(dctx, trigger); err != nil {
		// Not lost: the entries stay in Redis after the checkpoint, and the
		// next bridge to own the shard commits them.
		s.log.Warn("shutdown: buffered entries left in the stream for the next owner", "rows", n, "err", err)
		return nil
	}
	s.log.Info("shutdown: committed buffered readings", "rows", n, "trigger", trigger)
	return nil
}

// flush commits the batch and its checkpoint in one transaction, resets the
// batcher, then trims the stream below the checkpoint.
func (s *session) flush(ctx context.Context, trigger string) error {
	buf, declared := s.batch.flush()
	if len(buf) == 0 {
		return nil
	}
	start := time.Now()
	// A batch's whole transaction under one deadline: a frozen path ends the
	// session instead of hanging it (sessionSettings).
	cctx, cancel := context.WithTimeout(ctx, s.b.cfg.SessionTimeout)
	res, err := s.commit(cctx, buf)
	cancel()
	if err != nil {
		return opErr("commit", err)
	}
	s.usedPG = time.Now()
	m := s.b.m
	m.commitDur.Observe(time.Since(start).Seconds())
	m.batchRows.Observe(float64(len(buf)))
	m.flushes.WithLabelValues(trigger).Inc()
	m.committed.Add(float64(res.written))
	if res.decodeBad > 0 {
		m.rejected.WithLabelValues("decode").Add(float64(res.decodeBad))
	}
	if res.refused > 0 {
		m.rejected.WithLabelValues("refused").Add(float64(res.refused))
	}
	if res.deadLetters > 0 {
		m.rejected.WithLabelValues("edge").Add(float64(res.deadLetters))
	}
	for table, n := range res.tables {
		m.tableRows.WithLabelValues(table).Add(float64(n))
	}
	for table, n := range res.missing {
		// Not lost (a dead letter, replayable) but not landing either until
		// an operator acts: said at Error, per batch.
		m.missingTable.WithLabelValues(table).Add(float64(n))
		s.log.Error("typed table or column missing: rows sent to readings_rejected; create or fix the table (firehose migrate --config) and replay them (firehose rejected replay)",
			"table", table, "rows", n, "err", res.missingErr[table])
	}
	if !res.oldest.IsZero() {
		m.lag.Observe(time.Since(res.oldest).Seconds())
	}
	if res.decodeBad+res.refused > 0 {
		s.log.Warn("entries rejected to readings_rejected", "rows", res.decodeBad+res.refused, "checkpoint", s.cursor.String())
	}
	s.log.Debug("batch committed", "rows", res.written, "trigger", trigger, "duration", time.Since(start))
	m.buffered.Sub(float64(len(buf)))
	s.batch.reset()
	if s.untrimmed >= 0 {
		s.untrimmed += declared
	}
	s.progressed = true
	s.reportLag(false)
	s.trim(ctx)
	return nil
}
