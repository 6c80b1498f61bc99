package bridge

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/typed"
)

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
	// missing: the entry is a typed row refused because its table or a
	// column does not exist (see tableRefusal).
	missing bool
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

// appendDecoded decodes one stream message and appends its entries to buf:
// one per reading of a batch entry, else one. declared is the number of
// readings the message counts in the shard's backlog (stream.MetaBacklog):
// a batch entry's FieldCount, 1 for an edge dead letter, 0 otherwise.
func appendDecoded(buf []entry, msg redis.XMessage) (_ []entry, declared int64) {
	version, _ := msg.Values[ingest.FieldVersion].(string)
	body, hasBody := msg.Values[ingest.FieldBody].(string)
	switch {
	case !hasBody:
		return append(buf, entry{id: msg.ID, version: version, dump: true, raw: fieldDump(msg.Values),
			bad: fmt.Errorf("%w: no %q field", ingest.ErrCorruptEntry, ingest.FieldBody)}), 0
	case version == ingest.CodecBatch || version == ingest.CodecMetricBatch || version == ingest.CodecTypedBatch:
		if n, err := strconv.ParseInt(fmt.Sprint(msg.Values[ingest.FieldCount]), 10, 64); err == nil && n > 0 {
			declared = n
		}
		return appendBatch(buf, msg.ID, version, body), declared
	case version == ingest.CodecDeadLetter:
		// Counted in the backlog as one reading (its FieldCount).
		e := entry{id: msg.ID, version: version, raw: body}
		if dl, err := ingest.DecodeDeadLetter(body); err != nil {
			e.bad = err
		} else {
			e.dl = &dl
		}
		return append(buf, e), 1
	default:
		e := entry{id: msg.ID, version: version, raw: body}
		e.r, e.bad = decodeItem(version, body)
		return append(buf, e), 0
	}
}

// appendBatch appends the readings of a batch entry to buf, each on its
// own: one that does not decode is rejected alone, with its own body
// (version 1, 3 in a version-4 batch, 6 in a version-7 one: replayable as
// it is), while its
// neighbours commit. A batch whose framing is broken is rejected whole, with
// its body.
func appendBatch(buf []entry, id, version, body string) []entry {
	parts, err := ingest.SplitBatch(body)
	if err != nil {
		return append(buf, entry{id: id, version: version, raw: body, bad: err})
	}
	item, _ := ingest.ItemCodec(version)
	var checked *typed.Shape
	for i, p := range parts {
		e := entry{id: id, item: i + 1, version: item, raw: p}
		e.r, e.bad = decodeChecked(item, p, &checked)
		buf = append(buf, e)
	}
	return buf
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
