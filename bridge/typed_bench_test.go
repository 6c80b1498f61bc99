package bridge

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/typed"
)

// benchShape is the shape typed's table sim_telemetry: what a typed row of
// the simulator's fleet carries.
var benchShape = &typed.Shape{Table: "sim_telemetry", Columns: []typed.Column{
	{Name: "device_id", Type: typed.Text}, {Name: "time", Type: typed.Timestamptz}, {Name: "received_at", Type: typed.Timestamptz},
	{Name: "site", Type: typed.Text}, {Name: "line", Type: typed.Text}, {Name: "temp", Type: typed.Real},
	{Name: "pressure", Type: typed.Double}, {Name: "rpm", Type: typed.Integer}, {Name: "seq", Type: typed.Bigint},
	{Name: "msg_id", Type: typed.Text}, {Name: "extra", Type: typed.JSONB},
}}

// benchEntry is a batch entry of n typed rows, as the producer writes it.
func benchEntry(n int) redis.XMessage {
	now := time.Now()
	rs := make([]*ingest.Reading, n)
	for i := range rs {
		dev := fmt.Sprintf("sim-bench-%d", i%200)
		rs[i] = &ingest.Reading{DeviceID: dev, Time: now, ReceivedAt: now, Row: &typed.Row{Shape: benchShape, Values: []typed.Value{
			{Str: dev}, typed.TimeValue(now), typed.TimeValue(now), {Str: "site1"}, {Str: "line2"}, {Float: 21.5},
			{Float: 3.075}, {Int: 1200 + int64(i%50)}, {Int: int64(i)}, {Str: fmt.Sprintf("%s-%d", dev, i)}, {Null: true},
		}}}
	}
	body := ingest.FinishBatch(func() []byte {
		b := make([]byte, ingest.BatchHeaderLen)
		for _, r := range rs {
			b = ingest.AppendBatchItemAs(b, ingest.CodecTyped, r)
		}
		return b
	}(), n)
	return redis.XMessage{ID: "1-1", Values: map[string]any{
		ingest.FieldVersion: ingest.CodecTypedBatch, ingest.FieldBody: string(body), ingest.FieldCount: fmt.Sprint(n)}}
}

// BenchmarkTypedRows is the bridge's work on a typed row between Redis and
// pgx: decoding its batch entry, grouping by table, and the values COPY
// sends. ns/op is per row.
func BenchmarkTypedRows(b *testing.B) {
	msg := benchEntry(500)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		buf, _ := appendDecoded(nil, msg)
		rows := make([]*entry, len(buf))
		for i := range buf {
			if buf[i].bad != nil {
				b.Fatal(buf[i].bad)
			}
			rows[i] = &buf[i]
		}
		for _, t := range targets(rows) {
			src := &typedSource{rows: t.rows}
			for src.Next() {
				if _, err := src.Values(); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/row")
}
