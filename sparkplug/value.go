package sparkplug

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"

	"firehose/internal/spbwire"
)

// DataType is a Sparkplug B datatype number (specification 3.0, section
// 6.4.16), as carried in Metric.datatype and PropertyValue.type.
type DataType uint32

// The datatypes of the specification (their codes: spbwire).
const (
	Unknown         DataType = spbwire.Unknown
	Int8            DataType = spbwire.Int8
	Int16           DataType = spbwire.Int16
	Int32           DataType = spbwire.Int32
	Int64           DataType = spbwire.Int64
	UInt8           DataType = spbwire.UInt8
	UInt16          DataType = spbwire.UInt16
	UInt32          DataType = spbwire.UInt32
	UInt64          DataType = spbwire.UInt64
	Float           DataType = spbwire.Float
	Double          DataType = spbwire.Double
	Boolean         DataType = spbwire.Boolean
	String          DataType = spbwire.String
	DateTime        DataType = spbwire.DateTime // ms since the Unix epoch, in long_value
	Text            DataType = spbwire.Text
	UUID            DataType = spbwire.UUID
	DataSet         DataType = spbwire.DataSet
	Bytes           DataType = spbwire.Bytes
	File            DataType = spbwire.File
	Template        DataType = spbwire.Template
	PropertySet     DataType = spbwire.PropertySet     // PropertyValue only
	PropertySetList DataType = spbwire.PropertySetList // PropertyValue only
	Int8Array       DataType = spbwire.Int8Array       // arrays: bytes_value, packed little-endian
	Int16Array      DataType = spbwire.Int16Array
	Int32Array      DataType = spbwire.Int32Array
	Int64Array      DataType = spbwire.Int64Array
	UInt8Array      DataType = spbwire.UInt8Array
	UInt16Array     DataType = spbwire.UInt16Array
	UInt32Array     DataType = spbwire.UInt32Array
	UInt64Array     DataType = spbwire.UInt64Array
	FloatArray      DataType = spbwire.FloatArray
	DoubleArray     DataType = spbwire.DoubleArray
	BooleanArray    DataType = spbwire.BooleanArray  // a uint32 count, then the bits, LSB first
	StringArray     DataType = spbwire.StringArray   // NUL-terminated UTF-8 strings
	DateTimeArray   DataType = spbwire.DateTimeArray // int64 ms
)

var dataTypeNames = [...]string{
	"Unknown", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
	"Float", "Double", "Boolean", "String", "DateTime", "Text", "UUID", "DataSet", "Bytes",
	"File", "Template", "PropertySet", "PropertySetList", "Int8Array", "Int16Array",
	"Int32Array", "Int64Array", "UInt8Array", "UInt16Array", "UInt32Array", "UInt64Array",
	"FloatArray", "DoubleArray", "BooleanArray", "StringArray", "DateTimeArray",
}

// String returns the specification's name of t, or "DataType(n)".
func (t DataType) String() string {
	if int(t) < len(dataTypeNames) {
		return dataTypeNames[t]
	}
	return "DataType(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// Known reports whether t is a datatype of the specification other than Unknown.
func (t DataType) Known() bool { return t > Unknown && t <= DateTimeArray }

// Numeric reports whether values of t convert to a float64: the integer
// types, Float, Double, Boolean (0/1) and DateTime (ms).
func (t DataType) Numeric() bool { return t >= Int8 && t <= Boolean || t == DateTime }

// ErrValue is matched (errors.Is) by every error converting a metric's value:
// a value field that does not fit the datatype, or an out-of-range integer.
var ErrValue = errors.New("sparkplug metric value does not fit its datatype")

// Converted is a metric's value as firehose stores it.
type Converted struct {
	// Null is set for an is_null metric: no value at all.
	Null bool
	// Numeric is set when Number holds the value: numeric datatypes only.
	Numeric bool
	// Number is the value of a numeric datatype. Signed integers carried in
	// uint32/uint64 fields are sign-extended; Boolean is 0 or 1; DateTime is
	// ms since the Unix epoch. Float NaN and ±Inf are kept.
	Number float64
	// Inexact is set when Number is not exactly the value sent: a UInt64,
	// Int64 or DateTime beyond ±2^53, which float64 rounds.
	Inexact bool
	// Other is the value of a non-numeric datatype, ready for encoding/json:
	// a string (String, Text, UUID), []byte (Bytes, File, and the raw
	// protobuf of DataSet and Template, encoded by encoding/json as base64),
	// or a slice for the array types ([]int64, []uint64, []float64, []bool,
	// []string). Float NaN/Inf inside FloatArray/DoubleArray are not JSON:
	// they come as nil elements of a []any.
	Other any
}

const maxExact = 1 << 53

// Convert turns m's value into what firehose stores, by datatype dt (the
// metric's own, or the one its birth certificate gave when a DATA message
// left it out). It accepts either int_value or long_value for every integer
// datatype, as encoders differ (Tahu's JavaScript puts UInt32 in long_value,
// the specification in int_value).
func Convert(dt DataType, m *Metric) (Converted, error) {
	if m.IsNull {
		return Converted{Null: true}, nil
	}
	bad := func(format string, args ...any) (Converted, error) {
		return Converted{}, fmt.Errorf("%s: %s: %w", dt, fmt.Sprintf(format, args...), ErrValue)
	}
	kind := func(k ...ValueKind) bool {
		for _, x := range k {
			if m.Kind == x {
				return true
			}
		}
		return false
	}
	switch dt {
	case Int8, Int16, Int32:
		if !kind(KindInt, KindLong) {
			return bad("value in %s", m.Kind)
		}
		bits := [...]uint{Int8: 8, Int16: 16, Int32: 32}[dt]
		v, ok := signed(m.Uint, m.Kind, bits)
		if !ok {
			return bad("%d out of range", m.Uint)
		}
		return Converted{Numeric: true, Number: float64(v)}, nil
	case Int64:
		if !kind(KindInt, KindLong) {
			return bad("value in %s", m.Kind)
		}
		v := int64(m.Uint)
		if m.Kind == KindInt {
			v = int64(int32(uint32(m.Uint)))
		}
		return Converted{Numeric: true, Number: float64(v), Inexact: v > maxExact || v < -maxExact}, nil
	case UInt8, UInt16, UInt32:
		if !kind(KindInt, KindLong) {
			return bad("value in %s", m.Kind)
		}
		limit := [...]uint64{UInt8: math.MaxUint8, UInt16: math.MaxUint16, UInt32: math.MaxUint32}[dt]
		if m.Uint > limit {
			return bad("%d out of range", m.Uint)
		}
		return Converted{Numeric: true, Number: float64(m.Uint)}, nil
	case UInt64, DateTime:
		if !kind(KindInt, KindLong) {
			return bad("value in %s", m.Kind)
		}
		return Converted{Numeric: true, Number: float64(m.Uint), Inexact: m.Uint > maxExact}, nil
	case Float, Double:
		if !kind(KindFloat, KindDouble) {
			return bad("value in %s", m.Kind)
		}
		return Converted{Numeric: true, Number: m.Float}, nil
	case Boolean:
		if !kind(KindBoolean) {
			return bad("value in %s", m.Kind)
		}
		return Converted{Numeric: true, Number: float64(m.Uint)}, nil
	case String, Text, UUID:
		if !kind(KindString) {
			return bad("value in %s", m.Kind)
		}
		return Converted{Other: m.String}, nil
	case Bytes, File:
		if !kind(KindBytes) {
			return bad("value in %s", m.Kind)
		}
		return Converted{Other: m.Bytes}, nil
	case DataSet:
		if !kind(KindDataSet) {
			return bad("value in %s", m.Kind)
		}
		return Converted{Other: m.Bytes}, nil
	case Template:
		if !kind(KindTemplate) {
			return bad("value in %s", m.Kind)
		}
		return Converted{Other: m.Bytes}, nil
	}
	if dt >= Int8Array && dt <= DateTimeArray {
		if !kind(KindBytes) {
			return bad("value in %s", m.Kind)
		}
		v, err := array(dt, m.Bytes)
		if err != nil {
			return bad("%v", err)
		}
		return Converted{Other: v}, nil
	}
	// Unknown, PropertySet, PropertySetList and numbers past the
	// specification: keep what was sent, undecoded.
	switch m.Kind {
	case KindNone:
		return Converted{Null: true}, nil
	case KindString:
		return Converted{Other: m.String}, nil
	case KindFloat, KindDouble:
		return Converted{Other: jsonFloat(m.Float)}, nil
	case KindInt, KindLong, KindBoolean:
		return Converted{Other: m.Uint}, nil
	}
	return Converted{Other: m.Bytes}, nil
}

// signed decodes a signed integer of the given width carried in an unsigned
// field. Encoders differ: Tahu's sign-extend to the field's width (-1 as
// Int8 is int_value 0xFFFFFFFF), others send the type's own bits (0xFF).
// Both are accepted; anything else is out of range.
func signed(u uint64, k ValueKind, bits uint) (int64, bool) {
	lo, hi := -int64(1)<<(bits-1), int64(1)<<(bits-1)-1
	var ext int64
	if k == KindInt {
		ext = int64(int32(uint32(u)))
	} else {
		ext = int64(u)
	}
	if ext >= lo && ext <= hi {
		return ext, true
	}
	if u < 1<<bits {
		return int64(u<<(64-bits)) >> (64 - bits), true
	}
	return 0, false
}

func jsonFloat(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return f
}

// array decodes the bytes_value of an array datatype.
func array(dt DataType, b []byte) (any, error) {
	width := map[DataType]int{
		Int8Array: 1, Int16Array: 2, Int32Array: 4, Int64Array: 8, UInt8Array: 1, UInt16Array: 2,
		UInt32Array: 4, UInt64Array: 8, FloatArray: 4, DoubleArray: 8, DateTimeArray: 8,
	}[dt]
	if width > 0 && len(b)%width != 0 {
		return nil, fmt.Errorf("%d bytes is not a whole number of %d-byte elements", len(b), width)
	}
	le := binary.LittleEndian
	switch dt {
	case Int8Array, Int16Array, Int32Array, Int64Array, DateTimeArray:
		out := make([]int64, 0, len(b)/width)
		for i := 0; i < len(b); i += width {
			switch width {
			case 1:
				out = append(out, int64(int8(b[i])))
			case 2:
				out = append(out, int64(int16(le.Uint16(b[i:]))))
			case 4:
				out = append(out, int64(int32(le.Uint32(b[i:]))))
			default:
				out = append(out, int64(le.Uint64(b[i:])))
			}
		}
		return out, nil
	case UInt8Array, UInt16Array, UInt32Array, UInt64Array:
		out := make([]uint64, 0, len(b)/width)
		for i := 0; i < len(b); i += width {
			switch width {
			case 1:
				out = append(out, uint64(b[i]))
			case 2:
				out = append(out, uint64(le.Uint16(b[i:])))
			case 4:
				out = append(out, uint64(le.Uint32(b[i:])))
			default:
				out = append(out, le.Uint64(b[i:]))
			}
		}
		return out, nil
	case FloatArray, DoubleArray:
		out := make([]any, 0, len(b)/width)
		for i := 0; i < len(b); i += width {
			if width == 4 {
				out = append(out, jsonFloat(float64(math.Float32frombits(le.Uint32(b[i:])))))
			} else {
				out = append(out, jsonFloat(math.Float64frombits(le.Uint64(b[i:]))))
			}
		}
		return out, nil
	case BooleanArray:
		if len(b) < 4 {
			return nil, fmt.Errorf("%d bytes, want a 4-byte count first", len(b))
		}
		n := uint64(le.Uint32(b))
		if n > uint64(len(b)-4)*8 {
			return nil, fmt.Errorf("count %d for %d bytes of bits", n, len(b)-4)
		}
		out := make([]bool, n)
		for i := range out {
			out[i] = b[4+i/8]&(1<<(uint(i)%8)) != 0
		}
		return out, nil
	case StringArray:
		out := []string{}
		for len(b) > 0 {
			i := 0
			for i < len(b) && b[i] != 0 {
				i++
			}
			if i == len(b) {
				return nil, errors.New("last string not NUL-terminated")
			}
			out = append(out, string(b[:i]))
			b = b[i+1:]
		}
		return out, nil
	}
	return nil, fmt.Errorf("not an array datatype")
}

var kindNames = [...]string{"no value field", "int_value", "long_value", "float_value", "double_value",
	"boolean_value", "string_value", "bytes_value", "dataset_value", "template_value", "extension_value",
	"propertyset_value", "propertysets_value"}

// String names the protobuf field of k.
func (k ValueKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "ValueKind(" + strconv.Itoa(int(k)) + ")"
}
