package ingest_test

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"firehose/ingest"
	"firehose/typed"
)

// typedRow is a row of every column type, NULL included.
func typedRow(table string) *typed.Row {
	shape := &typed.Shape{Table: table, Columns: []typed.Column{
		{Name: "device_id", Type: typed.Text}, {Name: "time", Type: typed.Timestamptz},
		{Name: "ok", Type: typed.Boolean}, {Name: "rpm", Type: typed.Integer}, {Name: "n", Type: typed.Smallint},
		{Name: "big", Type: typed.Bigint}, {Name: "temp", Type: typed.Real}, {Name: "p", Type: typed.Double},
		{Name: "cost", Type: typed.Numeric}, {Name: "extra", Type: typed.JSONB},
		{Name: "fs", Type: typed.DoubleArray}, {Name: "tags", Type: typed.TextArray}, {Name: "gone", Type: typed.Integer},
	}}
	return &typed.Row{Shape: shape, Values: []typed.Value{
		{Str: "press-1"}, typed.TimeValue(time.Date(2026, 12, 5, 10, 0, 0, 123, time.UTC)),
		{Bool: true}, {Int: -1200}, {Int: 7}, {Int: 1 << 60}, {Float: 21.5}, {Float: -0.125},
		{Str: "12.50"}, {Str: `{"a":1}`}, typed.FloatsValue([]float64{1, 2.5}), typed.StrsValue([]string{"x", ""}), {Null: true},
	}}
}

// typedReadings are version-6 readings: typed rows, and readings rows
// (with and without a metric) as a version-6 batch holds them beside rows.
func typedReadings() []ingest.Reading {
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 123, time.UTC)
	long := typedRow("press_telemetry")
	long.Values[0].Str = strings.Repeat("x", 20000) // a length of three bytes in a batch
	return []ingest.Reading{
		{DeviceID: "press-1", Time: t0, ReceivedAt: t0.Add(time.Millisecond), Row: typedRow("press_telemetry")},
		{DeviceID: "press-1", Time: t0, ReceivedAt: t0, Value: 3, Metric: "temp", Payload: []byte(`{"a":1}`)},
		{DeviceID: "pump-2", Time: t0, ReceivedAt: t0, Row: &typed.Row{Shape: &typed.Shape{Table: "pump_status",
			Columns: []typed.Column{{Name: "time", Type: typed.Timestamptz}}}, Values: []typed.Value{typed.TimeValue(t0)}}},
		{DeviceID: "pump-2", Time: t0, ReceivedAt: t0, Value: 1},
		{DeviceID: "press-1", Time: t0, ReceivedAt: t0, Row: long},
	}
}

// TestTypedRoundTrip: a version-6 body decodes to its reading, typed row
// included; a version-7 batch of rows and readings decodes to each.
func TestTypedRoundTrip(t *testing.T) {
	rs := typedReadings()
	for i := range rs {
		got, err := ingest.Decode(ingest.CodecTyped, string(ingest.AppendEncodeTyped(nil, &rs[i])))
		if err != nil {
			t.Fatalf("reading %d: %v", i, err)
		}
		assertSameReading(t, got, rs[i])
	}
	body := make([]byte, ingest.BatchHeaderLen)
	for i := range rs {
		body = ingest.AppendBatchItemTyped(body, &rs[i])
	}
	body = ingest.FinishBatch(body, len(rs))
	got, err := ingest.DecodeEntry(map[string]any{ingest.FieldVersion: ingest.CodecTypedBatch, ingest.FieldBody: string(body),
		ingest.FieldCount: strconv.Itoa(len(rs))})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(rs) {
		t.Fatalf("%d readings, want %d", len(got), len(rs))
	}
	for i := range rs {
		assertSameReading(t, got[i], rs[i])
	}
	if item, ok := ingest.ItemCodec(ingest.CodecTypedBatch); !ok || item != ingest.CodecTyped {
		t.Errorf("ItemCodec(7) = %q, %v", item, ok)
	}
	// The replay entry of the readings is a version-7 batch too.
	vals := ingest.ReplayReadings(9, rs)
	rp, ok, err := ingest.ParseReplay(map[string]any{vals[0].(string): vals[1], vals[2].(string): vals[3], vals[4].(string): string(vals[5].([]byte))})
	if !ok || err != nil || rp.Version != ingest.CodecTypedBatch {
		t.Fatalf("replay of typed rows: %+v, %v, %v", rp, ok, err)
	}
	if one := ingest.ReplayReading(9, &rs[0]); one[1] != ingest.CodecTyped {
		t.Errorf("replay of one typed row in version %v", one[1])
	}
}

// TestTypedVersions: ItemVersion, Wider and BatchCodec pick the narrowest
// encoding: readings without typed rows keep versions 1 to 4.
func TestTypedVersions(t *testing.T) {
	rs := typedReadings()
	for _, tt := range []struct {
		name string
		r    *ingest.Reading
		want string
	}{
		{"typed row", &rs[0], ingest.CodecTyped},
		{"metric", &rs[1], ingest.CodecMetric},
		{"default metric", &rs[3], ingest.CodecVersion},
	} {
		if got := ingest.ItemVersion(tt.r); got != tt.want {
			t.Errorf("%s: ItemVersion = %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := ingest.Wider(ingest.CodecMetric, ingest.CodecVersion); got != ingest.CodecMetric {
		t.Errorf("Wider(3, 1) = %q", got)
	}
	if got := ingest.Wider(ingest.CodecMetric, ingest.CodecTyped); got != ingest.CodecTyped {
		t.Errorf("Wider(3, 6) = %q", got)
	}
	for item, batch := range map[string]string{ingest.CodecVersion: ingest.CodecBatch, ingest.CodecMetric: ingest.CodecMetricBatch, ingest.CodecTyped: ingest.CodecTypedBatch} {
		if got := ingest.BatchCodec(item); got != batch {
			t.Errorf("BatchCodec(%q) = %q, want %q", item, got, batch)
		}
	}
}

// TestTypedTruncated: every strict prefix of a version-6 body is corrupt,
// and so is an unknown typed part or a byte after the row.
func TestTypedTruncated(t *testing.T) {
	r := typedReadings()[0]
	body := ingest.AppendEncodeTyped(nil, &r)
	for i := range len(body) {
		if _, err := ingest.Decode(ingest.CodecTyped, string(body[:i])); !errors.Is(err, ingest.ErrCorruptEntry) {
			t.Fatalf("%d of %d bytes: %v, want ErrCorruptEntry", i, len(body), err)
		}
	}
	if _, err := ingest.Decode(ingest.CodecTyped, string(body)+"x"); !errors.Is(err, ingest.ErrCorruptEntry) {
		t.Errorf("a byte after the row: %v, want ErrCorruptEntry", err)
	}
	plain := ingest.AppendEncodeTyped(nil, &typedReadings()[1])
	plain[len(plain)-1] = 2
	if _, err := ingest.Decode(ingest.CodecTyped, string(plain)); !errors.Is(err, ingest.ErrCorruptEntry) {
		t.Errorf("typed part 2: %v, want ErrCorruptEntry", err)
	}
	// A version-6 body is not a version-3 one: bytes left over.
	if _, err := ingest.Decode(ingest.CodecMetric, string(body)); !errors.Is(err, ingest.ErrCorruptEntry) {
		t.Errorf("a version-6 body decoded as version 3: %v, want ErrCorruptEntry", err)
	}
}

// FuzzTypedBatch: a version-7 entry either does not decode (ErrCorruptEntry)
// or decodes to readings that encode into a batch decoding the same.
func FuzzTypedBatch(f *testing.F) {
	rs := typedReadings()[:4]
	body := make([]byte, ingest.BatchHeaderLen)
	for i := range rs {
		body = ingest.AppendBatchItemTyped(body, &rs[i])
	}
	f.Add(string(ingest.FinishBatch(body, len(rs))))
	f.Add("\x01\x0f\x01d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
	f.Fuzz(func(t *testing.T, body string) {
		got, err := ingest.DecodeEntry(map[string]any{ingest.FieldVersion: ingest.CodecTypedBatch, ingest.FieldBody: body})
		if err != nil {
			if !errors.Is(err, ingest.ErrCorruptEntry) {
				t.Fatalf("error %v does not wrap ErrCorruptEntry", err)
			}
			return
		}
		again := make([]byte, ingest.BatchHeaderLen)
		for i := range got {
			again = ingest.AppendBatchItemTyped(again, &got[i])
		}
		back, err := ingest.DecodeEntry(map[string]any{ingest.FieldVersion: ingest.CodecTypedBatch, ingest.FieldBody: string(ingest.FinishBatch(again, len(got)))})
		if err != nil || len(back) != len(got) {
			t.Fatalf("re-encoded batch: %d readings, %v; want %d", len(back), err, len(got))
		}
		for i := range got {
			assertSameReading(t, back[i], got[i])
		}
	})
}

// TestValidateTypedRow: a typed row passes Validate without the readings
// row's checks (its Value and Metric are unused), the device and time checks
// still apply, and a row without a frame COPY can use is refused.
func TestValidateTypedRow(t *testing.T) {
	ok := func(mod func(r *ingest.Reading)) ingest.Reading {
		r := ingest.Reading{DeviceID: "press-1", Time: rx.Add(-time.Minute), ReceivedAt: rx, Row: typedRow("press_telemetry")}
		if mod != nil {
			mod(&r)
		}
		return r
	}
	for _, tt := range []struct {
		name      string
		r         ingest.Reading
		wantField string // "" means valid
		wantType  string
	}{
		{name: "valid", r: ok(nil)},
		{name: "value and metric unused", r: ok(func(r *ingest.Reading) { r.Value = math.NaN(); r.Metric = "\x01" })},
		{name: "device id still checked", r: ok(func(r *ingest.Reading) { r.DeviceID = "" }), wantField: "device_id", wantType: "missing"},
		{name: "time still checked", r: ok(func(r *ingest.Reading) { r.Time = rx.Add(2 * time.Hour) }), wantField: "ts", wantType: "range"},
		{name: "no shape", r: ok(func(r *ingest.Reading) { r.Row.Shape = nil }), wantField: "row", wantType: "missing"},
		{name: "table not an identifier", r: ok(func(r *ingest.Reading) { r.Row.Shape.Table = "Press" }), wantField: "row", wantType: "format"},
		{name: "no columns", r: ok(func(r *ingest.Reading) { r.Row.Shape.Columns, r.Row.Values = nil, nil }), wantField: "row", wantType: "missing"},
		{name: "values short", r: ok(func(r *ingest.Reading) { r.Row.Values = r.Row.Values[1:] }), wantField: "row", wantType: "format"},
		{name: "column twice", r: ok(func(r *ingest.Reading) { r.Row.Shape.Columns[1].Name = "device_id" }), wantField: "row", wantType: "format"},
		{name: "column name quoted", r: ok(func(r *ingest.Reading) { r.Row.Shape.Columns[1].Name = `a"b` }), wantField: "row", wantType: "format"},
		{name: "many columns", r: ok(func(r *ingest.Reading) { widen(r.Row, 40) })},
		{name: "column twice of many", r: ok(func(r *ingest.Reading) { widen(r.Row, 40); r.Row.Shape.Columns[39].Name = "c5" }), wantField: "row", wantType: "format"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Validate(ingest.DefaultLimits)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			wantFieldError(t, err, tt.wantField, tt.wantType)
		})
	}
}

// widen adds columns c0, c1, ... to row until it has n, each NULL.
func widen(row *typed.Row, n int) {
	for i := 0; len(row.Shape.Columns) < n; i++ {
		row.Shape.Columns = append(row.Shape.Columns, typed.Column{Name: fmt.Sprintf("c%d", i), Type: typed.Integer})
		row.Values = append(row.Values, typed.Value{Null: true})
	}
}
