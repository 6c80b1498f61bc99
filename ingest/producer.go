package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Errors of Producer.Add. Each means the readings were not acknowledged and the
// client should retry later; none of them means the readings are bad.
var (
	// ErrBacklogFull: the streams hold more uncommitted entries than the
	// high-water mark; the bridge is behind.
	ErrBacklogFull = errors.New("backlog over the high-water mark")
	// ErrUnavailable: Redis did not confirm the entries (unreachable, timed out
	// or refused the write). Some of a multi-reading call may have been stored.
	ErrUnavailable = errors.New("redis unavailable")
	// ErrOverloaded: more readings wait for Redis than the producer queues.
	ErrOverloaded = errors.New("producer queue full")
	// ErrClosed: the producer is shutting down.
	ErrClosed = errors.New("producer closed")
)

// ProducerConfig tunes a Producer. Zero fields take the documented defaults.
type ProducerConfig struct {
	// Pipelines is how many XADD round trips may be in flight at once. While
	// one is in flight the next callers queue up and share the next round
	// trip (group commit). Default 1: on a 2-core box with Redis beside it,
	// one round trip at a time makes the largest batches and the fewest
	// syscalls (19k req/s against 15k with 4, see BENCHMARKS.md); raise it
	// when Redis is far away and round trips are long.
	Pipelines int
	// MaxBatch is the most readings one round trip carries. Default 1024.
	MaxBatch int
	// Codec is the stream encoding written: CodecBatch (default), one entry
	// per shard and round trip, or CodecVersion, one entry per reading.
	Codec string
	// QueueSize is the most readings waiting for or in a round trip; past
	// it Add answers ErrOverloaded. A call of more readings is accepted only
	// while no other reading waits. Default 65536: at 50,000 readings/s that
	// is over a second of Redis stall before callers are refused.
	QueueSize int
	// HighWater is the backlog (readings in all shard streams, that is
	// readings not yet committed to PostgreSQL, since the bridge trims what
	// it committed; counted by each shard's MetaBacklog) above which Add
	// answers ErrBacklogFull. 0 means the default, 1,000,000 readings; -1
	// disables the check.
	HighWater int64
	// BacklogInterval is how often the backlog is measured. Default 250ms.
	BacklogInterval time.Duration
	// Timeout bounds one round trip. Default 5s.
	Timeout time.Duration
	// MinReplicas is how many replicas must confirm a round trip's writes
	// (Redis WAIT, one per round trip, after its XADDs) before its callers
	// are answered. 0 (the default): the primary's reply is the
	// acknowledgement, and a failover can lose what its replicas had not
	// received yet.
	MinReplicas int
	// ReplicaTimeout is WAIT's timeout: a round trip not confirmed by
	// MinReplicas replicas within it answers ErrUnavailable. Default 1s.
	ReplicaTimeout time.Duration
}

func (c ProducerConfig) withDefaults() ProducerConfig {
	if c.Pipelines <= 0 {
		c.Pipelines = 1
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 1024
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 65536
	}
	if c.HighWater == 0 {
		c.HighWater = 1_000_000
	}
	if c.BacklogInterval <= 0 {
		c.BacklogInterval = 250 * time.Millisecond
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Codec == "" {
		c.Codec = CodecBatch
	}
	if c.ReplicaTimeout <= 0 {
		c.ReplicaTimeout = time.Second
	}
	return c
}

// Producer writes readings to their shard streams with pipelined XADDs shared
// by concurrent callers (group commit), and refuses new readings while the
// backlog is over the high-water mark or Redis is unreachable.
//
// Add blocks until Redis has confirmed every entry of the call, or fails; the
// Producer never retries a failed write itself (the caller did not get an
// acknowledgement and may resend). A Producer is safe for concurrent use.
type Producer struct {
	rdb     redis.UniversalClient
	streams Streams
	keys    []string
	cfg     ProducerConfig
	log     *slog.Logger
	m       producerMetrics

	mu     sync.RWMutex // guards closed against sends on queue
	closed bool
	queue  chan *call
	queued atomic.Int64

	backlogFull atomic.Bool
	redisDown   atomic.Bool
	backlog     atomic.Int64
	// written since the last measurement started: backlog+sinceMeasure
	// bounds the backlog between measurements, so a burst cannot overshoot
	// the high-water mark by a whole BacklogInterval of traffic.
	sinceMeasure atomic.Int64

	runOnce  sync.Once
	stopOnce sync.Once
	done     chan struct{}
}

// call is one Add waiting for its round trip, or one Enqueue.
type call struct {
	readings []Reading
	done     chan error // buffered: the writer never blocks on an abandoned call; nil for Enqueue
}

// NewProducer builds a Producer; Run starts it.
func NewProducer(rdb redis.UniversalClient, streams Streams, cfg ProducerConfig, logger *slog.Logger, reg prometheus.Registerer) *Producer {
	cfg = cfg.withDefaults()
	p := &Producer{
		rdb:     rdb,
		streams: streams,
		keys:    streams.Keys(),
		cfg:     cfg,
		log:     logger.With("component", "producer"),
		queue:   make(chan *call, cfg.QueueSize),
		done:    make(chan struct{}),
	}
	p.m = newProducerMetrics(reg, p)
	return p
}

// Run writes queued readings until ctx is done, then refuses new ones, writes
// what is queued (bounded by the round-trip timeout) and returns. Cancel ctx
// only after the edges that call Add have stopped.
//
// Run refuses to start, and the producer answers every call ErrClosed, when
// the Redis client would retry failed commands (see checkNoRetries).
func (p *Producer) Run(ctx context.Context) error {
	started := false
	p.runOnce.Do(func() { started = true })
	if !started {
		return errors.New("producer: Run called twice")
	}
	if err := checkNoRetries(p.rdb); err != nil {
		p.close()
		p.failQueued()
		close(p.done)
		return fmt.Errorf("producer: %w", err)
	}
	var wg sync.WaitGroup
	for range p.cfg.Pipelines {
		wg.Go(p.writer)
	}
	pollCtx, stopPoll := context.WithCancel(ctx)
	var pollWG sync.WaitGroup
	pollWG.Go(func() { p.pollBacklog(pollCtx) })

	<-ctx.Done()
	stopPoll()
	// Refuse new readings before waiting for the poller: its round trip may
	// hang on a stalled Redis for as long as the client's read timeout.
	p.close()
	pollWG.Wait()
	wg.Wait()
	close(p.done)
	return nil
}

// close stops Add from queueing; writers drain the queue and exit.
func (p *Producer) close() {
	p.stopOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		close(p.queue)
		p.mu.Unlock()
	})
}

// Done is closed when Run has written everything queued and returned.
func (p *Producer) Done() <-chan struct{} { return p.done }

// Ready reports whether Add would currently accept readings, and if not why.
func (p *Producer) Ready() error {
	p.mu.RLock()
	closed := p.closed
	p.mu.RUnlock()
	switch {
	case closed:
		return ErrClosed
	case p.redisDown.Load():
		return ErrUnavailable
	case p.overHighWater():
		return ErrBacklogFull
	}
	return nil
}

// overHighWater reports whether the backlog, as last measured plus what was
// written since, is over the high-water mark.
func (p *Producer) overHighWater() bool {
	return p.backlogFull.Load() || (p.cfg.HighWater > 0 && p.backlog.Load()+p.sinceMeasure.Load() > p.cfg.HighWater)
}

// Backlog is the last measured number of entries in all shard streams.
func (p *Producer) Backlog() int64 { return p.backlog.Load() }

// Add writes rs to their streams and returns nil once Redis has confirmed all
// of them. The readings must be valid. On error the caller must not
// acknowledge; with ErrUnavailable part of rs may have been stored. If ctx
// ends first Add returns ctx.Err() and the write may still happen.
func (p *Producer) Add(ctx context.Context, rs []Reading) error {
	if len(rs) == 0 {
		return nil
	}
	c := &call{readings: rs, done: make(chan error, 1)}
	if err := p.enqueue(c); err != nil {
		return err
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Enqueue queues r for the next round trip and returns without waiting for
// Redis: at most once, for MQTT QoS 0. It refuses, like Add, when the
// producer would refuse r; a write that fails later is only counted
// (firehose_producer_refused_total).
func (p *Producer) Enqueue(r Reading) error {
	return p.enqueue(&call{readings: []Reading{r}})
}

// enqueue admits c and puts it in the queue.
func (p *Producer) enqueue(c *call) error {
	p.mu.RLock()
	// Closed first: after shutdown the answer is ErrClosed, whatever the
	// last state of Redis and the backlog, as Ready says.
	err := ErrClosed
	if !p.closed {
		err = p.admit(len(c.readings))
	}
	if err != nil {
		p.mu.RUnlock()
		p.m.refused(err)
		return err
	}
	// Never blocks: admit keeps at most QueueSize calls queued (see there).
	p.queue <- c
	p.mu.RUnlock()
	return nil
}

func (p *Producer) admit(n int) error {
	if p.redisDown.Load() {
		return ErrUnavailable
	}
	if p.overHighWater() {
		return ErrBacklogFull
	}
	// Readings queued or in flight stay within QueueSize, so the queue (of
	// QueueSize calls of at least one reading each) never blocks a sender. A
	// call of more readings than that is taken only when nothing else
	// waits, and then it is the only call queued.
	if q := p.queued.Add(int64(n)); q > int64(p.cfg.QueueSize) && q != int64(n) {
		p.queued.Add(-int64(n))
		return ErrOverloaded
	}
	return nil
}

// failQueued answers ErrClosed to every call still queued after close.
func (p *Producer) failQueued() {
	for c := range p.queue {
		p.queued.Add(-int64(len(c.readings)))
		p.answer(c, ErrClosed)
	}
}

// answer tells c's caller (if one waits) how its call ended, and counts it.
func (p *Producer) answer(c *call, err error) {
	if err != nil {
		p.m.refused(err)
	} else {
		p.m.written.Add(float64(len(c.readings)))
		p.sinceMeasure.Add(int64(len(c.readings)))
	}
	if c.done != nil { // nil: Enqueue, nobody waits
		c.done <- err
	}
}

// errRedisDown answers the calls that were queued when a round trip failed or
// the backlog measurement found Redis unreachable: sending them would make
// each wait a full timeout against a Redis that is not answering.
var errRedisDown = fmt.Errorf("%w: an earlier round trip failed; refusing until Redis answers again", ErrUnavailable)

// writer takes every call waiting in the queue (up to MaxBatch entries),
// writes them in one pipelined round trip, and answers each. While Redis is
// known to be down it answers the calls at once instead (ErrUnavailable):
// after a transport failure every queued caller hears within one round trip,
// not one timeout after another; the backlog poller clears the state when
// Redis answers again.
func (p *Producer) writer() {
	var batch []*call
	var rt roundTrip
	for c := range p.queue {
		batch = append(batch[:0], c)
		n := len(c.readings)
	fill:
		for n < p.cfg.MaxBatch {
			select {
			case c, ok := <-p.queue:
				if !ok {
					break fill
				}
				batch = append(batch, c)
				n += len(c.readings)
			default:
				break fill
			}
		}
		if p.redisDown.Load() {
			for _, c := range batch {
				p.answer(c, errRedisDown)
			}
		} else {
			p.write(batch, n, &rt)
		}
		p.queued.Add(-int64(n))
	}
}

// roundTrip is a writer's memory for building round trips, reused from one
// to the next.
type roundTrip struct {
	bodies  [][]byte // per shard: the batch entry's body being built
	counts  []int    // per shard: readings in it
	shardOf []int    // per reading of the round trip, in call order
	v1      []byte   // --stream-codec 1: every entry's body, one after another
}

// maxKeptBody keeps a rare huge batch body's memory from staying with the
// writer.
const maxKeptBody = 1 << 20

func (rt *roundTrip) reset(shards int) {
	if len(rt.bodies) != shards {
		rt.bodies, rt.counts = make([][]byte, shards), make([]int, shards)
	}
	for i := range rt.bodies {
		if cap(rt.bodies[i]) > maxKeptBody {
			rt.bodies[i] = nil
		}
		rt.counts[i] = 0
	}
	rt.shardOf = rt.shardOf[:0]
	rt.v1 = rt.v1[:0]
}

// write sends the batch in one pipelined round trip and answers every call.
//
// With the batch encoding (the default) each shard that has readings in the
// round trip gets one stream entry holding all of them, in call order, so
// one device's readings stay in order; with --stream-codec 1, one entry per
// reading. Per shard the pipeline holds, in this order:
//
//   - HSETNX of the shard's generation token, if Redis has none. Redis runs
//     a pipeline's commands in order, so no entry is ever stored, and no
//     snapshot taken, in a Redis without its shard's token, even one wiped
//     between two round trips: the bridge relies on that to tell a stream
//     that lost its tail from a new one (see MetaGeneration). A fresh token
//     per round trip: a token used before a wipe must never come back.
//   - the XADD(s);
//   - HINCRBY of the shard's backlog counter by the readings added (see
//     MetaBacklog), which the bridge's trim counts down.
//
// A call is acknowledged only if every command of every shard it wrote to
// succeeded.
func (p *Producer) write(batch []*call, n int, rt *roundTrip) {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
	defer cancel()
	pipe := p.rdb.Pipeline()
	rt.reset(len(p.keys))
	batched := p.cfg.Codec != CodecVersion
	var perReading []*redis.StringCmd // --stream-codec 1
	if !batched {
		perReading = make([]*redis.StringCmd, 0, n)
	}
	for _, c := range batch {
		for i := range c.readings {
			r := &c.readings[i]
			shard := p.streams.Shard(r.DeviceID)
			rt.shardOf = append(rt.shardOf, shard)
			rt.counts[shard]++
			if batched {
				if rt.counts[shard] == 1 {
					rt.bodies[shard] = append(rt.bodies[shard][:0], make([]byte, BatchHeaderLen)...)
				}
				rt.bodies[shard] = AppendBatchItem(rt.bodies[shard], r)
				continue
			}
			// Each command holds a full-capped slice of one buffer; when
			// append moves it to a larger array the slices taken before
			// keep the old one alive, unchanged.
			start := len(rt.v1)
			rt.v1 = AppendEncode(rt.v1, r)
			perReading = append(perReading, redis.NewStringCmd(ctx, "xadd", p.keys[shard], "*",
				FieldVersion, CodecVersion, FieldBody, rt.v1[start:len(rt.v1):len(rt.v1)]))
		}
	}
	gen := NewGeneration()
	type shardCmds struct {
		meta    *redis.BoolCmd
		xadd    *redis.StringCmd // batch encoding
		backlog *redis.IntCmd
	}
	cmds := make([]shardCmds, len(p.keys))
	for shard, count := range rt.counts {
		if count == 0 {
			continue
		}
		meta := p.streams.ShardMetaKey(shard)
		sc := &cmds[shard]
		sc.meta = pipe.HSetNX(ctx, meta, MetaGeneration, gen)
		if batched {
			sc.xadd = redis.NewStringCmd(ctx, "xadd", p.keys[shard], "*", FieldVersion, CodecBatch,
				FieldCount, strconv.Itoa(count), FieldBody, FinishBatch(rt.bodies[shard], count))
			_ = pipe.Process(ctx, sc.xadd)
		} else {
			// This shard's entries, in call order.
			for i, s := range rt.shardOf {
				if s == shard {
					_ = pipe.Process(ctx, perReading[i])
				}
			}
		}
		sc.backlog = pipe.HIncrBy(ctx, meta, MetaBacklog, int64(count))
	}
	// WAIT covers every write this connection made before it: the whole
	// round trip, in one command.
	var wait *redis.IntCmd
	if p.cfg.MinReplicas > 0 {
		// Not Pipeliner.Wait (there is none): a pipeline's replies are
		// read under the client's read timeout, which MaxReplicaTimeout
		// stays within.
		wait = redis.NewIntCmd(ctx, "wait", p.cfg.MinReplicas, p.cfg.ReplicaTimeout.Milliseconds())
		_ = pipe.Process(ctx, wait)
	}
	start := time.Now()
	_, execErr := pipe.Exec(ctx)
	p.m.roundTrip.Observe(time.Since(start).Seconds())
	p.m.batchSize.Observe(float64(n))

	if execErr != nil && !isRedisReplyError(execErr) {
		if !p.redisDown.Swap(true) {
			p.log.Warn("xadd round trip failed: refusing readings until Redis answers", "err", execErr, "readings", n)
		}
	}
	// What each shard's commands say. A refused token or counter (rare: a
	// key of the wrong type) fails the shard's callers as a failed XADD
	// does: its entries may be stored, but none is acknowledged.
	shardErr := make([]error, len(p.keys))
	for shard, sc := range cmds {
		if sc.meta == nil { // no readings for this shard
			continue
		}
		written := []redis.Cmder{sc.meta, sc.backlog}
		if sc.xadd != nil {
			written = append(written, sc.xadd)
		}
		for _, c := range written {
			if err := c.Err(); err != nil && shardErr[shard] == nil {
				shardErr[shard] = fmt.Errorf("%w: %s: %v", ErrUnavailable, c.Name(), err)
			}
		}
	}
	// Too few replicas confirmed: no caller of the round trip is answered
	// success. Its entries are on the primary and reach PostgreSQL unless a
	// failover loses them; a device that resends may land twice.
	var replicaErr error
	if wait != nil {
		switch got, err := wait.Result(); {
		case err != nil:
			replicaErr = fmt.Errorf("%w: wait: %v", ErrUnavailable, err)
		case got < int64(p.cfg.MinReplicas):
			replicaErr = fmt.Errorf("%w: %d of %d replicas confirmed the write within %s", ErrUnavailable, got, p.cfg.MinReplicas, p.cfg.ReplicaTimeout)
			p.m.replicaShort.Inc()
		}
	}
	r := 0
	for _, c := range batch {
		err := replicaErr
		for range c.readings {
			e := shardErr[rt.shardOf[r]]
			if !batched {
				if xe := perReading[r].Err(); xe != nil && e == nil {
					e = fmt.Errorf("%w: xadd: %v", ErrUnavailable, xe)
				}
			}
			if e != nil && err == nil {
				err = e
			}
			r++
		}
		p.answer(c, err)
	}
}

// isRedisReplyError tells an error Redis answered (the connection is fine) from
// a failure to reach Redis.
func isRedisReplyError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.ErrClosed)
}

// pollBacklog measures the streams' lengths every BacklogInterval; it sets
// backlogFull and redisDown, which Add reads without a round trip.
func (p *Producer) pollBacklog(ctx context.Context) {
	t := time.NewTicker(p.cfg.BacklogInterval)
	defer t.Stop()
	for {
		p.measureBacklog(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Producer) measureBacklog(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	// What is written from here on may or may not be counted by XLEN: keep
	// it in the estimate until the next measurement.
	before := p.sinceMeasure.Load()
	pipe := p.rdb.Pipeline()
	lens := make([]*redis.IntCmd, len(p.keys))
	counts := make([]*redis.StringCmd, len(p.keys))
	for i, k := range p.keys {
		lens[i] = pipe.XLen(ctx, k)
		counts[i] = pipe.HGet(ctx, p.streams.ShardMetaKey(i), MetaBacklog)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		if ctx.Err() == nil && !p.redisDown.Swap(true) {
			p.log.Warn("redis unreachable: refusing readings until it answers", "err", err)
		}
		return
	}
	if p.redisDown.Swap(false) {
		p.log.Info("redis reachable again: accepting readings")
	}
	// A shard's backlog in readings: its counter (MetaBacklog), or its
	// length when that is larger (entries of one reading that no counter
	// saw, written by --stream-codec 1 or an older build).
	var total int64
	for i := range lens {
		n := lens[i].Val()
		if c, err := counts[i].Int64(); err == nil && c > n {
			n = c
		}
		total += n
		p.m.backlog.WithLabelValues(strconv.Itoa(i)).Set(float64(n))
	}
	p.backlog.Store(total)
	p.sinceMeasure.Add(-before)
	full := p.cfg.HighWater > 0 && total > p.cfg.HighWater
	if p.backlogFull.Swap(full) != full {
		if full {
			p.log.Warn("backlog over the high-water mark: refusing readings", "backlog", total, "high_water", p.cfg.HighWater)
		} else {
			p.log.Info("backlog under the high-water mark: accepting readings", "backlog", total)
		}
	}
}

type producerMetrics struct {
	roundTrip prometheus.Histogram
	batchSize prometheus.Histogram
	written   prometheus.Counter
	refusals  *prometheus.CounterVec
	backlog   *prometheus.GaugeVec
	// round trips fewer replicas confirmed than --redis-min-replicas
	replicaShort prometheus.Counter
}

func newProducerMetrics(reg prometheus.Registerer, p *Producer) producerMetrics {
	m := producerMetrics{
		roundTrip: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "firehose_producer_xadd_duration_seconds",
			Help:    "Duration of one pipelined XADD round trip, shared by every reading in it.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "firehose_producer_xadd_batch_entries",
			Help:    "Readings written per pipelined XADD round trip (group commit size); with the batch encoding each shard's readings of a round trip are one stream entry.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "firehose_producer_entries_written_total",
			Help: "Readings Redis confirmed (acknowledgeable).",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "firehose_producer_refused_total",
			Help: "Producer calls refused, by reason (backlog_full, redis_unavailable, overloaded, closed).",
		}, []string{"reason"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "firehose_stream_backlog_entries",
			Help: "Readings in a shard stream not yet committed to PostgreSQL (its backlog counter, or its length if larger; see --high-water).",
		}, []string{"shard"}),
		replicaShort: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "firehose_producer_replica_timeouts_total",
			Help: "Round trips that fewer replicas confirmed (WAIT) than --redis-min-replicas within --redis-replica-timeout; their callers were refused.",
		}),
	}
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "firehose_producer_queued_readings",
		Help: "Readings waiting for an XADD round trip.",
	}, func() float64 { return float64(p.queued.Load()) })
	reg.MustRegister(m.roundTrip, m.batchSize, m.written, m.refusals, m.backlog, m.replicaShort, queued)
	for _, r := range []string{"backlog_full", "redis_unavailable", "overloaded", "closed"} {
		m.refusals.WithLabelValues(r)
	}
	return m
}

func (m producerMetrics) refused(err error) {
	m.refusals.WithLabelValues(RefusalReason(err)).Inc()
}

// RefusalReason names a Producer error as a small enum for metrics and logs:
// backlog_full, redis_unavailable, overloaded, closed, or other.
func RefusalReason(err error) string {
	switch {
	case errors.Is(err, ErrBacklogFull):
		return "backlog_full"
	case errors.Is(err, ErrUnavailable):
		return "redis_unavailable"
	case errors.Is(err, ErrOverloaded):
		return "overloaded"
	case errors.Is(err, ErrClosed):
		return "closed"
	}
	return "other"
}
