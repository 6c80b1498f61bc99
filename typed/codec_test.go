package typed

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
	"unsafe"
)

func sampleRow() *Row {
	shape := &Shape{Table: "press_telemetry", Columns: []Column{
		{Name: "site", Type: Text}, {Name: "ok", Type: Boolean}, {Name: "rpm", Type: Integer},
		{Name: "n", Type: Smallint}, {Name: "big", Type: Bigint}, {Name: "temp", Type: Real},
		{Name: "p", Type: Double}, {Name: "cost", Type: Numeric}, {Name: "time", Type: Timestamptz, NotNull: true},
		{Name: "extra", Type: JSONB}, {Name: "fs", Type: DoubleArray}, {Name: "tags", Type: TextArray},
		{Name: "gone", Type: Integer},
	}}
	return &Row{Shape: shape, Values: []Value{
		{Str: "berlin"}, {Bool: true}, {Int: -1200}, {Int: 7}, {Int: 1 << 60}, {Float: 21.5},
		{Float: -0.125}, {Str: "12.50"}, TimeValue(time.Date(2026, 12, 5, 10, 0, 0, 123, time.UTC)),
		{Str: `{"a":1}`}, FloatsValue([]float64{1, 2.5}), StrsValue([]string{"x", ""}), {Null: true},
	}}
}

func TestRowRoundTrip(t *testing.T) {
	r := sampleRow()
	b := AppendRow([]byte("prefix"), r)
	got, n, err := DecodeRow(string(b[len("prefix"):]))
	if err != nil {
		t.Fatal(err)
	}
	if n != len(b)-len("prefix") {
		t.Errorf("took %d bytes of %d", n, len(b)-len("prefix"))
	}
	want := *r.Shape
	for i := range want.Columns {
		want.Columns[i].NotNull = false // not carried
	}
	if !reflect.DeepEqual(*got.Shape, want) {
		t.Errorf("shape %+v, want %+v", *got.Shape, want)
	}
	if !reflect.DeepEqual(got.Values, r.Values) {
		t.Errorf("values %+v, want %+v", got.Values, r.Values)
	}
	if got.Values[8].Time() != time.Date(2026, 12, 5, 10, 0, 0, 123, time.UTC) {
		t.Errorf("time %v", got.Values[8].Time())
	}
}

func TestDecodeRowTruncated(t *testing.T) {
	b := AppendRow(nil, sampleRow())
	for i := range len(b) {
		if _, _, err := DecodeRow(string(b[:i])); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%d of %d bytes: %v, want ErrCorrupt", i, len(b), err)
		}
	}
}

func FuzzDecodeRow(f *testing.F) {
	f.Add(AppendRow(nil, sampleRow()))
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := DecodeRow(string(b))
		if err != nil {
			return
		}
		if n > len(b) {
			t.Fatalf("took %d bytes of %d", n, len(b))
		}
		// What decodes encodes to bytes that decode to the same row.
		once := AppendRow(nil, &r)
		r2, _, err := DecodeRow(string(once))
		if err != nil {
			t.Fatalf("re-encoded row does not decode: %v", err)
		}
		if twice := AppendRow(nil, &r2); string(twice) != string(once) {
			t.Fatalf("round trip changed %x into %x", once, twice)
		}
	})
}

func TestParseType(t *testing.T) {
	for in, want := range map[string]Type{
		"text": Text, "Boolean": Boolean, "bool": Boolean, "int": Integer, "integer": Integer,
		"bigint": Bigint, "double  precision": Double, "float8": Double, "timestamptz": Timestamptz,
		"timestamp with time zone": Timestamptz, "jsonb": JSONB, "double precision[]": DoubleArray,
		"text[]": TextArray, "numeric": Numeric, "real": Real, "smallint": Smallint,
	} {
		if got, err := ParseType(in); err != nil || got != want {
			t.Errorf("ParseType(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "varchar", "json", "int[]", "timestamp"} {
		if _, err := ParseType(in); err == nil {
			t.Errorf("ParseType(%q): no error", in)
		}
	}
}

// TestValueSize: a row holds a Value a column; the arrays behind a pointer
// keep it at 48 bytes (it was 88 with their slices in it).
func TestValueSize(t *testing.T) {
	if n := unsafe.Sizeof(Value{}); n != 48 {
		t.Errorf("a Value takes %d bytes, want 48", n)
	}
	if v := FloatsValue(nil); v.Floats() != nil || v.Strs() != nil || (Value{}).Floats() != nil {
		t.Errorf("an empty array: %v %v", v.Floats(), v.Strs())
	}
}

// TestDecodeRowShapes: rows of several shapes, in turn, each decode with
// their own, one *Shape a shape however often it comes back (DecodeRow
// tries the last shape first: one of the same table and first columns is
// not taken for it).
func TestDecodeRowShapes(t *testing.T) {
	a := &Shape{Table: "t", Columns: []Column{{Name: "a", Type: Integer}}}
	ab := &Shape{Table: "t", Columns: []Column{{Name: "a", Type: Integer}, {Name: "b", Type: Text}}}
	a2 := &Shape{Table: "t", Columns: []Column{{Name: "a", Type: Bigint}}}
	rows := []*Row{
		{Shape: a, Values: []Value{{Int: 1}}},
		{Shape: ab, Values: []Value{{Int: 2}, {Str: "x"}}},
		{Shape: ab, Values: []Value{{Int: 3}, {Null: true}}},
		{Shape: a2, Values: []Value{{Int: 4}}},
		{Shape: a, Values: []Value{{Int: 5}}},
	}
	seen := map[string]*Shape{}
	for i, r := range rows {
		got, _, err := DecodeRow(string(AppendRow(nil, r)))
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		if !reflect.DeepEqual(*got.Shape, *r.Shape) || !reflect.DeepEqual(got.Values, r.Values) {
			t.Errorf("row %d: %+v %+v, want %+v %+v", i, *got.Shape, got.Values, *r.Shape, r.Values)
		}
		key := fmt.Sprint(*r.Shape)
		if s, ok := seen[key]; ok && s != got.Shape {
			t.Errorf("row %d: a second *Shape for %s", i, key)
		}
		seen[key] = got.Shape
	}
}
