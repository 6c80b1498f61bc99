package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
)

// roundTrip is a writer's memory for building round trips, reused from one
// to the next.
type roundTrip struct {
	bodies  [][]byte // per shard: the batch entry's body being built
	counts  []int    // per shard: readings in it
	metric  []bool   // per shard: a reading names a metric (version 4)
	shardOf []int    // per reading of the round trip, in call order
	v1      []byte   // --stream-codec 1: every entry's body, one after another
	pipes   []*nodePipe
	// With --dedup, per shard: the keys of its keyed readings, and each
	// one's item bounds in the body (see dedupScript); the keys of the
	// round trip, and per shard the readings left out as repeats of one.
	dedupKeys   [][]byte
	dedupBounds [][]byte
	dedupSeen   map[[dedupKeyLen]byte]struct{}
	dedupRepeat []int
}

// nodePipe is the part of a round trip that goes to one Redis primary: the
// commands of the shards it holds, ended by its WAIT.
type nodePipe struct {
	node   *redis.Client // the cluster node; nil: the producer's own client
	pipe   redis.Pipeliner
	shards []int
	wait   *redis.IntCmd
	err    error // what Exec returned
}

// maxKeptBody keeps a rare huge batch body's memory from staying with the
// writer.
const maxKeptBody = 1 << 20

func (rt *roundTrip) reset(shards int) {
	if len(rt.bodies) != shards {
		rt.bodies, rt.counts, rt.metric = make([][]byte, shards), make([]int, shards), make([]bool, shards)
		rt.dedupKeys, rt.dedupBounds = make([][]byte, shards), make([][]byte, shards)
		rt.dedupRepeat = make([]int, shards)
	}
	clear(rt.dedupSeen)
	for i := range rt.bodies {
		if cap(rt.bodies[i]) > maxKeptBody {
			rt.bodies[i] = nil
		}
		rt.bodies[i] = rt.bodies[i][:0]
		rt.counts[i] = 0
		rt.metric[i] = false
		rt.dedupKeys[i] = rt.dedupKeys[i][:0]
		rt.dedupBounds[i] = rt.dedupBounds[i][:0]
		rt.dedupRepeat[i] = 0
	}
	rt.shardOf = rt.shardOf[:0]
	rt.v1 = rt.v1[:0]
	rt.pipes = rt.pipes[:0]
}

// pipeFor is the pipeline of the primary that holds shard, created on first
// use. On a single node or through Sentinel that is the producer's client for
// every shard. On a cluster it is the node the client's slot map names,
// written through that node's own client, never the cluster pipeline: a
// cluster pipeline resends a node's commands after a network error (up to
// MaxRedirects times), which would store an XADD twice, and routes a keyless
// WAIT to a random node instead of the one that took the writes. A MOVED
// answer means the node did not run the command: its callers are refused and
// the slot map is reloaded for the next round trip.
func (p *Producer) pipeFor(ctx context.Context, rt *roundTrip, shard int) (*nodePipe, error) {
	var node *redis.Client
	if p.cluster != nil {
		var err error
		if node, err = p.cluster.MasterForKey(ctx, p.keys[shard]); err != nil {
			return nil, fmt.Errorf("%w: find the primary of %s: %v", ingest.ErrUnavailable, p.keys[shard], err)
		}
	}
	for _, np := range rt.pipes {
		if np.node == node {
			np.shards = append(np.shards, shard)
			return np, nil
		}
	}
	np := &nodePipe{node: node, shards: []int{shard}}
	if node != nil {
		np.pipe = node.Pipeline()
	} else {
		np.pipe = p.rdb.Pipeline()
	}
	rt.pipes = append(rt.pipes, np)
	return np, nil
}

// write sends the batch in one pipelined round trip per primary and answers
// every call.
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
// Each primary's pipeline ends with its WAIT when MinReplicas > 0. A call is
// acknowledged only if every command of every shard it wrote to succeeded,
// and every primary it wrote to had its WAIT confirmed.
func (p *Producer) write(batch []*call, n int, rt *roundTrip) {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
	defer cancel()
	rt.reset(len(p.keys))
	batched := p.cfg.Codec != ingest.CodecVersion
	dedup := batched && p.cfg.Dedup != "" && p.cfg.Dedup != DedupOff
	var perReading []*redis.StringCmd // --stream-codec 1
	if !batched {
		perReading = make([]*redis.StringCmd, 0, n)
	}
	// Route every reading first: a shard's batch entry is version 4 when
	// one of its readings names a metric, else version 2, byte for byte as
	// before metrics existed.
	for _, c := range batch {
		for i := range c.readings {
			r := &c.readings[i]
			shard := p.streams.Shard(r.DeviceID)
			rt.shardOf = append(rt.shardOf, shard)
			rt.counts[shard]++
			if r.Metric != "" {
				rt.metric[shard] = true
			}
		}
	}
	k := 0
	for _, c := range batch {
		for i := range c.readings {
			r := &c.readings[i]
			shard := rt.shardOf[k]
			k++
			if batched {
				var key [dedupKeyLen]byte
				keyed := false
				if dedup {
					if key, keyed = dedupKey(p.cfg.Dedup, r); keyed {
						if _, again := rt.dedupSeen[key]; again {
							// A repeat of a reading of this round trip
							// (of its shard, since the key holds the
							// device): stored with it, or refused with it.
							rt.counts[shard]--
							rt.dedupRepeat[shard]++
							continue
						}
						if rt.dedupSeen == nil {
							rt.dedupSeen = make(map[[dedupKeyLen]byte]struct{})
						}
						rt.dedupSeen[key] = struct{}{}
					}
				}
				if len(rt.bodies[shard]) == 0 {
					rt.bodies[shard] = append(rt.bodies[shard], make([]byte, ingest.BatchHeaderLen)...)
				}
				start := len(rt.bodies[shard]) - ingest.BatchHeaderLen
				if rt.metric[shard] {
					rt.bodies[shard] = ingest.AppendBatchItemMetric(rt.bodies[shard], r)
				} else {
					rt.bodies[shard] = ingest.AppendBatchItem(rt.bodies[shard], r)
				}
				if keyed {
					rt.dedupKeys[shard] = append(rt.dedupKeys[shard], key[:]...)
					rt.dedupBounds[shard] = binary.LittleEndian.AppendUint32(rt.dedupBounds[shard], uint32(start))
					rt.dedupBounds[shard] = binary.LittleEndian.AppendUint32(rt.dedupBounds[shard], uint32(len(rt.bodies[shard])-ingest.BatchHeaderLen))
				}
				continue
			}
			// Each command holds a full-capped slice of one buffer; when
			// append moves it to a larger array the slices taken before
			// keep the old one alive, unchanged.
			start, version := len(rt.v1), ingest.CodecVersion
			if r.Metric != "" {
				rt.v1, version = ingest.AppendEncodeMetric(rt.v1, r), ingest.CodecMetric
			} else {
				rt.v1 = ingest.AppendEncode(rt.v1, r)
			}
			perReading = append(perReading, redis.NewStringCmd(ctx, "xadd", p.keys[shard], "*",
				ingest.FieldVersion, version, ingest.FieldBody, rt.v1[start:len(rt.v1):len(rt.v1)]))
		}
	}
	gen := NewGeneration()
	type shardCmds struct {
		meta    *redis.BoolCmd
		xadd    *redis.StringCmd // batch encoding
		backlog *redis.IntCmd
		dedup   *redis.Cmd // instead of the three above, with --dedup (dedupScript)
		np      *nodePipe
	}
	cmds := make([]shardCmds, len(p.keys))
	shardErr := make([]error, len(p.keys))
	for shard, count := range rt.counts {
		if count == 0 {
			continue
		}
		np, err := p.pipeFor(ctx, rt, shard)
		if err != nil {
			shardErr[shard] = err
			continue
		}
		pipe, meta := np.pipe, p.metaKeys[shard]
		sc := &cmds[shard]
		sc.np = np
		if dedup && len(rt.dedupKeys[shard]) > 0 {
			version := ingest.CodecBatch
			if rt.metric[shard] {
				version = ingest.CodecMetricBatch
			}
			sets := p.streams.ShardDedupKeys(shard)
			keys := rt.dedupKeys[shard]
			m := len(keys) / dedupKeyLen
			args := make([]any, 0, 7+m)
			args = append(args, gen, version, p.cfg.DedupWindow.Milliseconds(), rt.bodies[shard][ingest.BatchHeaderLen:],
				rt.dedupBounds[shard], count, m)
			for j := range m {
				args = append(args, keys[j*dedupKeyLen:(j+1)*dedupKeyLen])
			}
			sc.dedup = dedupScript.Eval(ctx, pipe, []string{p.keys[shard], meta, sets[0], sets[1]}, args...)
			continue
		}
		sc.meta = pipe.HSetNX(ctx, meta, MetaGeneration, gen)
		if batched {
			version := ingest.CodecBatch
			if rt.metric[shard] {
				version = ingest.CodecMetricBatch
			}
			sc.xadd = redis.NewStringCmd(ctx, "xadd", p.keys[shard], "*", ingest.FieldVersion, version,
				ingest.FieldCount, strconv.Itoa(count), ingest.FieldBody, ingest.FinishBatch(rt.bodies[shard], count))
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
	deads := p.queueDeadLetters(ctx, rt, batch, gen)
	if p.cfg.MinReplicas > 0 {
		for _, np := range rt.pipes {
			// WAIT covers every write its connection made before it: the
			// node's whole part of the round trip, in one command. Not
			// Pipeliner.Wait (there is none): a pipeline's replies are read
			// under the client's read timeout, which MaxReplicaTimeout stays
			// within.
			np.wait = redis.NewIntCmd(ctx, "wait", p.cfg.MinReplicas, p.cfg.ReplicaTimeout.Milliseconds())
			_ = np.pipe.Process(ctx, np.wait)
		}
	}
	start := time.Now()
	execPipes(ctx, rt.pipes)
	p.m.roundTrip.Observe(time.Since(start).Seconds())
	p.m.batchSize.Observe(float64(n))

	reload := false
	for _, np := range rt.pipes {
		if np.err == nil || isRedisReplyError(np.err) {
			continue
		}
		// The node did not answer: every shard it holds, not only those of
		// this round trip, is down until a backlog measurement reaches it
		// again, and their next callers are refused at once instead of
		// waiting a timeout each.
		reload = true
		var changed []int
		for _, shard := range p.shardsOn(ctx, np.node) {
			if p.health.set(shard, true) {
				changed = append(changed, shard)
			}
		}
		if len(changed) > 0 {
			p.log.Warn("xadd round trip failed: refusing readings of these shards until Redis answers",
				"shards", changed, "err", np.err, "readings", n)
		}
	}
	// What each shard's commands say. A refused token or counter (rare: a
	// key of the wrong type) fails the shard's callers as a failed XADD
	// does: its entries may be stored, but none is acknowledged.
	for shard, sc := range cmds {
		var written []redis.Cmder
		switch {
		case sc.dedup != nil:
			written = []redis.Cmder{sc.dedup}
		case sc.meta != nil:
			written = []redis.Cmder{sc.meta, sc.backlog}
			if sc.xadd != nil {
				written = append(written, sc.xadd)
			}
		default: // no readings for this shard, or no route to it
			continue
		}
		for _, c := range written {
			if err := c.Err(); err != nil && shardErr[shard] == nil {
				shardErr[shard] = fmt.Errorf("%w: %s: %v", ingest.ErrUnavailable, c.Name(), err)
				if notServing(err) {
					// The node answered that it does not serve the
					// shard as primary: down as if unreachable.
					reload = true
					if p.health.set(shard, true) {
						p.log.Warn("redis node does not serve this shard as primary: refusing its readings until one does",
							"shard", shard, "err", err)
					}
				}
			}
		}
		// Too few replicas confirmed: no caller of the shard is answered
		// success. Its entries are on the primary and reach PostgreSQL
		// unless a failover loses them; a device that resends may land
		// twice.
		if w := sc.np.wait; w != nil && shardErr[shard] == nil {
			switch got, err := w.Result(); {
			case err != nil:
				shardErr[shard] = fmt.Errorf("%w: wait: %v", ingest.ErrUnavailable, err)
			case got < int64(p.cfg.MinReplicas):
				shardErr[shard] = fmt.Errorf("%w: %d of %d replicas confirmed the write within %s", ingest.ErrUnavailable, got, p.cfg.MinReplicas, p.cfg.ReplicaTimeout)
			}
		}
	}
	for _, np := range rt.pipes {
		if w := np.wait; w != nil && w.Err() == nil && w.Val() < int64(p.cfg.MinReplicas) {
			p.m.replicaShort.Inc()
		}
	}
	for shard, sc := range cmds {
		if sc.dedup != nil && shardErr[shard] == nil {
			if d, err := sc.dedup.Int64(); err == nil && d+int64(rt.dedupRepeat[shard]) > 0 {
				// Acknowledged as the resends they are, not stored again.
				p.m.duplicates.Add(float64(d) + float64(rt.dedupRepeat[shard]))
			}
		}
	}
	if reload && p.cluster != nil {
		p.cluster.ReloadState(ctx)
	}
	deadErr := p.deadLetterResults(deads)
	r := 0
	for _, c := range batch {
		err := deadErr[c]
		for range c.readings {
			e := shardErr[rt.shardOf[r]]
			if !batched {
				if xe := perReading[r].Err(); xe != nil && e == nil {
					e = fmt.Errorf("%w: xadd: %v", ingest.ErrUnavailable, xe)
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

// shardsOn lists the shards whose primary is node (nil: the producer's own
// client, which holds every shard).
func (p *Producer) shardsOn(ctx context.Context, node *redis.Client) []int {
	var out []int
	for shard := range p.keys {
		if node == nil {
			out = append(out, shard)
			continue
		}
		if n, err := p.cluster.MasterForKey(ctx, p.keys[shard]); err == nil && n == node {
			out = append(out, shard)
		}
	}
	return out
}

// execPipes sends every primary's pipeline, at once when there are several,
// and waits for their answers.
func execPipes(ctx context.Context, pipes []*nodePipe) {
	if len(pipes) == 1 {
		_, pipes[0].err = pipes[0].pipe.Exec(ctx)
		return
	}
	var wg sync.WaitGroup
	for _, np := range pipes {
		wg.Go(func() { _, np.err = np.pipe.Exec(ctx) })
	}
	wg.Wait()
}

// isRedisReplyError tells an error Redis answered (the connection is fine) from
// a failure to reach Redis.
func isRedisReplyError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.ErrClosed)
}

// notServing reports whether err is a node's answer that it cannot take
// writes for the key now (the command did not run): MOVED (a cluster serves
// the slot elsewhere), READONLY (a replica), CLUSTERDOWN, TRYAGAIN (a slot in
// migration), LOADING (a restart reading its data) or MASTERDOWN.
func notServing(err error) bool {
	s := err.Error()
	for _, p := range []string{"MOVED ", "ASK ", "READONLY ", "CLUSTERDOWN ", "TRYAGAIN ", "LOADING ", "MASTERDOWN "} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// deadCmds are the commands of one dead letter in a round trip.
type deadCmds struct {
	c     *call
	shard int
	np    *nodePipe
	err   error // no route to its shard
	cmds  []redis.Cmder
}

// queueDeadLetters queues, on the pipelines of the round trip, each dead
// letter of batch as its own entry of its shard's stream (CodecDeadLetter,
// FieldCount 1), after the generation token and followed by the backlog
// counter, as write does for readings; the WAIT that ends each primary's
// pipeline covers them too.
func (p *Producer) queueDeadLetters(ctx context.Context, rt *roundTrip, batch []*call, gen string) []deadCmds {
	var out []deadCmds
	for _, c := range batch {
		if c.dead == nil {
			continue
		}
		shard := p.streams.Shard(deadLetterRoute(c.dead))
		d := deadCmds{c: c, shard: shard}
		np, err := p.pipeFor(ctx, rt, shard)
		if err != nil {
			d.err = err
			out = append(out, d)
			continue
		}
		d.np = np
		meta := p.metaKeys[shard]
		xadd := redis.NewStringCmd(ctx, "xadd", p.keys[shard], "*", ingest.FieldVersion, ingest.CodecDeadLetter,
			ingest.FieldCount, "1", ingest.FieldBody, ingest.AppendDeadLetter(nil, c.dead))
		d.cmds = []redis.Cmder{np.pipe.HSetNX(ctx, meta, MetaGeneration, gen), xadd}
		_ = np.pipe.Process(ctx, xadd)
		d.cmds = append(d.cmds, np.pipe.HIncrBy(ctx, meta, MetaBacklog, 1))
		out = append(out, d)
	}
	return out
}

// deadLetterResults is how each dead letter's call ends: acknowledged only
// if its commands succeeded and its primary's WAIT (if any) confirmed them.
func (p *Producer) deadLetterResults(deads []deadCmds) map[*call]error {
	if len(deads) == 0 {
		return nil
	}
	out := make(map[*call]error, len(deads))
	for _, d := range deads {
		err := d.err
		for _, c := range d.cmds {
			if cerr := c.Err(); cerr != nil && err == nil {
				err = fmt.Errorf("%w: %s: %v", ingest.ErrUnavailable, c.Name(), cerr)
				if notServing(cerr) && p.health.set(d.shard, true) {
					p.log.Warn("redis node does not serve this shard as primary: refusing its readings until one does",
						"shard", d.shard, "err", cerr)
				}
			}
		}
		if w := d.np; err == nil && w != nil && w.wait != nil {
			switch got, werr := w.wait.Result(); {
			case werr != nil:
				err = fmt.Errorf("%w: wait: %v", ingest.ErrUnavailable, werr)
			case got < int64(p.cfg.MinReplicas):
				err = fmt.Errorf("%w: %d of %d replicas confirmed the write within %s", ingest.ErrUnavailable, got, p.cfg.MinReplicas, p.cfg.ReplicaTimeout)
			}
		}
		out[d.c] = err
	}
	return out
}
