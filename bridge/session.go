package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/stream"
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
	usedPG     time.Time       // last PostgreSQL call that succeeded: pinged when idle
	deployment string          // firehose_deployment.id of the database
	gen        string          // the stream's generation token (stream.MetaGeneration)
	cursor     stream.StreamID // last entry read; equals the checkpoint after a flush
	// The shard's backlog counter (stream.MetaBacklog) counts the readings
	// of batch entries; trim counts down those it removes. buffered: the
	// readings the buffer's batch entries declared (their FieldCount);
	// untrimmed: those of entries committed and not yet trimmed, or -1 when
	// unknown (entries a previous owner committed), which trim then counts.
	countBuffered, untrimmed int64
	perEntry                 int // most readings in one entry read so far (0: none read yet): XREAD counts entries
	buf                      []entry
	oldest                   time.Time        // when the first buffered entry was read
	caughtUp                 bool             // the last read returned entries, fewer than asked: the stream's end
	lagGauge                 prometheus.Gauge // firehose_bridge_shard_lag_seconds of this shard
	progressed               bool             // a batch committed: the next failure starts a fresh backoff
}

// entry is one stream entry in the buffer: a decoded reading, or what to
// record in readings_rejected.
type entry struct {
	id      string
	item    int // 1-based position of the reading in a batch entry; 0 for an entry of one
	pos     int // index in the buffer, set by commit: a device's order when sorting
	r       ingest.Reading
	bad     error  // why the entry is rejected; nil for a good reading
	version string // the encoding version of raw
	raw     string // the body (of this reading alone, in a batch), or a dump of the fields; kept if rejected
	dump    bool   // raw is a dump of the fields: the entry had no body
	// dl is the entry's edge dead letter (ingest.CodecDeadLetter): it lands
	// in readings_rejected with source 'edge', not in readings.
	dl *ingest.DeadLetter
}

// entryID is the entry's id as readings_rejected records it: the stream id,
// and for a reading of a batch entry its position after a slash.
func (e *entry) entryID() string {
	if e.item == 0 {
		return e.id
	}
	return e.id + "/" + strconv.Itoa(e.item)
}

func (s *session) run(ctx context.Context) error {
	cctx, cancel := s.pgCtx(ctx)
	conn, err := pgx.ConnectConfig(cctx, s.b.pg)
	cancel()
	if err != nil {
		err = opErr("connect", fmt.Errorf("connect to postgres: %w", err))
		s.b.m.countError(err)
		return err
	}
	s.conn = conn
	s.usedPG = time.Now()
	defer func() {
		// Closing the connection releases the lock, on purpose: the next
		// session takes it again and starts from the checkpoint.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()

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

	defer func() { s.b.m.buffered.Sub(float64(len(s.buf))) }()
	if err := s.start(sctx); err != nil {
		if sctx.Err() != nil && ctx.Err() == nil {
			return nil // handed over before it started
		}
		s.b.m.countError(err)
		return err
	}
	err = s.consume(sctx)
	s.b.m.countError(err)
	if err == nil && ctx.Err() == nil {
		s.log.Info("shard handed over")
	}
	return err
}

// pgCtx bounds one PostgreSQL call (a statement, a ping, a connect) to half
// the session timeout, so a bridge whose path to PostgreSQL froze notices
// (see sessionSettings).
func (s *session) pgCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.b.cfg.SessionTimeout/2)
}

// errLockTaken: another session holds the shard's lock (and is not
// silent): the coordinator decides what next.
var errLockTaken = errors.New("the shard's lock is held by another bridge")

// lock takes the shard's advisory lock, or returns errLockTaken. If another
// session holds the lock, it also ends that session when it has been silent
// for the session timeout (evictStale), so a frozen owner gives the shard up.
func (s *session) lock(ctx context.Context) error {
	key := LockKey(s.key)
	var ok bool
	qctx, cancel := s.pgCtx(ctx)
	defer cancel()
	err := s.conn.QueryRow(qctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok)
	if err == nil && !ok {
		var evicted bool
		if evicted, err = s.evictStale(qctx, key); err == nil && evicted {
			err = s.conn.QueryRow(qctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok)
		}
	}
	switch {
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		err = opErr("lock", fmt.Errorf("take lock of %s: %w", s.key, err))
		s.b.m.countError(err)
		return err
	case !ok:
		return errLockTaken
	}
	s.usedPG = time.Now()
	return nil
}

// evictStaleQuery ends the session holding advisory lock ($1, $2) if it has
// shown no activity (pg_stat_activity.state_change) for $3 ms, and waits up
// to a second for it to go. A healthy holder changes state at least every
// third of the session timeout (pings) and never runs a statement or waits in
// a transaction for half of it (statement_timeout, idle_in_transaction_
// session_timeout); a silent one may be stuck reading a COPY's rows from a
// frozen path, where no server timeout reaches it.
const evictStaleQuery = `SELECT a.pid, extract(epoch FROM clock_timestamp() - a.state_change)::float8,
	pg_terminate_backend(a.pid, 1000)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = $1 AND l.objid::bigint = $2
  AND a.pid <> pg_backend_pid()
  AND a.state_change < clock_timestamp() - $3 * interval '1 millisecond'`

// evictStale ends the lock's holder if it has been silent for the session
// timeout; true when it did.
func (s *session) evictStale(ctx context.Context, key int64) (bool, error) {
	u := uint64(key)
	var (
		pid    int32
		silent float64
		ended  bool
	)
	err := s.conn.QueryRow(ctx, evictStaleQuery, int64(u>>32), int64(uint32(u)), s.b.cfg.SessionTimeout.Milliseconds()).Scan(&pid, &silent, &ended)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil
	case err != nil:
		// Not allowed to end it (another role), or the query failed: the
		// server's own timeouts still end a silent holder's idle session.
		s.log.Warn("could not end a silent lock holder's session", "err", err)
		return false, nil
	}
	s.b.m.evicted.Inc()
	s.log.Warn("ended the session of a silent bridge holding the shard", "pid", pid, "silent_s", silent, "ended", ended)
	return true, nil
}

// start reads the checkpoint and the shard's metadata in Redis, and sets the
// cursor:
//
//   - no checkpoint: from the start of the stream;
//   - the checkpoint's generation is the stream's (or the checkpoint has
//     none yet, written before schema 003: it adopts the stream's): the
//     stream is the one the checkpoint was taken on, perhaps with a lost
//     tail (restored from a snapshot or an AOF, a promoted replica). The
//     cursor stays at the checkpoint, so nothing committed is read again;
//     the stream's last id is raised to the checkpoint so new entries get
//     ids above it even if Redis's clock is behind; what a previous owner
//     committed but did not trim is trimmed;
//   - another generation: Redis lost everything and the stream is new: from
//     its start; the new generation is written with the next checkpoint.
//
// A shard whose metadata names another deployment is refused with
// ErrDeploymentMismatch.
func (s *session) start(ctx context.Context) error {
	var (
		deployment string
		last, gen  *string
	)
	qctx, cancel := s.pgCtx(ctx)
	err := s.conn.QueryRow(qctx, `SELECT d.id::text, c.last_id, c.generation
		FROM firehose_deployment d LEFT JOIN bridge_checkpoints c ON c.stream = $1`, s.key).Scan(&deployment, &last, &gen)
	cancel()
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return opErr("commit", fmt.Errorf("read checkpoint of %s: table firehose_deployment is empty: restore its row (schema 003) or migrate a new database", s.key))
	case err != nil:
		return opErr("commit", fmt.Errorf("read checkpoint of %s: %w", s.key, err))
	}
	s.usedPG = time.Now()
	s.deployment = deployment

	meta, err := stream.ClaimShardMeta(ctx, s.b.rdb, s.b.cfg.Streams, s.shard, deployment)
	if err != nil {
		return opErr("read", err)
	}
	if meta.Deployment != deployment {
		return s.mismatch(meta.Deployment)
	}
	s.gen = meta.Generation

	if last == nil {
		s.cursor = stream.StreamID{}
		return nil
	}
	cp, err := stream.ParseStreamID(*last)
	if err != nil {
		return opErr("commit", fmt.Errorf("checkpoint of %s: %w", s.key, err))
	}
	switch {
	case gen == nil:
		s.log.Info("checkpoint without a generation (written before schema 003): adopting the stream's", "checkpoint", cp.String(), "generation", s.gen)
	case *gen != s.gen:
		s.b.m.newStream.Inc()
		s.log.Warn("Redis lost the stream (its generation token changed): reading the new stream from its start",
			"checkpoint", cp.String(), "checkpoint_generation", *gen, "generation", s.gen)
		s.cursor = stream.StreamID{}
		return nil
	}
	s.cursor = cp
	raised, err := s.raise(ctx)
	if err != nil {
		return opErr("read", fmt.Errorf("raise the last id of %s to its checkpoint: %w", s.key, err))
	}
	if raised {
		s.log.Warn("the stream lost entries after its checkpoint (Redis restarted from older data): its last id was raised to the checkpoint",
			"checkpoint", cp.String())
	}
	// What a previous owner committed and did not trim: trim counts it.
	s.untrimmed = -1
	s.trim(ctx)
	return nil
}

// mismatch is the error of a shard claimed by another deployment.
func (s *session) mismatch(other string) error {
	key := s.b.cfg.Streams.ShardMetaKey(s.shard)
	return fmt.Errorf("%w: Redis prefix %q: %s names deployment %q, but this bridge's database is deployment %s. "+
		"Two databases must not share a Redis prefix (each would trim the other's streams): give this database's deployment its own --redis-prefix; "+
		"or, if this database replaces the other one for good and the streams' entries are to go into it, delete the old claim "+
		"(HDEL %s %s on each shard's <prefix>:meta:{tag}) and start again",
		ErrDeploymentMismatch, s.b.cfg.Streams.Prefix, key, other, s.deployment, key, stream.MetaDeployment)
}

// raise runs stream.RaiseScript for the cursor (the checkpoint).
func (s *session) raise(ctx context.Context) (bool, error) {
	n, err := stream.RaiseScript.Run(ctx, s.b.rdb, []string{s.b.cfg.Streams.ShardMetaKey(s.shard), s.key},
		s.gen, s.deployment, s.cursor.MS, s.cursor.Seq).Int()
	switch {
	case err != nil:
		return false, err
	case n < 0:
		return false, errMetaChanged
	}
	return n == 1, nil
}

// errMetaChanged: the shard's metadata hash no longer holds this session's
// generation or deployment (Redis lost it, or another deployment claimed the
// shard); the session ends and the next one decides again.
var errMetaChanged = errors.New("the shard's metadata in Redis changed (Redis lost its data, or another deployment claimed the shard)")

// checkMeta verifies, after a read, that the shard's metadata still holds
// this session's generation and deployment. If it does, the entries just
// read belong to the stream the session started on (Redis cannot lose the
// token and keep them). If not, they may be a new stream's: the caller drops
// them and ends the session after committing what it holds, and the next
// session reads the new stream from its start.
func (s *session) checkMeta(ctx context.Context) error {
	meta, err := stream.ReadShardMeta(ctx, s.b.rdb, s.b.cfg.Streams, s.shard)
	switch {
	case err != nil:
		return opErr("read", err)
	case meta.Deployment != "" && meta.Deployment != s.deployment:
		return s.mismatch(meta.Deployment)
	case meta.Generation != s.gen || meta.Deployment != s.deployment:
		return opErr("read", fmt.Errorf("%s: %w", s.key, errMetaChanged))
	}
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
		if err := s.ping(ctx); err != nil {
			if ctx.Err() != nil {
				return s.shutdown(dctx)
			}
			return err
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
			if s.caughtUp {
				// Gather what arrives for a while, then take it in one
				// read (see readPace).
				if !sleepCtx(ctx, min(readPace(cfg.BatchAge), left)) {
					return s.shutdown(dctx)
				}
				block = -1 // no BLOCK: what is there now
			}
		}
		count := s.entriesFor(cfg.BatchSize - len(s.buf))
		res, err := s.b.rdb.XRead(ctx, &redis.XReadArgs{
			Streams: []string{s.key, s.cursor.String()},
			Count:   count,
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
		n := len(s.buf)
		read := s.addAll(res)
		s.caughtUp = read > 0 && int64(read) < count
		s.b.m.buffered.Add(float64(len(s.buf) - n))
		s.reportLag(read == 0)
		if len(s.buf) >= cfg.BatchSize {
			if err := s.flush(dctx, "size"); err != nil {
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
	case len(s.buf) > 0:
		if id, err := stream.ParseStreamID(s.buf[0].id); err == nil {
			s.lagGauge.Set(max(0, time.Since(time.UnixMilli(int64(id.MS))).Seconds()))
		}
	case atEnd || s.caughtUp:
		s.lagGauge.Set(0)
	}
}

// ping keeps an idle lock session alive: PostgreSQL ends a session idle for
// the session timeout (sessionSettings), so one unused for a third of it is
// pinged.
func (s *session) ping(ctx context.Context) error {
	if time.Since(s.usedPG) < s.b.cfg.SessionTimeout/3 {
		return nil
	}
	pctx, cancel := s.pgCtx(ctx)
	defer cancel()
	if err := s.conn.Ping(pctx); err != nil {
		return opErr("ping", fmt.Errorf("ping the session of %s: %w", s.key, err))
	}
	s.usedPG = time.Now()
	return nil
}

// addAll adds what one XREAD returned, learns how many readings an entry
// may hold, and returns the number of entries.
func (s *session) addAll(res []redis.XStream) int {
	entries := 0
	for _, st := range res {
		for _, msg := range st.Messages {
			before := len(s.buf)
			s.add(msg)
			s.perEntry = max(s.perEntry, len(s.buf)-before)
			entries++
		}
	}
	return entries
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

const maxReadPace = 50 * time.Millisecond

// entriesFor is how many entries to read for room more readings: XREAD
// counts entries, and a batch entry holds up to the producer's round trip of
// readings. Counted by the largest entry seen, so a read brings at most room
// readings unless entries grow; before any entry is known, one entry (a
// first read of room entries of a thousand readings each would take a whole
// backlog into memory).
func (s *session) entriesFor(room int) int64 {
	if s.perEntry == 0 {
		return 1
	}
	return int64(max(1, room/s.perEntry))
}

// add decodes one stream message into the buffer and advances the cursor.
func (s *session) add(msg redis.XMessage) {
	id, err := stream.ParseStreamID(msg.ID)
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
	switch {
	case !hasBody:
		s.buf = append(s.buf, entry{id: msg.ID, version: version, dump: true, raw: fieldDump(msg.Values),
			bad: fmt.Errorf("%w: no %q field", ingest.ErrCorruptEntry, ingest.FieldBody)})
	case version == ingest.CodecBatch || version == ingest.CodecMetricBatch:
		if n, err := strconv.ParseInt(fmt.Sprint(msg.Values[ingest.FieldCount]), 10, 64); err == nil && n > 0 {
			s.countBuffered += n
		}
		s.addBatch(msg.ID, version, body)
	case version == ingest.CodecDeadLetter:
		// Counted in the backlog as one reading (its FieldCount).
		s.countBuffered++
		e := entry{id: msg.ID, version: version, raw: body}
		if dl, err := ingest.DecodeDeadLetter(body); err != nil {
			e.bad = err
		} else {
			e.dl = &dl
		}
		s.buf = append(s.buf, e)
	default:
		e := entry{id: msg.ID, version: version, raw: body}
		e.r, e.bad = ingest.Decode(version, body)
		s.buf = append(s.buf, e)
	}
}

// addBatch adds the readings of a batch entry to the buffer, each on its
// own: one that does not decode is rejected alone, with its own body
// (version 1, or 3 in a version-4 batch: replayable as it is), while its
// neighbours commit. A batch whose framing is broken is rejected whole, with
// its body.
func (s *session) addBatch(id, version, body string) {
	parts, err := ingest.SplitBatch(body)
	if err != nil {
		s.buf = append(s.buf, entry{id: id, version: version, raw: body, bad: err})
		return
	}
	item, _ := ingest.ItemCodec(version)
	for i, p := range parts {
		e := entry{id: id, item: i + 1, version: item, raw: p}
		e.r, e.bad = ingest.Decode(item, p)
		s.buf = append(s.buf, e)
	}
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
			Count:   s.entriesFor(room),
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
		n := len(s.buf)
		s.addAll(res)
		s.b.m.buffered.Add(float64(len(s.buf) - n))
	}
	if len(s.buf) == 0 {
		return nil
	}
	n := len(s.buf)
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

// flush commits the buffer and its checkpoint in one transaction, then trims
// the stream below the checkpoint.
func (s *session) flush(ctx context.Context, trigger string) error {
	if len(s.buf) == 0 {
		return nil
	}
	start := time.Now()
	// A batch's whole transaction under one deadline: a frozen path ends the
	// session instead of hanging it (sessionSettings).
	cctx, cancel := context.WithTimeout(ctx, s.b.cfg.SessionTimeout)
	res, err := s.commit(cctx)
	cancel()
	if err != nil {
		return opErr("commit", err)
	}
	s.usedPG = time.Now()
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
	if res.deadLetters > 0 {
		m.rejected.WithLabelValues("edge").Add(float64(res.deadLetters))
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
	if s.untrimmed >= 0 {
		s.untrimmed += s.countBuffered
	}
	s.countBuffered = 0
	s.progressed = true
	s.reportLag(false)
	s.trim(ctx)
	return nil
}

// trim removes the entries at or below the cursor (the checkpoint, after a
// flush), only while the shard's metadata holds this session's generation and
// deployment: never a new stream's entries, nor another deployment's. A
// failed trim is harmless: the next one covers it.
func (s *session) trim(ctx context.Context) {
	if s.cursor == (stream.StreamID{}) {
		return
	}
	n, err := stream.TrimScript.Run(ctx, s.b.rdb, []string{s.b.cfg.Streams.ShardMetaKey(s.shard), s.key},
		s.gen, s.deployment, s.cursor.Next().String(), s.untrimmed).Int()
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.Warn("trim stream", "err", err)
	case err == nil && n < 0:
		s.log.Warn("not trimming: the shard's metadata in Redis changed", "err", errMetaChanged)
	case err == nil:
		s.untrimmed = 0
	}
}
