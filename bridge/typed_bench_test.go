package bridge

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
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

// simRows are n typed rows of sim_telemetry, as the simulator's fleet
// sends them.
func simRows(n int) []ingest.Reading {
	now := time.Now()
	rs := make([]ingest.Reading, n)
	for i := range rs {
		dev := fmt.Sprintf("sim-bench-%d", i%200)
		rs[i] = ingest.Reading{DeviceID: dev, Time: now, ReceivedAt: now, Row: &typed.Row{Shape: benchShape, Values: []typed.Value{
			{Str: dev}, typed.TimeValue(now), typed.TimeValue(now), {Str: "site1"}, {Str: "line2"}, {Float: 21.5},
			{Float: 3.075}, {Int: 1200 + int64(i%50)}, {Int: int64(i)}, {Str: fmt.Sprintf("%s-%d", dev, i)}, {Null: true},
		}}}
	}
	return rs
}

// everyTypeRows are n rows of press_telemetry (typed_integration_test.go),
// a column of each type.
func everyTypeRows(n int) []ingest.Reading {
	rs := make([]ingest.Reading, n)
	for i := range rs {
		rs[i] = pressRow(fmt.Sprintf("press-bench-%d", i%200), i)
	}
	return rs
}

// benchEntry is a batch entry of rs, as the producer writes it.
func benchEntry(rs []ingest.Reading) redis.XMessage {
	body := make([]byte, ingest.BatchHeaderLen)
	for i := range rs {
		body = ingest.AppendBatchItemAs(body, ingest.CodecTyped, &rs[i])
	}
	body = ingest.FinishBatch(body, len(rs))
	return redis.XMessage{ID: "1-1", Values: map[string]any{
		ingest.FieldVersion: ingest.CodecTypedBatch, ingest.FieldBody: string(body), ingest.FieldCount: fmt.Sprint(len(rs))}}
}

// BenchmarkTypedRows is the bridge's work on a typed row between Redis and
// PostgreSQL: decoding its batch entry, grouping by table, and encoding the
// row in COPY's binary format, for sim_telemetry's rows and for rows of a
// column of each type. ns/row is per row.
func BenchmarkTypedRows(b *testing.B) {
	b.Run("sim_telemetry", func(b *testing.B) { benchTypedRows(b, simRows(500)) })
	b.Run("every_type", func(b *testing.B) { benchTypedRows(b, everyTypeRows(500)) })
}

func benchTypedRows(b *testing.B, rs []ingest.Reading) {
	msg := benchEntry(rs)
	m := pgtype.NewMap()
	p := make([]byte, 65531) // what pgconn reads at a time
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
			// As copyTyped sends them, into a table of the rule's types.
			types := make([]uint32, len(t.columns))
			for i, c := range t.rows[0].r.Row.Shape.Columns {
				types[i] = oidOf(c.Type)
			}
			r := newTypedReader(t.rows, types, m)
			for {
				_, err := r.Read(p)
				if err == io.EOF {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			r.release()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rs)), "ns/row")
}
