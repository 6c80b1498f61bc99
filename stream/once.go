package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
)

// Once names one MQTT QoS 2 message of a subscriber session so that the
// producer stores it exactly once however often the broker delivers it
// before its PUBREL: the session, the message's packet id, and the packet
// id's epoch in the session (SessionState), which changes at each PUBREL so
// that a new message reusing the packet id is told from a redelivery.
// One key names one message, written by one call: AddOnce or
// AddDeadLetterOnce, not both (the second call would be taken for a
// redelivery in any shard the first wrote to).
type Once struct {
	// Session names the subscriber session: its MQTT client id and the
	// deployment, as SessionState was given. Not empty.
	Session string
	// PacketID is the message's MQTT packet id, 1 to 65535.
	PacketID uint16
	// Epoch is the packet id's epoch, from SessionState.Epochs or the last
	// SessionState.Release of the packet id. Never 0.
	Epoch uint64
}

// errOnceKey answers a once-call whose key SessionState did not give.
var errOnceKey = errors.New("once key: the session must not be empty, the packet id is 1 to 65535 and the epoch comes from SessionState (never 0)")

func (o Once) check() error {
	if o.Session == "" || o.PacketID == 0 || o.Epoch == 0 {
		return fmt.Errorf("%w: got session %q, packet id %d, epoch %d", errOnceKey, o.Session, o.PacketID, o.Epoch)
	}
	return nil
}

// AddOnce writes rs as Add does, unless o shows them stored before, and
// returns nil once Redis has confirmed that every reading is stored: the
// subscriber may then send PUBREC. It is for a QoS 2 message of a subscriber
// session, and stores it once across crashes and redeliveries: the readings
// of each shard they go to are written as one entry of their own (or with
// --stream-codec 1 an entry each), in one atomic step with the shard's
// record of o (onceScript), and a shard whose record holds o already is
// skipped. A redelivery of a message that was stored in part (a shard was
// unavailable) stores exactly the missing parts. redelivered is true when
// every part was recorded already, so nothing was written. An empty rs
// stores nothing. In a round trip a shard's once entries follow its batch
// entry of plain readings: a device's readings keep their order within a
// message and between the calls of one caller that waits for each, not
// between a once-call and a concurrent plain call (MQTT orders messages only
// within one QoS).
//
// Admission, the high-water mark, shard health, errors and metrics are
// Add's: on error the caller must not acknowledge, and with
// ingest.ErrUnavailable some parts may have been stored (a resend with the
// same o stores the rest). Once-calls bypass --dedup: QoS 2 already stores
// each message once, so their readings are neither checked against nor
// remembered in the dedup sets (the same reading sent again over another
// path, with another once key or none, is stored again).
func (p *Producer) AddOnce(ctx context.Context, rs []ingest.Reading, o Once) (redelivered bool, err error) {
	if err := o.check(); err != nil {
		return false, err
	}
	if len(rs) == 0 {
		return false, nil
	}
	return p.addOnce(ctx, &call{readings: rs, once: &o, done: make(chan error, 1)})
}

// AddDeadLetterOnce writes d as AddDeadLetter does, unless o shows it stored
// before (see AddOnce): for a QoS 2 message that cannot become readings yet.
func (p *Producer) AddDeadLetterOnce(ctx context.Context, d ingest.DeadLetter, o Once) (redelivered bool, err error) {
	if err := o.check(); err != nil {
		return false, err
	}
	return p.addOnce(ctx, &call{dead: &d, once: &o, done: make(chan error, 1)})
}

func (p *Producer) addOnce(ctx context.Context, c *call) (bool, error) {
	if err := p.enqueue(c); err != nil {
		return false, err
	}
	select {
	case err := <-c.done:
		// The writer set c.redelivered before it answered.
		return err == nil && c.redelivered, err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// ShardOnceKey is the string in which shard records, for session, the epoch
// of the last message of each packet id it stored (see onceScript): 8
// bytes, big-endian, at 8 × packet id; zeros where none was stored. It
// shares the shard's hash tag, so onceScript writes it and the stream in one
// atomic step on a cluster too. At most 512 KiB per shard and session (a
// hash field per packet id would take about 110 bytes each: 7 MiB).
func (s Streams) ShardOnceKey(shard int, session string) string {
	return s.shardOncePrefix(shard) + session
}

func (s Streams) shardOncePrefix(shard int) string {
	return s.prefix() + ":once:{" + s.tag(shard) + "}:"
}

// onceRecordLen is the bytes of one packet id's record in ShardOnceKey.
const onceRecordLen = 8

// onceScript writes one part of a once-call (its readings of one shard, or
// its dead letter) in one atomic step, unless the shard's record of the
// call's session and packet id holds the call's epoch: then the part was
// stored before, and nothing is written. Else, as a round trip's plain
// commands do: the shard's generation token if it has none, the part's
// entries, the backlog counter up by its readings; then the record. The
// record is written last: if an XADD fails the script stops, and no part
// that was not stored is ever taken for a redelivery. A part recorded
// before gets its record rewritten as it is: a write of this connection, so
// the node's WAIT in this round trip covers the write that stored the part
// (replicas apply writes in order), which may have been another
// connection's, whose WAIT failed.
//
// KEYS: the shard's stream, its metadata hash, its once record
// (Streams.ShardOnceKey).
// ARGV: the generation token, the record's offset (8 × packet id), the epoch
// (8 bytes big-endian, never all zeros: a record never written reads as
// zeros), the part's readings, the entries' ingest.FieldCount ("" for
// entries of one reading, --stream-codec 1, which carry none), then per
// entry its version and body.
// It returns 1 when it wrote the part, 0 when the part was recorded before.
var onceScript = redis.NewScript(fmt.Sprintf(`
local off = tonumber(ARGV[2])
if redis.call('GETRANGE', KEYS[3], off, off + 7) == ARGV[3] then
  redis.call('SETRANGE', KEYS[3], off, ARGV[3])
  return 0
end
redis.call('HSETNX', KEYS[2], %[1]q, ARGV[1])
for i = 6, #ARGV, 2 do
  if ARGV[5] == '' then
    redis.call('XADD', KEYS[1], '*', %[2]q, ARGV[i], %[4]q, ARGV[i + 1])
  else
    redis.call('XADD', KEYS[1], '*', %[2]q, ARGV[i], %[3]q, ARGV[5], %[4]q, ARGV[i + 1])
  end
end
redis.call('HINCRBY', KEYS[2], %[5]q, ARGV[4])
redis.call('SETRANGE', KEYS[3], off, ARGV[3])
return 1
`, MetaGeneration, ingest.FieldVersion, ingest.FieldCount, ingest.FieldBody, MetaBacklog))

// oncePart is one shard's part of a once-call in a round trip.
type oncePart struct {
	c       *call
	shard   int
	count   int    // readings (1 for a dead letter)
	nField  string // the entries' FieldCount; "" for entries of one reading
	entries []any  // per entry: its version, its body
	np      *nodePipe
	cmd     *redis.Cmd
	err     error // why the part is not stored, if so
}

// onceParts splits once-call c into its parts: one per shard its readings
// go to, in the order of their first reading, each one batch entry of its
// readings in call order (version 4 when one names a metric, 7 when one is
// a typed row, else 2), or
// with --stream-codec 1 one entry per reading; or its dead letter.
func (p *Producer) onceParts(c *call) []oncePart {
	if c.dead != nil {
		return []oncePart{{c: c, shard: p.streams.Shard(deadLetterRoute(c.dead)), count: 1, nField: "1",
			entries: []any{ingest.CodecDeadLetter, ingest.AppendDeadLetter(nil, c.dead)}}}
	}
	var parts []oncePart
	at := make([]int, len(p.keys)) // per shard: 1 + its part's index; 0: none yet
	shardOf := make([]int, len(c.readings))
	item := make([]string, len(p.keys))
	for i := range c.readings {
		shard := p.streams.Shard(c.readings[i].DeviceID)
		shardOf[i] = shard
		if at[shard] == 0 {
			parts = append(parts, oncePart{c: c, shard: shard})
			at[shard] = len(parts)
		}
		parts[at[shard]-1].count++
		item[shard] = ingest.Wider(item[shard], ingest.ItemVersion(&c.readings[i]))
	}
	batched := p.batched()
	for i := range c.readings {
		r, part := &c.readings[i], &parts[at[shardOf[i]]-1]
		if !batched {
			v := ingest.ItemVersion(r)
			part.entries = append(part.entries, v, ingest.AppendItem(nil, v, r))
			continue
		}
		if part.entries == nil {
			part.entries = []any{ingest.BatchCodec(item[part.shard]), make([]byte, ingest.BatchHeaderLen)}
		}
		part.entries[1] = ingest.AppendBatchItemAs(part.entries[1].([]byte), item[part.shard], r)
	}
	if batched {
		for i := range parts {
			parts[i].entries[1] = ingest.FinishBatch(parts[i].entries[1].([]byte), parts[i].count)
			parts[i].nField = strconv.Itoa(parts[i].count)
		}
	}
	return parts
}

// queueOnce queues onceScript for every part of every once-call of batch,
// on its shard's primary's pipeline, after the plain commands (so a shard's
// once entries follow its batch entry of the round trip), with generation
// token gen.
func (p *Producer) queueOnce(ctx context.Context, rt *roundTrip, batch []*call, gen string) {
	for _, c := range batch {
		if c.once == nil {
			continue
		}
		var epoch [onceRecordLen]byte
		binary.BigEndian.PutUint64(epoch[:], c.once.Epoch)
		offset := int(c.once.PacketID) * onceRecordLen
		for _, part := range p.onceParts(c) {
			np, err := p.pipeFor(ctx, rt, part.shard)
			if err != nil {
				part.err = err
				rt.once = append(rt.once, part)
				continue
			}
			part.np = np
			keys := []string{p.keys[part.shard], p.metaKeys[part.shard], p.onceKeys[part.shard] + c.once.Session}
			args := append([]any{gen, offset, epoch[:], part.count, part.nField}, part.entries...)
			part.cmd = onceScript.Eval(ctx, np.pipe, keys, args...)
			rt.once = append(rt.once, part)
		}
	}
}

// collectOnce sets each once part's error from what its script and its
// primary's WAIT answered, and marks down a shard whose node answered that
// it does not serve it (then it reports true: the slot map is to be
// reloaded).
func (p *Producer) collectOnce(rt *roundTrip) (reload bool) {
	for i := range rt.once {
		part := &rt.once[i]
		if part.err != nil {
			continue
		}
		err, refused := cmdsErr([]redis.Cmder{part.cmd})
		if refused {
			reload = true
			p.shardNotServed(part.shard, err)
		}
		if err == nil {
			err = p.waitErr(part.np.wait)
		}
		part.err = err
	}
	return reload
}

// onceResult is how once-call c ends, from its parts, which start at
// rt.once[j]: the first part's error, else whether every part was recorded
// before (redelivered) or some (partly). It returns the index after c's
// parts.
func (rt *roundTrip) onceResult(c *call, j int) (err error, redelivered, partly bool, next int) {
	redelivered = true
	for ; j < len(rt.once) && rt.once[j].c == c; j++ {
		part := &rt.once[j]
		if err == nil {
			err = part.err
		}
		if part.err == nil && part.cmd != nil {
			if n, _ := part.cmd.Int64(); n == 0 {
				partly = true
				continue
			}
		}
		redelivered = false
	}
	return err, redelivered, partly, j
}
