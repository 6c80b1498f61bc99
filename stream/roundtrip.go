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
	item    []string // per shard: its items' encoding (ingest.ItemVersion, the widest of its readings')
	shardOf []int    // per reading of the round trip, in call order
	v1      []byte   // --stream-codec 1: every entry's body, one after another
	// --stream-codec 1: per reading of the round trip, its XADD.
	perReading []*redis.StringCmd
	pipes      []*nodePipe
	cmds       []shardCmds // per shard: what plan queued for it
	shardErr   []error     // per shard: why its callers are refused, if so
	// With --dedup, per shard: the keys of its keyed readings, and each
	// one's item bounds in the body (see dedupScript); the keys of the
	// round trip, and per shard the readings left out as repeats of one.
	dedupKeys   [][]byte
	dedupBounds [][]byte
	dedupSeen   map[[dedupKeyLen]byte]struct{}
	dedupRepeat []int
	// The parts of the round trip's once-calls, in call order (queueOnce).
	once []oncePart
}

// shardCmds are the commands of one shard in a round trip (see write).
type shardCmds struct {
	meta    *redis.BoolCmd
	xadd    *redis.StringCmd // batch encoding
	backlog *redis.IntCmd
	dedup   *redis.Cmd // instead of the three above, with --dedup (dedupScript)
	np      *nodePipe
}

// written is the shard's commands whose failure fails its callers, in the
// order their errors are reported; nil when the shard wrote nothing.
func (sc *shardCmds) written() []redis.Cmder {
	switch {
	case sc.dedup != nil:
		return []redis.Cmder{sc.dedup}
	case sc.meta == nil: // no readings for this shard, or no route to it
		return nil
	case sc.xadd != nil:
		return []redis.Cmder{sc.meta, sc.backlog, sc.xadd}
	}
	return []redis.Cmder{sc.meta, sc.backlog}
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
		rt.bodies, rt.counts, rt.item = make([][]byte, shards), make([]int, shards), make([]string, shards)
		rt.dedupKeys, rt.dedupBounds = make([][]byte, shards), make([][]byte, shards)
		rt.dedupRepeat = make([]int, shards)
		rt.cmds, rt.shardErr = make([]shardCmds, shards), make([]error, shards)
	}
	clear(rt.dedupSeen)
	clear(rt.cmds)
	clear(rt.shardErr)
	clear(rt.perReading) // the commands of the last round trip are garbage
	clear(rt.once)
	rt.once = rt.once[:0]
	for i := range rt.bodies {
		if cap(rt.bodies[i]) > maxKeptBody {
			rt.bodies[i] = nil
		}
		rt.bodies[i] = rt.bodies[i][:0]
		rt.counts[i] = 0
		rt.item[i] = ingest.CodecVersion
		rt.dedupKeys[i] = rt.dedupKeys[i][:0]
		rt.dedupBounds[i] = rt.dedupBounds[i][:0]
		rt.dedupRepeat[i] = 0
	}
	rt.shardOf = rt.shardOf[:0]
	rt.v1 = rt.v1[:0]
	rt.perReading = rt.perReading[:0]
	rt.pipes = rt.pipes[:0]
}

// write sends the batch in one pipelined round trip per primary and answers
// every call, in five phases: encode and route the readings (encode), queue
// each shard's commands on its primary's pipeline (plan), send the
// pipelines (execPipes), read what each node and shard answered into the
// shards' health and errors (collectNodes, collectShards), and answer every
// call (answerAll).
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
// After them, each dead letter's commands (queueDeadLetters), then each
// once-call's part for the shard, one onceScript each (queueOnce): a
// once-call's readings are in no batch entry of the round trip. Each
// primary's pipeline ends with its WAIT when MinReplicas > 0. A call is
// acknowledged only if every command of every shard it wrote to succeeded,
// and every primary it wrote to had its WAIT confirmed.
func (p *Producer) write(batch []*call, n int, rt *roundTrip) {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
	defer cancel()
	rt.reset(len(p.keys))
	p.encode(ctx, batch, rt)
	gen := NewGeneration()
	p.plan(ctx, rt, gen)
	deads := p.queueDeadLetters(ctx, rt, batch, gen)
	p.queueOnce(ctx, rt, batch, gen)
	p.queueWaits(ctx, rt)

	start := time.Now()
	execPipes(ctx, rt.pipes)
	p.m.roundTrip.Observe(time.Since(start).Seconds())
	p.m.batchSize.Observe(float64(n))

	reload := p.collectNodes(ctx, rt, n)
	if p.collectShards(rt) {
		reload = true
	}
	if p.collectOnce(rt) {
		reload = true
	}
	if reload && p.cluster != nil {
		p.cluster.ReloadState(ctx)
	}
	p.answerAll(batch, rt, p.deadLetterResults(deads))
}

// batched reports whether the producer writes batch entries (the default)
// rather than one entry per reading (--stream-codec 1).
func (p *Producer) batched() bool { return p.cfg.Codec != ingest.CodecVersion }

// dedupMode is the deduplication mode of the round trips; DedupOff when
// there is none (it needs batch entries).
func (p *Producer) dedupMode() string {
	if !p.batched() || p.cfg.Dedup == "" {
		return DedupOff
	}
	return p.cfg.Dedup
}

// encode routes every reading of batch to its shard (rt.route), then
// encodes it: into its shard's batch body (rt.addItem), or with
// --stream-codec 1 into its own XADD (rt.addEntry).
func (p *Producer) encode(ctx context.Context, batch []*call, rt *roundTrip) {
	rt.route(p.streams, batch)
	batched, mode := p.batched(), p.dedupMode()
	k := 0
	for _, c := range batch {
		if c.once != nil {
			continue // queueOnce's
		}
		for i := range c.readings {
			shard := rt.shardOf[k]
			k++
			if batched {
				rt.addItem(shard, &c.readings[i], mode)
			} else {
				rt.addEntry(ctx, p.keys[shard], &c.readings[i])
			}
		}
	}
}

// route records the shard of every reading of batch, in call order, and
// counts each shard's readings. A shard's batch entry is version 4 when one
// of its readings names a metric, 7 when one is a typed row, else version 2,
// byte for byte as before metrics and typed rows existed.
func (rt *roundTrip) route(streams Streams, batch []*call) {
	for _, c := range batch {
		if c.once != nil {
			continue // queueOnce's
		}
		for i := range c.readings {
			r := &c.readings[i]
			shard := streams.Shard(r.DeviceID)
			rt.shardOf = append(rt.shardOf, shard)
			rt.counts[shard]++
			if r.Metric != "" || r.Row != nil {
				rt.item[shard] = ingest.Wider(rt.item[shard], ingest.ItemVersion(r))
			}
		}
	}
}

// addItem appends r to shard's batch body. Under a dedup mode it records
// r's key and the item's bounds for dedupScript, and leaves out a reading
// whose key an earlier reading of the round trip has: a repeat of a reading
// of this round trip (of its shard, since the key holds the device) is
// stored with it, or refused with it.
func (rt *roundTrip) addItem(shard int, r *ingest.Reading, mode string) {
	var key [dedupKeyLen]byte
	keyed := false
	if mode != DedupOff {
		if key, keyed = dedupKey(mode, r); keyed && rt.repeat(shard, key) {
			return
		}
	}
	body := rt.bodies[shard]
	if len(body) == 0 {
		body = append(body, make([]byte, ingest.BatchHeaderLen)...)
	}
	start := len(body) - ingest.BatchHeaderLen
	body = ingest.AppendBatchItemAs(body, rt.item[shard], r)
	rt.bodies[shard] = body
	if keyed {
		rt.dedupKeys[shard] = append(rt.dedupKeys[shard], key[:]...)
		rt.dedupBounds[shard] = binary.LittleEndian.AppendUint32(rt.dedupBounds[shard], uint32(start))
		rt.dedupBounds[shard] = binary.LittleEndian.AppendUint32(rt.dedupBounds[shard], uint32(len(body)-ingest.BatchHeaderLen))
	}
}

// repeat reports whether an earlier reading of the round trip had key, and
// then counts the reading as a repeat in shard; else it records key.
func (rt *roundTrip) repeat(shard int, key [dedupKeyLen]byte) bool {
	if _, again := rt.dedupSeen[key]; again {
		rt.counts[shard]--
		rt.dedupRepeat[shard]++
		return true
	}
	if rt.dedupSeen == nil {
		rt.dedupSeen = make(map[[dedupKeyLen]byte]struct{})
	}
	rt.dedupSeen[key] = struct{}{}
	return false
}

// addEntry builds r's own XADD to stream (--stream-codec 1), version 1, 3
// when it names a metric, 6 when it is a typed row.
func (rt *roundTrip) addEntry(ctx context.Context, stream string, r *ingest.Reading) {
	// Each command holds a full-capped slice of one buffer; when append
	// moves it to a larger array the slices taken before keep the old one
	// alive, unchanged.
	start, version := len(rt.v1), ingest.ItemVersion(r)
	rt.v1 = ingest.AppendItem(rt.v1, version, r)
	rt.perReading = append(rt.perReading, redis.NewStringCmd(ctx, "xadd", stream, "*",
		ingest.FieldVersion, version, ingest.FieldBody, rt.v1[start:len(rt.v1):len(rt.v1)]))
}

// batchVersion is the encoding of shard's batch entry.
func (rt *roundTrip) batchVersion(shard int) string {
	return ingest.BatchCodec(rt.item[shard])
}

// plan queues the commands of every shard with readings on the pipeline of
// its primary (see write for which, in which order), with generation token
// gen. A shard without a route to its primary gets its error instead.
func (p *Producer) plan(ctx context.Context, rt *roundTrip, gen string) {
	dedup := p.dedupMode() != DedupOff
	for shard, count := range rt.counts {
		if count == 0 {
			continue
		}
		np, err := p.pipeFor(ctx, rt, shard)
		if err != nil {
			rt.shardErr[shard] = err
			continue
		}
		sc := &rt.cmds[shard]
		sc.np = np
		if dedup && len(rt.dedupKeys[shard]) > 0 {
			sc.dedup = p.queueDedup(ctx, rt, shard, gen)
			continue
		}
		pipe, meta := np.pipe, p.metaKeys[shard]
		sc.meta = pipe.HSetNX(ctx, meta, MetaGeneration, gen)
		if p.batched() {
			sc.xadd = redis.NewStringCmd(ctx, "xadd", p.keys[shard], "*", ingest.FieldVersion, rt.batchVersion(shard),
				ingest.FieldCount, strconv.Itoa(count), ingest.FieldBody, ingest.FinishBatch(rt.bodies[shard], count))
			_ = pipe.Process(ctx, sc.xadd)
		} else {
			// This shard's entries, in call order.
			for i, s := range rt.shardOf {
				if s == shard {
					_ = pipe.Process(ctx, rt.perReading[i])
				}
			}
		}
		sc.backlog = pipe.HIncrBy(ctx, meta, MetaBacklog, int64(count))
	}
}

// queueDedup queues dedupScript for shard's batch entry, in place of the
// generation token, the XADD and the backlog counter.
func (p *Producer) queueDedup(ctx context.Context, rt *roundTrip, shard int, gen string) *redis.Cmd {
	sets := p.streams.ShardDedupKeys(shard)
	keys := rt.dedupKeys[shard]
	m := len(keys) / dedupKeyLen
	args := make([]any, 0, 7+m)
	args = append(args, gen, rt.batchVersion(shard), p.cfg.DedupWindow.Milliseconds(), rt.bodies[shard][ingest.BatchHeaderLen:],
		rt.dedupBounds[shard], rt.counts[shard], m)
	for j := range m {
		args = append(args, keys[j*dedupKeyLen:(j+1)*dedupKeyLen])
	}
	return dedupScript.Eval(ctx, rt.cmds[shard].np.pipe, []string{p.keys[shard], p.metaKeys[shard], sets[0], sets[1]}, args...)
}

// queueWaits ends each primary's pipeline with its WAIT when MinReplicas >
// 0. WAIT covers every write its connection made before it: the node's
// whole part of the round trip, in one command. Not Pipeliner.Wait (there
// is none): a pipeline's replies are read under the client's read timeout,
// which MaxReplicaTimeout stays within.
func (p *Producer) queueWaits(ctx context.Context, rt *roundTrip) {
	if p.cfg.MinReplicas <= 0 {
		return
	}
	for _, np := range rt.pipes {
		np.wait = redis.NewIntCmd(ctx, "wait", p.cfg.MinReplicas, p.cfg.ReplicaTimeout.Milliseconds())
		_ = np.pipe.Process(ctx, np.wait)
	}
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

// collectNodes marks down every shard of a node that did not answer (not
// only those of this round trip): their next callers are refused at once
// instead of waiting a timeout each, until a backlog measurement reaches
// the node again. It reports whether one did not (the slot map is then
// reloaded).
func (p *Producer) collectNodes(ctx context.Context, rt *roundTrip, n int) (reload bool) {
	for _, np := range rt.pipes {
		if !unreachable(np.err) {
			continue
		}
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
	return reload
}

// collectShards sets each shard's error from what its commands and its
// primary's WAIT answered, marks down a shard whose node answered that it
// does not serve it as primary (and then reports true: the slot map is to
// be reloaded), and counts short WAITs and duplicates.
//
// A refused token or counter (rare: a key of the wrong type) fails the
// shard's callers as a failed XADD does: its entries may be stored, but none
// is acknowledged. Too few replicas confirmed: no caller of the shard is
// answered success. Its entries are on the primary and reach PostgreSQL
// unless a failover loses them; a device that resends may land twice.
func (p *Producer) collectShards(rt *roundTrip) (reload bool) {
	for shard := range rt.cmds {
		sc := &rt.cmds[shard]
		written := sc.written()
		if written == nil {
			continue
		}
		err, refused := cmdsErr(written)
		if refused {
			reload = true
			p.shardNotServed(shard, err)
		}
		if err == nil {
			err = p.waitErr(sc.np.wait)
		}
		if rt.shardErr[shard] == nil {
			rt.shardErr[shard] = err
		}
	}
	for _, np := range rt.pipes {
		if w := np.wait; w != nil && w.Err() == nil && w.Val() < int64(p.cfg.MinReplicas) {
			p.m.replicaShort.Inc()
		}
	}
	for shard := range rt.cmds {
		if d := rt.cmds[shard].dedup; d != nil && rt.shardErr[shard] == nil {
			if n, err := d.Int64(); err == nil && n+int64(rt.dedupRepeat[shard]) > 0 {
				// Acknowledged as the resends they are, not stored again.
				p.m.duplicates.Add(float64(n) + float64(rt.dedupRepeat[shard]))
			}
		}
	}
	return reload
}

// shardNotServed marks shard down: its node answered that it does not serve
// the shard as primary, as if it were unreachable.
func (p *Producer) shardNotServed(shard int, err error) {
	if p.health.set(shard, true) {
		p.log.Warn("redis node does not serve this shard as primary: refusing its readings until one does",
			"shard", shard, "err", err)
	}
}

// cmdsErr is the error of the first of cmds that failed, wrapping
// ErrUnavailable, and whether that failure was a node's answer that it does
// not serve the key (notServing).
func cmdsErr(cmds []redis.Cmder) (err error, refused bool) {
	for _, c := range cmds {
		if cerr := c.Err(); cerr != nil {
			return fmt.Errorf("%w: %s: %v", ingest.ErrUnavailable, c.Name(), cerr), notServing(cerr)
		}
	}
	return nil, false
}

// waitErr is the error of a WAIT (nil: none was sent) that fewer than
// MinReplicas replicas confirmed, or that failed.
func (p *Producer) waitErr(w *redis.IntCmd) error {
	return waitErr(w, p.cfg.MinReplicas, p.cfg.ReplicaTimeout)
}

// waitErr is the error of a WAIT (nil: none was sent) that fewer than
// replicas replicas confirmed within timeout, or that failed.
func waitErr(w *redis.IntCmd, replicas int, timeout time.Duration) error {
	if w == nil {
		return nil
	}
	switch got, err := w.Result(); {
	case err != nil:
		return fmt.Errorf("%w: wait: %v", ingest.ErrUnavailable, err)
	case got < int64(replicas):
		return fmt.Errorf("%w: %d of %d replicas confirmed the write within %s", ingest.ErrUnavailable, got, replicas, timeout)
	}
	return nil
}

// answerAll answers every call of batch: the error of its dead letter, or
// of the first of its readings whose shard (or, with --stream-codec 1,
// whose own XADD) failed, or of its first once part that failed; nil when
// every one was stored (or, for a once part, recorded before).
func (p *Producer) answerAll(batch []*call, rt *roundTrip, deadErr map[*call]error) {
	r, j := 0, 0
	for _, c := range batch {
		if c.once != nil {
			var err error
			var partly bool
			err, c.redelivered, partly, j = rt.onceResult(c, j)
			if err == nil && partly {
				p.m.redeliveries.Inc()
			}
			p.answer(c, err)
			continue
		}
		err := deadErr[c]
		for range c.readings {
			if err == nil {
				err = rt.readingErr(r)
			}
			r++
		}
		p.answer(c, err)
	}
}

// readingErr is why the r-th reading of the round trip was not stored, if
// it was not.
func (rt *roundTrip) readingErr(r int) error {
	if err := rt.shardErr[rt.shardOf[r]]; err != nil {
		return err
	}
	if len(rt.perReading) > 0 {
		if err := rt.perReading[r].Err(); err != nil {
			return fmt.Errorf("%w: xadd: %v", ingest.ErrUnavailable, err)
		}
	}
	return nil
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

// unreachable reports whether a pipeline's error says its node did not
// answer, rather than answering an error (the connection is fine).
func unreachable(err error) bool { return err != nil && !isRedisReplyError(err) }

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
		if c.dead == nil || c.once != nil {
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
		if err == nil {
			var refused bool
			if err, refused = cmdsErr(d.cmds); refused {
				p.shardNotServed(d.shard, err)
			}
		}
		if err == nil && d.np != nil {
			err = p.waitErr(d.np.wait)
		}
		out[d.c] = err
	}
	return out
}
