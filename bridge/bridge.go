package bridge

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"firehose/internal/backoff"
	"firehose/stream"
)

// Config tunes a Bridge. Zero fields take the documented defaults.
type Config struct {
	// Postgres is the connection URL, e.g. postgres://localhost:5432/firehose.
	Postgres string
	// Streams names the deployment's shard streams.
	Streams stream.Streams
	// BatchSize flushes a shard's buffer when it holds this many entries.
	// Default 5000: past a few thousand rows a COPY gains little (the seed's
	// finding) and a batch stays well under a megabyte.
	BatchSize int
	// BatchAge flushes a shard's buffer when its oldest entry has waited this
	// long, also when the stream has gone quiet. Default 200ms.
	BatchAge time.Duration
	// LockRetry is the bridge's heartbeat in bridge_members and how often
	// it rebalances: takes the shards its share lacks (a dead bridge's, or
	// free ones), hands over those above its share (to a bridge that
	// joined). Default 2s. See members.go for the bounds it sets.
	LockRetry time.Duration
	// ShutdownTimeout bounds, from the end of Run's context, the commit under
	// way then and the final commit of what is buffered. Default 10s.
	ShutdownTimeout time.Duration
	// MaxBackoff caps the wait between retries after PostgreSQL or Redis
	// failed. Default 5s (doubling from 100ms; each wait ±20%, see
	// internal/backoff).
	MaxBackoff time.Duration
	// SessionTimeout bounds how long a shard stays with a bridge that has
	// gone silent (dead host, frozen network path): after it, PostgreSQL has
	// ended the silent bridge's session, and its lock with it, or another
	// bridge ends it. Default 30s; see the --bridge-session-timeout help for
	// the arithmetic (sessionSettings).
	SessionTimeout time.Duration
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
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 30 * time.Second
	}
	return c
}

// Bridge runs one worker per shard; see the package comment.
type Bridge struct {
	cfg    Config
	pg     *pgx.ConnConfig
	rdb    redis.UniversalClient
	log    *slog.Logger
	m      *metrics
	keys   []string
	prefix string    // the deployment's Redis prefix: its bridges' group in bridge_members
	bal    *balancer // the shards' states, shared by the coordinator and the workers
}

// New checks cfg and builds a Bridge; Run starts it.
func New(cfg Config, rdb redis.UniversalClient, logger *slog.Logger, reg prometheus.Registerer) (*Bridge, error) {
	cfg = cfg.withDefaults()
	pg, err := pgx.ParseConfig(cfg.Postgres)
	if err != nil {
		return nil, fmt.Errorf("parse postgres url: %w", err)
	}
	sessionSettings(pg, cfg.SessionTimeout)
	keys := cfg.Streams.Keys()
	prefix := cfg.Streams.Prefix
	if prefix == "" {
		prefix = "firehose" // stream.Streams' default
	}
	return &Bridge{
		cfg:    cfg,
		pg:     pg,
		rdb:    rdb,
		log:    logger.With("component", "bridge"),
		m:      newMetrics(reg),
		keys:   keys,
		prefix: prefix,
		bal:    newBalancer(len(keys)),
	}, nil
}

// ErrDeploymentMismatch means the shard's metadata hash in Redis names
// another deployment (database) than the bridge's: two databases are fed from
// one Redis prefix. The bridge neither commits nor trims such a shard; Run
// returns the error.
var ErrDeploymentMismatch = errors.New("the Redis prefix belongs to another deployment")

// Run works its share of the shards until ctx ends, then commits what each
// shard has buffered (bounded by ShutdownTimeout) and returns nil. The
// bridges of a deployment share its shards (members.go): with K of them on N
// shards each owns at most ceil(N/K). Failures of
// PostgreSQL or Redis are retried with backoff, never returned; the one error
// returned is ErrDeploymentMismatch, which no retry can mend: Run then stops
// every shard and returns it.
func (b *Bridge) Run(ctx context.Context) error {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	var wg sync.WaitGroup
	wg.Go(func() { b.coordinate(ctx) })
	for shard := range b.keys {
		wg.Go(func() { b.runShard(ctx, shard, fail) })
	}
	wg.Wait()
	if err := context.Cause(ctx); errors.Is(err, ErrDeploymentMismatch) {
		return err
	}
	return nil
}

// runShard works a shard whenever the coordinator tells it to take it: it
// tries the shard's lock and, once it holds it, consumes until ctx ends, the
// shard is handed over, or something fails. An idle shard holds no
// connection. An error no retry can mend ends every shard through fail.
func (b *Bridge) runShard(ctx context.Context, shard int, fail context.CancelCauseFunc) {
	log := b.log.With("stream", b.keys[shard])
	bo := backoff.New(100*time.Millisecond, b.cfg.MaxBackoff)
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.bal.grant[shard]:
		}
		b.takeShard(ctx, shard, log, &bo, fail)
		b.bal.ended(shard)
		if ctx.Err() != nil {
			return
		}
	}
}

// takeShard is one grant of a shard: sessions until the shard is handed
// over, another bridge holds its lock, or ctx ends. After a failure it backs
// off and tries again: the shard is still this bridge's to take (the
// coordinator counts it as being taken meanwhile).
func (b *Bridge) takeShard(ctx context.Context, shard int, log *slog.Logger, bo *backoff.Schedule, fail context.CancelCauseFunc) {
	for {
		s := &session{b: b, shard: shard, key: b.keys[shard], log: log, batch: newBatcher(b.cfg.BatchSize, b.cfg.BatchAge)}
		err := s.run(ctx)
		switch {
		case errors.Is(err, ErrDeploymentMismatch):
			fail(err)
			return
		case ctx.Err() != nil:
			return
		case err == nil, errors.Is(err, errLockTaken):
			// Handed over, or another bridge holds the lock: the
			// coordinator decides what next.
			return
		}
		if s.progressed {
			bo.Reset()
		}
		wait := bo.Next()
		log.Warn("shard session ended; retrying", "err", err, "retry_in", wait)
		b.bal.retrying(shard)
		if !sleepCtx(ctx, wait) {
			return
		}
	}
}

// sessionSettings makes a silent bridge lose its shards within timeout T
// (Config.SessionTimeout), whatever froze: the host, the network, or a proxy
// that stops forwarding but keeps its sockets open (which TCP keepalives
// alone never notice, as the proxy's kernel answers them).
//
// On the server, per session (PostgreSQL 14 or later):
//   - idle_session_timeout T: a lock session that has not been used for T is
//     ended; the bridge pings its idle sessions every T/3, so a healthy quiet
//     bridge keeps them;
//   - idle_in_transaction_session_timeout T/2 and statement_timeout T/2: a
//     batch's transaction never waits T/2 for its client, and no statement
//     runs longer (a COPY of one batch takes milliseconds);
//   - tcp_keepalives_idle T/3, _interval T/6, _count 4 (T/3 + 4·T/6 = T) and
//     tcp_user_timeout T: a dead peer is noticed within T;
//   - client_connection_check_interval T/6: a long statement stops when the
//     bridge's socket closes.
//
// A backend blocked waiting for the rows of a COPY honours none of the
// timeouts, so a bridge that finds a shard's lock taken also ends the
// holder's session when it has shown no activity for T (see evictStale):
// a healthy holder is never silent that long (pings every T/3, statements
// and transactions bounded by T/2).
//
// On the client: TCP keepalives with the same timings, and a deadline on
// every PostgreSQL call (T/2, a batch's transaction T), so a bridge whose
// path froze gives its session up instead of hanging.
//
// Takeover after an owner goes silent: within T + 2·LockRetry (34s-ish with
// the defaults, plus the holder's termination, a few ms): its membership
// session ends (or its heartbeat is T old) within T, and the other bridges'
// next ticks take its shards (members.go).
func sessionSettings(pg *pgx.ConnConfig, t time.Duration) {
	secs := func(d time.Duration) string { return strconv.Itoa(max(1, int(d/time.Second))) }
	ms := func(d time.Duration) string { return strconv.FormatInt(max(1, d.Milliseconds()), 10) }
	set := map[string]string{
		"idle_session_timeout":                ms(t),
		"idle_in_transaction_session_timeout": ms(t / 2),
		"statement_timeout":                   ms(t / 2),
		"tcp_keepalives_idle":                 secs(t / 3),
		"tcp_keepalives_interval":             secs(t / 6),
		"tcp_keepalives_count":                "4",
		"tcp_user_timeout":                    ms(t),
		"client_connection_check_interval":    ms(t / 6),
		"application_name":                    BridgeAppName(),
	}
	if pg.RuntimeParams == nil {
		pg.RuntimeParams = map[string]string{}
	}
	for k, v := range set {
		if _, ok := pg.RuntimeParams[k]; !ok || k != "application_name" {
			pg.RuntimeParams[k] = v
		}
	}
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: max(time.Second, t/3), Interval: max(time.Second, t/6), Count: 4,
	}}
	pg.DialFunc = d.DialContext
}

// appNamePrefix starts the application_name of a bridge's PostgreSQL
// sessions (unless the URL names one): the rest is the bridge process,
// host:pid, so that pg_stat_activity and firehose status tell which bridge
// holds a shard.
const appNamePrefix = "firehose bridge "

// BridgeAppName is the application_name of this process's bridge sessions.
func BridgeAppName() string {
	host, _ := os.Hostname()
	name := appNamePrefix + host + ":" + strconv.Itoa(os.Getpid())
	if len(name) > 63 { // PostgreSQL keeps NAMEDATALEN-1 bytes: keep the pid
		pid := ":" + strconv.Itoa(os.Getpid())
		name = name[:63-len(pid)] + pid
	}
	return name
}

// BridgeOf is the bridge process (host:pid) of a session whose
// application_name is app, or "" if it is not a bridge's.
func BridgeOf(app string) string {
	b, ok := strings.CutPrefix(app, appNamePrefix)
	if !ok {
		return ""
	}
	return b
}

// LockKey is the advisory lock id of a stream: one per stream key, so that
// deployments sharing a database do not block each other.
func LockKey(stream string) int64 {
	h := fnv.New64a()
	h.Write([]byte("firehose bridge "))
	h.Write([]byte(stream))
	return int64(h.Sum64())
}

// sleepCtx waits d, or until ctx ends (then false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

type metrics struct {
	committed prometheus.Counter
	rejected  *prometheus.CounterVec
	// tableRows: committed rows per table; missingTable: rows refused
	// because their typed table or a column of it does not exist.
	tableRows    *prometheus.CounterVec
	missingTable *prometheus.CounterVec
	batchRows    prometheus.Histogram
	commitDur    prometheus.Histogram
	flushes      *prometheus.CounterVec
	errors       *prometheus.CounterVec
	owned        prometheus.Gauge
	buffered     prometheus.Gauge
	lag          prometheus.Histogram
	evicted      prometheus.Counter
	newStream    prometheus.Counter
	members      prometheus.Gauge
	share        prometheus.Gauge
	handovers    prometheus.Counter
	// per shard, while this bridge owns it
	shardOwned *prometheus.GaugeVec
	shardLag   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		committed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "firehose_bridge_rows_committed_total",
			Help: "Rows committed: readings, typed tables' rows and replays (per table: firehose_bridge_table_rows_committed_total).",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "firehose_bridge_rows_rejected_total",
			Help: "Stream entries written to readings_rejected, by reason (decode, refused, edge: an edge dead letter).",
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
			Help: "Batches committed, by the trigger that fired (size, age, quiet: a burst ended before either, shutdown, handover, read_error).",
		}, []string{"trigger"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "firehose_bridge_errors_total",
			Help: "Failures that made a shard back off and retry, by operation (connect, lock, read, commit, ping), or the bridge's membership session (members).",
		}, []string{"op"}),
		owned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "firehose_bridge_shards_owned",
			Help: "Shards this bridge holds the lock of (owns), handing over included.",
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
	m.tableRows = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "firehose_bridge_table_rows_committed_total",
		Help: "Rows committed per table: readings, and each typed table a mapping rule names (replays included).",
	}, []string{"table"})
	m.missingTable = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "firehose_bridge_table_rows_missing_total",
		Help: "Typed rows sent to readings_rejected because their table, or a column of it, does not exist (an operator's error: run firehose migrate --config, then firehose rejected replay), per table.",
	}, []string{"table"})
	m.evicted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "firehose_bridge_sessions_evicted_total",
		Help: "PostgreSQL sessions of silent bridges (no activity for --bridge-session-timeout) this bridge ended to take their shard.",
	})
	m.newStream = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "firehose_bridge_streams_new_total",
		Help: "Shard sessions that found a new stream (Redis lost everything: another generation token) and read it from its start.",
	})
	m.members = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "firehose_bridge_members",
		Help: "Live bridges of the deployment (rows of bridge_members), this one included, at the last heartbeat.",
	})
	m.share = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "firehose_bridge_shards_share",
		Help: "Shards this bridge is to own: floor(shards / members), one more for the first shards mod members (so at most ceil).",
	})
	m.handovers = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "firehose_bridge_handovers_total",
		Help: "Shards this bridge handed over (after committing the batch in hand) because it owned more than its share.",
	})
	m.shardOwned = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "firehose_bridge_shard_owned",
		Help: "1 for each shard this bridge owns (holds the lock of); a shard it does not own has no series here.",
	}, []string{"shard"})
	m.shardLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "firehose_bridge_shard_lag_seconds",
		Help: "Per shard this bridge owns: age of the oldest reading it has read and not yet committed (since Redis stored it), 0 once it has committed everything it found.",
	}, []string{"shard"})
	reg.MustRegister(m.committed, m.rejected, m.tableRows, m.missingTable, m.batchRows, m.commitDur, m.flushes, m.errors, m.owned, m.buffered, m.lag, m.evicted, m.newStream,
		m.members, m.share, m.handovers, m.shardOwned, m.shardLag)
	for _, t := range []string{triggerSize, triggerAge, triggerQuiet, "shutdown", "handover", "read_error"} {
		m.flushes.WithLabelValues(t)
	}
	for _, r := range []string{"decode", "refused", "edge"} {
		m.rejected.WithLabelValues(r)
	}
	m.tableRows.WithLabelValues(readingsName)
	for _, op := range []string{"connect", "lock", "read", "commit", "ping", "members"} {
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
