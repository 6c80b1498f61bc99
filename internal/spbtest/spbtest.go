package spbtest

import (
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"firehose/internal/spbwire"
	"firehose/sparkplug"
)

// Metric is one metric of a test payload: a Double value, or (BdSeq) the
// Int64 bdSeq of a birth or death.
type Metric struct {
	Name  string // "" in DATA that uses the alias alone
	Alias uint64
	// HasAlias says Alias is set (alias 0 is valid).
	HasAlias bool
	Value    float64
}

// Payload encodes a payload with timestamp ts, seq (when seq >= 0) and the
// metrics, each a Double, preceded by a bdSeq metric (Int64) when bdSeq >= 0.
func Payload(ts time.Time, seq int, bdSeq int, metrics ...Metric) []byte {
	var p []byte
	p = protowire.AppendTag(p, spbwire.PayloadTimestamp, protowire.VarintType)
	p = protowire.AppendVarint(p, uint64(ts.UnixMilli()))
	if bdSeq >= 0 {
		var m []byte
		m = protowire.AppendTag(m, spbwire.MetricName, protowire.BytesType)
		m = protowire.AppendString(m, sparkplug.BdSeqMetric)
		m = protowire.AppendTag(m, spbwire.MetricDatatype, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(sparkplug.Int64))
		m = protowire.AppendTag(m, spbwire.MetricLongValue, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(bdSeq))
		p = protowire.AppendTag(p, spbwire.PayloadMetrics, protowire.BytesType)
		p = protowire.AppendBytes(p, m)
	}
	for _, mt := range metrics {
		var m []byte
		if mt.Name != "" {
			m = protowire.AppendTag(m, spbwire.MetricName, protowire.BytesType)
			m = protowire.AppendString(m, mt.Name)
		}
		if mt.HasAlias {
			m = protowire.AppendTag(m, spbwire.MetricAlias, protowire.VarintType)
			m = protowire.AppendVarint(m, mt.Alias)
		}
		m = protowire.AppendTag(m, spbwire.MetricDatatype, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(sparkplug.Double))
		m = protowire.AppendTag(m, spbwire.MetricDoubleValue, protowire.Fixed64Type)
		m = protowire.AppendFixed64(m, math.Float64bits(mt.Value))
		p = protowire.AppendTag(p, spbwire.PayloadMetrics, protowire.BytesType)
		p = protowire.AppendBytes(p, m)
	}
	if seq >= 0 {
		p = protowire.AppendTag(p, spbwire.PayloadSeq, protowire.VarintType)
		p = protowire.AppendVarint(p, uint64(seq))
	}
	return p
}

// Alias is a DATA metric given by its alias alone.
func Alias(alias uint64, v float64) Metric { return Metric{Alias: alias, HasAlias: true, Value: v} }

// Named is a BIRTH metric: its name and alias.
func Named(name string, alias uint64, v float64) Metric {
	return Metric{Name: name, Alias: alias, HasAlias: true, Value: v}
}
