package stream

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

	"firehose/ingest"
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
	// it Add answers ingest.ErrOverloaded. A call of more readings is accepted only
	// while no other reading waits. Default 65536: at 50,000 readings/s that
	// is over a second of Redis stall before callers are refused.
	QueueSize int
	// HighWater is the backlog (readings in all shard streams, that is
	// readings not yet committed to PostgreSQL, since the bridge trims what
	// it committed; counted by each shard's MetaBacklog) above which Add
	// answers ingest.ErrBacklogFull. 0 means the default, 1,000,000 readings; -1
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
	// MinReplicas replicas within it answers ingest.ErrUnavailable. Default 1s.
	ReplicaTimeout time.Duration
	// Dedup is the deduplication mode: DedupOff (default), DedupID or
	// DedupNatural. A reading with a key under it is stored only if its
	// shard does not remember the key; a resend is acknowledged like the
	// original and not stored again (see dedupScript). Needs CodecBatch.
	Dedup string
	// DedupWindow is how long a key is remembered at least (at most twice
	// that). Default DefaultDedupWindow.
	DedupWindow time.Duration
	// StateBytesKey, if set, is a Redis counter of the bytes of state the
	// edges keep beside the streams (Sparkplug B edge node state, see
	// SparkplugStore.BytesKey). Each backlog measurement reads it and
	// counts it toward HighWater as StateBytesPerReading bytes a reading:
	// the state takes Redis memory the backlog would otherwise have.
	StateBytesKey string
}

// StateBytesPerReading is how many bytes of ProducerConfig.StateBytesKey
// count as one reading of backlog: about what Redis holds per backlogged
// reading (58 bytes measured with batch entries, see BENCHMARKS.md).
const StateBytesPerReading = 58

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
		c.Codec = ingest.CodecBatch
	}
	if c.ReplicaTimeout <= 0 {
		c.ReplicaTimeout = time.Second
	}
	if c.Dedup == "" {
		c.Dedup = DedupOff
	}
	if c.DedupWindow <= 0 {
		c.DedupWindow = DefaultDedupWindow
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
	rdb      redis.UniversalClient
	cluster  *redis.ClusterClient // rdb, when it is a cluster's
	streams  Streams
	keys     []string // per shard: its stream
	metaKeys []string // per shard: its metadata hash
	onceKeys []string // per shard: its once records' keys without the session (ShardOnceKey)
	cfg      ProducerConfig
	log      *slog.Logger
	m        producerMetrics

	mu     sync.RWMutex // guards closed against sends on queue
	closed bool
	queue  chan *call
	queued atomic.Int64

	backlogFull   atomic.Bool
	health        *shardHealth
	layoutChanged atomic.Bool // see checkLayout
	backlog       atomic.Int64
	shardBacklog  []int64 // per shard, as last measured; the poller's own
	// written since the last measurement started: backlog+sinceMeasure
	// bounds the backlog between measurements, so a burst cannot overshoot
	// the high-water mark by a whole BacklogInterval of traffic.
	sinceMeasure atomic.Int64
	// stateReadings is the state at StateBytesKey in readings, as last
	// measured: it counts toward HighWater with the backlog.
	stateReadings atomic.Int64

	runOnce  sync.Once
	stopOnce sync.Once
	done     chan struct{}
}

// call is one Add waiting for its round trip, or one Enqueue.
type call struct {
	readings []ingest.Reading
	dead     *ingest.DeadLetter // AddDeadLetter's, instead of readings
	once     *Once              // AddOnce's and AddDeadLetterOnce's key; nil for every other call
	// redelivered is set by the writer before it answers a once-call: every
	// part of it was recorded already, and nothing was written.
	redelivered bool
	done        chan error // buffered: the writer never blocks on an abandoned call; nil for Enqueue
}

// size is how many stream items the call writes: its readings, or its dead
// letter.
func (c *call) size() int {
	if c.dead != nil {
		return 1
	}
	return len(c.readings)
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
		health:  newShardHealth(streams.Len()),

		shardBacklog: make([]int64, streams.Len()),
		queue:        make(chan *call, cfg.QueueSize),
		done:         make(chan struct{}),
	}
	p.cluster, _ = rdb.(*redis.ClusterClient)
	for i := range p.keys {
		p.metaKeys = append(p.metaKeys, streams.ShardMetaKey(i))
		p.onceKeys = append(p.onceKeys, streams.shardOncePrefix(i))
	}
	p.m = newProducerMetrics(reg, p)
	return p
}

// Run writes queued readings until ctx is done, then refuses new ones, writes
// what is queued (bounded by the round-trip timeout) and returns. Cancel ctx
// only after the edges that call Add have stopped.
//
// Run refuses to start, and the producer answers every call ingest.ErrClosed, when
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
// While only some shards are unavailable (on a cluster, a node is down) the
// producer is ready: readings routed to the other shards are accepted, and
// UnavailableShards says which are not.
func (p *Producer) Ready() error {
	p.mu.RLock()
	closed := p.closed
	p.mu.RUnlock()
	switch {
	case closed:
		return ingest.ErrClosed
	case p.health.all():
		return errRedisDown
	case p.layoutChanged.Load():
		return errLayoutChanged
	case p.overHighWater():
		return ingest.ErrBacklogFull
	}
	return nil
}

// UnavailableShards lists the shards whose Redis node did not answer the
// last round trip or backlog measurement: readings routed to them are
// refused (ingest.ErrUnavailable) until it answers again.
func (p *Producer) UnavailableShards() []int { return p.health.list() }

// overHighWater reports whether the backlog, as last measured plus what was
// written since, is over the high-water mark.
func (p *Producer) overHighWater() bool {
	return p.backlogFull.Load() || (p.cfg.HighWater > 0 && p.backlog.Load()+p.stateReadings.Load()+p.sinceMeasure.Load() > p.cfg.HighWater)
}

// Backlog is the last measured number of entries in all shard streams.
func (p *Producer) Backlog() int64 { return p.backlog.Load() }

// Add writes rs to their streams and returns nil once Redis has confirmed all
// of them. The readings must be valid. On error the caller must not
// acknowledge; with ingest.ErrUnavailable part of rs may have been stored. If ctx
// ends first Add returns ctx.Err() and the write may still happen.
func (p *Producer) Add(ctx context.Context, rs []ingest.Reading) error {
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
func (p *Producer) Enqueue(r ingest.Reading) error {
	return p.enqueue(&call{readings: []ingest.Reading{r}})
}

// enqueue admits c and puts it in the queue.
func (p *Producer) enqueue(c *call) error {
	p.mu.RLock()
	// Closed first: after shutdown the answer is ingest.ErrClosed, whatever the
	// last state of Redis and the backlog, as Ready says.
	err := ingest.ErrClosed
	if !p.closed {
		err = p.admit(c.size())
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
	if p.health.all() {
		return errRedisDown
	}
	if p.layoutChanged.Load() {
		return errLayoutChanged
	}
	if p.overHighWater() {
		return ingest.ErrBacklogFull
	}
	// Readings queued or in flight stay within QueueSize, so the queue (of
	// QueueSize calls of at least one reading each) never blocks a sender. A
	// call of more readings than that is taken only when nothing else
	// waits, and then it is the only call queued.
	if q := p.queued.Add(int64(n)); q > int64(p.cfg.QueueSize) && q != int64(n) {
		p.queued.Add(-int64(n))
		return ingest.ErrOverloaded
	}
	return nil
}

// failQueued answers ingest.ErrClosed to every call still queued after close.
func (p *Producer) failQueued() {
	for c := range p.queue {
		p.queued.Add(-int64(c.size()))
		p.answer(c, ingest.ErrClosed)
	}
}

// answer tells c's caller (if one waits) how its call ended, and counts it.
func (p *Producer) answer(c *call, err error) {
	if err != nil {
		p.m.refused(err)
	} else {
		if c.dead != nil {
			p.m.deadLetters.Inc()
		} else {
			p.m.written.Add(float64(len(c.readings)))
		}
		p.sinceMeasure.Add(int64(c.size()))
	}
	if c.done != nil { // nil: Enqueue, nobody waits
		c.done <- err
	}
}

// errRedisDown answers the calls that were queued when a round trip failed or
// the backlog measurement found Redis unreachable: sending them would make
// each wait a full timeout against a Redis that is not answering.
var errRedisDown = fmt.Errorf("%w: an earlier round trip failed; refusing until Redis answers again", ingest.ErrUnavailable)

// errLayoutChanged answers every call while checkLayout finds the
// deployment's key layout changed.
var errLayoutChanged = fmt.Errorf("%w: the deployment's key layout in Redis changed under this process; restart it", ingest.ErrUnavailable)

// writer takes every call waiting in the queue (up to MaxBatch entries),
// writes them in one pipelined round trip, and answers each. A call with a
// reading for a shard whose Redis node is known to be down is answered at
// once instead (ingest.ErrUnavailable), and none of its readings is written: after
// a transport failure every queued caller of that node hears within one
// round trip, not one timeout after another; the backlog poller clears the
// state when the node answers again.
func (p *Producer) writer() {
	var batch []*call
	var rt roundTrip
	for c := range p.queue {
		batch = append(batch[:0], c)
		n := c.size()
	fill:
		for n < p.cfg.MaxBatch {
			select {
			case c, ok := <-p.queue:
				if !ok {
					break fill
				}
				batch = append(batch, c)
				n += c.size()
			default:
				break fill
			}
		}
		if p.health.any() {
			batch = p.refuseDown(batch)
		}
		if len(batch) > 0 {
			p.write(batch, n, &rt)
		}
		p.queued.Add(-int64(n))
	}
}

// refuseDown answers errRedisDown to every call of batch with a reading for a
// shard that is down, and returns the others.
func (p *Producer) refuseDown(batch []*call) []*call {
	kept := batch[:0]
	for _, c := range batch {
		down := c.dead != nil && p.health.isDown(p.streams.Shard(deadLetterRoute(c.dead)))
		for i := range c.readings {
			if p.health.isDown(p.streams.Shard(c.readings[i].DeviceID)) {
				down = true
				break
			}
		}
		if down {
			p.answer(c, errRedisDown)
		} else {
			kept = append(kept, c)
		}
	}
	return kept
}

// pollBacklog measures the streams' lengths every BacklogInterval; it sets
// backlogFull and each shard's health, which Add reads without a round trip.
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
	counts := make([]backlogCounter, len(p.keys))
	for i, k := range p.keys {
		lens[i] = pipe.XLen(ctx, k)
		if p.cluster != nil {
			// A write that changes nothing, so that only the shard's
			// primary answers it: on a cluster whose primary died, a
			// replica may answer the XLEN, and only a primary can take
			// readings. (A single node or Sentinel's master needs no such
			// proof, and its AOF no such write.)
			counts[i] = pipe.HIncrBy(ctx, p.metaKeys[i], MetaBacklog, 0)
		} else {
			counts[i] = stringCounter{pipe.HGet(ctx, p.metaKeys[i], MetaBacklog)}
		}
	}
	layout := p.queueLayoutCheck(ctx, pipe)
	var state *redis.StringCmd
	if p.cfg.StateBytesKey != "" {
		state = pipe.Get(ctx, p.cfg.StateBytesKey)
	}
	_, _ = pipe.Exec(ctx) // each command's error is read below
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
		return // shutting down: say nothing about Redis
	}
	p.checkLayout(layout)
	// A shard is reachable when its primary answered; on a single node
	// every shard answers or none does. Any error counts: on a cluster a
	// MOVED, READONLY or CLUSTERDOWN answer means no primary serves the
	// shard yet.
	var up, down []int
	for i := range lens {
		err := lens[i].Err()
		if _, cerr := counts[i].Result(); err == nil {
			err = cerr
		}
		if err != nil {
			if p.health.set(i, true) {
				down = append(down, i)
			}
			continue
		}
		if p.health.set(i, false) {
			up = append(up, i)
		}
		// A shard's backlog in readings: its counter (MetaBacklog), or its
		// length when that is larger (entries of one reading that no
		// counter saw, written by --stream-codec 1 or an older build).
		n := lens[i].Val()
		if c, _ := counts[i].Result(); c > n {
			n = c
		}
		p.shardBacklog[i] = n
		p.m.backlog.WithLabelValues(strconv.Itoa(i)).Set(float64(n))
	}
	if len(down) > 0 {
		err := lens[down[0]].Err()
		if _, cerr := counts[down[0]].Result(); err == nil {
			err = cerr
		}
		p.log.Warn("redis unreachable: refusing readings of these shards until it answers", "shards", down, "err", err)
	}
	if len(up) > 0 {
		p.log.Info("redis reachable again: accepting readings of these shards", "shards", up)
	}
	if p.cluster != nil && p.health.any() {
		// After a failover the slot map must name the promoted replica.
		p.cluster.ReloadState(ctx)
	}
	// An unreachable shard counts with its last measured backlog.
	var total int64
	for _, n := range p.shardBacklog {
		total += n
	}
	p.backlog.Store(total)
	if state != nil {
		// Absent: no state; unreadable (Redis down): the last measurement stands.
		if n, err := state.Int64(); err == nil || errors.Is(err, redis.Nil) {
			p.stateReadings.Store(max(n, 0) / StateBytesPerReading)
		}
	}
	total += p.stateReadings.Load()
	p.sinceMeasure.Add(-before)
	full := p.cfg.HighWater > 0 && total > p.cfg.HighWater
	if p.backlogFull.Swap(full) != full {
		if full {
			p.log.Warn("backlog over the high-water mark: refusing readings", "backlog", total, "state_readings", p.stateReadings.Load(), "high_water", p.cfg.HighWater)
		} else {
			p.log.Info("backlog under the high-water mark: accepting readings", "backlog", total)
		}
	}
}

// backlogCounter is a shard's backlog counter as a backlog measurement
// reads it: HINCRBY by 0 on a cluster, HGET elsewhere.
type backlogCounter interface {
	Result() (int64, error)
}

// stringCounter reads an HGET of the counter; a missing or unreadable one
// is 0, not an error.
type stringCounter struct{ cmd *redis.StringCmd }

func (c stringCounter) Result() (int64, error) {
	if err := c.cmd.Err(); err != nil {
		if errors.Is(err, redis.Nil) {
			return 0, nil
		}
		return 0, err
	}
	n, _ := strconv.ParseInt(c.cmd.Val(), 10, 64) // not a number: 0, the stream's length counts
	return n, nil
}

// queueLayoutCheck queues, on pipe, the commands that keep the deployment's
// shard count and key layout recorded (a Redis wiped under a running process
// gets them back from the first process that measures) and read the layout
// back. It returns nil for Streams that no Check resolved.
func (p *Producer) queueLayoutCheck(ctx context.Context, pipe redis.Pipeliner) *redis.StringCmd {
	if p.streams.Layout == 0 {
		return nil
	}
	meta := p.streams.MetaKey()
	pipe.HSetNX(ctx, meta, metaShards, strconv.Itoa(p.streams.Len()))
	pipe.HSetNX(ctx, meta, metaLayout, strconv.Itoa(p.streams.Layout))
	return pipe.HGet(ctx, meta, metaLayout)
}

// checkLayout refuses every reading while the deployment's recorded key
// layout differs from this process's: the bridge would read other keys than
// this producer writes. It can only happen when Redis lost its data and a
// process of another build recorded the layout first; restarting this
// process resolves it.
func (p *Producer) checkLayout(cmd *redis.StringCmd) {
	if cmd == nil || cmd.Err() != nil {
		return
	}
	changed := cmd.Val() != strconv.Itoa(p.streams.Layout)
	if p.layoutChanged.Swap(changed) != changed && changed {
		p.log.Error("the deployment's key layout in Redis changed under this process: refusing readings; restart it",
			"recorded", cmd.Val(), "ours", p.streams.Layout, "key", p.streams.MetaKey())
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
	duplicates   prometheus.Counter
	deadLetters  prometheus.Counter
	redeliveries prometheus.Counter
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
	m.duplicates = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "firehose_producer_duplicates_total",
		Help: "Readings acknowledged without being stored again: resends whose key their shard remembered (--dedup).",
	})
	m.deadLetters = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "firehose_producer_dead_letters_total",
		Help: "Edge dead letters Redis confirmed: acknowledged messages that could not become readings yet (see firehose rejected).",
	})
	m.redeliveries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "firehose_producer_redeliveries_total",
		Help: "QoS 2 messages (AddOnce, AddDeadLetterOnce) acknowledged whose once key showed them stored before, wholly or in part: what was stored was not stored again.",
	})
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "firehose_producer_queued_readings",
		Help: "Readings waiting for an XADD round trip.",
	}, func() float64 { return float64(p.queued.Load()) })
	reg.MustRegister(m.roundTrip, m.batchSize, m.written, m.refusals, m.backlog, m.replicaShort, m.duplicates, m.deadLetters, m.redeliveries, queued)
	for _, r := range []string{"backlog_full", "redis_unavailable", "overloaded", "closed"} {
		m.refusals.WithLabelValues(r)
	}
	return m
}

func (m producerMetrics) refused(err error) {
	m.refusals.WithLabelValues(ingest.RefusalReason(err)).Inc()
}
