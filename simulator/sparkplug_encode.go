package simulator

import (
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Sparkplug B datatypes (sparkplug_b.proto DataType) the edge nodes use.
const (
	spInt8    uint32 = 1
	spInt16   uint32 = 2
	spInt32   uint32 = 3
	spInt64   uint32 = 4
	spUInt8   uint32 = 5
	spUInt16  uint32 = 6
	spUInt32  uint32 = 7
	spUInt64  uint32 = 8
	spFloat   uint32 = 9
	spDouble  uint32 = 10
	spBoolean uint32 = 11
)

// spMetric is one metric of a Sparkplug B payload as the edge nodes send
// it: by name (births) or by alias (data), and a numeric value of its
// datatype.
type spMetric struct {
	name     string // "" in DATA messages: the alias alone
	alias    uint64 // 0: none
	datatype uint32 // 0: none (DATA messages: the birth gave it)
	value    float64
	vtype    uint32 // the datatype that decides the value's field (datatype, or the birth's)
}

// appendSparkplug appends a Sparkplug B Payload (sparkplug_b.proto): the
// timestamp (field 1, ms), the metrics (field 2) and, when hasSeq, seq
// (field 3). An NDEATH has no seq.
func appendSparkplug(b []byte, ts uint64, seq uint64, hasSeq bool, metrics []spMetric) []byte {
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, ts)
	var m []byte
	for i := range metrics {
		m = appendSpMetric(m[:0], &metrics[i])
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	if hasSeq {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, seq)
	}
	return b
}

// appendSpMetric appends one Payload.Metric: name (1), alias (2; 0 is
// none), datatype
// (4) and the value in the field its datatype uses: int_value (10, uint32,
// signed types two's complement of 32 bits as Tahu sends them), long_value
// (11), float_value (12), double_value (13) or boolean_value (14).
func appendSpMetric(b []byte, m *spMetric) []byte {
	if m.name != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, m.name)
	}
	if m.alias != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, m.alias)
	}
	if m.datatype != 0 {
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.datatype))
	}
	switch m.vtype {
	case spInt8, spInt16, spInt32:
		b = protowire.AppendTag(b, 10, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(uint32(int32(m.value))))
	case spUInt8, spUInt16, spUInt32:
		b = protowire.AppendTag(b, 10, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(uint32(m.value)))
	case spInt64:
		b = protowire.AppendTag(b, 11, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(m.value)))
	case spUInt64:
		b = protowire.AppendTag(b, 11, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.value))
	case spFloat:
		b = protowire.AppendTag(b, 12, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(float32(m.value)))
	case spBoolean:
		b = protowire.AppendTag(b, 14, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(m.value != 0))
	default: // Double
		b = protowire.AppendTag(b, 13, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(m.value))
	}
	return b
}

// spDatatypes are the datatypes of metrics 0, 1, 2, ... of a node or
// device, cycling: several numeric datatypes, each encoded its own way.
var spDatatypes = []uint32{spDouble, spFloat, spUInt32, spInt64, spInt16, spBoolean, spInt8, spUInt16, spUInt64, spInt32, spUInt8}

// spValue is metric i's value of the datatype dt, from the sensor's value v:
// within the datatype's range.
func spValue(dt uint32, v float64, i int, seq uint64) float64 {
	switch dt {
	case spBoolean:
		return float64(seq % 2)
	case spInt8:
		return float64(int64(seq%200) - 100)
	case spUInt8:
		return float64(seq % 250)
	case spInt16:
		return math.Round(v*10) - 100
	case spUInt16, spUInt32, spUInt64:
		return math.Round(v*100) + float64(i)
	case spInt32, spInt64:
		return math.Round(v*100) - 1000 + float64(i)
	case spFloat:
		return float64(float32(v + float64(i)))
	}
	return math.Round((v+float64(i))*1000) / 1000
}
