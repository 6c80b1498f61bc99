package simulator

import (
	"math"

	"google.golang.org/protobuf/encoding/protowire"

	"firehose/internal/spbwire"
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
// timestamp (ms), the metrics and, when hasSeq, seq. An NDEATH has no seq.
func appendSparkplug(b []byte, ts uint64, seq uint64, hasSeq bool, metrics []spMetric) []byte {
	b = protowire.AppendTag(b, spbwire.PayloadTimestamp, protowire.VarintType)
	b = protowire.AppendVarint(b, ts)
	var m []byte
	for i := range metrics {
		m = appendSpMetric(m[:0], &metrics[i])
		b = protowire.AppendTag(b, spbwire.PayloadMetrics, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	if hasSeq {
		b = protowire.AppendTag(b, spbwire.PayloadSeq, protowire.VarintType)
		b = protowire.AppendVarint(b, seq)
	}
	return b
}

// appendSpMetric appends one Payload.Metric: name, alias (0 is none),
// datatype, and the value in the field its datatype uses: int_value
// (uint32, signed types two's complement of 32 bits as Tahu sends them),
// long_value, float_value, double_value or boolean_value.
func appendSpMetric(b []byte, m *spMetric) []byte {
	if m.name != "" {
		b = protowire.AppendTag(b, spbwire.MetricName, protowire.BytesType)
		b = protowire.AppendString(b, m.name)
	}
	if m.alias != 0 {
		b = protowire.AppendTag(b, spbwire.MetricAlias, protowire.VarintType)
		b = protowire.AppendVarint(b, m.alias)
	}
	if m.datatype != 0 {
		b = protowire.AppendTag(b, spbwire.MetricDatatype, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.datatype))
	}
	switch m.vtype {
	case spbwire.Int8, spbwire.Int16, spbwire.Int32:
		b = protowire.AppendTag(b, spbwire.MetricIntValue, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(uint32(int32(m.value))))
	case spbwire.UInt8, spbwire.UInt16, spbwire.UInt32:
		b = protowire.AppendTag(b, spbwire.MetricIntValue, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(uint32(m.value)))
	case spbwire.Int64:
		b = protowire.AppendTag(b, spbwire.MetricLongValue, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(m.value)))
	case spbwire.UInt64:
		b = protowire.AppendTag(b, spbwire.MetricLongValue, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.value))
	case spbwire.Float:
		b = protowire.AppendTag(b, spbwire.MetricFloatValue, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(float32(m.value)))
	case spbwire.Boolean:
		b = protowire.AppendTag(b, spbwire.MetricBooleanValue, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(m.value != 0))
	default: // Double
		b = protowire.AppendTag(b, spbwire.MetricDoubleValue, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(m.value))
	}
	return b
}

// spDatatypes are the datatypes of metrics 0, 1, 2, ... of a node or
// device, cycling: several numeric datatypes, each encoded its own way.
var spDatatypes = []uint32{spbwire.Double, spbwire.Float, spbwire.UInt32, spbwire.Int64, spbwire.Int16, spbwire.Boolean, spbwire.Int8, spbwire.UInt16, spbwire.UInt64, spbwire.Int32, spbwire.UInt8}

// spValue is metric i's value of the datatype dt, from the sensor's value v:
// within the datatype's range.
func spValue(dt uint32, v float64, i int, seq uint64) float64 {
	switch dt {
	case spbwire.Boolean:
		return float64(seq % 2)
	case spbwire.Int8:
		return float64(int64(seq%200) - 100)
	case spbwire.UInt8:
		return float64(seq % 250)
	case spbwire.Int16:
		return math.Round(v*10) - 100
	case spbwire.UInt16, spbwire.UInt32, spbwire.UInt64:
		return math.Round(v*100) + float64(i)
	case spbwire.Int32, spbwire.Int64:
		return math.Round(v*100) - 1000 + float64(i)
	case spbwire.Float:
		return float64(float32(v + float64(i)))
	}
	return math.Round((v+float64(i))*1000) / 1000
}
