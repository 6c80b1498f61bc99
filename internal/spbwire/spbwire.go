package spbwire

import "google.golang.org/protobuf/encoding/protowire"

// DataType codes (sparkplug_b.proto enum DataType; Sparkplug 3.0, section
// 6.4.16), as carried in Metric.datatype, PropertyValue.type,
// Template.Parameter.type and DataSet.types. Untyped, so that
// sparkplug.DataType and a plain uint32 both take them.
const (
	Unknown         = 0
	Int8            = 1
	Int16           = 2
	Int32           = 3
	Int64           = 4
	UInt8           = 5
	UInt16          = 6
	UInt32          = 7
	UInt64          = 8
	Float           = 9
	Double          = 10
	Boolean         = 11
	String          = 12
	DateTime        = 13
	Text            = 14
	UUID            = 15
	DataSet         = 16
	Bytes           = 17
	File            = 18
	Template        = 19
	PropertySet     = 20
	PropertySetList = 21
	Int8Array       = 22
	Int16Array      = 23
	Int32Array      = 24
	Int64Array      = 25
	UInt8Array      = 26
	UInt16Array     = 27
	UInt32Array     = 28
	UInt64Array     = 29
	FloatArray      = 30
	DoubleArray     = 31
	BooleanArray    = 32
	StringArray     = 33
	DateTimeArray   = 34
)

// Payload fields (org.eclipse.tahu.protobuf.Payload).
const (
	PayloadTimestamp protowire.Number = 1 // uint64, ms since the Unix epoch
	PayloadMetrics   protowire.Number = 2 // repeated Metric
	PayloadSeq       protowire.Number = 3 // uint64
	PayloadUUID      protowire.Number = 4 // string
	PayloadBody      protowire.Number = 5 // bytes
)

// Metric fields (Payload.Metric). The value oneof runs from
// MetricIntValue to MetricExtensionValue; its first six members are in the
// same order as PropertyValue's and Template.Parameter's.
const (
	MetricName           protowire.Number = 1  // string
	MetricAlias          protowire.Number = 2  // uint64
	MetricTimestamp      protowire.Number = 3  // uint64, ms since the Unix epoch
	MetricDatatype       protowire.Number = 4  // uint32, a DataType code
	MetricIsHistorical   protowire.Number = 5  // bool
	MetricIsTransient    protowire.Number = 6  // bool
	MetricIsNull         protowire.Number = 7  // bool
	MetricMetadata       protowire.Number = 8  // MetaData
	MetricProperties     protowire.Number = 9  // PropertySet
	MetricIntValue       protowire.Number = 10 // uint32
	MetricLongValue      protowire.Number = 11 // uint64
	MetricFloatValue     protowire.Number = 12 // float
	MetricDoubleValue    protowire.Number = 13 // double
	MetricBooleanValue   protowire.Number = 14 // bool
	MetricStringValue    protowire.Number = 15 // string
	MetricBytesValue     protowire.Number = 16 // bytes
	MetricDataSetValue   protowire.Number = 17 // DataSet
	MetricTemplateValue  protowire.Number = 18 // Template
	MetricExtensionValue protowire.Number = 19 // MetricValueExtension
)

// MetaData fields (Payload.MetaData).
const (
	MetaDataIsMultiPart protowire.Number = 1 // bool
	MetaDataContentType protowire.Number = 2 // string
	MetaDataSize        protowire.Number = 3 // uint64
	MetaDataSeq         protowire.Number = 4 // uint64
	MetaDataFileName    protowire.Number = 5 // string
	MetaDataFileType    protowire.Number = 6 // string
	MetaDataMD5         protowire.Number = 7 // string
	MetaDataDescription protowire.Number = 8 // string
)

// PropertySet fields (Payload.PropertySet): keys[i] names values[i].
const (
	PropertySetKeys   protowire.Number = 1 // repeated string
	PropertySetValues protowire.Number = 2 // repeated PropertyValue
)

// PropertySetList fields (Payload.PropertySetList).
const (
	PropertySetListPropertySet protowire.Number = 1 // repeated PropertySet
)

// PropertyValue fields (Payload.PropertyValue). The value oneof runs from
// PropertyValueIntValue to PropertyValueExtensionValue.
const (
	PropertyValueType              protowire.Number = 1  // uint32, a DataType code
	PropertyValueIsNull            protowire.Number = 2  // bool
	PropertyValueIntValue          protowire.Number = 3  // uint32
	PropertyValueLongValue         protowire.Number = 4  // uint64
	PropertyValueFloatValue        protowire.Number = 5  // float
	PropertyValueDoubleValue       protowire.Number = 6  // double
	PropertyValueBooleanValue      protowire.Number = 7  // bool
	PropertyValueStringValue       protowire.Number = 8  // string
	PropertyValuePropertySetValue  protowire.Number = 9  // PropertySet (propertyset_value)
	PropertyValuePropertySetsValue protowire.Number = 10 // PropertySetList (propertysets_value)
	PropertyValueExtensionValue    protowire.Number = 11 // PropertyValueExtension
)

// Template fields (Payload.Template).
const (
	TemplateVersion      protowire.Number = 1 // string
	TemplateMetrics      protowire.Number = 2 // repeated Metric
	TemplateParameters   protowire.Number = 3 // repeated Parameter
	TemplateRef          protowire.Number = 4 // string (template_ref)
	TemplateIsDefinition protowire.Number = 5 // bool
)

// Template.Parameter fields (Payload.Template.Parameter).
const (
	ParameterName           protowire.Number = 1 // string
	ParameterType           protowire.Number = 2 // uint32, a DataType code
	ParameterIntValue       protowire.Number = 3 // uint32
	ParameterLongValue      protowire.Number = 4 // uint64
	ParameterFloatValue     protowire.Number = 5 // float
	ParameterDoubleValue    protowire.Number = 6 // double
	ParameterBooleanValue   protowire.Number = 7 // bool
	ParameterStringValue    protowire.Number = 8 // string
	ParameterExtensionValue protowire.Number = 9 // ParameterValueExtension
)

// DataSet fields (Payload.DataSet).
const (
	DataSetNumOfColumns protowire.Number = 1 // uint64
	DataSetColumns      protowire.Number = 2 // repeated string
	DataSetTypes        protowire.Number = 3 // repeated uint32, DataType codes
	DataSetRows         protowire.Number = 4 // repeated Row
)

// DataSet.Row fields (Payload.DataSet.Row).
const (
	RowElements protowire.Number = 1 // repeated DataSetValue
)

// DataSet.DataSetValue fields (Payload.DataSet.DataSetValue), a oneof.
const (
	DataSetValueIntValue       protowire.Number = 1 // uint32
	DataSetValueLongValue      protowire.Number = 2 // uint64
	DataSetValueFloatValue     protowire.Number = 3 // float
	DataSetValueDoubleValue    protowire.Number = 4 // double
	DataSetValueBooleanValue   protowire.Number = 5 // bool
	DataSetValueStringValue    protowire.Number = 6 // string
	DataSetValueExtensionValue protowire.Number = 7 // DataSetValueExtension
)
