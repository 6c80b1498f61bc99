package bridge

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
)

// Config tunes a Bridge. Zero fields take the documented defaults.
type Config struct {
	// Postgres is the connection URL, e.g. postgres://localhost:5432/firehose.
	Postgres string
	// Streams names the deployment's shard streams.
	Streams ingest.Streams
	// BatchSize flushes a shard's buffer when it holds this many entries.
	// Default 5000: past a few thousand rows a COPY gains little (the seed's
	// finding) and a batch stays well under a megabyte.
	BatchSize int
	// BatchAge flushes a shard's buffer when its oldest entry has waited this
	// long, also when the stream has gone quiet. Default 200ms.
	BatchAge time.Duration
	// LockRetry is how often a bridge tries to take a shard another bridge
	// owns, which is how it takes over from a dead one. Default 2s.
	LockRetry time.Duration
	// ShutdownTimeout bounds, from the end of Run's context, the commit under
	// way then and the final commit of what is buffered. Default 10s.
	ShutdownTimeout time.Duration
	// MaxBackoff caps the wait between retries after PostgreSQL or Redis
	// failed. Default 5s (doubling from 100ms).
	MaxBackoff time.Duration
}

func (c Config) withDefaults() Config {
	if c.BatchSize <= 0 {
		c.BatchSize = 5000
	}
	if c.BatchAge <= 0 {
		c.BatchAge = 200 * time.Millisecond
	}
	if c.LockRetry <= 0 {
		c.LockRetry = 2 * time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	return c
}

// Bridge runs one worker per shard; see the package comment.
type Bridge struct {
	cfg  Config
	pg   *pgx.ConnConfig
	rdb  redis.UniversalClient
	log  *slog.Logger
	m    *metrics
	keys []string
}

// New checks cfg and builds a Bridge; Run starts it.
func New(cfg Config, rdb redis.UniversalClient, logger *slog.Logger, reg prometheus.Registerer) (*Bridge, error) {
	cfg = cfg.withDefaults()
	pg, err := pgx.ParseConfig(cfg.Postgres)
	if err != nil {
		return nil, fmt.Errorf("parse postgres url: %w", err)
	}
	return &Bridge{
		cfg:  cfg,
		pg:   pg,
		rdb:  rdb,
		log:  logger.With("component", "bridge"),
		m:    newMetrics(reg),
		keys: cfg.Streams.Keys(),
	}, nil
}

// Run works every shard until ctx ends, then commits what each shard has
// buffered (bounded by ShutdownTimeout) and returns. Failures of PostgreSQL or
// Redis are retried with backoff, never returned.
func (b *Bridge) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for shard := range b.keys {
		wg.Go(func() { b.runShard(ctx, shard) })
	}
	wg.Wait()
	return nil
}

// runShard owns a shard whenever it can: it keeps trying to take the shard's
// lock and, once it holds it, consumes until ctx ends or something fails.
func (b *Bridge) runShard(ctx context.Context, shard int) {
	log := b.log.With("stream", b.keys[shard])
	bo := backoff{min: 100 * time.Millisecond, max: b.cfg.MaxBackoff}
	for ctx.Err() == nil {
		s := &session{b: b, shard: shard, key: b.keys[shard], log: log}
		err := s.run(ctx)
		if ctx.Err() != nil {
			return
		}
		if s.progressed {
			bo.reset()
		}
		log.Warn("shard session ended; retrying", "err", err, "retry_in", bo.peek())
		if !bo.wait(ctx) {
			return
		}
	}
}

// lockKey is the advisory lock id of a stream: one per stream key, so that
// deployments sharing a database do not block each other.
func lockKey(stream string) int64 {
	h := fnv.New64a()
	h.Write([]byte("firehose bridge "))
	h.Write([]byte(stream))
	return int64(h.Sum64())
}

// backoff doubles a wait from min to max.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) peek() time.Duration {
	if b.cur == 0 {
		return b.min
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }

// wait sleeps the current backoff, then doubles it; false if ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.peek()
	b.cur = min(2*d, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

type metrics struct {
	committed prometheus.Counter
	rejected  *prometheus.CounterVec
	batchRows prometheus.Histogram
	commitDur prometheus.Histogram
	flushes   *prometheus.CounterVec
	errors    *prometheus.CounterVec
	owned     prometheus.Gauge
	buffered  prometheus.Gauge
	lag       prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		committed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "firehose_bridge_rows_committed_total",
			Help: "Readings committed to the readings table.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "firehose_bridge_rows_rejected_total",
			Help: "Stream entries written to readings_rejected, by reason (decode, refused).",
		}, []string{"reason"}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "firehose_bridge_batch_rows",
			Help:    "Entries per committed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 15),
		}),
		commitDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "firehose_bridge_copy_duration_seconds",
			Help:    "Duration of one batch's transaction: COPY, checkpoint and commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "firehose_bridge_flushes_total",
			Help: "Batches committed, by the trigger that fired (size, age, shutdown, read_error).",
		}, []string{"trigger"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "firehose_bridge_errors_total",
			Help: "Failures that made a shard back off and retry, by operation (connect, lock, read, commit).",
		}, []string{"op"}),
		owned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "firehose_bridge_shards_owned",
			Help: "Shards this bridge holds the lock of.",
		}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "firehose_bridge_buffered_rows",
			Help: "Entries read from the streams and not yet committed.",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "firehose_bridge_receipt_to_commit_seconds",
			Help:    "Time from an edge receiving a batch's oldest reading to the batch's commit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
	}
	reg.MustRegister(m.committed, m.rejected, m.batchRows, m.commitDur, m.flushes, m.errors, m.owned, m.buffered, m.lag)
	for _, t := range []string{"size", "age", "shutdown", "read_error"} {
		m.flushes.WithLabelValues(t)
	}
	for _, r := range []string{"decode", "refused"} {
		m.rejected.WithLabelValues(r)
	}
	for _, op := range []string{"connect", "lock", "read", "commit"} {
		m.errors.WithLabelValues(op)
	}
	return m
}

// opError tags a session failure with the operation, for the errors metric.
type opError struct {
	op  string
	err error
}

func (e *opError) Error() string { return e.op + ": " + e.err.Error() }
func (e *opError) Unwrap() error { return e.err }

func opErr(op string, err error) error { return &opError{op: op, err: err} }

func (m *metrics) countError(err error) {
	var oe *opError
	if errors.As(err, &oe) {
		m.errors.WithLabelValues(oe.op).Inc()
	}
}
