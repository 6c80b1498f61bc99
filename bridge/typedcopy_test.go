package bridge

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"firehose/ingest"
	"firehose/typed"
)

// TestAppendBinaryAsPgx: each type's values, encoded here for a column of
// the rule's type, are the bytes pgx's CopyFrom sends for pgValue's Go
// value (numeric: the same number and display scale, pgx's digits being
// possibly padded with zero ones); a value left to pgx is one pgx refuses
// or one appendNumeric does not read.
func TestAppendBinaryAsPgx(t *testing.T) {
	m := pgtype.NewMap()
	at := func(s string) typed.Value {
		ts, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return typed.TimeValue(ts)
	}
	cases := map[typed.Type][]typed.Value{
		typed.Text:     {{Str: ""}, {Str: "berlin"}, {Str: "ünïcode ✓"}},
		typed.Boolean:  {{Bool: true}, {}},
		typed.Smallint: {{Int: 0}, {Int: -1}, {Int: math.MaxInt16}, {Int: math.MinInt16}, {Int: 70000}},
		typed.Integer:  {{Int: 1200}, {Int: math.MinInt32}, {Int: math.MaxInt32}, {Int: 1 << 40}},
		typed.Bigint:   {{Int: 0}, {Int: math.MinInt64}, {Int: math.MaxInt64}},
		typed.Real:     {{Float: 21.5}, {Float: -0.1}, {Float: 3.4e38}, {Float: 1e-45}, {Float: math.Copysign(0, -1)}},
		typed.Double:   {{Float: 3.075}, {Float: -1e308}, {Float: 5e-324}, {Float: math.NaN()}, {Float: math.Inf(1)}},
		typed.Timestamptz: {at("2026-12-05T10:00:00.123456789Z"), at("1999-12-31T23:59:59.9999995Z"), at("2000-01-01T00:00:00Z"),
			at("1969-12-31T23:59:59.999999999Z"), at("1678-01-02T00:00:00.000001001Z"), at("2261-12-31T23:59:59.999999Z"), {Int: -1}, {Int: 1}},
		typed.JSONB:       {{Str: `{"a":1}`}, {Str: `[]`}, {Str: `"x"`}},
		typed.DoubleArray: {typed.FloatsValue([]float64{1, 2.5}), typed.FloatsValue([]float64{}), {}},
		typed.TextArray:   {typed.StrsValue([]string{"a", ""}), typed.StrsValue([]string{}), {}, typed.StrsValue([]string{"ü"})},
	}
	for typ, vals := range cases {
		for _, v := range vals {
			want, werr := appendViaPgx([]byte("x"), m, oidOf(typ), typ, &v)
			got, ok := appendBinary([]byte("x"), typ, &v)
			switch {
			case werr != nil && ok:
				t.Errorf("%s %+v: encoded % x, pgx refuses it: %v", typ, v, got, werr)
			case werr == nil && !ok:
				t.Errorf("%s %+v: left to pgx, which encodes it", typ, v)
			case ok && !bytes.Equal(got, want):
				t.Errorf("%s %+v: % x, pgx % x", typ, v, got, want)
			case !ok && string(got) != "x":
				t.Errorf("%s %+v: left to pgx after appending % x", typ, v, got[1:])
			}
		}
	}
}

// TestAppendNumeric: a JSON number is the number pgx's numeric of it is,
// with the same display scale; what is not a JSON number, or lies beyond
// the binary format, is left to pgx.
func TestAppendNumeric(t *testing.T) {
	m := pgtype.NewMap()
	for _, s := range []string{
		"0", "-0", "0.0", "-0.000", "0e5", "1", "-1", "12.50", "-12.5", "1e3", "1E+3", "1.5e-7", "-1.25e3", "10000",
		"9999", "10000.0001", "0.0001", "0.00001", "123456789.000001", "1000000000000000000000000", "3.14159265358979323846264338327950288",
		"1e1000", "-1e-1000", "7e-3", "5e4", "12345678e-4", "0.10", "100.001e2", "00012.5", "1e16383", "1e-16383",
		strings.Repeat("9", 100) + "." + strings.Repeat("1", 50),
	} {
		got, ok := appendNumeric(nil, s)
		if !ok {
			t.Errorf("%s: left to pgx", s)
			continue
		}
		var want pgtype.Numeric
		if err := want.ScanScientific(s); err != nil {
			t.Fatalf("%s: pgx: %v", s, err)
		}
		if n := int(binary.BigEndian.Uint32(got)); n != len(got)-4 {
			t.Errorf("%s: length %d of %d bytes", s, n, len(got)-4)
		}
		var back pgtype.Numeric
		if err := m.Scan(pgtype.NumericOID, pgtype.BinaryFormatCode, got[4:], &back); err != nil {
			t.Errorf("%s: % x does not decode: %v", s, got, err)
			continue
		}
		wv, _ := want.Value()
		bv, _ := back.Value()
		if want.Int.Sign() == 0 {
			// pgx reads a zero without its display scale (and writes
			// 0e5 as 000000): no digits, then.
			if !bytes.Equal(got[4:8], []byte{0, 0, 0, 0}) {
				t.Errorf("%s: % x, want no digits and weight 0", s, got)
			}
		} else if wv != bv {
			t.Errorf("%s: decodes to %v, pgx's to %v", s, bv, wv)
		}
		var pgxBytes []byte
		if pgxBytes, _ = m.Encode(pgtype.NumericOID, pgtype.BinaryFormatCode, want, nil); len(pgxBytes) >= 8 &&
			!bytes.Equal(got[4+6:4+8], pgxBytes[6:8]) {
			t.Errorf("%s: display scale % x, pgx's % x", s, got[4+6:4+8], pgxBytes[6:8])
		}
	}
	for _, s := range []string{"", "-", ".5", "5.", "1e", "1e+", "1.e3", "+1", "0x10", "1_000", "NaN", "Infinity", " 1", "1 ", "1e1234567", "1e-16384", "1e200000"} {
		if got, ok := appendNumeric([]byte("x"), s); ok || string(got) != "x" {
			t.Errorf("%q: encoded % x, want it left to pgx", s, got)
		}
	}
}

// TestAppendViaPgx: a column whose type is not the rule's is encoded as
// pgx's CopyFrom encodes it: an integer for a bigint column, a real for a
// double precision one, a string for an integer column read as its text; a
// value pgx cannot send refuses the row.
func TestAppendViaPgx(t *testing.T) {
	m := pgtype.NewMap()
	for _, tt := range []struct {
		name string
		typ  typed.Type
		oid  uint32
		v    typed.Value
		want string // hex, or "error"
	}{
		{"integer into bigint", typed.Integer, pgtype.Int8OID, typed.Value{Int: 3}, "00000008 0000000000000003"},
		{"real into double", typed.Real, pgtype.Float8OID, typed.Value{Float: 1.5}, "00000008 3ff8000000000000"},
		{"text of digits into integer", typed.Text, pgtype.Int4OID, typed.Value{Str: "12"}, "00000004 0000000c"},
		{"text into integer", typed.Text, pgtype.Int4OID, typed.Value{Str: "ok"}, "error"},
		{"bigint into integer, out of range", typed.Bigint, pgtype.Int4OID, typed.Value{Int: 1 << 40}, "error"},
		{"NULL", typed.Integer, pgtype.Int8OID, typed.Value{Null: true}, "ffffffff"},
		{"numeric that does not parse", typed.Numeric, pgtype.NumericOID, typed.Value{Str: "12x"}, "error"},
	} {
		got, err := appendViaPgx(nil, m, tt.oid, tt.typ, &tt.v)
		want := strings.ReplaceAll(tt.want, " ", "")
		if s := fmt.Sprintf("%x", got); err != nil && want != "error" || err == nil && s != want {
			t.Errorf("%s: %s, %v; want %s", tt.name, s, err, tt.want)
		}
	}
}

// TestTypedReader: a COPY's data is the header, each row with its count of
// fields and each field (NULL as -1, a column of another type as pgx
// encodes it), and the trailer, whatever the size of the reads; a value
// that cannot be encoded fails the read naming its column.
func TestTypedReader(t *testing.T) {
	shape := &typed.Shape{Table: "t", Columns: []typed.Column{{Name: "s", Type: typed.Text}, {Name: "n", Type: typed.Integer}}}
	row := func(s string, n int64, null bool) *entry {
		return &entry{r: ingest.Reading{Row: &typed.Row{Shape: shape, Values: []typed.Value{{Str: s}, {Int: n, Null: null}}}}}
	}
	rows := []*entry{row("a", 1, false), row("bc", 0, true)}
	want := "5047434f50590aff0d0a00" + "00000000" + "00000000" +
		"0002" + "00000001" + "61" + "00000008" + "0000000000000001" + // n into a bigint column
		"0002" + "00000002" + "6263" + "ffffffff" +
		"ffff"
	for _, size := range []int{1, 3, 7, 65531} {
		r := &typedReader{rows: rows, oids: []uint32{pgtype.TextOID, pgtype.Int8OID}, m: pgtype.NewMap()}
		var got []byte
		p := make([]byte, size)
		for {
			n, err := r.Read(p)
			got = append(got, p[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if n != size && !r.done {
				t.Fatalf("reads of %d: a short read of %d before the end", size, n)
			}
		}
		if fmt.Sprintf("%x", got) != want {
			t.Errorf("reads of %d: %x, want %s", size, got, want)
		}
	}
	r := &typedReader{rows: []*entry{row("ok", 1, false)}, oids: []uint32{pgtype.Int4OID, pgtype.Int4OID}, m: pgtype.NewMap()}
	if _, err := io.ReadAll(r); err == nil || !strings.Contains(err.Error(), "unable to encode column s") {
		t.Errorf("text into an integer column: %v, want unable to encode column s", err)
	}
}
