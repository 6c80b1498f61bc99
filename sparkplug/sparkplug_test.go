package sparkplug

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"firehose/internal/spbwire"
)

func TestParseTopic(t *testing.T) {
	tests := []struct {
		name  string
		topic string
		want  Topic
		err   string // substring of the error; "" for none
	}{
		{name: "nbirth", topic: "spBv1.0/g/NBIRTH/e", want: Topic{Type: NBIRTH, Group: "g", EdgeNode: "e"}},
		{name: "ndata", topic: "spBv1.0/g/NDATA/e", want: Topic{Type: NDATA, Group: "g", EdgeNode: "e"}},
		{name: "ndeath", topic: "spBv1.0/g/NDEATH/e", want: Topic{Type: NDEATH, Group: "g", EdgeNode: "e"}},
		{name: "dbirth", topic: "spBv1.0/g/DBIRTH/e/d", want: Topic{Type: DBIRTH, Group: "g", EdgeNode: "e", Device: "d"}},
		{name: "ddata", topic: "spBv1.0/g/DDATA/e/d", want: Topic{Type: DDATA, Group: "g", EdgeNode: "e", Device: "d"}},
		{name: "ddeath", topic: "spBv1.0/g/DDEATH/e/d", want: Topic{Type: DDEATH, Group: "g", EdgeNode: "e", Device: "d"}},
		{name: "ncmd", topic: "spBv1.0/g/NCMD/e", want: Topic{Type: NCMD, Group: "g", EdgeNode: "e"}},
		{name: "dcmd", topic: "spBv1.0/g/DCMD/e/d", want: Topic{Type: DCMD, Group: "g", EdgeNode: "e", Device: "d"}},
		{name: "state 3.0", topic: "spBv1.0/STATE/host1", want: Topic{Type: STATE, HostID: "host1"}},
		{name: "state 2.x", topic: "STATE/host1", want: Topic{Type: STATE, HostID: "host1"}},
		{name: "group named STATE", topic: "spBv1.0/STATE/NDATA/e", want: Topic{Type: NDATA, Group: "STATE", EdgeNode: "e"}},
		{name: "other namespace", topic: "spAv1.0/g/NDATA/e", err: `namespace "spAv1.0"`},
		{name: "plain topic", topic: "sensors/t1", err: "namespace"},
		{name: "too short", topic: "spBv1.0/g", err: "2 levels"},
		{name: "unknown type", topic: "spBv1.0/g/NFOO/e", err: `message type "NFOO"`},
		{name: "lower-case type", topic: "spBv1.0/g/ndata/e", err: `message type "ndata"`},
		{name: "node type with device", topic: "spBv1.0/g/NDATA/e/d", err: "NDATA has 5 levels"},
		{name: "device type without device", topic: "spBv1.0/g/DDATA/e", err: "DDATA has 4 levels"},
		{name: "extra level", topic: "spBv1.0/g/DDATA/e/d/x", err: "DDATA has 6 levels"},
		{name: "empty group", topic: "spBv1.0//NDATA/e", err: "group_id is empty"},
		{name: "empty edge", topic: "spBv1.0/g/NDATA/", err: "edge_node_id is empty"},
		{name: "empty device", topic: "spBv1.0/g/DDATA/e/", err: "device_id is empty"},
		{name: "wildcard", topic: "spBv1.0/g/NDATA/+", err: "wildcard"},
		{name: "state without host", topic: "spBv1.0/STATE/", err: "host_id is empty"},
		{name: "state 2.x extra", topic: "STATE/a/b", err: "2 levels"},
		{name: "STATE as type", topic: "spBv1.0/g/STATE/e", err: `message type "STATE"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTopic(tt.topic)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseTopic(%q) = %+v, %v; want an ErrMalformed with %q", tt.topic, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseTopic(%q) = %+v, %v; want %+v", tt.topic, got, err, tt.want)
			}
			if got.String() != tt.topic && tt.name != "state 2.x" {
				t.Errorf("String() = %q, want %q", got.String(), tt.topic)
			}
		})
	}
	tp, _ := ParseTopic("spBv1.0/g/DDATA/e/d")
	if tp.Node() != "g/e" || tp.DeviceID() != "g/e/d" {
		t.Errorf("Node %q DeviceID %q", tp.Node(), tp.DeviceID())
	}
}

func TestConvert(t *testing.T) {
	le := func(v ...byte) []byte { return v }
	tests := []struct {
		name    string
		dt      DataType
		m       Metric
		num     *float64
		inexact bool
		other   any
		null    bool
		err     bool
	}{
		{name: "Int8 sign-extended", dt: Int8, m: Metric{Kind: KindInt, Uint: 0xFFFFFF80}, num: f(-128)},
		{name: "Int8 own bits", dt: Int8, m: Metric{Kind: KindInt, Uint: 0xFF}, num: f(-1)},
		{name: "Int8 in long_value", dt: Int8, m: Metric{Kind: KindLong, Uint: math.MaxUint64}, num: f(-1)},
		{name: "Int8 too big", dt: Int8, m: Metric{Kind: KindInt, Uint: 300}, err: true},
		{name: "Int8 too small", dt: Int8, m: Metric{Kind: KindInt, Uint: 0xFFFFFF7F}, err: true},
		{name: "Int16 own bits", dt: Int16, m: Metric{Kind: KindInt, Uint: 0x8000}, num: f(-32768)},
		{name: "Int32 min", dt: Int32, m: Metric{Kind: KindInt, Uint: 0x80000000}, num: f(math.MinInt32)},
		{name: "Int32 in long_value out of range", dt: Int32, m: Metric{Kind: KindLong, Uint: 1 << 40}, err: true},
		{name: "Int64 min", dt: Int64, m: Metric{Kind: KindLong, Uint: 1 << 63}, num: f(math.MinInt64), inexact: true},
		{name: "Int64 in int_value", dt: Int64, m: Metric{Kind: KindInt, Uint: 0xFFFFFFFE}, num: f(-2)},
		{name: "UInt8 max", dt: UInt8, m: Metric{Kind: KindInt, Uint: 255}, num: f(255)},
		{name: "UInt8 too big", dt: UInt8, m: Metric{Kind: KindInt, Uint: 256}, err: true},
		{name: "UInt32 in int_value", dt: UInt32, m: Metric{Kind: KindInt, Uint: math.MaxUint32}, num: f(math.MaxUint32)},
		{name: "UInt64 2^53 exact", dt: UInt64, m: Metric{Kind: KindLong, Uint: 1 << 53}, num: f(1 << 53)},
		{name: "UInt64 2^53+1 inexact", dt: UInt64, m: Metric{Kind: KindLong, Uint: 1<<53 + 1}, num: f(1 << 53), inexact: true},
		{name: "DateTime", dt: DateTime, m: Metric{Kind: KindLong, Uint: 1700000000123}, num: f(1700000000123)},
		{name: "Float NaN", dt: Float, m: Metric{Kind: KindFloat, Float: math.NaN()}, num: f(math.NaN())},
		{name: "Double -Inf", dt: Double, m: Metric{Kind: KindDouble, Float: math.Inf(-1)}, num: f(math.Inf(-1))},
		{name: "Boolean", dt: Boolean, m: Metric{Kind: KindBoolean, Uint: 1}, num: f(1)},
		{name: "Boolean in int_value", dt: Boolean, m: Metric{Kind: KindInt, Uint: 1}, err: true},
		{name: "Double in string_value", dt: Double, m: Metric{Kind: KindString, String: "1"}, err: true},
		{name: "Int32 without value", dt: Int32, m: Metric{}, err: true},
		{name: "null", dt: Int32, m: Metric{IsNull: true, Kind: KindInt, Uint: 5}, null: true},
		{name: "String", dt: String, m: Metric{Kind: KindString, String: "x"}, other: "x"},
		{name: "UUID", dt: UUID, m: Metric{Kind: KindString, String: "u"}, other: "u"},
		{name: "Bytes", dt: Bytes, m: Metric{Kind: KindBytes, Bytes: []byte{1}}, other: []byte{1}},
		{name: "DataSet raw", dt: DataSet, m: Metric{Kind: KindDataSet, Bytes: []byte{8, 1}}, other: []byte{8, 1}},
		{name: "Int16Array", dt: Int16Array, m: Metric{Kind: KindBytes, Bytes: le(0xFF, 0xFF, 0x02, 0x00)}, other: []int64{-1, 2}},
		{name: "UInt32Array", dt: UInt32Array, m: Metric{Kind: KindBytes, Bytes: le(0xFF, 0xFF, 0xFF, 0xFF)}, other: []uint64{math.MaxUint32}},
		{name: "Int16Array odd length", dt: Int16Array, m: Metric{Kind: KindBytes, Bytes: le(1, 2, 3)}, err: true},
		{name: "DoubleArray NaN", dt: DoubleArray, m: Metric{Kind: KindBytes, Bytes: le(0, 0, 0, 0, 0, 0, 0xF8, 0x7F, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F)}, other: []any{nil, 1.0}},
		{name: "BooleanArray", dt: BooleanArray, m: Metric{Kind: KindBytes, Bytes: le(3, 0, 0, 0, 0b101)}, other: []bool{true, false, true}},
		{name: "BooleanArray short", dt: BooleanArray, m: Metric{Kind: KindBytes, Bytes: le(9, 0, 0, 0, 0)}, err: true},
		{name: "StringArray", dt: StringArray, m: Metric{Kind: KindBytes, Bytes: []byte("ab\x00\x00c\x00")}, other: []string{"ab", "", "c"}},
		{name: "StringArray unterminated", dt: StringArray, m: Metric{Kind: KindBytes, Bytes: []byte("ab")}, err: true},
		{name: "unknown datatype kept", dt: DataType(99), m: Metric{Kind: KindLong, Uint: 7}, other: uint64(7)},
		{name: "unknown datatype no value", dt: Unknown, m: Metric{}, null: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Convert(tt.dt, &tt.m)
			if tt.err {
				if !errors.Is(err, ErrValue) {
					t.Fatalf("Convert = %+v, %v; want ErrValue", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Null != tt.null {
				t.Errorf("Null = %v", got.Null)
			}
			if tt.num != nil {
				w := *tt.num
				if !got.Numeric || !(got.Number == w || math.IsNaN(w) && math.IsNaN(got.Number)) || got.Inexact != tt.inexact {
					t.Errorf("got %+v, want number %v inexact %v", got, w, tt.inexact)
				}
			} else if got.Numeric {
				t.Errorf("numeric %v, want none", got.Number)
			}
			if !reflect.DeepEqual(got.Other, tt.other) {
				t.Errorf("Other = %#v, want %#v", got.Other, tt.other)
			}
			if _, err := json.Marshal(got.Other); err != nil {
				t.Errorf("Other is not JSON-able: %v", err)
			}
		})
	}
	for dt := DataType(0); dt < 40; dt++ {
		if dt.Numeric() != (dt >= Int8 && dt <= Boolean || dt == DateTime) || dt.String() == "" {
			t.Errorf("datatype %d: %s numeric %v", dt, dt, dt.Numeric())
		}
	}
}

func f(v float64) *float64 { return &v }

// metric encodes one Metric message from raw field bytes.
func payloadOf(metrics ...[]byte) []byte {
	var p []byte
	p = protowire.AppendTag(p, spbwire.PayloadTimestamp, protowire.VarintType)
	p = protowire.AppendVarint(p, 1700000000000)
	for _, m := range metrics {
		p = protowire.AppendTag(p, spbwire.PayloadMetrics, protowire.BytesType)
		p = protowire.AppendBytes(p, m)
	}
	p = protowire.AppendTag(p, spbwire.PayloadSeq, protowire.VarintType)
	return protowire.AppendVarint(p, 0)
}

func TestDecodePayloadErrors(t *testing.T) {
	name := func(s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, spbwire.MetricName, protowire.BytesType), s)
	}
	props := func(depth int) []byte {
		// PropertySet{keys: ["k"], values: [PropertyValue{propertyset_value: ...}]}, depth deep.
		set := []byte{}
		for range depth {
			v := protowire.AppendBytes(protowire.AppendTag(nil, spbwire.PropertyValuePropertySetValue, protowire.BytesType), set)
			set = protowire.AppendString(protowire.AppendTag(nil, spbwire.PropertySetKeys, protowire.BytesType), "k")
			set = protowire.AppendBytes(protowire.AppendTag(set, spbwire.PropertySetValues, protowire.BytesType), v)
		}
		return protowire.AppendBytes(protowire.AppendTag(name("m"), spbwire.MetricProperties, protowire.BytesType), set)
	}
	many := make([][]byte, MaxMetrics+1)
	for i := range many {
		many[i] = name("m")
	}
	tests := []struct {
		name    string
		payload []byte
		field   string
		offset  int // -1: any
	}{
		{name: "truncated tag", payload: []byte{0x80}, field: "payload", offset: 0},
		{name: "truncated varint", payload: []byte{0x08, 0x80}, field: "payload field 1", offset: 0},
		{name: "bytes past the end", payload: []byte{0x12, 0x05, 0x0a}, field: "payload field 2", offset: 0},
		{name: "timestamp as bytes", payload: []byte{0x0a, 0x00}, field: "timestamp", offset: 0},
		{name: "metric alias as bytes", payload: payloadOf(append(name("a"), 0x12, 0x00)), field: "metrics[0].alias", offset: 12},
		{name: "second metric bad", payload: payloadOf(name("a"), []byte{0x60, 0x01}), field: "metrics[1].float_value", offset: -1},
		{name: "name too long", payload: payloadOf(name(strings.Repeat("x", MaxNameBytes+1))), field: "metrics[0].name", offset: 10},
		{name: "name not UTF-8", payload: payloadOf(name("\xff")), field: "metrics[0].name", offset: 9},
		{name: "name with NUL", payload: payloadOf(name("a\x00")), field: "metrics[0].name", offset: 9},
		{name: "too many metrics", payload: payloadOf(many...), field: "metrics[10000]", offset: -1},
		{name: "properties too deep", payload: payloadOf(props(MaxDepth + 1)), field: "metrics[0].properties", offset: -1},
		{name: "properties keys without values", payload: payloadOf(append(name("m"), 0x4a, 0x03, 0x0a, 0x01, 'k')), field: "metrics[0].properties", offset: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := DecodePayload(tt.payload)
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodePayload = %+v, %v; want a *DecodeError", p, err)
			}
			if !strings.HasPrefix(de.Field, tt.field) || tt.offset >= 0 && de.Offset != tt.offset {
				t.Errorf("error %q: field %q offset %d, want %q at %d", err, de.Field, de.Offset, tt.field, tt.offset)
			}
		})
	}
	if _, err := DecodePayload(payloadOf(props(MaxDepth - 1))); err != nil {
		t.Errorf("properties %d deep: %v", MaxDepth-1, err)
	}
	p, err := DecodePayload(nil)
	if err != nil || p.HasSeq || len(p.Metrics) != 0 {
		t.Errorf("empty payload: %+v, %v", p, err)
	}
}

func TestDecodePayloadKeepsNoInput(t *testing.T) {
	b := readFixture(t, "datatypes-00-NBIRTH.bin")
	p, err := DecodePayload(b)
	if err != nil {
		t.Fatal(err)
	}
	var raw *Metric
	for i := range p.Metrics {
		if p.Metrics[i].Name == "Bytes/raw" {
			raw = &p.Metrics[i]
		}
	}
	if raw == nil || string(raw.Bytes) != "\x00\x01\xfe\xff" {
		t.Fatalf("Bytes/raw: %+v", raw)
	}
	for i := range b {
		b[i] = 0
	}
	if string(raw.Bytes) != "\x00\x01\xfe\xff" {
		t.Errorf("decoded bytes change with the input buffer")
	}
}

func TestTrackerRefusesMalformed(t *testing.T) {
	tr := NewTracker(NewMemoryStore())
	birth := payloadOf(append(name2("a"), 0x10, 0x01, 0x20, 0x03, 0x50, 0x05)) // alias 1, Int32 5
	tests := []struct {
		name    string
		topic   string
		payload []byte
	}{
		{name: "bad topic", topic: "spBv1.0/g/NDATA", payload: birth},
		{name: "bad payload", topic: "spBv1.0/g/NBIRTH/e", payload: []byte{0xff}},
		{name: "birth without seq", topic: "spBv1.0/g/NBIRTH/e", payload: birth[:len(birth)-2]},
		{name: "seq above 255", topic: "spBv1.0/g/NBIRTH/e", payload: protowire.AppendVarint(append(slices.Clone(birth[:len(birth)-2]), 0x18), 256)},
		{name: "birth metric without name", topic: "spBv1.0/g/NBIRTH/e", payload: payloadOf([]byte{0x10, 0x01})},
		{name: "alias born twice", topic: "spBv1.0/g/NBIRTH/e", payload: payloadOf(append(name2("a"), 0x10, 0x01), append(name2("b"), 0x10, 0x01))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := tr.Handle(t.Context(), tt.topic, tt.payload)
			if !errors.Is(err, ErrMalformed) || msg != nil {
				t.Fatalf("Handle = %+v, %v; want ErrMalformed", msg, err)
			}
		})
	}
	msg, err := tr.Handle(t.Context(), "spBv1.0/g/NBIRTH/e", birth)
	if err != nil || len(msg.Values) != 1 || msg.Values[0].Number != 5 {
		t.Fatalf("good birth: %+v, %v", msg, err)
	}
	for _, topic := range []string{"spBv1.0/g/NCMD/e", "spBv1.0/STATE/host"} {
		msg, err := tr.Handle(t.Context(), topic, []byte(`{"online":true}`)[:0])
		if err != nil || len(msg.Values) != 0 {
			t.Errorf("%s: %+v, %v", topic, msg, err)
		}
	}
}

func name2(s string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, spbwire.MetricName, protowire.BytesType), s)
}

func TestRebirthRequest(t *testing.T) {
	now := time.UnixMilli(1700000000123)
	topic, payload, err := RebirthRequest("g", "e", now)
	if err != nil || topic != "spBv1.0/g/NCMD/e" {
		t.Fatalf("RebirthRequest = %q, %v", topic, err)
	}
	p, err := DecodePayload(payload)
	if err != nil {
		t.Fatal(err)
	}
	m := p.Metrics[0]
	if p.Timestamp != 1700000000123 || m.Timestamp != 1700000000123 || m.Name != RebirthMetric || m.Datatype != Boolean {
		t.Errorf("decoded %+v", p)
	}
	if c, err := Convert(m.Datatype, &m); err != nil || c.Number != 1 {
		t.Errorf("value %+v, %v", c, err)
	}
	for _, bad := range [][2]string{{"", "e"}, {"g", ""}, {"g/x", "e"}, {"g", "e+"}} {
		if _, _, err := RebirthRequest(bad[0], bad[1], now); !errors.Is(err, ErrMalformed) {
			t.Errorf("RebirthRequest(%q, %q): %v, want ErrMalformed", bad[0], bad[1], err)
		}
	}
}

// TestIntegrationRedisStoreSharedState: a second Tracker (another broker
// instance, or the same after a restart) sees the births the first
// recorded, and NDEATH removes the node's hash.
func TestIntegrationRedisStoreSharedState(t *testing.T) {
	rdb, prefix := TestRedis(t)
	ctx := t.Context()
	a := NewTracker(NewRedisStore(rdb, prefix+":"))
	b := NewTracker(NewRedisStore(rdb, prefix+":"))
	steps := loadFixtures(t)
	var dev fixtureScenario
	for _, sc := range steps {
		if sc.Name == "device" {
			dev = sc
		}
	}
	if len(dev.Steps) < 3 {
		t.Fatal("no device scenario in expected.json")
	}
	for i, st := range dev.Steps {
		tr := a
		if i%2 == 1 {
			tr = b // every other message lands on the other instance
		}
		msg, err := tr.Handle(ctx, st.Topic, readFixture(t, st.File))
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		checkStep(t, fmt_step(i, st), msg, st)
	}
	key := prefix + ":plant1/edge5"
	if typ := rdb.Type(ctx, key).Val(); typ != "hash" {
		t.Fatalf("%s is a %q, want a hash", key, typ)
	}
	if n := rdb.HLen(ctx, key).Val(); n < 4 {
		t.Errorf("%s has %d fields", key, n)
	}
	death, err := os.ReadFile(filepath.Join("testdata", "fixtures", "death-03-NDEATH.bin")) // bdSeq 5, not edge5's 3
	if err != nil {
		t.Fatal(err)
	}
	msg, err := a.Handle(ctx, "spBv1.0/plant1/NDEATH/edge5", death)
	if err != nil || !msg.Stale {
		t.Fatalf("NDEATH of another bdSeq: %+v, %v; want stale", msg, err)
	}
	// A death certificate without bdSeq ends the session whatever it was.
	msg, err = b.Handle(ctx, "spBv1.0/plant1/NDEATH/edge5", payloadOf())
	if err != nil || msg.Stale {
		t.Fatalf("NDEATH: %+v, %v", msg, err)
	}
	if n := rdb.Exists(ctx, key).Val(); n != 0 {
		t.Errorf("%s still exists after NDEATH", key)
	}
}

func TestRebirthThrottled(t *testing.T) {
	tr := NewTracker(NewMemoryStore())
	now := time.UnixMilli(1700000000000)
	tr.Now = func() time.Time { return now }
	data := readFixture(t, "unknown-alias-01-NDATA.bin") // NDATA seq 1 with alias 7, never born
	want := []struct {
		after     time.Duration
		duplicate bool
	}{{0, false}, {time.Second, true}, {9 * time.Second, true}, {11 * time.Second, false}, {12 * time.Second, true}}
	for i, w := range want {
		now = time.UnixMilli(1700000000000).Add(w.after)
		msg, err := tr.Handle(t.Context(), "spBv1.0/g/NDATA/e", data)
		if err != nil || msg.Rebirth == nil || msg.Rebirth.Reason != NotBorn {
			t.Fatalf("message %d: %+v, %v", i, msg, err)
		}
		if msg.Rebirth.Duplicate != w.duplicate {
			t.Errorf("message %d at +%v: duplicate %v, want %v", i, w.after, msg.Rebirth.Duplicate, w.duplicate)
		}
	}
	// An NBIRTH starts afresh: the next rebirth goes out at once.
	if _, err := tr.Handle(t.Context(), "spBv1.0/g/NBIRTH/e", readFixture(t, "unknown-alias-00-NBIRTH.bin")); err != nil {
		t.Fatal(err)
	}
	msg, err := tr.Handle(t.Context(), "spBv1.0/g/NDATA/e", data)
	if err != nil || msg.Rebirth == nil || msg.Rebirth.Reason != UnknownAlias || msg.Rebirth.Duplicate {
		t.Fatalf("after NBIRTH: %+v, %v", msg.Rebirth, err)
	}
}

// TestFixturesAreWhatTheyClaim: Tahu's encoder sign-extends negative Int8
// into the uint32 int_value and leaves names out of alias-only metrics, so
// the fixtures exercise those paths.
func TestFixturesAreWhatTheyClaim(t *testing.T) {
	birth, err := DecodePayload(readFixture(t, "datatypes-00-NBIRTH.bin"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range birth.Metrics {
		if m.Name == "Int8/min" {
			found = m.Kind == KindInt && m.Uint == 0xFFFFFF80
		}
	}
	if !found {
		t.Errorf("Int8/min is not int_value 0xFFFFFF80 in the fixture")
	}
	data, err := DecodePayload(readFixture(t, "datatypes-01-NDATA.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range data.Metrics {
		if m.HasName || !m.HasAlias {
			t.Errorf("NDATA metric %d: name %q (%v), alias %v: want alias only", i, m.Name, m.HasName, m.HasAlias)
		}
	}
}

func BenchmarkDecodePayload(b *testing.B) {
	for _, file := range []string{"datatypes-00-NBIRTH.bin", "datatypes-01-NDATA.bin"} {
		payload := readFixture(b, file)
		b.Run(file, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				if _, err := DecodePayload(payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
