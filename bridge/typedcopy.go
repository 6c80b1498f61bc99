package bridge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"firehose/typed"
)

// Typed rows are COPYed in PostgreSQL's binary COPY format, encoded here
// rather than by pgx's CopyFrom: pgx takes a row as []any, so each value
// would be boxed (an allocation for most) and looked up in pgx's type map.
// The encoding follows the column's type as PostgreSQL describes it, in the
// COPY's transaction (whose lock on the table holds it until the commit):
// a column of the rule's type is encoded here, byte for byte as pgx would;
// one whose type differs (changed by hand) goes through pgx's type map as
// before (pgValue), so what it accepts and refuses is pgx's.

// oids are the PostgreSQL types of the typed package's types.
var oids = [...]uint32{
	typed.Text:        pgtype.TextOID,
	typed.Boolean:     pgtype.BoolOID,
	typed.Smallint:    pgtype.Int2OID,
	typed.Integer:     pgtype.Int4OID,
	typed.Bigint:      pgtype.Int8OID,
	typed.Real:        pgtype.Float4OID,
	typed.Double:      pgtype.Float8OID,
	typed.Numeric:     pgtype.NumericOID,
	typed.Timestamptz: pgtype.TimestamptzOID,
	typed.JSONB:       pgtype.JSONBOID,
	typed.DoubleArray: pgtype.Float8ArrayOID,
	typed.TextArray:   pgtype.TextArrayOID,
}

// oidOf is t's PostgreSQL type, 0 for none.
func oidOf(t typed.Type) uint32 {
	if int(t) < len(oids) {
		return oids[t]
	}
	return 0
}

// copyTyped COPYs rows, all of target t (a typed table's), into t's table
// and returns PostgreSQL's error as it is, or a describe's (a table or
// column that does not exist: 42P01, 42703).
func copyTyped(ctx context.Context, tx copier, t *target, rows []*entry) error {
	table := pgx.Identifier{t.name}.Sanitize()
	var cols strings.Builder
	for i, c := range t.columns {
		if i > 0 {
			cols.WriteString(", ")
		}
		cols.WriteString(pgx.Identifier{c}.Sanitize())
	}
	conn := tx.Conn()
	sd, err := conn.PgConn().Prepare(ctx, "", "SELECT "+cols.String()+" FROM "+table, nil)
	if err != nil {
		return fmt.Errorf("describe the columns of %s: %w", t.name, err)
	}
	if len(sd.Fields) != len(t.columns) {
		return fmt.Errorf("describe the columns of %s: %d columns, want %d", t.name, len(sd.Fields), len(t.columns))
	}
	types := make([]uint32, len(sd.Fields))
	for i, f := range sd.Fields {
		types[i] = f.DataTypeOID
	}
	r := newTypedReader(rows, types, conn.TypeMap())
	_, err = conn.PgConn().CopyFrom(ctx, r, "COPY "+table+" ("+cols.String()+") FROM STDIN BINARY")
	if err == nil {
		// Only then: pgconn returns from some failures (a connection
		// lost) before its goroutine is done reading r.
		r.release()
	}
	return err
}

// fillSize is how many bytes of rows typedReader encodes at a time: about
// a CopyData message (pgconn reads 64 KiB at a time).
const fillSize = 64 << 10

// typedReader is a COPY's data in the binary format: the header, each row
// (typed rows whose columns the COPY names, in order), the trailer. A value
// that cannot be encoded for its column fails the Read, and pgconn then
// ends the COPY with CopyFail, quoting the error: "unable to encode column
// ..." (encodeRefused).
type typedReader struct {
	rows []*entry
	oids []uint32    // the COPY's columns' types, as PostgreSQL describes them
	m    *pgtype.Map // encodes a column whose type is not the rule's
	next int         // the next row to encode
	buf  []byte      // encoded, read up to off
	off  int
	// pooled is buf's slice in copyBufs (newTypedReader).
	pooled *[]byte
	head   bool // the header is in buf
	done   bool // the trailer is in buf
}

// copyBufs are typedReader's buffers, kept from one COPY to the next.
var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, fillSize+4<<10)
	return &b
}}

// newTypedReader reads rows for a COPY into columns of types oids; m
// encodes a value into a column not of its rule's type.
func newTypedReader(rows []*entry, oids []uint32, m *pgtype.Map) *typedReader {
	buf := copyBufs.Get().(*[]byte)
	return &typedReader{rows: rows, oids: oids, m: m, pooled: buf, buf: (*buf)[:0]}
}

// release gives r's buffer back, once nothing reads r any more.
func (r *typedReader) release() {
	if r.pooled != nil {
		*r.pooled = r.buf[:0]
		copyBufs.Put(r.pooled)
		r.pooled, r.buf = nil, nil
	}
}

func (r *typedReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if r.off == len(r.buf) {
			if r.done {
				break
			}
			if err := r.fill(); err != nil {
				return n, err
			}
		}
		k := copy(p[n:], r.buf[r.off:])
		r.off += k
		n += k
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// fill encodes the next rows into buf, about fillSize bytes of them.
func (r *typedReader) fill() error {
	r.buf, r.off = r.buf[:0], 0
	if !r.head {
		// The signature, no flags, no header extension.
		r.buf = append(r.buf, "PGCOPY\n\377\r\n\000\000\000\000\000\000\000\000\000"...)
		r.head = true
	}
	for r.next < len(r.rows) && len(r.buf) < fillSize {
		var err error
		if r.buf, err = r.appendRow(r.buf, r.rows[r.next].r.Row); err != nil {
			return err
		}
		r.next++
	}
	if r.next == len(r.rows) {
		r.buf = binary.BigEndian.AppendUint16(r.buf, 0xffff) // -1: no more rows
		r.done = true
	}
	return nil
}

// appendRow appends row: its count of fields and each, its length (-1 for
// NULL) and value.
func (r *typedReader) appendRow(buf []byte, row *typed.Row) ([]byte, error) {
	if len(row.Values) != len(r.oids) {
		return nil, fmt.Errorf("a row of %d values for %d columns", len(row.Values), len(r.oids))
	}
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(r.oids)))
	for j, c := range row.Shape.Columns {
		v := &row.Values[j]
		if v.Null {
			buf = binary.BigEndian.AppendUint32(buf, math.MaxUint32) // -1
			continue
		}
		if r.oids[j] == oidOf(c.Type) {
			var ok bool
			if buf, ok = appendBinary(buf, c.Type, v); ok {
				continue
			}
		}
		var err error
		if buf, err = appendViaPgx(buf, r.m, r.oids[j], c.Type, v); err != nil {
			// Said as pgx says its own, so that the COPY's failure is
			// taken for a refused row (encodeRefused).
			return nil, fmt.Errorf("unable to encode column %s: %w", c.Name, err)
		}
	}
	return buf, nil
}

// appendBinary appends v, a non-NULL value of type t, as a field of a
// binary COPY into a column of type t: its length, then its value as
// PostgreSQL's binary format has it (as pgx's encoding of pgValue's). ok
// is false, and buf unchanged, for a value it leaves to pgx: an integer
// out of its column's range, a numeric it does not read (appendNumeric).
func appendBinary(buf []byte, t typed.Type, v *typed.Value) ([]byte, bool) {
	be := binary.BigEndian
	switch t {
	case typed.Text:
		buf = be.AppendUint32(buf, uint32(len(v.Str)))
		return append(buf, v.Str...), true
	case typed.Boolean:
		b := byte(0)
		if v.Bool {
			b = 1
		}
		return append(be.AppendUint32(buf, 1), b), true
	case typed.Smallint:
		if v.Int < math.MinInt16 || v.Int > math.MaxInt16 {
			return buf, false
		}
		return be.AppendUint16(be.AppendUint32(buf, 2), uint16(v.Int)), true
	case typed.Integer:
		if v.Int < math.MinInt32 || v.Int > math.MaxInt32 {
			return buf, false
		}
		return be.AppendUint32(be.AppendUint32(buf, 4), uint32(v.Int)), true
	case typed.Bigint:
		return be.AppendUint64(be.AppendUint32(buf, 8), uint64(v.Int)), true
	case typed.Real:
		return be.AppendUint32(be.AppendUint32(buf, 4), math.Float32bits(float32(v.Float))), true
	case typed.Double:
		return be.AppendUint64(be.AppendUint32(buf, 8), math.Float64bits(v.Float)), true
	case typed.Numeric:
		return appendNumeric(buf, v.Str)
	case typed.Timestamptz:
		// Microseconds since 2000-01-01 UTC; Unix nanoseconds rounded down
		// to the microsecond, as time.Time's are.
		us := v.Int / 1000
		if v.Int%1000 < 0 {
			us--
		}
		return be.AppendUint64(be.AppendUint32(buf, 8), uint64(us-y2kMicros)), true
	case typed.JSONB:
		buf = be.AppendUint32(buf, uint32(1+len(v.Str)))
		return append(append(buf, 1), v.Str...), true // version 1, then the JSON text
	case typed.DoubleArray:
		buf = be.AppendUint32(buf, uint32(arrayHeaderLen+12*len(v.Floats())))
		buf = appendArrayHeader(buf, pgtype.Float8OID, len(v.Floats()))
		for _, f := range v.Floats() {
			buf = be.AppendUint64(be.AppendUint32(buf, 8), math.Float64bits(f))
		}
		return buf, true
	case typed.TextArray:
		size := arrayHeaderLen
		for _, s := range v.Strs() {
			size += 4 + len(s)
		}
		buf = be.AppendUint32(buf, uint32(size))
		buf = appendArrayHeader(buf, pgtype.TextOID, len(v.Strs()))
		for _, s := range v.Strs() {
			buf = append(be.AppendUint32(buf, uint32(len(s))), s...)
		}
		return buf, true
	}
	return buf, false
}

// y2kMicros is 2000-01-01 UTC in Unix microseconds: PostgreSQL's epoch.
const y2kMicros = 946_684_800_000_000

// arrayHeaderLen is the size of a one-dimensional array's header.
const arrayHeaderLen = 20

// appendArrayHeader appends the header of a one-dimensional array of n
// elements of type elem, none NULL, its lower bound 1 (an empty array too,
// as pgx writes it).
func appendArrayHeader(buf []byte, elem uint32, n int) []byte {
	be := binary.BigEndian
	buf = be.AppendUint32(buf, 1) // dimensions
	buf = be.AppendUint32(buf, 0) // no NULL element
	buf = be.AppendUint32(buf, elem)
	buf = be.AppendUint32(buf, uint32(n))
	return be.AppendUint32(buf, 1) // lower bound
}

// appendNumeric appends the binary numeric of s, a decimal number as JSON
// writes one (-12.50, 1e3, 1.5E-7): its base-10000 digits without leading
// or trailing zero ones, their weight, its sign and its display scale (the
// digits after the point: 12.50 keeps 2, as PostgreSQL's numeric input
// does). ok is false, and buf unchanged, for anything else, or a number
// whose exponent goes beyond what the format holds: pgx's numeric takes
// those (pgValue).
func appendNumeric(buf []byte, s string) ([]byte, bool) {
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	ip, rest := leadingDigits(s)
	if ip == "" {
		return buf, false
	}
	fp := ""
	if strings.HasPrefix(rest, ".") {
		if fp, rest = leadingDigits(rest[1:]); fp == "" {
			return buf, false
		}
	}
	exp := 0
	if rest != "" {
		if rest[0] != 'e' && rest[0] != 'E' {
			return buf, false
		}
		rest = rest[1:]
		eneg := strings.HasPrefix(rest, "-")
		if eneg || strings.HasPrefix(rest, "+") {
			rest = rest[1:]
		}
		ed, tail := leadingDigits(rest)
		if ed == "" || tail != "" || len(ed) > 6 {
			return buf, false
		}
		exp, _ = strconv.Atoi(ed)
		if eneg {
			exp = -exp
		}
	}
	// The number is the digits of ip and fp, d, times 10^e: digit i counts
	// 10^(n-1-i+e).
	n := len(ip) + len(fp)
	digit := func(i int) int {
		if i < len(ip) {
			return int(ip[i] - '0')
		}
		return int(fp[i-len(ip)] - '0')
	}
	e := exp - len(fp)
	dscale := max(0, -e)
	if dscale > 0x3fff { // PostgreSQL's NUMERIC_DSCALE_MAX
		return buf, false
	}
	lo, hi := 0, n-1
	for lo < n && digit(lo) == 0 {
		lo++
	}
	be := binary.BigEndian
	if lo == n { // zero
		buf = be.AppendUint32(buf, 8)
		buf = be.AppendUint64(buf, uint64(dscale)) // no digits, weight 0, positive
		return buf, true
	}
	for digit(hi) == 0 {
		hi--
	}
	power := func(i int) int { return n - 1 - i + e }
	weight, last := floorDiv(power(lo), 4), floorDiv(power(hi), 4)
	ndigits := weight - last + 1
	if weight > math.MaxInt16 || last < math.MinInt16 {
		return buf, false
	}
	sign := uint16(0)
	if neg {
		sign = 0x4000
	}
	buf = be.AppendUint32(buf, uint32(8+2*ndigits))
	buf = be.AppendUint16(buf, uint16(ndigits))
	buf = be.AppendUint16(buf, uint16(int16(weight)))
	buf = be.AppendUint16(buf, sign)
	buf = be.AppendUint16(buf, uint16(dscale))
	// Each digit adds to the base-10000 digit its power falls in; the
	// powers go down by one, so the base-10000 digits come in order, the
	// zero ones among them too.
	group, acc := weight, 0
	for i := lo; i <= hi; i++ {
		p := power(i)
		if g := floorDiv(p, 4); g < group {
			buf = be.AppendUint16(buf, uint16(acc))
			group, acc = g, 0
		}
		acc += digit(i) * pow10[p-4*group]
	}
	return be.AppendUint16(buf, uint16(acc)), true
}

var pow10 = [4]int{1, 10, 100, 1000}

// leadingDigits splits s after its leading ASCII digits.
func leadingDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}

// floorDiv is a/b rounded down (b > 0).
func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// appendViaPgx appends v, of a column of type t, as a field of a binary
// COPY into a column of PostgreSQL type oid, encoded as pgx's CopyFrom
// encodes a value (pgx's encodeCopyValue): pgValue's Go value through pgx's
// type map, and, when pgx has no encoding of that Go value for oid, its
// text read as oid's type and that encoded. A NULL is -1.
func appendViaPgx(buf []byte, m *pgtype.Map, oid uint32, t typed.Type, v *typed.Value) ([]byte, error) {
	val, err := pgValue(t, v)
	if err != nil {
		return nil, err
	}
	sp := len(buf)
	buf = binary.BigEndian.AppendUint32(buf, math.MaxUint32) // -1: NULL, unless a value follows
	out, err := m.Encode(oid, pgtype.BinaryFormatCode, val, buf)
	if err != nil {
		var err2 error
		if out, err2 = encodeFromText(m, buf, oid, val); err2 != nil {
			return nil, err
		}
	}
	if out != nil {
		buf = out
		binary.BigEndian.PutUint32(buf[sp:], uint32(len(buf)-sp-4))
	}
	return buf, nil
}

// encodeFromText is pgx's tryScanStringCopyValueThenEncode: val as text
// (a string as it is), read as oid's type and encoded in binary.
func encodeFromText(m *pgtype.Map, buf []byte, oid uint32, val any) ([]byte, error) {
	s, ok := val.(string)
	if !ok {
		text, err := m.Encode(oid, pgtype.TextFormatCode, val, nil)
		if err != nil {
			return nil, errors.New("not a string and cannot be encoded as text")
		}
		s = string(text)
	}
	if typ, ok := m.TypeForOID(oid); ok {
		if _, ok := typ.Codec.(*pgtype.ArrayCodec); ok {
			var arr pgtype.Array[any]
			if err := m.Scan(oid, pgtype.TextFormatCode, []byte(s), &arr); err == nil {
				return m.Encode(oid, pgtype.BinaryFormatCode, arr, buf)
			}
		}
	}
	var v any
	if err := m.Scan(oid, pgtype.TextFormatCode, []byte(s), &v); err != nil {
		return nil, err
	}
	return m.Encode(oid, pgtype.BinaryFormatCode, v, buf)
}
