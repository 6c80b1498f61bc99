package typed

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrCorrupt means an encoded row does not decode.
var ErrCorrupt = errors.New("corrupt typed row")

// MaxColumns is PostgreSQL's limit of columns in a table; a row that claims
// more does not decode.
const MaxColumns = 1600

// AppendRow appends the encoding of r to dst: uvarint length and bytes of
// the table's name, uvarint count of columns, then per column uvarint
// length and bytes of its name, its Type (one byte), a null byte (1: NULL,
// nothing follows) and the value: boolean one byte; smallint, integer,
// bigint and timestamptz (Unix nanoseconds) a varint; real and double
// precision 8 little-endian bytes of the float64's bits; text, numeric and
// jsonb uvarint length and bytes; double precision[] uvarint count then 8
// bytes each; text[] uvarint count then uvarint length and bytes each. The
// column names travel with each row, so an entry means the same to a bridge
// whatever rules it runs with.
func AppendRow(dst []byte, r *Row) []byte {
	dst = appendString(dst, r.Shape.Table)
	dst = binary.AppendUvarint(dst, uint64(len(r.Shape.Columns)))
	for i, c := range r.Shape.Columns {
		dst = appendString(dst, c.Name)
		dst = append(dst, byte(c.Type))
		v := &r.Values[i]
		if v.Null {
			dst = append(dst, 1)
			continue
		}
		dst = append(dst, 0)
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
			dst = binary.AppendUvarint(dst, uint64(len(v.Floats)))
			for _, f := range v.Floats {
				dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
			}
		case TextArray:
			dst = binary.AppendUvarint(dst, uint64(len(v.Strs)))
			for _, s := range v.Strs {
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

// DecodeRow decodes a row AppendRow encoded at the start of b, with a Shape
// of its own, and returns it with the number of bytes it took.
func DecodeRow(b []byte) (Row, int, error) {
	d := decoder{b: b}
	table := d.str("table")
	n := d.uvarint("column count")
	if d.err == nil && n > MaxColumns {
		d.fail(fmt.Sprintf("%d columns, over PostgreSQL's %d", n, MaxColumns))
	}
	if d.err != nil {
		return Row{}, 0, d.err
	}
	shape := &Shape{Table: table, Columns: make([]Column, n)}
	r := Row{Shape: shape, Values: make([]Value, n)}
	for i := range shape.Columns {
		c := &shape.Columns[i]
		c.Name = d.str("column name")
		c.Type = Type(d.byte("column type"))
		if d.err == nil && !c.Type.valid() {
			d.fail(fmt.Sprintf("column %q: unknown type %d", c.Name, c.Type))
		}
		null := d.byte("null flag")
		if d.err != nil {
			return Row{}, 0, d.err
		}
		v := &r.Values[i]
		if null != 0 {
			v.Null = true
			continue
		}
		switch c.Type {
		case Boolean:
			v.Bool = d.byte("boolean") != 0
		case Smallint, Integer, Bigint, Timestamptz:
			v.Int = d.varint(c.Name)
		case Real, Double:
			v.Float = d.float(c.Name)
		case Text, Numeric, JSONB:
			v.Str = d.str(c.Name)
		case DoubleArray:
			k := d.count(c.Name, 8)
			v.Floats = make([]float64, k)
			for j := range v.Floats {
				v.Floats[j] = d.float(c.Name)
			}
		case TextArray:
			k := d.count(c.Name, 1)
			v.Strs = make([]string, k)
			for j := range v.Strs {
				v.Strs[j] = d.str(c.Name)
			}
		}
		if d.err != nil {
			return Row{}, 0, d.err
		}
	}
	return r, d.off, nil
}

// decoder reads b from off; the first failure sticks in err.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at byte %d", ErrCorrupt, what, d.off)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail(what)
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *decoder) float(what string) float64 {
	if d.err != nil {
		return 0
	}
	if len(d.b)-d.off < 8 {
		d.fail(what)
		return 0
	}
	d.off += 8
	return math.Float64frombits(binary.LittleEndian.Uint64(d.b[d.off-8:]))
}

// count reads an element count that at least size bytes per element must
// follow, so a corrupt count cannot allocate past the input.
func (d *decoder) count(what string, size int) int {
	n := d.uvarint(what)
	if d.err == nil && n > uint64((len(d.b)-d.off)/size) {
		d.fail(what + ": count past the end")
		return 0
	}
	return int(n)
}

func (d *decoder) str(what string) string {
	n := d.count(what, 1)
	if d.err != nil {
		return ""
	}
	d.off += n
	return string(d.b[d.off-n : d.off])
}
