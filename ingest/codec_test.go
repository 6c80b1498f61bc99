package ingest_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"firehose/ingest"
	"firehose/typed"
)

// assertSameReading fails t unless got is want as the codec gives it back:
// times equal and in UTC, the value's bits equal (NaN and -0 included), the
// payload's bytes equal (an empty payload comes back nil).
func assertSameReading(t testing.TB, got, want ingest.Reading) {
	t.Helper()
	if got.DeviceID != want.DeviceID {
		t.Errorf("DeviceID = %q, want %q", got.DeviceID, want.DeviceID)
	}
	if !got.Time.Equal(want.Time) || got.Time.Location() != time.UTC {
		t.Errorf("Time = %v, want %v in UTC", got.Time, want.Time)
	}
	if !got.ReceivedAt.Equal(want.ReceivedAt) || got.ReceivedAt.Location() != time.UTC {
		t.Errorf("ReceivedAt = %v, want %v in UTC", got.ReceivedAt, want.ReceivedAt)
	}
	if math.Float64bits(got.Value) != math.Float64bits(want.Value) {
		t.Errorf("Value = %v (%#x), want %v (%#x)", got.Value, math.Float64bits(got.Value), want.Value, math.Float64bits(want.Value))
	}
	if got.Metric != want.Metric {
		t.Errorf("Metric = %q, want %q", got.Metric, want.Metric)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("Payload = %q, want %q", got.Payload, want.Payload)
	}
	if len(got.Payload) == 0 && got.Payload != nil {
		t.Errorf("empty Payload decoded as non-nil")
	}
	switch {
	case (got.Row == nil) != (want.Row == nil):
		t.Errorf("Row = %+v, want %+v", got.Row, want.Row)
	case got.Row != nil && string(typed.AppendRow(nil, got.Row)) != string(typed.AppendRow(nil, want.Row)):
		t.Errorf("Row = %+v %+v, want %+v %+v", *got.Row.Shape, got.Row.Values, *want.Row.Shape, want.Row.Values)
	}
}

// codecReadings covers the corners of the version-1 encoding.
func codecReadings() []struct {
	name string
	r    ingest.Reading
} {
	t0 := time.Date(2026, 11, 28, 8, 0, 0, 123456789, time.UTC)
	return []struct {
		name string
		r    ingest.Reading
	}{
		{"typical", ingest.Reading{DeviceID: "pump-7", Time: t0, ReceivedAt: t0.Add(1500 * time.Microsecond), Value: 21.5, Payload: []byte(`{"battery":97}`)}},
		{"no payload", ingest.Reading{DeviceID: "pump-7", Time: t0, ReceivedAt: t0, Value: -3}},
		{"nanosecond times", ingest.Reading{DeviceID: "d", Time: t0.Add(1), ReceivedAt: t0.Add(999_999_999), Value: 1}},
		{"time before receipt", ingest.Reading{DeviceID: "d", Time: t0.Add(-time.Hour), ReceivedAt: t0, Value: 1}},
		{"unix epoch", ingest.Reading{DeviceID: "d", Time: time.Unix(0, 0).UTC(), ReceivedAt: time.Unix(0, 1).UTC()}},
		{"negative times", ingest.Reading{DeviceID: "d", Time: time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC), ReceivedAt: time.Date(1900, 1, 1, 0, 0, 0, 1, time.UTC), Value: 2}},
		{"earliest unix nanosecond", ingest.Reading{DeviceID: "d", Time: time.Unix(0, math.MinInt64).UTC(), ReceivedAt: time.Unix(0, math.MinInt64+1).UTC()}},
		{"latest unix nanosecond", ingest.Reading{DeviceID: "d", Time: time.Unix(0, math.MaxInt64).UTC(), ReceivedAt: time.Unix(0, math.MaxInt64).UTC()}},
		{"negative zero", ingest.Reading{DeviceID: "d", Time: t0, ReceivedAt: t0, Value: math.Copysign(0, -1)}},
		{"largest value", ingest.Reading{DeviceID: "d", Time: t0, ReceivedAt: t0, Value: math.MaxFloat64}},
		{"smallest subnormal", ingest.Reading{DeviceID: "d", Time: t0, ReceivedAt: t0, Value: math.SmallestNonzeroFloat64}},
		{"NaN bits kept", ingest.Reading{DeviceID: "d", Time: t0, ReceivedAt: t0, Value: math.Float64frombits(0x7ff8_dead_beef_0001)}},
		{"infinity", ingest.Reading{DeviceID: "d", Time: t0, ReceivedAt: t0, Value: math.Inf(-1)}},
		{"unicode device id", ingest.Reading{DeviceID: "température-ü-温度計-🌡", Time: t0, ReceivedAt: t0, Value: 1}},
		{"longest device id", ingest.Reading{DeviceID: strings.Repeat("d", 128), Time: t0, ReceivedAt: t0, Value: 1}},
		{"device id over a varint byte", ingest.Reading{DeviceID: strings.Repeat("é", 200), Time: t0, ReceivedAt: t0, Value: 1}},
		{"empty device id", ingest.Reading{Time: t0, ReceivedAt: t0}},
		{"largest payload", ingest.Reading{DeviceID: "d", Time: t0, ReceivedAt: t0, Value: 1, Payload: payloadOfSize(16 << 10)}},
		{"payload of 1 MiB", ingest.Reading{DeviceID: "d", Time: t0, ReceivedAt: t0, Value: 1, Payload: payloadOfSize(1 << 20)}},
		{"binary bytes", ingest.Reading{DeviceID: "\x00\xff", Time: t0, ReceivedAt: t0, Value: 1, Payload: []byte{0, 0x80, 0xff}}},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for _, tt := range codecReadings() {
		t.Run(tt.name, func(t *testing.T) {
			body := ingest.AppendEncode(nil, &tt.r)
			got, err := ingest.Decode(ingest.CodecVersion, string(body))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			assertSameReading(t, got, tt.r)

			// AppendEncode appends: what dst held stays in front.
			prefixed := ingest.AppendEncode([]byte("prefix"), &tt.r)
			if !bytes.Equal(prefixed, append([]byte("prefix"), body...)) {
				t.Errorf("AppendEncode did not append to dst")
			}
		})
	}
}

// TestCodecEmptyPayload: an empty but non-nil payload comes back as nil, which
// is what "no extra fields" means (PostgreSQL NULL).
func TestCodecEmptyPayload(t *testing.T) {
	r := ingest.Reading{DeviceID: "d", Time: rx, ReceivedAt: rx, Payload: []byte{}}
	got, err := ingest.Decode(ingest.CodecVersion, string(ingest.AppendEncode(nil, &r)))
	if err != nil {
		t.Fatal(err)
	}
	if got.Payload != nil {
		t.Errorf("Payload = %q, want nil", got.Payload)
	}
}

// TestCodecLocalTimes: times in any zone decode as the same instant in UTC.
func TestCodecLocalTimes(t *testing.T) {
	zone := time.FixedZone("UTC-7", -7*3600)
	r := ingest.Reading{DeviceID: "d", Time: rx.In(zone), ReceivedAt: time.Now(), Value: 1}
	got, err := ingest.Decode(ingest.CodecVersion, string(ingest.AppendEncode(nil, &r)))
	if err != nil {
		t.Fatal(err)
	}
	assertSameReading(t, got, r)
}

func TestDecodeUnknownVersion(t *testing.T) {
	body := string(ingest.AppendEncode(nil, &codecReadings()[0].r))
	for _, v := range []string{"", "0", "2", "01", "1 ", " 1", "v1", "1.0"} {
		t.Run("version "+v, func(t *testing.T) {
			_, err := ingest.Decode(v, body)
			if !errors.Is(err, ingest.ErrUnknownCodec) {
				t.Fatalf("Decode(%q) = %v, want ErrUnknownCodec", v, err)
			}
			if errors.Is(err, ingest.ErrCorruptEntry) {
				t.Errorf("error %v is also ErrCorruptEntry", err)
			}
		})
	}
}

// TestDecodeTruncated: every strict prefix of a valid encoding is corrupt.
func TestDecodeTruncated(t *testing.T) {
	for _, tt := range codecReadings() {
		if len(tt.r.Payload) > 1<<10 {
			continue // the prefixes of the small readings cover every field
		}
		t.Run(tt.name, func(t *testing.T) {
			body := string(ingest.AppendEncode(nil, &tt.r))
			for i := range len(body) {
				got, err := ingest.Decode(ingest.CodecVersion, body[:i])
				if !errors.Is(err, ingest.ErrCorruptEntry) {
					t.Fatalf("Decode of %d of %d bytes = %+v, %v; want ErrCorruptEntry", i, len(body), got, err)
				}
			}
		})
	}
}

func TestDecodeTrailingBytes(t *testing.T) {
	for _, tt := range codecReadings() {
		t.Run(tt.name, func(t *testing.T) {
			body := ingest.AppendEncode(nil, &tt.r)
			for _, extra := range []string{"\x00", "x", "\xff\xff\xff"} {
				_, err := ingest.Decode(ingest.CodecVersion, string(body)+extra)
				if !errors.Is(err, ingest.ErrCorruptEntry) {
					t.Fatalf("Decode with %q after the end = %v, want ErrCorruptEntry", extra, err)
				}
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	le := func(v uint64) string { return string(binary.LittleEndian.AppendUint64(nil, v)) }
	tail := "\x00\x00" + le(0) + "\x00" // zero times, value 0, no payload
	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{name: "minimal valid", body: "\x01d" + tail, ok: true},
		{name: "empty body", body: ""},
		{name: "varint of 11 bytes", body: strings.Repeat("\x80", 10) + "\x00d" + tail},
		{name: "varint of 10 bytes overflowing 64 bits", body: strings.Repeat("\xff", 9) + "\x02d" + tail},
		{name: "varint never ending", body: strings.Repeat("\xff", 40)},
		{name: "length of 2^64-1", body: strings.Repeat("\xff", 9) + "\x01d" + tail},
		{name: "length one past the body", body: "\x10d" + tail},
		{name: "payload length past the body", body: "\x01d\x00\x00" + le(0) + "\x05{}"},
		{name: "time varint of 11 bytes", body: "\x01d" + strings.Repeat("\x80", 10) + "\x00\x00" + le(0) + "\x00"},
		{name: "value cut short", body: "\x01d\x00\x00" + le(0)[:7]},
		{name: "largest time varint of 10 bytes", body: "\x01d" + strings.Repeat("\xff", 9) + "\x01\x00" + le(0) + "\x00", ok: true},
		// Like encoding/binary, Decode takes a varint with redundant
		// continuation bytes (it cannot be mistaken for another value).
		{name: "non-minimal length varint", body: "\x81\x00d" + tail, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ingest.Decode(ingest.CodecVersion, tt.body)
			if tt.ok {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if r.DeviceID != "d" {
					t.Errorf("DeviceID = %q, want d", r.DeviceID)
				}
				return
			}
			if !errors.Is(err, ingest.ErrCorruptEntry) {
				t.Fatalf("Decode = %+v, %v; want ErrCorruptEntry", r, err)
			}
			if r.DeviceID != "" || r.Payload != nil {
				t.Errorf("a failed Decode returned a partial reading %+v", r)
			}
		})
	}
}

// FuzzDecode: Decode never panics, fails only with the documented errors
// (ErrCorruptEntry for the versions it reads, 1 and 3), and what it decodes
// encodes and decodes to the same reading.
func FuzzDecode(f *testing.F) {
	for _, tt := range codecReadings() {
		if len(tt.r.Payload) <= 1<<10 {
			f.Add(ingest.CodecVersion, ingest.AppendEncode(nil, &tt.r))
		}
	}
	f.Add("2", []byte("\x01d"))
	f.Add(ingest.CodecVersion, []byte(strings.Repeat("\xff", 11)))
	f.Add(ingest.CodecVersion, []byte{})
	f.Add(ingest.CodecMetric, []byte("\x01d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04temp"))
	for _, r := range typedReadings() {
		f.Add(ingest.CodecTyped, ingest.AppendEncodeTyped(nil, &r))
	}
	f.Add(ingest.CodecTyped, []byte("\x01d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x01t\x01\x01c\x09\x00\x02"))
	f.Add(ingest.CodecTyped, []byte("\x01d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02"))
	f.Fuzz(func(t *testing.T, version string, body []byte) {
		known := version == ingest.CodecVersion || version == ingest.CodecMetric || version == ingest.CodecTyped
		r, err := ingest.Decode(version, string(body))
		if err != nil {
			if !errors.Is(err, ingest.ErrUnknownCodec) && !errors.Is(err, ingest.ErrCorruptEntry) {
				t.Fatalf("Decode error %v is neither ErrUnknownCodec nor ErrCorruptEntry", err)
			}
			if known != errors.Is(err, ingest.ErrCorruptEntry) {
				t.Fatalf("Decode(%q) = %v: wrong kind of error for the version", version, err)
			}
			return
		}
		if !known {
			t.Fatalf("decoded version %q", version)
		}
		again := ingest.AppendItem(nil, version, &r)
		if len(again) > len(body) {
			t.Fatalf("re-encoding of %d bytes is longer than the %d bytes decoded", len(again), len(body))
		}
		r2, err := ingest.Decode(version, string(again))
		if err != nil {
			t.Fatalf("Decode(AppendEncode(%+v)): %v", r, err)
		}
		assertSameReading(t, r2, r)
	})
}

// FuzzCodecRoundTrip: Decode(AppendEncode(r)) == r for any reading whose
// times are within the range of Unix nanoseconds.
func FuzzCodecRoundTrip(f *testing.F) {
	for _, tt := range codecReadings() {
		if len(tt.r.Payload) <= 1<<10 {
			f.Add(tt.r.DeviceID, tt.r.Time.UnixNano(), tt.r.ReceivedAt.UnixNano(), math.Float64bits(tt.r.Value), tt.r.Payload)
		}
	}
	f.Fuzz(func(t *testing.T, id string, ts, received int64, value uint64, payload []byte) {
		if len(payload) == 0 {
			payload = nil // an empty payload decodes as nil, see TestCodecEmptyPayload
		}
		r := ingest.Reading{
			DeviceID:   id,
			Time:       time.Unix(0, ts),
			ReceivedAt: time.Unix(0, received),
			Value:      math.Float64frombits(value),
			Payload:    payload,
		}
		body := ingest.AppendEncode(nil, &r)
		got, err := ingest.Decode(ingest.CodecVersion, string(body))
		if err != nil {
			t.Fatalf("Decode(AppendEncode(%+v)): %v", r, err)
		}
		assertSameReading(t, got, r)
		// Version 3: the same with a metric (the id's bytes stand for one).
		r.Metric = id
		body = ingest.AppendEncodeMetric(nil, &r)
		if got, err = ingest.Decode(ingest.CodecMetric, string(body)); err != nil {
			t.Fatalf("Decode(AppendEncodeMetric(%+v)): %v", r, err)
		}
		assertSameReading(t, got, r)
	})
}

// TestMetricBatchRoundTrip: a version-4 entry (the producer's batch of
// readings that name metrics) splits into version-3 bodies that decode to
// its readings, metric included; a version-1/2 body never carries one.
func TestMetricBatchRoundTrip(t *testing.T) {
	now := time.Now()
	rs := []ingest.Reading{
		{DeviceID: "press-7", Metric: "temp", Time: now, ReceivedAt: now, Value: 71.2},
		{DeviceID: "press-7", Metric: "pressure", Time: now, ReceivedAt: now, Value: 3.1, Payload: []byte(`{"line":"3"}`)},
		{DeviceID: "press-7", Time: now, ReceivedAt: now, Value: 1}, // the default metric
		{DeviceID: "node", Metric: "Node Control/Rebirth", Time: now, ReceivedAt: now, Value: 0},
	}
	body := make([]byte, ingest.BatchHeaderLen)
	for i := range rs {
		body = ingest.AppendBatchItemMetric(body, &rs[i])
	}
	body = ingest.FinishBatch(body, len(rs))
	got, err := ingest.DecodeEntry(map[string]any{ingest.FieldVersion: ingest.CodecMetricBatch, ingest.FieldBody: string(body), ingest.FieldCount: strconv.Itoa(len(rs))})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(rs) {
		t.Fatalf("%d readings, want %d", len(got), len(rs))
	}
	for i := range rs {
		assertSameReading(t, got[i], rs[i])
	}
	if item, ok := ingest.ItemCodec(ingest.CodecMetricBatch); !ok || item != ingest.CodecMetric {
		t.Errorf("ItemCodec(4) = %q, %v", item, ok)
	}
	// A version-3 body read as version 1 has bytes left over: refused.
	one := ingest.AppendEncodeMetric(nil, &rs[0])
	if _, err := ingest.Decode(ingest.CodecVersion, string(one)); !errors.Is(err, ingest.ErrCorruptEntry) {
		t.Errorf("a version-3 body decoded as version 1: %v, want ErrCorruptEntry", err)
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, bc := range codecBenchReadings() {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 1<<10)
			b.ReportAllocs()
			for b.Loop() {
				buf = ingest.AppendEncode(buf[:0], &bc.r)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, bc := range codecBenchReadings() {
		b.Run(bc.name, func(b *testing.B) {
			body := string(ingest.AppendEncode(nil, &bc.r))
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ingest.Decode(ingest.CodecVersion, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func codecBenchReadings() []struct {
	name string
	r    ingest.Reading
} {
	now := time.Now()
	return []struct {
		name string
		r    ingest.Reading
	}{
		{"NoPayload", ingest.Reading{DeviceID: "pump-0007", Time: now.Add(-time.Second), ReceivedAt: now, Value: 21.5}},
		{"Payload64B", ingest.Reading{DeviceID: "pump-0007", Time: now.Add(-time.Second), ReceivedAt: now, Value: 21.5, Payload: payloadOfSize(64)}},
		{"Payload1KiB", ingest.Reading{DeviceID: "pump-0007", Time: now.Add(-time.Second), ReceivedAt: now, Value: 21.5, Payload: payloadOfSize(1 << 10)}},
	}
}

// TestBatchRoundTrip: a version-2 body built item by item (as the producer
// does) or at once splits into the version-1 bodies of its readings, which
// decode to the readings, in order; one reading is a valid batch.
func TestBatchRoundTrip(t *testing.T) {
	cases := codecReadings()
	for _, n := range []int{1, 2, len(cases), 300} {
		var rs []*ingest.Reading
		for i := range n {
			r := cases[i%len(cases)].r
			rs = append(rs, &r)
		}
		whole := ingest.AppendBatch(nil, rs)
		body := make([]byte, ingest.BatchHeaderLen)
		for _, r := range rs {
			body = ingest.AppendBatchItem(body, r)
		}
		body = ingest.FinishBatch(body, len(rs))
		if !bytes.Equal(body, whole) {
			t.Fatalf("%d readings: built item by item %x, at once %x", n, body, whole)
		}
		parts, err := ingest.SplitBatch(string(body))
		if err != nil {
			t.Fatalf("%d readings: SplitBatch: %v", n, err)
		}
		if len(parts) != n {
			t.Fatalf("%d readings: split into %d", n, len(parts))
		}
		for i, p := range parts {
			got, err := ingest.Decode(ingest.CodecVersion, p)
			if err != nil {
				t.Fatalf("reading %d of %d: %v", i, n, err)
			}
			assertSameReading(t, got, *rs[i])
		}
	}
}

// TestSplitBatchCorrupt: broken framing is an error wrapping
// ErrCorruptEntry, never a panic or a huge allocation; a reading whose own
// bytes are corrupt still splits (its neighbours decode, it alone fails).
func TestSplitBatchCorrupt(t *testing.T) {
	good := codecReadings()[0].r
	body := ingest.AppendBatch(nil, []*ingest.Reading{&good, &good})
	for _, tc := range []struct {
		name string
		body string
	}{
		{"empty", ""},
		{"zero count", "\x00"},
		{"count larger than the body", "\xff\xff\xff\xff\x0f" + string(body[1:])},
		{"truncated", string(body[:len(body)-3])},
		{"trailing bytes", string(body) + "x"},
		{"unterminated count", "\xff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ingest.SplitBatch(tc.body); !errors.Is(err, ingest.ErrCorruptEntry) {
				t.Errorf("SplitBatch = %v, want ErrCorruptEntry", err)
			}
		})
	}
	// The second reading's device-id length says more than it holds: the
	// framing is fine, the reading is not.
	one := ingest.AppendEncode(nil, &good)
	bad := append([]byte{0x7f}, one[1:]...)
	mixed := binary.AppendUvarint(nil, 2)
	mixed = binary.AppendUvarint(mixed, uint64(len(one)))
	mixed = append(mixed, one...)
	mixed = binary.AppendUvarint(mixed, uint64(len(bad)))
	mixed = append(mixed, bad...)
	parts, err := ingest.SplitBatch(string(mixed))
	if err != nil || len(parts) != 2 {
		t.Fatalf("SplitBatch = %d parts, %v; want 2, nil", len(parts), err)
	}
	if _, err := ingest.Decode(ingest.CodecVersion, parts[0]); err != nil {
		t.Errorf("good neighbour: %v", err)
	}
	if _, err := ingest.Decode(ingest.CodecVersion, parts[1]); !errors.Is(err, ingest.ErrCorruptEntry) {
		t.Errorf("corrupt reading: %v, want ErrCorruptEntry", err)
	}
}

// FuzzBatch: any body splits or fails with ErrCorruptEntry, never panics;
// readings fuzzed into a batch come back the same, in order.
func FuzzBatch(f *testing.F) {
	good := codecReadings()[0].r
	f.Add(string(ingest.AppendBatch(nil, []*ingest.Reading{&good})), "dev", int64(1), 2.5, []byte(`{"a":1}`), 3)
	f.Add("\x02\x01\x00", "", int64(-1), math.NaN(), []byte(nil), 1)
	f.Fuzz(func(t *testing.T, body, device string, ns int64, value float64, payload []byte, n int) {
		if parts, err := ingest.SplitBatch(body); err != nil {
			if !errors.Is(err, ingest.ErrCorruptEntry) {
				t.Fatalf("SplitBatch error %v does not wrap ErrCorruptEntry", err)
			}
		} else {
			for _, p := range parts {
				_, _ = ingest.Decode(ingest.CodecVersion, p)
			}
		}
		n = 1 + (n&0xff)%64
		if n < 0 {
			n = 1
		}
		rs := make([]*ingest.Reading, n)
		for i := range rs {
			r := ingest.Reading{DeviceID: device, Time: time.Unix(0, ns+int64(i)).UTC(), ReceivedAt: time.Unix(0, ns).UTC(), Value: value, Payload: payload}
			if len(payload) == 0 {
				r.Payload = nil
			}
			rs[i] = &r
		}
		parts, err := ingest.SplitBatch(string(ingest.AppendBatch(nil, rs)))
		if err != nil || len(parts) != n {
			t.Fatalf("round trip of %d readings: %d parts, %v", n, len(parts), err)
		}
		for i, p := range parts {
			got, err := ingest.Decode(ingest.CodecVersion, p)
			if err != nil {
				t.Fatalf("reading %d: %v", i, err)
			}
			assertSameReading(t, got, *rs[i])
		}
	})
}
