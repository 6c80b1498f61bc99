package sparkplug

import (
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"firehose/internal/spbwire"
)

// The schema of Eclipse Tahu's sparkplug_b.proto (github.com/eclipse/tahu,
// sparkplug_b/sparkplug_b.proto: syntax proto2, package
// org.eclipse.tahu.protobuf), written here as a descriptor rather than
// vendored or generated (no protoc, no new dependency): the field names,
// numbers and types are transcribed with literal numbers, independently of
// internal/spbwire, so TestWireConstants checks one transcription against
// the other, and the fixtures encoded by Tahu's own encoder check both
// (they are seeds of FuzzDecodeDifferential, run by go test).
//
// tahuSchema(false) is the schema as published. tahuSchema(true) is the
// schema as DecodePayload reads it: the values it keeps as raw protobuf
// (Metric.dataset_value, template_value and extension_value,
// PropertyValue.extension_value) are declared bytes, and Template holds its
// metrics alone, the one field DecodePayload checks.

const (
	optional = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
	repeated = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
)

// protoField is one field of a message: typ is a scalar type's name as in
// a .proto file, or a message's name below Payload ("Template.Parameter").
type protoField struct {
	name  string
	num   int32
	label descriptorpb.FieldDescriptorProto_Label
	typ   string
	oneof bool // a member of the message's oneof value
}

type protoMessage struct {
	name       string
	fields     []protoField
	extensions int32 // the first number of "extensions N to max"; 0: none
	nested     []protoMessage
}

var scalarTypes = map[string]descriptorpb.FieldDescriptorProto_Type{
	"uint32": descriptorpb.FieldDescriptorProto_TYPE_UINT32,
	"uint64": descriptorpb.FieldDescriptorProto_TYPE_UINT64,
	"float":  descriptorpb.FieldDescriptorProto_TYPE_FLOAT,
	"double": descriptorpb.FieldDescriptorProto_TYPE_DOUBLE,
	"bool":   descriptorpb.FieldDescriptorProto_TYPE_BOOL,
	"string": descriptorpb.FieldDescriptorProto_TYPE_STRING,
	"bytes":  descriptorpb.FieldDescriptorProto_TYPE_BYTES,
}

// valueOneof is the six scalar members every value oneof starts with, from
// field number first on.
func valueOneof(first int32) []protoField {
	var fs []protoField
	for i, f := range []struct{ name, typ string }{
		{"int_value", "uint32"}, {"long_value", "uint64"}, {"float_value", "float"},
		{"double_value", "double"}, {"boolean_value", "bool"}, {"string_value", "string"},
	} {
		fs = append(fs, protoField{f.name, first + int32(i), optional, f.typ, true})
	}
	return fs
}

func tahuPayload(asDecoded bool) protoMessage {
	kept := func(msg string) string { // a value DecodePayload keeps raw
		if asDecoded {
			return "bytes"
		}
		return msg
	}
	template := protoMessage{name: "Template", extensions: 6, fields: []protoField{
		{"version", 1, optional, "string", false},
		{"metrics", 2, repeated, "Metric", false},
		{"parameters", 3, repeated, "Template.Parameter", false},
		{"template_ref", 4, optional, "string", false},
		{"is_definition", 5, optional, "bool", false},
	}, nested: []protoMessage{{name: "Parameter",
		fields: append(append([]protoField{
			{"name", 1, optional, "string", false},
			{"type", 2, optional, "uint32", false},
		}, valueOneof(3)...),
			protoField{"extension_value", 9, optional, "Template.Parameter.ParameterValueExtension", true}),
		nested: []protoMessage{{name: "ParameterValueExtension", extensions: 1}},
	}}}
	if asDecoded {
		template = protoMessage{name: "Template", fields: []protoField{{"metrics", 2, repeated, "Metric", false}}}
	}
	return protoMessage{name: "Payload", extensions: 6, fields: []protoField{
		{"timestamp", 1, optional, "uint64", false},
		{"metrics", 2, repeated, "Metric", false},
		{"seq", 3, optional, "uint64", false},
		{"uuid", 4, optional, "string", false},
		{"body", 5, optional, "bytes", false},
	}, nested: []protoMessage{
		template,
		{name: "DataSet", extensions: 5, fields: []protoField{
			{"num_of_columns", 1, optional, "uint64", false},
			{"columns", 2, repeated, "string", false},
			{"types", 3, repeated, "uint32", false},
			{"rows", 4, repeated, "DataSet.Row", false},
		}, nested: []protoMessage{
			{name: "DataSetValue",
				fields: append(valueOneof(1),
					protoField{"extension_value", 7, optional, "DataSet.DataSetValue.DataSetValueExtension", true}),
				nested: []protoMessage{{name: "DataSetValueExtension", extensions: 1}}},
			{name: "Row", extensions: 2, fields: []protoField{{"elements", 1, repeated, "DataSet.DataSetValue", false}}},
		}},
		{name: "PropertyValue",
			fields: append(append([]protoField{
				{"type", 1, optional, "uint32", false},
				{"is_null", 2, optional, "bool", false},
			}, valueOneof(3)...),
				protoField{"propertyset_value", 9, optional, "PropertySet", true},
				protoField{"propertysets_value", 10, optional, "PropertySetList", true},
				protoField{"extension_value", 11, optional, kept("PropertyValue.PropertyValueExtension"), true}),
			nested: []protoMessage{{name: "PropertyValueExtension", extensions: 1}}},
		{name: "PropertySet", extensions: 3, fields: []protoField{
			{"keys", 1, repeated, "string", false},
			{"values", 2, repeated, "PropertyValue", false},
		}},
		{name: "PropertySetList", extensions: 2, fields: []protoField{
			{"propertyset", 1, repeated, "PropertySet", false},
		}},
		{name: "MetaData", extensions: 9, fields: []protoField{
			{"is_multi_part", 1, optional, "bool", false},
			{"content_type", 2, optional, "string", false},
			{"size", 3, optional, "uint64", false},
			{"seq", 4, optional, "uint64", false},
			{"file_name", 5, optional, "string", false},
			{"file_type", 6, optional, "string", false},
			{"md5", 7, optional, "string", false},
			{"description", 8, optional, "string", false},
		}},
		{name: "Metric",
			fields: append(append([]protoField{
				{"name", 1, optional, "string", false},
				{"alias", 2, optional, "uint64", false},
				{"timestamp", 3, optional, "uint64", false},
				{"datatype", 4, optional, "uint32", false},
				{"is_historical", 5, optional, "bool", false},
				{"is_transient", 6, optional, "bool", false},
				{"is_null", 7, optional, "bool", false},
				{"metadata", 8, optional, "MetaData", false},
				{"properties", 9, optional, "PropertySet", false},
			}, valueOneof(10)...),
				protoField{"bytes_value", 16, optional, "bytes", true},
				protoField{"dataset_value", 17, optional, kept("DataSet"), true},
				protoField{"template_value", 18, optional, kept("Template"), true},
				protoField{"extension_value", 19, optional, kept("Metric.MetricValueExtension"), true}),
			nested: []protoMessage{{name: "MetricValueExtension", extensions: 1}}},
	}}
}

// tahuDataTypes is enum DataType, in order from 0.
var tahuDataTypes = []string{
	"Unknown", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
	"Float", "Double", "Boolean", "String", "DateTime", "Text", "UUID", "DataSet", "Bytes",
	"File", "Template", "PropertySet", "PropertySetList", "Int8Array", "Int16Array",
	"Int32Array", "Int64Array", "UInt8Array", "UInt16Array", "UInt32Array", "UInt64Array",
	"FloatArray", "DoubleArray", "BooleanArray", "StringArray", "DateTimeArray",
}

func (m protoMessage) descriptor() *descriptorpb.DescriptorProto {
	d := &descriptorpb.DescriptorProto{Name: proto.String(m.name)}
	if m.extensions > 0 {
		d.ExtensionRange = []*descriptorpb.DescriptorProto_ExtensionRange{
			{Start: proto.Int32(m.extensions), End: proto.Int32(int32(protowire.MaxValidNumber) + 1)},
		}
	}
	for _, f := range m.fields {
		fd := &descriptorpb.FieldDescriptorProto{
			Name: proto.String(f.name), Number: proto.Int32(f.num), Label: f.label.Enum(),
		}
		if t, ok := scalarTypes[f.typ]; ok {
			fd.Type = t.Enum()
		} else {
			fd.Type = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
			fd.TypeName = proto.String(".org.eclipse.tahu.protobuf.Payload." + f.typ)
		}
		if f.oneof {
			fd.OneofIndex = proto.Int32(0)
			d.OneofDecl = []*descriptorpb.OneofDescriptorProto{{Name: proto.String("value")}}
		}
		d.Field = append(d.Field, fd)
	}
	for _, n := range m.nested {
		d.NestedType = append(d.NestedType, n.descriptor())
	}
	return d
}

// tahuSchema is sparkplug_b.proto's file descriptor, as published or
// (asDecoded) as DecodePayload reads it.
func tahuSchema(asDecoded bool) protoreflect.FileDescriptor {
	if asDecoded {
		return tahuFiles()[1]
	}
	return tahuFiles()[0]
}

var tahuFiles = sync.OnceValue(func() [2]protoreflect.FileDescriptor {
	var files [2]protoreflect.FileDescriptor
	for i, asDecoded := range []bool{false, true} {
		enum := &descriptorpb.EnumDescriptorProto{Name: proto.String("DataType")}
		for n, name := range tahuDataTypes {
			enum.Value = append(enum.Value, &descriptorpb.EnumValueDescriptorProto{Name: proto.String(name), Number: proto.Int32(int32(n))})
		}
		fp := &descriptorpb.FileDescriptorProto{
			Name:        proto.String("sparkplug_b.proto"),
			Package:     proto.String("org.eclipse.tahu.protobuf"),
			Syntax:      proto.String("proto2"),
			EnumType:    []*descriptorpb.EnumDescriptorProto{enum},
			MessageType: []*descriptorpb.DescriptorProto{tahuPayload(asDecoded).descriptor()},
		}
		fd, err := protodesc.NewFile(fp, nil)
		if err != nil {
			panic("sparkplug_b.proto descriptor: " + err.Error())
		}
		files[i] = fd
	}
	return files
})

// TestWireConstants checks every constant of internal/spbwire against the
// descriptor of sparkplug_b.proto, and that it names every field of it.
func TestWireConstants(t *testing.T) {
	fields := map[string]protowire.Number{
		"Payload.timestamp": spbwire.PayloadTimestamp, "Payload.metrics": spbwire.PayloadMetrics,
		"Payload.seq": spbwire.PayloadSeq, "Payload.uuid": spbwire.PayloadUUID, "Payload.body": spbwire.PayloadBody,

		"Payload.Metric.name": spbwire.MetricName, "Payload.Metric.alias": spbwire.MetricAlias,
		"Payload.Metric.timestamp": spbwire.MetricTimestamp, "Payload.Metric.datatype": spbwire.MetricDatatype,
		"Payload.Metric.is_historical": spbwire.MetricIsHistorical, "Payload.Metric.is_transient": spbwire.MetricIsTransient,
		"Payload.Metric.is_null": spbwire.MetricIsNull, "Payload.Metric.metadata": spbwire.MetricMetadata,
		"Payload.Metric.properties": spbwire.MetricProperties, "Payload.Metric.int_value": spbwire.MetricIntValue,
		"Payload.Metric.long_value": spbwire.MetricLongValue, "Payload.Metric.float_value": spbwire.MetricFloatValue,
		"Payload.Metric.double_value": spbwire.MetricDoubleValue, "Payload.Metric.boolean_value": spbwire.MetricBooleanValue,
		"Payload.Metric.string_value": spbwire.MetricStringValue, "Payload.Metric.bytes_value": spbwire.MetricBytesValue,
		"Payload.Metric.dataset_value": spbwire.MetricDataSetValue, "Payload.Metric.template_value": spbwire.MetricTemplateValue,
		"Payload.Metric.extension_value": spbwire.MetricExtensionValue,

		"Payload.MetaData.is_multi_part": spbwire.MetaDataIsMultiPart, "Payload.MetaData.content_type": spbwire.MetaDataContentType,
		"Payload.MetaData.size": spbwire.MetaDataSize, "Payload.MetaData.seq": spbwire.MetaDataSeq,
		"Payload.MetaData.file_name": spbwire.MetaDataFileName, "Payload.MetaData.file_type": spbwire.MetaDataFileType,
		"Payload.MetaData.md5": spbwire.MetaDataMD5, "Payload.MetaData.description": spbwire.MetaDataDescription,

		"Payload.PropertySet.keys": spbwire.PropertySetKeys, "Payload.PropertySet.values": spbwire.PropertySetValues,
		"Payload.PropertySetList.propertyset": spbwire.PropertySetListPropertySet,

		"Payload.PropertyValue.type": spbwire.PropertyValueType, "Payload.PropertyValue.is_null": spbwire.PropertyValueIsNull,
		"Payload.PropertyValue.int_value": spbwire.PropertyValueIntValue, "Payload.PropertyValue.long_value": spbwire.PropertyValueLongValue,
		"Payload.PropertyValue.float_value": spbwire.PropertyValueFloatValue, "Payload.PropertyValue.double_value": spbwire.PropertyValueDoubleValue,
		"Payload.PropertyValue.boolean_value": spbwire.PropertyValueBooleanValue, "Payload.PropertyValue.string_value": spbwire.PropertyValueStringValue,
		"Payload.PropertyValue.propertyset_value":  spbwire.PropertyValuePropertySetValue,
		"Payload.PropertyValue.propertysets_value": spbwire.PropertyValuePropertySetsValue,
		"Payload.PropertyValue.extension_value":    spbwire.PropertyValueExtensionValue,

		"Payload.Template.version": spbwire.TemplateVersion, "Payload.Template.metrics": spbwire.TemplateMetrics,
		"Payload.Template.parameters": spbwire.TemplateParameters, "Payload.Template.template_ref": spbwire.TemplateRef,
		"Payload.Template.is_definition": spbwire.TemplateIsDefinition,

		"Payload.Template.Parameter.name": spbwire.ParameterName, "Payload.Template.Parameter.type": spbwire.ParameterType,
		"Payload.Template.Parameter.int_value": spbwire.ParameterIntValue, "Payload.Template.Parameter.long_value": spbwire.ParameterLongValue,
		"Payload.Template.Parameter.float_value": spbwire.ParameterFloatValue, "Payload.Template.Parameter.double_value": spbwire.ParameterDoubleValue,
		"Payload.Template.Parameter.boolean_value": spbwire.ParameterBooleanValue, "Payload.Template.Parameter.string_value": spbwire.ParameterStringValue,
		"Payload.Template.Parameter.extension_value": spbwire.ParameterExtensionValue,

		"Payload.DataSet.num_of_columns": spbwire.DataSetNumOfColumns, "Payload.DataSet.columns": spbwire.DataSetColumns,
		"Payload.DataSet.types": spbwire.DataSetTypes, "Payload.DataSet.rows": spbwire.DataSetRows,
		"Payload.DataSet.Row.elements":           spbwire.RowElements,
		"Payload.DataSet.DataSetValue.int_value": spbwire.DataSetValueIntValue, "Payload.DataSet.DataSetValue.long_value": spbwire.DataSetValueLongValue,
		"Payload.DataSet.DataSetValue.float_value": spbwire.DataSetValueFloatValue, "Payload.DataSet.DataSetValue.double_value": spbwire.DataSetValueDoubleValue,
		"Payload.DataSet.DataSetValue.boolean_value": spbwire.DataSetValueBooleanValue, "Payload.DataSet.DataSetValue.string_value": spbwire.DataSetValueStringValue,
		"Payload.DataSet.DataSetValue.extension_value": spbwire.DataSetValueExtensionValue,
	}
	seen := 0
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		for i := range md.Fields().Len() {
			fd := md.Fields().Get(i)
			name := strings.TrimPrefix(string(fd.FullName()), "org.eclipse.tahu.protobuf.")
			num, ok := fields[name]
			if !ok {
				t.Errorf("%s (%d): no spbwire constant", name, fd.Number())
				continue
			}
			seen++
			if num != fd.Number() {
				t.Errorf("%s: spbwire says %d, sparkplug_b.proto %d", name, num, fd.Number())
			}
		}
		for i := range md.Messages().Len() {
			walk(md.Messages().Get(i))
		}
	}
	file := tahuSchema(false)
	walk(file.Messages().ByName("Payload"))
	if seen != len(fields) {
		t.Errorf("%d spbwire field constants, %d fields in sparkplug_b.proto", len(fields), seen)
	}

	codes := map[string]DataType{
		"Unknown": spbwire.Unknown, "Int8": spbwire.Int8, "Int16": spbwire.Int16, "Int32": spbwire.Int32,
		"Int64": spbwire.Int64, "UInt8": spbwire.UInt8, "UInt16": spbwire.UInt16, "UInt32": spbwire.UInt32,
		"UInt64": spbwire.UInt64, "Float": spbwire.Float, "Double": spbwire.Double, "Boolean": spbwire.Boolean,
		"String": spbwire.String, "DateTime": spbwire.DateTime, "Text": spbwire.Text, "UUID": spbwire.UUID,
		"DataSet": spbwire.DataSet, "Bytes": spbwire.Bytes, "File": spbwire.File, "Template": spbwire.Template,
		"PropertySet": spbwire.PropertySet, "PropertySetList": spbwire.PropertySetList,
		"Int8Array": spbwire.Int8Array, "Int16Array": spbwire.Int16Array, "Int32Array": spbwire.Int32Array,
		"Int64Array": spbwire.Int64Array, "UInt8Array": spbwire.UInt8Array, "UInt16Array": spbwire.UInt16Array,
		"UInt32Array": spbwire.UInt32Array, "UInt64Array": spbwire.UInt64Array, "FloatArray": spbwire.FloatArray,
		"DoubleArray": spbwire.DoubleArray, "BooleanArray": spbwire.BooleanArray, "StringArray": spbwire.StringArray,
		"DateTimeArray": spbwire.DateTimeArray,
	}
	values := file.Enums().ByName("DataType").Values()
	if values.Len() != len(codes) {
		t.Errorf("%d spbwire datatypes, %d in sparkplug_b.proto", len(codes), values.Len())
	}
	for i := range values.Len() {
		v := values.Get(i)
		code, ok := codes[string(v.Name())]
		if !ok || int32(code) != int32(v.Number()) {
			t.Errorf("DataType %s: spbwire %d (%v), sparkplug_b.proto %d", v.Name(), code, ok, v.Number())
		}
		if got := DataType(v.Number()).String(); got != string(v.Name()) {
			t.Errorf("DataType(%d).String() = %q, sparkplug_b.proto %s", v.Number(), got, v.Name())
		}
	}
}
