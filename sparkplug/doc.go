// Package sparkplug decodes Sparkplug B messages into metric values,
// resolving aliases from birth certificates.
//
//	tr := sparkplug.NewTracker(stream.NewSparkplugStore(rdb, "{firehose:spb}:"))
//	msg, err := tr.Handle(ctx, topic, payload) // topic: spBv1.0/{group}/{type}/{edge}[/{device}]
//	if err != nil { /* malformed (errors.Is(err, sparkplug.ErrMalformed)) or Redis down */ }
//	for _, v := range msg.Values { /* one row: v.Device, v.Name, v.Timestamp, v.Number or v.Other */ }
//	if msg.Rebirth != nil && !msg.Rebirth.Duplicate {
//		t, p, _ := sparkplug.RebirthRequest(msg.Rebirth.Group, msg.Rebirth.EdgeNode, time.Now())
//		/* publish p on t, QoS 0, not retained */
//	}
//
// # Design
//
// Decoding is done with protowire against the public sparkplug_b.proto
// (Eclipse Tahu), without generated code, its field numbers and DataType
// codes named once in internal/spbwire (which the simulator's encoder
// shares): DecodePayload walks the fields,
// checks each known field's wire type, skips unknown ones (extensions), and
// reports the field path and byte offset of what it refuses. It never
// panics; bounds (MaxMetrics, MaxNameBytes, MaxDepth) keep a hostile
// payload from costing more than its size. Names and strings must be UTF-8
// without NUL, as PostgreSQL text requires. DataSet, Template and extension
// values are kept as raw protobuf (a template's metrics are still checked).
//
// Convert turns a value into a float64 by datatype: signed integers are
// sign-extended from the field (Tahu sends -1 as Int8 in int_value
// 0xFFFFFFFF; a zero-extended 0xFF is accepted too; anything outside the
// type's range is refused with ErrValue); int_value and long_value are
// accepted for every integer type, as encoders differ for UInt32; Int64,
// UInt64 and DateTime beyond 2^53 set Inexact, since float64 rounds them;
// Boolean is 0/1, DateTime ms since the epoch, Float NaN/±Inf are kept.
// Non-numeric datatypes give a JSON-able Other (string, []byte, slices for
// the array datatypes 22..34). An is_null metric gives Null and nothing else.
//
// State lives per edge node (group/edge_node) behind Store, a map of string
// fields per node: MemoryStore for tests, stream.SparkplugStore (one hash
// per node under a caller's prefix) so every broker instance sees it and it
// survives a restart. Fields: seq (last seq; present while the node is
// born), bdseq (the NBIRTH's bdSeq), sid (a random id of the NBIRTH's
// session), a/{alias} = "{datatype} {device}/{name}"
// (aliases are unique across a node and its devices), n/{device}/{name} =
// datatype (for DATA metrics sent by name; device "" for the node), and
// d/{device} = the JSON list of fields its DBIRTH made, so a DBIRTH or
// DDEATH removes them again.
//
// Tracker applies the specification's rules once, over any Store:
//   - NBIRTH replaces the node's whole state (its devices' too) and sets seq
//     to the NBIRTH's; its bdSeq metric is kept.
//   - DBIRTH needs a born node, adds the device's definitions (replacing
//     the device's earlier ones) and advances seq.
//   - NDATA/DDATA resolve each metric by alias, else by name, taking the
//     datatype from the birth certificate (DATA may omit it). An alias or
//     name never born, an alias born by another device, or a DATA from a
//     node or device not born sets Message.Rebirth (*RebirthError, reason
//     UnknownAlias or NotBorn) and lands only the metrics that resolved:
//     firehose asks for a rebirth rather than guessing.
//   - seq must be the previous message's plus 1, modulo 256 (BIRTH, DATA
//     and DDEATH all count); a gap sets Message.Rebirth (reason SeqGap), the
//     values still land (their aliases resolve) and seq follows the message.
//   - DDEATH forgets the device; NDEATH forgets the node, unless its bdSeq
//     differs from the live NBIRTH's: then it is an earlier session's will,
//     published late, and Message.Stale is set instead. The comparison and
//     the clear are one atomic Store.Write, as is every change: a write
//     after a read applies only if the session read (sid) is still live, so
//     a will handled on another goroutine or broker never wipes a newer
//     birth, and a late message of an ended session changes nothing.
//   - The state is bounded: an owner (HandleFrom; the broker passes the MQTT
//     credential) keeps at most MaxNodes nodes, a node at most MaxNodeBytes
//     (ErrQuota, ErrStateTooLarge refuse the birth); EndSession starts the
//     expiry (StateTTL) of a node whose connection ended, Sweep removes what
//     expired and returns the account (Stats) that the broker publishes and
//     the producer counts toward --high-water (stream.SparkplugStore.BytesKey).
//
// A Rebirth request is marked Duplicate for RebirthInterval (10 s) after one
// went out for the same node (Store.Throttle, in Redis so the broker
// instances agree), so the messages in flight from a node do not each ask.
//
// BIRTH messages' metrics are values too (the current ones) and land like
// DATA's; Message.Topic.Type tells births and deaths apart for whoever
// records them. NCMD, DCMD and STATE are parsed and return no values.
//
// The tests decode fixtures encoded by Tahu's own JavaScript encoder (npm
// sparkplug-payload, testdata/gen.js, regenerated by
// scripts/sparkplug-fixtures.sh), which also decodes our RebirthRequest.
// FuzzDecodeDifferential decodes every input with proto.Unmarshal too,
// against a descriptor of sparkplug_b.proto (proto_test.go), and lists
// where the two may differ on purpose.
package sparkplug
