package simulator

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"firehose/internal/spbwire"
)

// TestSparkplugEncoderMatchesTahu encodes messages of the fixtures that
// Eclipse Tahu's JavaScript encoder (npm sparkplug-payload) wrote for
// package sparkplug (sparkplug/testdata/gen.js) and compares the bytes: an
// encoder independent of ours, read as files (the simulator imports no
// server package).
func TestSparkplugEncoderMatchesTahu(t *testing.T) {
	const t0 = 1700000000000
	for _, tc := range []struct {
		name    string
		file    string
		ts, seq uint64
		metrics []spMetric
	}{
		{"NBIRTH with bdSeq and aliases", "unknown-alias-00-NBIRTH.bin", t0, 0, []spMetric{
			{name: "bdSeq", datatype: spbwire.UInt64, vtype: spbwire.UInt64, value: 0},
			{name: "a", alias: 1, datatype: spbwire.Int16, vtype: spbwire.Int16, value: 1},
			{name: "b", alias: 2, datatype: spbwire.Int16, vtype: spbwire.Int16, value: 2},
		}},
		{"NDATA by alias, a negative Int16", "unknown-alias-01-NDATA.bin", t0 + 1000, 1, []spMetric{
			{alias: 1, datatype: spbwire.Int16, vtype: spbwire.Int16, value: -7},
			{alias: 7, datatype: spbwire.Int16, vtype: spbwire.Int16, value: 9},
		}},
		{"NDATA at seq 255, UInt16", "seq-01-NDATA.bin", t0 + 1000, 255, []spMetric{
			{alias: 1, datatype: spbwire.UInt16, vtype: spbwire.UInt16, value: 2},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("..", "sparkplug", "testdata", "fixtures", tc.file))
			if err != nil {
				t.Skipf("fixture: %v", err)
			}
			got := appendSparkplug(nil, tc.ts, tc.seq, true, tc.metrics)
			if !bytes.Equal(got, want) {
				t.Errorf("encoded\n%x\nTahu's\n%x", got, want)
			}
		})
	}
}

// decodedMetric is a metric as TestSparkplugEncoderDatatypes reads it back.
type decodedMetric struct {
	name     string
	alias    uint64
	datatype uint64
	field    protowire.Number // the value's field
	raw      uint64
}

// decodeSpPayload reads a payload with protowire alone, field by field.
func decodeSpPayload(t *testing.T, b []byte) (ts, seq uint64, hasSeq bool, ms []decodedMetric) {
	t.Helper()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == spbwire.PayloadTimestamp && typ == protowire.VarintType:
			ts, n = protowire.ConsumeVarint(b)
		case num == spbwire.PayloadSeq && typ == protowire.VarintType:
			seq, n = protowire.ConsumeVarint(b)
			hasSeq = true
		case num == spbwire.PayloadMetrics && typ == protowire.BytesType:
			var mb []byte
			mb, n = protowire.ConsumeBytes(b)
			var m decodedMetric
			for len(mb) > 0 {
				mn, mt, k := protowire.ConsumeTag(mb)
				mb = mb[k:]
				switch mt {
				case protowire.BytesType:
					var s []byte
					s, k = protowire.ConsumeBytes(mb)
					m.name = string(s)
				case protowire.VarintType:
					var v uint64
					v, k = protowire.ConsumeVarint(mb)
					switch mn {
					case spbwire.MetricAlias:
						m.alias = v
					case spbwire.MetricDatatype:
						m.datatype = v
					default:
						m.field, m.raw = mn, v
					}
				case protowire.Fixed32Type:
					var v uint32
					v, k = protowire.ConsumeFixed32(mb)
					m.field, m.raw = mn, uint64(v)
				case protowire.Fixed64Type:
					m.raw, k = protowire.ConsumeFixed64(mb)
					m.field = mn
				default:
					t.Fatalf("metric field %d: wire type %d", mn, mt)
				}
				if k < 0 {
					t.Fatalf("metric field %d: %v", mn, protowire.ParseError(k))
				}
				mb = mb[k:]
			}
			ms = append(ms, m)
		default:
			t.Fatalf("payload field %d, wire type %d", num, typ)
		}
		if n < 0 {
			t.Fatalf("field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return ts, seq, hasSeq, ms
}

// TestSparkplugEncoderDatatypes reads back a birth of every datatype the
// edge nodes use: each value in the field of its datatype, signed integers
// as Tahu sends them, and a DATA by alias alone.
func TestSparkplugEncoderDatatypes(t *testing.T) {
	k := len(spDatatypes)
	birth := spMetrics(0, 21.5, 7, k, true)
	ts, seq, hasSeq, got := decodeSpPayload(t, appendSparkplug(nil, 1764600000123, 7, true, birth))
	if ts != 1764600000123 || seq != 7 || !hasSeq || len(got) != k {
		t.Fatalf("ts %d, seq %d (%v), %d metrics", ts, seq, hasSeq, len(got))
	}
	field := map[uint32]protowire.Number{spbwire.Int8: spbwire.MetricIntValue, spbwire.Int16: spbwire.MetricIntValue,
		spbwire.Int32: spbwire.MetricIntValue, spbwire.UInt8: spbwire.MetricIntValue, spbwire.UInt16: spbwire.MetricIntValue,
		spbwire.UInt32: spbwire.MetricIntValue, spbwire.Int64: spbwire.MetricLongValue, spbwire.UInt64: spbwire.MetricLongValue,
		spbwire.Float: spbwire.MetricFloatValue, spbwire.Double: spbwire.MetricDoubleValue, spbwire.Boolean: spbwire.MetricBooleanValue}
	for i, m := range got {
		dt := spDatatypes[i]
		if m.name != metricName(i) || m.alias != spAlias(0, i) || m.datatype != uint64(dt) || m.field != field[dt] {
			t.Errorf("metric %d: %+v, want name %s, alias %d, datatype %d in field %d", i, m, metricName(i), spAlias(0, i), dt, field[dt])
		}
		v := birth[i].value
		var back float64
		switch dt {
		case spbwire.Int8, spbwire.Int16, spbwire.Int32:
			back = float64(int32(uint32(m.raw)))
		case spbwire.Int64:
			back = float64(int64(m.raw))
		case spbwire.Float:
			back = float64(math.Float32frombits(uint32(m.raw)))
		case spbwire.Double:
			back = math.Float64frombits(m.raw)
		default:
			back = float64(m.raw)
		}
		if back != v {
			t.Errorf("metric %d (datatype %d): %v back, sent %v", i, dt, back, v)
		}
	}
	data := spMetrics(2, 21.5, 8, 2, false)
	_, _, _, got = decodeSpPayload(t, appendSparkplug(nil, 1, 8, true, data))
	if len(got) != 2 || got[0].name != "" || got[0].datatype != 0 || got[1].alias != spAlias(2, 1) {
		t.Errorf("DATA metrics %+v: want aliases alone", got)
	}
	_, _, hasSeq, got = decodeSpPayload(t, appendSparkplug(nil, 1, 0, false, nil))
	if hasSeq || len(got) != 0 {
		t.Error("an NDEATH payload has a seq or metrics")
	}
}

func TestIsRebirthRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"rebirth true", appendSparkplug(nil, 1, 0, false, []spMetric{{name: spRebirth, datatype: spbwire.Boolean, vtype: spbwire.Boolean, value: 1}}), true},
		{"rebirth false", appendSparkplug(nil, 1, 0, false, []spMetric{{name: spRebirth, datatype: spbwire.Boolean, vtype: spbwire.Boolean, value: 0}}), false},
		{"another metric", appendSparkplug(nil, 1, 0, false, []spMetric{{name: "Node Control/Reboot", datatype: spbwire.Boolean, vtype: spbwire.Boolean, value: 1}}), false},
		{"garbage", []byte{0xff, 0xff, 0x01}, false},
		{"empty", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := isRebirthRequest(tc.p); got != tc.want {
				t.Errorf("isRebirthRequest = %v, want %v", got, tc.want)
			}
		})
	}
}
