package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// Stream entry layout. Every entry firehose writes has two fields: FieldVersion
// names the encoding of FieldBody. A reader that meets a version it does not
// know rejects that entry (the bridge records it in readings_rejected) and goes
// on, so a new encoding can be rolled out reader-first without a flag day.
const (
	FieldVersion = "v"
	FieldBody    = "b"
	// CodecVersion is the version this build writes.
	CodecVersion = "1"
)

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
	dst = binary.AppendUvarint(dst, uint64(len(r.DeviceID)))
	dst = append(dst, r.DeviceID...)
	dst = binary.AppendVarint(dst, r.Time.UnixNano())
	dst = binary.AppendVarint(dst, r.ReceivedAt.UnixNano())
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.Value))
	dst = binary.AppendUvarint(dst, uint64(len(r.Payload)))
	return append(dst, r.Payload...)
}

// Decode decodes the body of an entry written in encoding version. Errors
// wrap ErrUnknownCodec or ErrCorruptEntry. Decode checks structure only: a
// decoded reading is not re-validated.
func Decode(version, body string) (Reading, error) {
	if version != CodecVersion {
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

func (d *decoder) uint64() uint64 {
	if len(d.s) < 8 {
		d.fail("value")
		return 0
	}
	v := binary.LittleEndian.Uint64([]byte(d.s[:8]))
	d.s = d.s[8:]
	return v
}
