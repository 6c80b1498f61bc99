package typed

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
)

// ErrCorrupt means an encoded row does not decode.
var ErrCorrupt = errors.New("corrupt typed row")

// MaxColumns is PostgreSQL's limit of columns in a table; a row that claims
// more does not decode.
const MaxColumns = 1600

// AppendRow appends the encoding of r to dst. First the row's shape, the
// same bytes for every row of one table and column list: uvarint length and
// bytes of the table's name, uvarint count of columns, then per column
// uvarint length and bytes of its name and its Type (one byte). Then a null
// bitmap, a bit per column (bit i%8 of byte i/8: column i is NULL), and the
// values of the columns that are not NULL, in order: boolean one byte (0 or
// 1); smallint, integer, bigint and timestamptz (Unix nanoseconds) a varint;
// real and double precision 8 little-endian bytes of the float64's bits;
// text, numeric and jsonb uvarint length and bytes; double precision[]
// uvarint count then 8 bytes each; text[] uvarint count then uvarint length
// and bytes each. The column names travel with each row, so an entry means
// the same to a bridge whatever rules it runs with; the shape being one run
// of bytes lets a reader decode it once for many rows (DecodeRow).
func AppendRow(dst []byte, r *Row) []byte {
	dst = appendString(dst, r.Shape.Table)
	dst = binary.AppendUvarint(dst, uint64(len(r.Shape.Columns)))
	for _, c := range r.Shape.Columns {
		dst = appendString(dst, c.Name)
		dst = append(dst, byte(c.Type))
	}
	bitmap := len(dst)
	dst = append(dst, make([]byte, (len(r.Values)+7)/8)...)
	for i, c := range r.Shape.Columns {
		v := &r.Values[i]
		if v.Null {
			dst[bitmap+i/8] |= 1 << (i % 8)
			continue
		}
		switch c.Type {
		case Boolean:
			b := byte(0)
			if v.Bool {
				b = 1
			}
			dst = append(dst, b)
		case Smallint, Integer, Bigint, Timestamptz:
			dst = binary.AppendVarint(dst, v.Int)
		case Real, Double:
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(v.Float))
		case Text, Numeric, JSONB:
			dst = appendString(dst, v.Str)
		case DoubleArray:
			dst = binary.AppendUvarint(dst, uint64(len(v.Floats())))
			for _, f := range v.Floats() {
				dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
			}
		case TextArray:
			dst = binary.AppendUvarint(dst, uint64(len(v.Strs())))
			for _, s := range v.Strs() {
				dst = appendString(dst, s)
			}
		}
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// DecodeRow decodes a row AppendRow encoded at the start of s and returns it
// with the number of bytes it took. Its text values are substrings of s (no
// copy). Rows of one shape share one *Shape, decoded once and kept (up to
// maxShapes of them): a caller must not change it.
func DecodeRow(s string) (Row, int, error) {
	d := decoder{s: s}
	var shape *Shape
	if last := lastShape.Load(); last != nil && strings.HasPrefix(s, last.enc) {
		// The shape of the row before (a batch's rows are mostly of one
		// table): a shape's encoding is read from its own lengths, so s
		// starting with it holds that shape and nothing longer.
		shape, d.off = last.shape, len(last.enc)
	} else {
		d.str("table")
		n := d.uvarint("column count")
		if d.err == nil && n > MaxColumns {
			d.fail(fmt.Sprintf("%d columns, over PostgreSQL's %d", n, MaxColumns))
		}
		for range n {
			if d.err != nil {
				break
			}
			d.str("column name")
			if t := Type(d.byte("column type")); d.err == nil && !t.valid() {
				d.fail(fmt.Sprintf("unknown column type %d", t))
			}
		}
		if d.err != nil {
			return Row{}, 0, d.err
		}
		shape = shapeOf(s[:d.off])
	}
	n := len(shape.Columns)
	bitmap := d.take((n+7)/8, "null bitmap")
	if d.err != nil {
		return Row{}, 0, d.err
	}
	r := Row{Shape: shape, Values: make([]Value, n)}
	for i, c := range shape.Columns {
		v := &r.Values[i]
		if bitmap[i/8]&(1<<(i%8)) != 0 {
			v.Null = true
			continue
		}
		switch c.Type {
		case Boolean:
			switch d.byte("boolean") {
			case 0:
			case 1:
				v.Bool = true
			default:
				d.fail("boolean not 0 or 1")
			}
		case Smallint, Integer, Bigint, Timestamptz:
			v.Int = d.varint(c.Name)
		case Real, Double:
			v.Float = d.float(c.Name)
		case Text, Numeric, JSONB:
			v.Str = d.str(c.Name)
		case DoubleArray:
			k := d.count(c.Name, 8)
			fs := make([]float64, k)
			for j := range fs {
				fs[j] = d.float(c.Name)
			}
			*v = FloatsValue(fs)
		case TextArray:
			k := d.count(c.Name, 1)
			ss := make([]string, k)
			for j := range ss {
				ss[j] = d.str(c.Name)
			}
			*v = StrsValue(ss)
		}
		if d.err != nil {
			return Row{}, 0, d.err
		}
	}
	return r, d.off, nil
}

// maxShapes bounds the shapes DecodeRow keeps: past it a shape is decoded
// for each row (a deployment has a table and column list per rule).
const maxShapes = 4096

// knownShape is a decoded shape and its encoding (its own copy: a Shape
// kept must not pin the entry it was read from).
type knownShape struct {
	enc   string
	shape *Shape
}

// shapes are the shapes decoded so far, by their encoding.
var shapes = struct {
	sync.RWMutex
	m map[string]*knownShape
}{m: map[string]*knownShape{}}

// lastShape is the shape shapeOf returned last: DecodeRow tries it first.
var lastShape atomic.Pointer[knownShape]

// shapeOf is the Shape encoded in enc, a well-formed shape (DecodeRow
// checked it): the one decoded before, or a new one.
func shapeOf(enc string) *Shape {
	shapes.RLock()
	ks, ok := shapes.m[enc]
	shapes.RUnlock()
	if !ok {
		d := decoder{s: strings.Clone(enc)}
		sh := &Shape{Table: d.str("")}
		sh.Columns = make([]Column, d.uvarint(""))
		for i := range sh.Columns {
			sh.Columns[i] = Column{Name: d.str(""), Type: Type(d.byte(""))}
		}
		ks = &knownShape{enc: d.s, shape: sh}
		shapes.Lock()
		if len(shapes.m) < maxShapes {
			shapes.m[d.s] = ks
		}
		shapes.Unlock()
	}
	lastShape.Store(ks)
	return ks.shape
}

// decoder reads s from off; the first failure sticks in err.
type decoder struct {
	s   string
	off int
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at byte %d", ErrCorrupt, what, d.off)
	}
}

// uvarint reads an unsigned varint as binary.Uvarint does, from a string.
func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	var x uint64
	var shift uint
	for i := 0; d.off+i < len(d.s); i++ {
		if i == binary.MaxVarintLen64 {
			break
		}
		b := d.s[d.off+i]
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				break
			}
			d.off += i + 1
			return x | uint64(b)<<shift
		}
		x |= uint64(b&0x7f) << shift
		shift += 7
	}
	d.fail(what)
	return 0
}

func (d *decoder) varint(what string) int64 {
	ux := d.uvarint(what)
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.s) {
		d.fail(what)
		return 0
	}
	d.off++
	return d.s[d.off-1]
}

// take is the next n bytes.
func (d *decoder) take(n int, what string) string {
	if d.err != nil {
		return ""
	}
	if len(d.s)-d.off < n {
		d.fail(what)
		return ""
	}
	d.off += n
	return d.s[d.off-n : d.off]
}

func (d *decoder) float(what string) float64 {
	b := d.take(8, what)
	if d.err != nil {
		return 0
	}
	return math.Float64frombits(uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56)
}

// count reads an element count that at least size bytes per element must
// follow, so a corrupt count cannot allocate past the input.
func (d *decoder) count(what string, size int) int {
	n := d.uvarint(what)
	if d.err == nil && n > uint64((len(d.s)-d.off)/size) {
		d.fail(what + ": count past the end")
		return 0
	}
	return int(n)
}

func (d *decoder) str(what string) string {
	return d.take(d.count(what, 1), what)
}
