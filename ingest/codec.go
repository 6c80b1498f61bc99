package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"firehose/typed"
)

// Stream entry layout. Every entry firehose writes has two fields: FieldVersion
// names the encoding of FieldBody. A reader that meets a version it does not
// know rejects that entry (the bridge records it in readings_rejected) and goes
// on, so a new encoding can be rolled out reader-first without a flag day.
// The format byte by byte, and the rest of the Redis layout, is described
// once in docs/design.md ("The stream format"); package stream owns the keys.
const (
	FieldVersion = "v"
	FieldBody    = "b"
	// FieldCount, on a batch entry, is how many readings its body holds
	// (decimal): the bridge's trim counts the backlog down by it without
	// decoding the body (see stream.MetaBacklog).
	FieldCount = "n"
	// CodecVersion is the single-reading encoding (version 1): each entry
	// one reading. Replays of dead letters use it, and a producer set to
	// --stream-codec 1 writes it.
	CodecVersion = "1"
	// CodecBatch is the batch encoding (version 2) the producer writes by
	// default: one entry per shard and round trip, holding every reading of
	// that shard in it, so Redis, go-redis and the bridge work per batch, not
	// per reading.
	CodecBatch = "2"
	// CodecMetric is the single-reading encoding of a reading that names a
	// metric (version 3): version 1's fields, then the metric name. A
	// reading of the default metric is written as version 1 or 2, byte for
	// byte as before metrics existed.
	CodecMetric = "3"
	// CodecMetricBatch is the batch encoding of version-3 readings (version
	// 4), framed as version 2: the producer writes it for a shard's round
	// trip when one of its readings names a metric.
	CodecMetricBatch = "4"
	// CodecTyped is the single-reading encoding of a reading that may be a
	// row of a typed table (version 6): version 3's fields, then one byte,
	// 0 for a readings row (nothing follows) or 1 for a typed row, followed
	// by the row as typed.AppendRow encodes it (its table, its columns'
	// names and types, its values). Version 5 is the edge dead letter
	// (CodecDeadLetter).
	CodecTyped = "6"
	// CodecTypedBatch is the batch encoding of version-6 readings (version
	// 7), framed as version 2: the producer writes it for a shard's round
	// trip when one of its readings is a typed row (Reading.Row), so
	// entries without typed rows stay byte for byte as before.
	CodecTypedBatch = "7"
)

// ItemCodec is the encoding of the readings inside a batch entry of
// encoding version, and whether version is a batch encoding at all.
func ItemCodec(version string) (string, bool) {
	switch version {
	case CodecBatch:
		return CodecVersion, true
	case CodecMetricBatch:
		return CodecMetric, true
	case CodecTypedBatch:
		return CodecTyped, true
	}
	return "", false
}

// BatchCodec is the batch encoding whose items are in encoding item
// (CodecBatch for CodecVersion, CodecMetricBatch for CodecMetric,
// CodecTypedBatch for CodecTyped).
func BatchCodec(item string) string {
	switch item {
	case CodecMetric:
		return CodecMetricBatch
	case CodecTyped:
		return CodecTypedBatch
	}
	return CodecBatch
}

// ItemVersion is the single-reading encoding r needs: CodecTyped for a
// typed row, CodecMetric for a reading that names a metric, else
// CodecVersion (byte for byte as before metrics and typed rows existed).
func ItemVersion(r *Reading) string {
	switch {
	case r.Row != nil:
		return CodecTyped
	case r.Metric != "":
		return CodecMetric
	}
	return CodecVersion
}

// Wider is the wider of two single-reading encodings: the one whose
// items can hold what the other's can (CodecTyped over CodecMetric over
// CodecVersion). A batch of readings of several takes the widest.
func Wider(a, b string) string {
	rank := func(v string) int {
		switch v {
		case CodecTyped:
			return 2
		case CodecMetric:
			return 1
		}
		return 0
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// AppendItem appends r in the single-reading encoding item (CodecVersion,
// CodecMetric or CodecTyped; see ItemVersion for the narrowest r fits).
func AppendItem(dst []byte, item string, r *Reading) []byte {
	switch item {
	case CodecTyped:
		return AppendEncodeTyped(dst, r)
	case CodecMetric:
		return AppendEncodeMetric(dst, r)
	}
	return AppendEncode(dst, r)
}

// AppendBatchItemAs appends one reading of a batch body whose items are in
// encoding item (see AppendBatchItem).
func AppendBatchItemAs(dst []byte, item string, r *Reading) []byte {
	switch item {
	case CodecTyped:
		return AppendBatchItemTyped(dst, r)
	case CodecMetric:
		return AppendBatchItemMetric(dst, r)
	}
	return AppendBatchItem(dst, r)
}

// ErrUnknownCodec means an entry names an encoding this build cannot read.
var ErrUnknownCodec = errors.New("unknown stream encoding version")

// ErrCorruptEntry means an entry's body does not decode in the encoding it
// names.
var ErrCorruptEntry = errors.New("corrupt stream entry")

// AppendEncode appends the version-1 encoding of r to dst and returns it.
//
// Version 1 is, in order: uvarint length and bytes of DeviceID; varint Time
// and varint ReceivedAt in Unix nanoseconds; Value as 8 little-endian bytes of
// its IEEE 754 bits; uvarint length and bytes of Payload. A reading of a short
// device id and no payload takes about 30 bytes.
func AppendEncode(dst []byte, r *Reading) []byte {
	return appendEncode(dst, r, false)
}

// AppendEncodeMetric appends the version-3 encoding of r: version 1's
// fields, then uvarint length and bytes of Metric (length 0: the default
// metric).
func AppendEncodeMetric(dst []byte, r *Reading) []byte {
	return appendEncode(dst, r, true)
}

// AppendEncodeTyped appends the version-6 encoding of r: version 3's
// fields, then 0 when r.Row is nil, else 1 and typed.AppendRow of r.Row. A
// typed row's Metric, Value and Payload are unused and travel as their zero
// values take them.
func AppendEncodeTyped(dst []byte, r *Reading) []byte {
	dst = appendEncode(dst, r, true)
	if r.Row == nil {
		return append(dst, 0)
	}
	return typed.AppendRow(append(dst, 1), r.Row)
}

func appendEncode(dst []byte, r *Reading, metric bool) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(r.DeviceID)))
	dst = append(dst, r.DeviceID...)
	dst = binary.AppendVarint(dst, r.Time.UnixNano())
	dst = binary.AppendVarint(dst, r.ReceivedAt.UnixNano())
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.Value))
	dst = binary.AppendUvarint(dst, uint64(len(r.Payload)))
	dst = append(dst, r.Payload...)
	if metric {
		dst = binary.AppendUvarint(dst, uint64(len(r.Metric)))
		dst = append(dst, r.Metric...)
	}
	return dst
}

// AppendBatch appends to dst the version-2 body of rs: uvarint count, then
// each reading as uvarint length and its version-1 encoding. The length of
// each reading lets a reader isolate one that does not decode and keep its
// neighbours (SplitBatch). One reading is a valid batch.
func AppendBatch(dst []byte, rs []*Reading) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(rs)))
	for _, r := range rs {
		dst = AppendBatchItem(dst, r)
	}
	return dst
}

// AppendBatchItem appends one reading of a version-2 body being built
// item by item (after BatchHeaderLen bytes reserved for the count, see
// FinishBatch), encoding r in place without a copy.
func AppendBatchItem(dst []byte, r *Reading) []byte {
	// The version-1 encoding's length is known before encoding it.
	dst = binary.AppendUvarint(dst, uint64(encodedLen(r)))
	return AppendEncode(dst, r)
}

// AppendBatchItemMetric is AppendBatchItem for a version-4 body: r in its
// version-3 encoding.
func AppendBatchItemMetric(dst []byte, r *Reading) []byte {
	dst = binary.AppendUvarint(dst, uint64(encodedLen(r)+uvarintLen(uint64(len(r.Metric)))+len(r.Metric)))
	return AppendEncodeMetric(dst, r)
}

// AppendBatchItemTyped is AppendBatchItem for a version-7 body: r in its
// version-6 encoding.
func AppendBatchItemTyped(dst []byte, r *Reading) []byte {
	if r.Row == nil {
		dst = binary.AppendUvarint(dst, uint64(encodedLen(r)+uvarintLen(uint64(len(r.Metric)))+len(r.Metric)+1))
		return AppendEncodeTyped(dst, r)
	}
	// A row's length is known once it is encoded: encode it after room for
	// the largest length, then move it next to its length (one memmove of
	// the item, not an allocation).
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0) // binary.MaxVarintLen32
	dst = AppendEncodeTyped(dst, r)
	n := len(dst) - start - binary.MaxVarintLen32
	var h [binary.MaxVarintLen64]byte
	hl := binary.PutUvarint(h[:], uint64(n))
	copy(dst[start+hl:], dst[start+binary.MaxVarintLen32:])
	copy(dst[start:], h[:hl])
	return dst[:start+hl+n]
}

// BatchHeaderLen is the room a batch body reserves for its count: enough for
// any count a round trip holds.
const BatchHeaderLen = binary.MaxVarintLen32

// FinishBatch writes the count n into the BatchHeaderLen bytes reserved at
// the start of body and returns the body without the unused part of them.
func FinishBatch(body []byte, n int) []byte {
	var h [binary.MaxVarintLen64]byte
	hl := binary.PutUvarint(h[:], uint64(n))
	start := BatchHeaderLen - hl
	copy(body[start:], h[:hl])
	return body[start:]
}

// encodedLen is len(AppendEncode(nil, r)).
func encodedLen(r *Reading) int {
	return uvarintLen(uint64(len(r.DeviceID))) + len(r.DeviceID) +
		varintLen(r.Time.UnixNano()) + varintLen(r.ReceivedAt.UnixNano()) + 8 +
		uvarintLen(uint64(len(r.Payload))) + len(r.Payload)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int {
	u := uint64(v) << 1
	if v < 0 {
		u = ^u
	}
	return uvarintLen(u)
}

// SplitBatch splits a version-2 body into the version-1 bodies of its
// readings, without decoding them. An error (wrapping ErrCorruptEntry) means
// the framing itself is broken: the entry cannot be split, and is rejected
// whole.
func SplitBatch(body string) ([]string, error) {
	d := decoder{s: body}
	n := d.uvarint("count")
	if d.err != nil {
		return nil, d.err
	}
	// Each reading takes at least its length byte and 11 bytes: a count
	// larger than the body can hold is corrupt, not an allocation to make.
	if n == 0 || n > uint64(len(d.s))/12 {
		return nil, fmt.Errorf("%w: batch of %d readings in %d bytes", ErrCorruptEntry, n, len(d.s))
	}
	parts := make([]string, 0, n)
	for range n {
		p := d.str()
		if d.err != nil {
			return nil, fmt.Errorf("%w: reading %d of %d: truncated", ErrCorruptEntry, len(parts)+1, n)
		}
		parts = append(parts, p)
	}
	if len(d.s) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last of %d readings", ErrCorruptEntry, len(d.s), n)
	}
	return parts, nil
}

// Decode decodes the body of an entry written in encoding version. Errors
// wrap ErrUnknownCodec or ErrCorruptEntry. Decode checks structure only: a
// decoded reading is not re-validated.
func Decode(version, body string) (Reading, error) {
	if version != CodecVersion && version != CodecMetric && version != CodecTyped {
		return Reading{}, fmt.Errorf("%w %q", ErrUnknownCodec, version)
	}
	d := decoder{s: body}
	var r Reading
	r.DeviceID = d.str()
	r.Time = time.Unix(0, d.varint()).UTC()
	r.ReceivedAt = time.Unix(0, d.varint()).UTC()
	r.Value = math.Float64frombits(d.uint64())
	if p := d.str(); p != "" {
		r.Payload = []byte(p)
	}
	if version == CodecMetric || version == CodecTyped {
		r.Metric = d.str()
	}
	if version == CodecTyped {
		r.Row = d.row()
	}
	if d.err != nil {
		return Reading{}, d.err
	}
	if len(d.s) != 0 {
		return Reading{}, fmt.Errorf("%w: %d bytes after the end", ErrCorruptEntry, len(d.s))
	}
	return r, nil
}

// decoder reads version-1 fields from a string, remembering the first error.
type decoder struct {
	s   string
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or malformed %s", ErrCorruptEntry, what)
	}
	d.s = ""
}

func (d *decoder) uvarint(what string) uint64 {
	var v uint64
	for i, shift := 0, uint(0); i < len(d.s) && i < binary.MaxVarintLen64; i, shift = i+1, shift+7 {
		b := d.s[i]
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				break
			}
			d.s = d.s[i+1:]
			return v | uint64(b)<<shift
		}
		v |= uint64(b&0x7f) << shift
	}
	d.fail(what)
	return 0
}

func (d *decoder) varint() int64 {
	u := d.uvarint("time")
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

func (d *decoder) str() string {
	n := d.uvarint("length")
	if n > uint64(len(d.s)) {
		d.fail("string")
		return ""
	}
	s := d.s[:n]
	d.s = d.s[n:]
	return s
}

// row reads version 6's typed part: 0, no row; 1, a typed row.
func (d *decoder) row() *typed.Row {
	if d.err != nil {
		return nil
	}
	if len(d.s) == 0 {
		d.fail("typed part")
		return nil
	}
	kind := d.s[0]
	d.s = d.s[1:]
	switch kind {
	case 0:
		return nil
	case 1:
		row, n, err := typed.DecodeRow(d.s)
		if err != nil {
			if d.err == nil {
				d.err = fmt.Errorf("%w: %w", ErrCorruptEntry, err)
			}
			d.s = ""
			return nil
		}
		d.s = d.s[n:]
		return &row
	}
	d.fail("typed part")
	return nil
}

func (d *decoder) uint64() uint64 {
	if len(d.s) < 8 {
		d.fail("value")
		return 0
	}
	v := binary.LittleEndian.Uint64([]byte(d.s[:8]))
	d.s = d.s[8:]
	return v
}

// DecodeEntry decodes every reading of a stream entry firehose wrote, in
// any encoding, from its fields as go-redis returns them: for tools and
// tests. It fails on the first reading that does not decode; the bridge
// isolates such a reading from its neighbours itself (SplitBatch).
func DecodeEntry(values map[string]any) ([]Reading, error) {
	version, _ := values[FieldVersion].(string)
	body, ok := values[FieldBody].(string)
	if !ok {
		return nil, fmt.Errorf("%w: no %q field", ErrCorruptEntry, FieldBody)
	}
	item, batched := ItemCodec(version)
	if !batched {
		r, err := Decode(version, body)
		if err != nil {
			return nil, err
		}
		return []Reading{r}, nil
	}
	parts, err := SplitBatch(body)
	if err != nil {
		return nil, err
	}
	rs := make([]Reading, len(parts))
	for i, p := range parts {
		if rs[i], err = Decode(item, p); err != nil {
			return nil, fmt.Errorf("reading %d of %d: %w", i+1, len(parts), err)
		}
	}
	if n, ok := values[FieldCount].(string); ok && n != strconv.Itoa(len(rs)) {
		return nil, fmt.Errorf("%w: %s=%s but the body holds %d readings", ErrCorruptEntry, FieldCount, n, len(rs))
	}
	return rs, nil
}
