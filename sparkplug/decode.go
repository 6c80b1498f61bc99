package sparkplug

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"firehose/internal/spbwire"
)

// Bounds on what one payload may hold. A payload past them is refused whole
// (errors.Is(err, ErrMalformed)) rather than decoded in part.
const (
	// MaxMetrics is the most metrics one payload (or one template) may carry.
	MaxMetrics = 10000
	// MaxNameBytes is the longest metric name, in bytes of UTF-8.
	MaxNameBytes = 1024
	// MaxDepth is how deep property sets and templates may nest.
	MaxDepth = 8
)

// ErrMalformed is matched (errors.Is) by every error about a topic or payload
// that does not follow the Sparkplug B specification or exceeds a bound.
var ErrMalformed = errors.New("malformed sparkplug message")

// DecodeError says which field of a payload could not be decoded and where.
type DecodeError struct {
	Field  string // the field's path, as metrics[3].properties.values[0]
	Offset int    // byte offset of the field's tag in the payload
	Err    error  // what was wrong
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("sparkplug payload: %s at offset %d: %v", e.Field, e.Offset, e.Err)
}

// Unwrap returns the cause.
func (e *DecodeError) Unwrap() error { return e.Err }

// Is makes every DecodeError match ErrMalformed.
func (e *DecodeError) Is(target error) bool { return target == ErrMalformed }

// Payload is a decoded Sparkplug B payload (sparkplug_b.proto Payload).
// Optional fields come with a Has flag, as proto2 has presence.
type Payload struct {
	Timestamp    uint64 // ms since the Unix epoch, when the message was sent
	HasTimestamp bool
	Metrics      []Metric
	Seq          uint64 // 0..255 on every message but NDEATH
	HasSeq       bool
	UUID         string
	Body         []byte
}

// ValueKind says which field of a metric's value oneof was set.
type ValueKind uint8

// The members of the value oneof of Metric, Parameter, DataSetValue and
// PropertyValue (not every message has every member).
const (
	KindNone            ValueKind = iota // no value field
	KindInt                              // int_value, uint32 on the wire
	KindLong                             // long_value, uint64 on the wire
	KindFloat                            // float_value
	KindDouble                           // double_value
	KindBoolean                          // boolean_value
	KindString                           // string_value
	KindBytes                            // bytes_value
	KindDataSet                          // dataset_value, kept as raw protobuf
	KindTemplate                         // template_value, kept as raw protobuf
	KindExtension                        // extension_value, kept as raw protobuf
	KindPropertySet                      // propertyset_value (PropertyValue only)
	KindPropertySetList                  // propertysets_value (PropertyValue only)
)

// Metric is one decoded metric (sparkplug_b.proto Payload.Metric). The value
// is as on the wire; Convert turns it into a number or a JSON-able value.
type Metric struct {
	Name         string
	HasName      bool
	Alias        uint64
	HasAlias     bool
	Timestamp    uint64 // ms since the Unix epoch, when the value was acquired
	HasTimestamp bool
	Datatype     DataType
	HasDatatype  bool
	IsHistorical bool
	IsTransient  bool
	IsNull       bool
	Metadata     *MetaData
	Properties   *Properties

	Kind ValueKind
	// Uint holds int_value, long_value, and boolean_value as 0/1.
	Uint uint64
	// Float holds float_value (widened exactly) and double_value.
	Float float64
	// String holds string_value.
	String string
	// Bytes holds bytes_value, or the raw protobuf of dataset_value,
	// template_value or extension_value (not decoded further).
	Bytes []byte
}

// MetaData is a metric's metadata (sparkplug_b.proto Payload.MetaData).
type MetaData struct {
	IsMultiPart bool   `json:"is_multi_part,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Size        uint64 `json:"size,omitempty"`
	Seq         uint64 `json:"seq,omitempty"`
	FileName    string `json:"file_name,omitempty"`
	FileType    string `json:"file_type,omitempty"`
	MD5         string `json:"md5,omitempty"`
	Description string `json:"description,omitempty"`
}

// Properties is a metric's properties: Keys[i] names Values[i].
type Properties struct {
	Keys   []string
	Values []PropertyValue
}

// PropertyValue is one property (sparkplug_b.proto Payload.PropertyValue).
type PropertyValue struct {
	Type   DataType
	IsNull bool
	Kind   ValueKind
	Uint   uint64 // int_value, long_value, boolean_value as 0/1
	Float  float64
	String string
	Set    *Properties  // KindPropertySet
	List   []Properties // KindPropertySetList
	Raw    []byte       // KindExtension
}

// field is one decoded key/value of a protobuf message.
type field struct {
	num protowire.Number
	typ protowire.Type
	off int    // absolute offset of the tag
	u   uint64 // varint, fixed32 or fixed64 value
	b   []byte // length-delimited value (aliases the input)
	bo  int    // absolute offset of b
}

// walk calls fn for each field of the message in b, which starts at offset
// base of the payload. Groups (deprecated, unused by Sparkplug) are skipped.
func walk(b []byte, base int, path string, fn func(f field) error) error {
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return &DecodeError{Field: path, Offset: base + off, Err: fmt.Errorf("tag: %w", protowire.ParseError(n))}
		}
		f := field{num: num, typ: typ, off: base + off}
		off += n
		switch typ {
		case protowire.VarintType:
			f.u, n = protowire.ConsumeVarint(b[off:])
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b[off:])
			f.u = uint64(v)
		case protowire.Fixed64Type:
			f.u, n = protowire.ConsumeFixed64(b[off:])
		case protowire.BytesType:
			var m int
			_, m = protowire.ConsumeVarint(b[off:])
			f.b, n = protowire.ConsumeBytes(b[off:])
			f.bo = base + off + m
		default:
			n = protowire.ConsumeFieldValue(num, typ, b[off:])
		}
		if n < 0 {
			return &DecodeError{Field: fmt.Sprintf("%s field %d", path, num), Offset: f.off, Err: protowire.ParseError(n)}
		}
		off += n
		if typ == protowire.StartGroupType {
			continue
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

var typeNames = map[protowire.Type]string{
	protowire.VarintType:  "varint",
	protowire.Fixed32Type: "fixed32",
	protowire.Fixed64Type: "fixed64",
	protowire.BytesType:   "bytes",
}

// join makes a field's path: only on errors, so decoding allocates none.
func join(path, name string) string {
	if name == "" {
		return path
	}
	return path + "." + name
}

// want checks the wire type of field name of the message at path.
func want(f field, path, name string, typ protowire.Type) error {
	if f.typ == typ {
		return nil
	}
	return &DecodeError{Field: join(path, name), Offset: f.off, Err: fmt.Errorf("wire type %s, want %s", typeNames[f.typ], typeNames[typ])}
}

// text checks that a string field is UTF-8, as PostgreSQL text must be.
func text(f field, path, name string) (string, error) {
	if !utf8.Valid(f.b) {
		return "", &DecodeError{Field: join(path, name), Offset: f.off, Err: errors.New("not valid UTF-8")}
	}
	return string(f.b), nil
}

// scalarValue is one of the value fields that Metric and PropertyValue
// share, in the same order from field number first on (spbwire.MetricIntValue
// or spbwire.PropertyValueIntValue): int_value, long_value, float_value,
// double_value, boolean_value, string_value.
type scalarValue struct {
	kind ValueKind
	u    uint64
	f    float64
	s    string
}

func scalar(f field, path string, first protowire.Number) (scalarValue, error) {
	i := int(f.num - first) // the member's position in the order above
	names := [...]string{"int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value"}
	types := [...]protowire.Type{protowire.VarintType, protowire.VarintType, protowire.Fixed32Type,
		protowire.Fixed64Type, protowire.VarintType, protowire.BytesType}
	if err := want(f, path, names[i], types[i]); err != nil {
		return scalarValue{}, err
	}
	switch i {
	case 0:
		return scalarValue{kind: KindInt, u: uint64(uint32(f.u))}, nil
	case 1:
		return scalarValue{kind: KindLong, u: f.u}, nil
	case 2:
		return scalarValue{kind: KindFloat, f: float64(math.Float32frombits(uint32(f.u)))}, nil
	case 3:
		return scalarValue{kind: KindDouble, f: math.Float64frombits(f.u)}, nil
	case 4:
		sv := scalarValue{kind: KindBoolean}
		if f.u != 0 {
			sv.u = 1
		}
		return sv, nil
	}
	s, err := text(f, path, names[i])
	return scalarValue{kind: KindString, s: s}, err
}

// DecodePayload decodes a Sparkplug B payload. It never panics; a malformed
// payload gives a *DecodeError naming the field and its offset. Unknown
// fields (extensions) are skipped. The result shares no memory with b.
func DecodePayload(b []byte) (*Payload, error) {
	p := &Payload{}
	err := walk(b, 0, "payload", func(f field) error {
		switch f.num {
		case spbwire.PayloadTimestamp:
			if err := want(f, "timestamp", "", protowire.VarintType); err != nil {
				return err
			}
			p.Timestamp, p.HasTimestamp = f.u, true
		case spbwire.PayloadMetrics:
			path := "metrics[" + strconv.Itoa(len(p.Metrics)) + "]"
			if err := want(f, path, "", protowire.BytesType); err != nil {
				return err
			}
			if len(p.Metrics) == MaxMetrics {
				return &DecodeError{Field: path, Offset: f.off, Err: fmt.Errorf("more than %d metrics", MaxMetrics)}
			}
			m, err := decodeMetric(f.b, f.bo, path, 0)
			if err != nil {
				return err
			}
			p.Metrics = append(p.Metrics, m)
		case spbwire.PayloadSeq:
			if err := want(f, "seq", "", protowire.VarintType); err != nil {
				return err
			}
			p.Seq, p.HasSeq = f.u, true
		case spbwire.PayloadUUID:
			if err := want(f, "uuid", "", protowire.BytesType); err != nil {
				return err
			}
			s, err := text(f, "uuid", "")
			if err != nil {
				return err
			}
			p.UUID = s
		case spbwire.PayloadBody:
			if err := want(f, "body", "", protowire.BytesType); err != nil {
				return err
			}
			p.Body = bytes.Clone(f.b)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

func decodeMetric(b []byte, base int, path string, depth int) (Metric, error) {
	var m Metric
	err := walk(b, base, path, func(f field) error {
		switch f.num {
		case spbwire.MetricName:
			if err := want(f, path, "name", protowire.BytesType); err != nil {
				return err
			}
			if len(f.b) > MaxNameBytes {
				return &DecodeError{Field: join(path, "name"), Offset: f.off, Err: fmt.Errorf("%d bytes, more than %d", len(f.b), MaxNameBytes)}
			}
			if bytes.IndexByte(f.b, 0) >= 0 {
				return &DecodeError{Field: join(path, "name"), Offset: f.off, Err: errors.New("contains a NUL byte")}
			}
			s, err := text(f, path, "name")
			if err != nil {
				return err
			}
			m.Name, m.HasName = s, true
		case spbwire.MetricAlias, spbwire.MetricTimestamp, spbwire.MetricDatatype,
			spbwire.MetricIsHistorical, spbwire.MetricIsTransient, spbwire.MetricIsNull:
			names := [...]string{spbwire.MetricAlias: "alias", spbwire.MetricTimestamp: "timestamp", spbwire.MetricDatatype: "datatype",
				spbwire.MetricIsHistorical: "is_historical", spbwire.MetricIsTransient: "is_transient", spbwire.MetricIsNull: "is_null"}
			if err := want(f, path, names[f.num], protowire.VarintType); err != nil {
				return err
			}
			switch f.num {
			case spbwire.MetricAlias:
				m.Alias, m.HasAlias = f.u, true
			case spbwire.MetricTimestamp:
				m.Timestamp, m.HasTimestamp = f.u, true
			case spbwire.MetricDatatype:
				// uint32 on the wire: a longer varint is truncated, as protobuf does.
				m.Datatype, m.HasDatatype = DataType(uint32(f.u)), true
			case spbwire.MetricIsHistorical:
				m.IsHistorical = f.u != 0
			case spbwire.MetricIsTransient:
				m.IsTransient = f.u != 0
			case spbwire.MetricIsNull:
				m.IsNull = f.u != 0
			}
		case spbwire.MetricMetadata:
			if err := want(f, path, "metadata", protowire.BytesType); err != nil {
				return err
			}
			md, err := decodeMetaData(f.b, f.bo, join(path, "metadata"))
			if err != nil {
				return err
			}
			m.Metadata = md
		case spbwire.MetricProperties:
			if err := want(f, path, "properties", protowire.BytesType); err != nil {
				return err
			}
			ps, err := decodePropertySet(f.b, f.bo, join(path, "properties"), depth+1)
			if err != nil {
				return err
			}
			m.Properties = ps
		case spbwire.MetricIntValue, spbwire.MetricLongValue, spbwire.MetricFloatValue,
			spbwire.MetricDoubleValue, spbwire.MetricBooleanValue, spbwire.MetricStringValue:
			sc, err := scalar(f, path, spbwire.MetricIntValue)
			if err != nil {
				return err
			}
			m.Kind, m.Uint, m.Float, m.String = sc.kind, sc.u, sc.f, sc.s
		case spbwire.MetricBytesValue, spbwire.MetricDataSetValue, spbwire.MetricTemplateValue, spbwire.MetricExtensionValue:
			kinds := [...]ValueKind{spbwire.MetricBytesValue: KindBytes, spbwire.MetricDataSetValue: KindDataSet,
				spbwire.MetricTemplateValue: KindTemplate, spbwire.MetricExtensionValue: KindExtension}
			names := [...]string{spbwire.MetricBytesValue: "bytes_value", spbwire.MetricDataSetValue: "dataset_value",
				spbwire.MetricTemplateValue: "template_value", spbwire.MetricExtensionValue: "extension_value"}
			if err := want(f, path, names[f.num], protowire.BytesType); err != nil {
				return err
			}
			if f.num == spbwire.MetricTemplateValue {
				// A template's metrics are checked, not kept: a malformed
				// template is a malformed payload.
				if err := checkTemplate(f.b, f.bo, join(path, "template_value"), depth+1); err != nil {
					return err
				}
			}
			m.Kind, m.Bytes = kinds[f.num], bytes.Clone(f.b)
			if m.Bytes == nil {
				m.Bytes = []byte{}
			}
		}
		return nil
	})
	return m, err
}

func decodeMetaData(b []byte, base int, path string) (*MetaData, error) {
	md := &MetaData{}
	err := walk(b, base, path, func(f field) error {
		switch f.num {
		case spbwire.MetaDataIsMultiPart, spbwire.MetaDataSize, spbwire.MetaDataSeq:
			names := [...]string{spbwire.MetaDataIsMultiPart: "is_multi_part", spbwire.MetaDataSize: "size", spbwire.MetaDataSeq: "seq"}
			if err := want(f, path, names[f.num], protowire.VarintType); err != nil {
				return err
			}
			switch f.num {
			case spbwire.MetaDataIsMultiPart:
				md.IsMultiPart = f.u != 0
			case spbwire.MetaDataSize:
				md.Size = f.u
			case spbwire.MetaDataSeq:
				md.Seq = f.u
			}
		case spbwire.MetaDataContentType, spbwire.MetaDataFileName, spbwire.MetaDataFileType,
			spbwire.MetaDataMD5, spbwire.MetaDataDescription:
			names := [...]string{spbwire.MetaDataContentType: "content_type", spbwire.MetaDataFileName: "file_name",
				spbwire.MetaDataFileType: "file_type", spbwire.MetaDataMD5: "md5", spbwire.MetaDataDescription: "description"}
			if err := want(f, path, names[f.num], protowire.BytesType); err != nil {
				return err
			}
			s, err := text(f, path, names[f.num])
			if err != nil {
				return err
			}
			dst := [...]*string{spbwire.MetaDataContentType: &md.ContentType, spbwire.MetaDataFileName: &md.FileName,
				spbwire.MetaDataFileType: &md.FileType, spbwire.MetaDataMD5: &md.MD5, spbwire.MetaDataDescription: &md.Description}
			*dst[f.num] = s
		}
		return nil
	})
	return md, err
}

func decodePropertySet(b []byte, base int, path string, depth int) (*Properties, error) {
	if depth > MaxDepth {
		return nil, &DecodeError{Field: path, Offset: base, Err: fmt.Errorf("nested more than %d deep", MaxDepth)}
	}
	ps := &Properties{}
	err := walk(b, base, path, func(f field) error {
		switch f.num {
		case spbwire.PropertySetKeys:
			fp := fmt.Sprintf("%s.keys[%d]", path, len(ps.Keys))
			if err := want(f, fp, "", protowire.BytesType); err != nil {
				return err
			}
			s, err := text(f, fp, "")
			if err != nil {
				return err
			}
			ps.Keys = append(ps.Keys, s)
		case spbwire.PropertySetValues:
			fp := fmt.Sprintf("%s.values[%d]", path, len(ps.Values))
			if err := want(f, fp, "", protowire.BytesType); err != nil {
				return err
			}
			v, err := decodePropertyValue(f.b, f.bo, fp, depth)
			if err != nil {
				return err
			}
			ps.Values = append(ps.Values, v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(ps.Keys) != len(ps.Values) {
		return nil, &DecodeError{Field: path, Offset: base, Err: fmt.Errorf("%d keys for %d values", len(ps.Keys), len(ps.Values))}
	}
	return ps, nil
}

func decodePropertyValue(b []byte, base int, path string, depth int) (PropertyValue, error) {
	var v PropertyValue
	err := walk(b, base, path, func(f field) error {
		switch f.num {
		case spbwire.PropertyValueType:
			if err := want(f, path, "type", protowire.VarintType); err != nil {
				return err
			}
			v.Type = DataType(uint32(f.u))
		case spbwire.PropertyValueIsNull:
			if err := want(f, path, "is_null", protowire.VarintType); err != nil {
				return err
			}
			v.IsNull = f.u != 0
		case spbwire.PropertyValueIntValue, spbwire.PropertyValueLongValue, spbwire.PropertyValueFloatValue,
			spbwire.PropertyValueDoubleValue, spbwire.PropertyValueBooleanValue, spbwire.PropertyValueStringValue:
			sc, err := scalar(f, path, spbwire.PropertyValueIntValue)
			if err != nil {
				return err
			}
			v.Kind, v.Uint, v.Float, v.String = sc.kind, sc.u, sc.f, sc.s
		case spbwire.PropertyValuePropertySetValue:
			if err := want(f, path, "propertyset_value", protowire.BytesType); err != nil {
				return err
			}
			ps, err := decodePropertySet(f.b, f.bo, join(path, "propertyset_value"), depth+1)
			if err != nil {
				return err
			}
			v.Kind, v.Set, v.List = KindPropertySet, ps, nil
		case spbwire.PropertyValuePropertySetsValue:
			if err := want(f, path, "propertysets_value", protowire.BytesType); err != nil {
				return err
			}
			list, err := decodePropertySetList(f.b, f.bo, join(path, "propertysets_value"), depth+1)
			if err != nil {
				return err
			}
			v.Kind, v.Set, v.List = KindPropertySetList, nil, list
		case spbwire.PropertyValueExtensionValue:
			if err := want(f, path, "extension_value", protowire.BytesType); err != nil {
				return err
			}
			v.Kind, v.Raw = KindExtension, bytes.Clone(f.b)
		}
		return nil
	})
	return v, err
}

func decodePropertySetList(b []byte, base int, path string, depth int) ([]Properties, error) {
	if depth > MaxDepth {
		return nil, &DecodeError{Field: path, Offset: base, Err: fmt.Errorf("nested more than %d deep", MaxDepth)}
	}
	list := []Properties{}
	err := walk(b, base, path, func(f field) error {
		if f.num != spbwire.PropertySetListPropertySet {
			return nil
		}
		fp := fmt.Sprintf("%s.propertyset[%d]", path, len(list))
		if err := want(f, fp, "", protowire.BytesType); err != nil {
			return err
		}
		ps, err := decodePropertySet(f.b, f.bo, fp, depth+1)
		if err != nil {
			return err
		}
		list = append(list, *ps)
		return nil
	})
	return list, err
}

// checkTemplate checks a template's metrics (spbwire.TemplateMetrics)
// decode within the bounds; the template is kept raw.
func checkTemplate(b []byte, base int, path string, depth int) error {
	if depth > MaxDepth {
		return &DecodeError{Field: path, Offset: base, Err: fmt.Errorf("nested more than %d deep", MaxDepth)}
	}
	n := 0
	return walk(b, base, path, func(f field) error {
		if f.num != spbwire.TemplateMetrics {
			return nil
		}
		fp := fmt.Sprintf("%s.metrics[%d]", path, n)
		if err := want(f, fp, "", protowire.BytesType); err != nil {
			return err
		}
		if n++; n > MaxMetrics {
			return &DecodeError{Field: fp, Offset: f.off, Err: fmt.Errorf("more than %d metrics", MaxMetrics)}
		}
		_, err := decodeMetric(f.b, f.bo, fp, depth)
		return err
	})
}
