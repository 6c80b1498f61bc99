// Package spbwire is the Sparkplug B wire format, defined once: the field
// numbers of Eclipse Tahu's sparkplug_b.proto and the DataType codes, for
// the decoder and the rebirth requests of package sparkplug and for the
// encoders of the simulator and the tests.
//
//	b = protowire.AppendTag(b, spbwire.PayloadTimestamp, protowire.VarintType)
//	b = protowire.AppendVarint(b, ms)
//	m = protowire.AppendTag(m, spbwire.MetricDatatype, protowire.VarintType)
//	m = protowire.AppendVarint(m, spbwire.Double)
//
// It lives under internal/, not under sparkplug/, because the simulator is
// a black-box client that imports no server package: the wire format is
// the contract both sides share, as MQTT is, not part of the server. It
// holds constants only (no code, no dependency beyond protowire's Number
// type), and sparkplug's TestWireConstants checks each against a
// descriptor written from the .proto.
package spbwire
