package sparkplug

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"firehose/internal/spbwire"
)

// FuzzDecodeDifferential feeds the same bytes to DecodePayload and to
// proto.Unmarshal into a dynamic message of sparkplug_b.proto
// (proto_test.go), and asserts they agree:
//
//   - DecodePayload accepts: protobuf accepts too, with the values kept raw
//     (DataSet, Template, extension values) declared bytes; the timestamp,
//     seq, uuid, body and every metric's name, alias, timestamp, datatype,
//     flags, presence of metadata and properties, and value agree, the raw
//     ones byte for byte. Where protobuf accepts as published too, the
//     value's oneof member agrees with it.
//   - DecodePayload refuses malformed protobuf (a truncated or overlong
//     field, a bad tag or group): protobuf refuses too.
//   - DecodePayload refuses what protobuf accepts only for a reason of
//     deliberateRefusals.
//
// And the one way round in which protobuf refuses what DecodePayload
// accepts: protobuf decodes DataSet values, extension values and a
// template's parameters, which DecodePayload keeps raw without looking
// inside (a template's metrics are checked: the bytes still decode as the
// schema read that way says).
//
// And one accepted input that is not protobuf: a tag whose field number is
// above protowire.MaxValidNumber (2^29-1) but fits an int32. protowire's
// ConsumeTag, which DecodePayload walks with, takes it; proto.Unmarshal
// refuses it. Such a field is never a known one, so DecodePayload skips it
// as an unknown field: harmless, and kept as it was (overlargeNumber).
//
// Not compared: the contents of metadata and properties. protobuf merges
// a message field that comes twice (properties' keys and values append)
// where DecodePayload keeps the last; only their presence is compared.
func FuzzDecodeDifferential(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDifferential(t, b)
	})
}

// deliberateRefusals are the refusals of DecodePayload that protobuf does
// not make, each with the text its DecodeError carries.
var deliberateRefusals = []struct{ why, text string }{
	// protobuf keeps a known field of another wire type as an unknown
	// field; DecodePayload refuses rather than lose the field silently.
	{"a known field with another wire type", "wire type "},
	// proto2 strings are not checked; PostgreSQL text must be UTF-8.
	{"text not UTF-8", "not valid UTF-8"},
	// PostgreSQL text holds no NUL.
	{"a metric name with a NUL byte", "contains a NUL byte"},
	// Bounds on what one payload may cost (decode.go).
	{"a metric name longer than MaxNameBytes", "bytes, more than " + strconv.Itoa(MaxNameBytes)},
	{"more than MaxMetrics metrics", "more than " + strconv.Itoa(MaxMetrics) + " metrics"},
	{"nesting deeper than MaxDepth", "nested more than " + strconv.Itoa(MaxDepth) + " deep"},
	// keys[i] names values[i]: a set without pairs means nothing.
	{"property keys and values differing in number", " keys for "},
}

// isParseError reports whether err is protowire's: malformed protobuf.
func isParseError(err error) bool {
	for code := -1; code >= -6; code-- {
		if errors.Is(err, protowire.ParseError(code)) {
			return true
		}
	}
	return false
}

func checkDifferential(t *testing.T, b []byte) {
	t.Helper()
	p, err := DecodePayload(b)
	published := dynamicpb.NewMessage(tahuSchema(false).Messages().ByName("Payload"))
	errPublished := proto.Unmarshal(b, published)
	asDecoded := dynamicpb.NewMessage(tahuSchema(true).Messages().ByName("Payload"))
	errAsDecoded := proto.Unmarshal(b, asDecoded)

	if err != nil {
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("DecodePayload error %v is no *DecodeError", err)
		}
		if isParseError(err) {
			if errPublished == nil {
				t.Fatalf("DecodePayload refuses malformed protobuf (%v) that proto.Unmarshal accepts", err)
			}
			return
		}
		for _, r := range deliberateRefusals {
			if strings.Contains(de.Err.Error(), r.text) {
				return
			}
		}
		t.Fatalf("DecodePayload refuses for a reason not in deliberateRefusals: %v (proto.Unmarshal: %v)", err, errPublished)
	}
	if errAsDecoded != nil {
		if overlargeNumber(b, asDecoded.Descriptor()) {
			return
		}
		t.Fatalf("DecodePayload accepts what proto.Unmarshal refuses, even with the raw values as bytes: %v", errAsDecoded)
	}
	comparePayload(t, p, asDecoded.ProtoReflect(), true)
	if errPublished == nil {
		comparePayload(t, p, published.ProtoReflect(), false)
	}
}

// overlargeNumber reports whether the message b (of md, in the schema as
// decoded) or one DecodePayload parses inside it has a tag whose field
// number is above protowire.MaxValidNumber: the one input DecodePayload
// accepts and protobuf does not.
func overlargeNumber(b []byte, md protoreflect.MessageDescriptor) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		if num > protowire.MaxValidNumber {
			return true
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return false
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if fd == nil {
			continue
		}
		sub := fd.Message()
		if fd.Name() == "template_value" { // bytes in the schema, but its metrics are parsed
			sub = md.ParentFile().Messages().ByName("Payload").Messages().ByName("Template")
		}
		if sub != nil && overlargeNumber(v, sub) {
			return true
		}
	}
	return false
}

// get returns the field name of m, and whether it is set.
func get(m protoreflect.Message, name string) (protoreflect.Value, bool) {
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
	return m.Get(fd), m.Has(fd)
}

// comparePayload compares what DecodePayload gave with what proto.Unmarshal
// gave; asDecoded says m is of the schema with the raw values as bytes.
func comparePayload(t *testing.T, p *Payload, m protoreflect.Message, asDecoded bool) {
	t.Helper()
	schema := "as published"
	if asDecoded {
		schema = "as decoded"
	}
	if v, ok := get(m, "timestamp"); ok != p.HasTimestamp || v.Uint() != p.Timestamp {
		t.Errorf("%s: timestamp %d (%v), DecodePayload %d (%v)", schema, v.Uint(), ok, p.Timestamp, p.HasTimestamp)
	}
	if v, ok := get(m, "seq"); ok != p.HasSeq || v.Uint() != p.Seq {
		t.Errorf("%s: seq %d (%v), DecodePayload %d (%v)", schema, v.Uint(), ok, p.Seq, p.HasSeq)
	}
	if v, _ := get(m, "uuid"); v.String() != p.UUID {
		t.Errorf("%s: uuid %q, DecodePayload %q", schema, v.String(), p.UUID)
	}
	if v, _ := get(m, "body"); !bytes.Equal(v.Bytes(), p.Body) {
		t.Errorf("%s: body %x, DecodePayload %x", schema, v.Bytes(), p.Body)
	}
	list, _ := get(m, "metrics")
	if list.List().Len() != len(p.Metrics) {
		t.Fatalf("%s: %d metrics, DecodePayload %d", schema, list.List().Len(), len(p.Metrics))
	}
	for i := range p.Metrics {
		mm := list.List().Get(i).Message()
		compareMetric(t, schema+": metrics["+strconv.Itoa(i)+"]", &p.Metrics[i], mm, asDecoded)
		if asDecoded {
			checkRawTemplate(t, schema+": metrics["+strconv.Itoa(i)+"]", mm)
		}
	}
}

func compareMetric(t *testing.T, at string, m *Metric, pm protoreflect.Message, asDecoded bool) {
	t.Helper()
	for _, f := range []struct {
		name string
		has  bool
		u    uint64
	}{
		{"alias", m.HasAlias, m.Alias},
		{"timestamp", m.HasTimestamp, m.Timestamp},
		{"datatype", m.HasDatatype, uint64(m.Datatype)},
	} {
		if v, ok := get(pm, f.name); ok != f.has || v.Uint() != f.u {
			t.Errorf("%s: %s %d (%v), DecodePayload %d (%v)", at, f.name, v.Uint(), ok, f.u, f.has)
		}
	}
	if v, ok := get(pm, "name"); ok != m.HasName || v.String() != m.Name {
		t.Errorf("%s: name %q (%v), DecodePayload %q (%v)", at, v.String(), ok, m.Name, m.HasName)
	}
	for _, f := range []struct {
		name string
		v    bool
	}{{"is_historical", m.IsHistorical}, {"is_transient", m.IsTransient}, {"is_null", m.IsNull}} {
		if v, _ := get(pm, f.name); v.Bool() != f.v {
			t.Errorf("%s: %s %v, DecodePayload %v", at, f.name, v.Bool(), f.v)
		}
	}
	if _, ok := get(pm, "metadata"); ok != (m.Metadata != nil) {
		t.Errorf("%s: metadata present %v, DecodePayload %v", at, ok, m.Metadata != nil)
	}
	if _, ok := get(pm, "properties"); ok != (m.Properties != nil) {
		t.Errorf("%s: properties present %v, DecodePayload %v", at, ok, m.Properties != nil)
	}

	fd := pm.WhichOneof(pm.Descriptor().Oneofs().ByName("value"))
	kinds := map[protoreflect.Name]ValueKind{
		"int_value": KindInt, "long_value": KindLong, "float_value": KindFloat, "double_value": KindDouble,
		"boolean_value": KindBoolean, "string_value": KindString, "bytes_value": KindBytes,
		"dataset_value": KindDataSet, "template_value": KindTemplate, "extension_value": KindExtension,
	}
	kind := KindNone
	if fd != nil {
		kind = kinds[fd.Name()]
	}
	if kind != m.Kind {
		t.Fatalf("%s: value in %s, DecodePayload %s", at, kind, m.Kind)
	}
	if fd == nil {
		return
	}
	v := pm.Get(fd)
	same := true
	switch m.Kind {
	case KindInt, KindLong:
		same = v.Uint() == m.Uint
	case KindBoolean:
		same = v.Bool() == (m.Uint == 1) && m.Uint <= 1
	case KindFloat, KindDouble:
		same = math.Float64bits(v.Float()) == math.Float64bits(m.Float) || math.IsNaN(v.Float()) && math.IsNaN(m.Float)
	case KindString:
		same = v.String() == m.String
	case KindBytes:
		same = bytes.Equal(v.Bytes(), m.Bytes)
	default: // kept raw: bytes in the schema as decoded
		same = !asDecoded || bytes.Equal(v.Bytes(), m.Bytes)
	}
	if !same {
		t.Errorf("%s: %s %v, DecodePayload %+v", at, fd.Name(), v, m)
	}
}

// checkRawTemplate checks that a metric's template_value (bytes in the
// schema as decoded) decodes as a template of metrics, as DecodePayload
// checked it, and so on down its metrics.
func checkRawTemplate(t *testing.T, at string, pm protoreflect.Message) {
	t.Helper()
	fd := pm.WhichOneof(pm.Descriptor().Oneofs().ByName("value"))
	if fd == nil || fd.Name() != "template_value" {
		return
	}
	tm := dynamicpb.NewMessage(tahuSchema(true).Messages().ByName("Payload").Messages().ByName("Template"))
	if err := proto.Unmarshal(pm.Get(fd).Bytes(), tm); err != nil {
		t.Fatalf("%s: DecodePayload accepts a template that proto.Unmarshal refuses: %v", at, err)
	}
	list, _ := get(tm, "metrics")
	for i := range list.List().Len() {
		checkRawTemplate(t, at+".template_value.metrics["+strconv.Itoa(i)+"]", list.List().Get(i).Message())
	}
}

// addSeeds adds the fuzz targets' seeds: every payload Tahu's encoder wrote
// (testdata/fixtures), the rebirth request, and payloads at the edges of
// what DecodePayload accepts.
func addSeeds(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "fixtures", "*.bin"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no fixtures to seed from: %v", err)
	}
	files = append(files, filepath.Join("testdata", "rebirth.bin"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add(payloadOf(props8()))
	for _, m := range edgeMetrics() {
		f.Add(payloadOf(m))
	}
}

// edgeMetrics are metrics at the edges of the differential: each value
// kind, values kept raw (garbage inside a DataSet: protobuf refuses it),
// a template, and the deliberate refusals.
func edgeMetrics() [][]byte {
	tag := protowire.AppendTag
	str := func(b []byte, num protowire.Number, s string) []byte {
		return protowire.AppendString(tag(b, num, protowire.BytesType), s)
	}
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(tag(b, num, protowire.VarintType), v)
	}
	msg := func(b []byte, num protowire.Number, m []byte) []byte {
		return protowire.AppendBytes(tag(b, num, protowire.BytesType), m)
	}
	named := func(dt uint64) []byte {
		return varint(str(nil, spbwire.MetricName, "m"), spbwire.MetricDatatype, dt)
	}
	garbage := []byte{0x0a, 0x05, 'x'} // a length past the end
	template := msg(str(nil, spbwire.TemplateVersion, "v1"), spbwire.TemplateMetrics, named(spbwire.Int32))
	return [][]byte{
		varint(named(spbwire.Int8), spbwire.MetricIntValue, 0xffffffff),
		varint(named(spbwire.Int64), spbwire.MetricLongValue, math.MaxUint64),
		protowire.AppendFixed32(tag(named(spbwire.Float), spbwire.MetricFloatValue, protowire.Fixed32Type), 0x7fc00001),
		protowire.AppendFixed64(tag(named(spbwire.Double), spbwire.MetricDoubleValue, protowire.Fixed64Type), math.Float64bits(-0.0)),
		varint(named(spbwire.Boolean), spbwire.MetricBooleanValue, 2),
		str(named(spbwire.String), spbwire.MetricStringValue, "héllo"),
		msg(named(spbwire.Bytes), spbwire.MetricBytesValue, []byte{0, 1, 2}),
		msg(named(spbwire.DataSet), spbwire.MetricDataSetValue, garbage),
		msg(named(spbwire.Template), spbwire.MetricTemplateValue, template),
		msg(named(spbwire.Template), spbwire.MetricTemplateValue, msg(nil, spbwire.TemplateParameters, garbage)),
		msg(named(spbwire.Unknown), spbwire.MetricExtensionValue, garbage),
		// Two values: the last one counts, in both.
		varint(varint(named(spbwire.Int8), spbwire.MetricIntValue, 1), spbwire.MetricLongValue, 2),
		// Metadata and properties, twice.
		msg(msg(named(spbwire.Int8), spbwire.MetricMetadata, str(nil, spbwire.MetaDataMD5, "x")), spbwire.MetricMetadata, nil),
		msg(named(spbwire.Int8), spbwire.MetricProperties, msg(str(nil, spbwire.PropertySetKeys, "k"), spbwire.PropertySetValues,
			msg(nil, spbwire.PropertyValueExtensionValue, garbage))),
		// Deliberate refusals.
		str(nil, spbwire.MetricName, "\xff"),
		str(nil, spbwire.MetricName, "a\x00b"),
		varint(nil, spbwire.MetricName, 1),
		msg(named(spbwire.Int8), spbwire.MetricProperties, str(nil, spbwire.PropertySetKeys, "k")),
		// An unknown field and a group.
		append(varint(named(spbwire.Int8), 99, 1), 0xa3, 0x06, 0xa4, 0x06),
	}
}
