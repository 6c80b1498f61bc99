package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
)

// maxIdleBlock bounds one blocking read, so a shard notices the end of its
// context within this time (go-redis does not interrupt a blocked read).
const maxIdleBlock = time.Second

// session is one tenure of a shard: from taking its lock to losing it, an
// error, or the end of the context. A new session starts from the checkpoint
// in PostgreSQL, never from what an earlier one held in memory.
type session struct {
	b     *Bridge
	shard int
	key   string
	log   *slog.Logger

	conn       *pgx.Conn
	cursor     ingest.StreamID // last entry read; equals the checkpoint after a flush
	buf        []entry
	oldest     time.Time // when the first buffered entry was read
	progressed bool      // a batch committed: the next failure starts a fresh backoff
}

// entry is one stream entry in the buffer: a decoded reading, or what to
// record in readings_rejected.
type entry struct {
	id      string
	r       ingest.Reading
	bad     error  // why the entry is rejected; nil for a good reading
	version string // the encoding version the entry named
	raw     string // the body, or a dump of the fields; kept if rejected
}

func (s *session) run(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, s.b.pg)
	if err != nil {
		err = opErr("connect", fmt.Errorf("connect to postgres: %w", err))
		s.b.m.countError(err)
		return err
	}
	s.conn = conn
	defer func() {
		// Closing the connection releases the lock, on purpose: the next
		// session takes it again and starts from the checkpoint.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()

	if ok, err := s.lock(ctx); !ok {
		return err
	}
	s.b.m.owned.Inc()
	defer s.b.m.owned.Dec()
	s.log.Info("shard acquired")

	defer func() { s.b.m.buffered.Sub(float64(len(s.buf))) }()
	if err := s.start(ctx); err != nil {
		s.b.m.countError(err)
		return err
	}
	err = s.consume(ctx)
	s.b.m.countError(err)
	return err
}

// lock waits for the shard's advisory lock, trying every LockRetry; false
// when ctx ended or the connection failed.
func (s *session) lock(ctx context.Context) (bool, error) {
	key := lockKey(s.key)
	for {
		var ok bool
		if err := s.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok); err != nil {
			err = opErr("lock", fmt.Errorf("take lock of %s: %w", s.key, err))
			s.b.m.countError(err)
			return false, err
		}
		if ok {
			return true, nil
		}
		t := time.NewTimer(s.b.cfg.LockRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, nil
		case <-t.C:
		}
	}
}

// start sets the cursor from the checkpoint and trims what a previous owner
// committed but did not trim.
func (s *session) start(ctx context.Context) error {
	var last string
	err := s.conn.QueryRow(ctx, "SELECT last_id FROM bridge_checkpoints WHERE stream = $1", s.key).Scan(&last)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		s.cursor = ingest.StreamID{}
		return nil
	case err != nil:
		return opErr("commit", fmt.Errorf("read checkpoint of %s: %w", s.key, err))
	}
	cp, err := ingest.ParseStreamID(last)
	if err != nil {
		return opErr("commit", fmt.Errorf("checkpoint of %s: %w", s.key, err))
	}
	s.cursor = cp

	// If the stream's newest id is below the checkpoint, the stream was
	// recreated (Redis lost its data, or its clock went back): every entry in
	// it is new, so read it from the start rather than skip entries.
	info, err := s.b.rdb.XInfoStream(ctx, s.key).Result()
	switch {
	case err != nil && strings.Contains(err.Error(), "no such key"):
		s.cursor = ingest.StreamID{}
		return nil
	case err != nil:
		return opErr("read", fmt.Errorf("inspect %s: %w", s.key, err))
	}
	if newest, err := ingest.ParseStreamID(info.LastGeneratedID); err == nil && newest.Less(cp) {
		s.log.Warn("stream ids are below the checkpoint: the stream was recreated; reading it from the start",
			"checkpoint", cp.String(), "last_generated_id", info.LastGeneratedID)
		s.cursor = ingest.StreamID{}
		return nil
	}
	s.trim(ctx)
	return nil
}

// consume reads the stream after the cursor into the buffer and flushes it by
// size or age; when ctx ends it flushes what it holds and returns nil.
//
// Commits run under dctx, which ends ShutdownTimeout after ctx does: a commit
// under way when the shutdown begins finishes instead of being cut off (the
// cancellation would close the connection and leave the batch to the next
// start), and the shutdown's own commit shares that bound.
func (s *session) consume(ctx context.Context) error {
	cfg := s.b.cfg
	dctx, cancel := drainContext(ctx, cfg.ShutdownTimeout)
	defer cancel()
	for {
		if ctx.Err() != nil {
			return s.shutdown(dctx)
		}
		block := maxIdleBlock
		if len(s.buf) > 0 {
			left := cfg.BatchAge - time.Since(s.oldest)
			if left < time.Millisecond {
				if err := s.flush(dctx, "age"); err != nil {
					return err
				}
				continue
			}
			block = min(block, left)
		}
		res, err := s.b.rdb.XRead(ctx, &redis.XReadArgs{
			Streams: []string{s.key, s.cursor.String()},
			Count:   int64(cfg.BatchSize - len(s.buf)),
			Block:   block,
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
		n := len(s.buf)
		for _, st := range res {
			for _, msg := range st.Messages {
				s.add(msg)
			}
		}
		s.b.m.buffered.Add(float64(len(s.buf) - n))
		if len(s.buf) >= cfg.BatchSize {
			if err := s.flush(dctx, "size"); err != nil {
				return err
			}
		}
	}
}

// add decodes one stream message into the buffer and advances the cursor.
func (s *session) add(msg redis.XMessage) {
	id, err := ingest.ParseStreamID(msg.ID)
	if err != nil {
		// Redis never sends a malformed id; if it did, moving on would
		// corrupt the cursor, so keep it (the entry is re-read next session).
		s.log.Error("malformed stream id", "id", msg.ID, "err", err)
		return
	}
	if len(s.buf) == 0 {
		s.oldest = time.Now()
	}
	s.cursor = id
	version, _ := msg.Values[ingest.FieldVersion].(string)
	body, hasBody := msg.Values[ingest.FieldBody].(string)
	e := entry{id: msg.ID, version: version}
	if hasBody {
		e.r, e.bad = ingest.Decode(version, body)
		e.raw = body
	} else {
		e.bad = fmt.Errorf("%w: no %q field", ingest.ErrCorruptEntry, ingest.FieldBody)
		e.raw = fieldDump(msg.Values)
	}
	s.buf = append(s.buf, e)
}

// fieldDump is what readings_rejected keeps of an entry without a body: every
// field as "name=value" lines.
func fieldDump(values map[string]any) string {
	var sb strings.Builder
	for k, v := range values {
		fmt.Fprintf(&sb, "%s=%v\n", k, v)
	}
	return sb.String()
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
	if room := s.b.cfg.BatchSize - len(s.buf); room > 0 {
		res, err := s.b.rdb.XRead(dctx, &redis.XReadArgs{
			Streams: []string{s.key, s.cursor.String()},
			Count:   int64(room),
			Block:   -1,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			s.log.Warn("shutdown: could not read the stream's last entries; left for the next owner", "err", err)
		}
		n := len(s.buf)
		for _, st := range res {
			for _, msg := range st.Messages {
				s.add(msg)
			}
		}
		s.b.m.buffered.Add(float64(len(s.buf) - n))
	}
	if len(s.buf) == 0 {
		return nil
	}
	n := len(s.buf)
	if err := s.flush(dctx, "shutdown"); err != nil {
		// Not lost: the entries stay in Redis after the checkpoint, and the
		// next bridge to own the shard commits them.
		s.log.Warn("shutdown: buffered entries left in the stream for the next owner", "rows", n, "err", err)
		return nil
	}
	s.log.Info("shutdown: committed buffered readings", "rows", n)
	return nil
}

// flush commits the buffer and its checkpoint in one transaction, then trims
// the stream below the checkpoint.
func (s *session) flush(ctx context.Context, trigger string) error {
	if len(s.buf) == 0 {
		return nil
	}
	start := time.Now()
	res, err := s.commit(ctx)
	if err != nil {
		return opErr("commit", err)
	}
	m := s.b.m
	m.commitDur.Observe(time.Since(start).Seconds())
	m.batchRows.Observe(float64(len(s.buf)))
	m.flushes.WithLabelValues(trigger).Inc()
	m.committed.Add(float64(res.written))
	if res.decodeBad > 0 {
		m.rejected.WithLabelValues("decode").Add(float64(res.decodeBad))
	}
	if res.refused > 0 {
		m.rejected.WithLabelValues("refused").Add(float64(res.refused))
	}
	if !res.oldest.IsZero() {
		m.lag.Observe(time.Since(res.oldest).Seconds())
	}
	if res.decodeBad+res.refused > 0 {
		s.log.Warn("entries rejected to readings_rejected", "rows", res.decodeBad+res.refused, "checkpoint", s.cursor.String())
	}
	s.log.Debug("batch committed", "rows", res.written, "trigger", trigger, "duration", time.Since(start))
	m.buffered.Sub(float64(len(s.buf)))
	s.buf = s.buf[:0]
	s.progressed = true
	s.trim(ctx)
	return nil
}

// trim removes the entries at or below the cursor (the checkpoint, after a
// flush). A failed trim is harmless: the next one covers it.
func (s *session) trim(ctx context.Context) {
	if s.cursor == (ingest.StreamID{}) {
		return
	}
	if err := s.b.rdb.XTrimMinID(ctx, s.key, s.cursor.Next().String()).Err(); err != nil && ctx.Err() == nil {
		s.log.Warn("trim stream", "err", err)
	}
}
