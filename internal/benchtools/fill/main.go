// Command fill writes a backlog of readings straight into firehose's shard
// streams with pipelined XADDs, so that the bridge's drain rate can be
// measured on its own.
//
//	go run ./internal/benchtools/fill -redis redis://127.0.0.1:6379/0 -prefix bench -shards 4 -n 1000000
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
)

func main() {
	url := flag.String("redis", "redis://127.0.0.1:6379/0", "Redis URL")
	prefix := flag.String("prefix", "bench", "key prefix (--redis-prefix of the bridge)")
	shards := flag.Int("shards", 4, "shard count")
	n := flag.Int("n", 1_000_000, "readings to write")
	devices := flag.Int("devices", 1000, "distinct device ids")
	payload := flag.Bool("payload", true, `give each reading extra fields ({"seq": N})`)
	flag.Parse()

	opt, err := redis.ParseURL(*url)
	if err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	ctx := context.Background()
	streams := ingest.Streams{Prefix: *prefix, Count: *shards}
	if err := streams.Check(ctx, rdb); err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	const pipe = 1000
	for done := 0; done < *n; {
		p := rdb.Pipeline()
		now := time.Now()
		for i := 0; i < pipe && done < *n; i++ {
			r := ingest.Reading{
				DeviceID:   fmt.Sprintf("bench-%d", done%*devices),
				Time:       now,
				ReceivedAt: now,
				Value:      float64(done % 1000),
			}
			if *payload {
				r.Payload = fmt.Appendf(nil, `{"seq":%d}`, done)
			}
			p.XAdd(ctx, &redis.XAddArgs{Stream: streams.Key(streams.Shard(r.DeviceID)),
				Values: []any{ingest.FieldVersion, ingest.CodecVersion, ingest.FieldBody, ingest.AppendEncode(nil, &r)}})
			done++
		}
		if _, err := p.Exec(ctx); err != nil {
			log.Fatal(err)
		}
	}
	d := time.Since(start)
	fmt.Printf("wrote %d readings in %s (%.0f/s)\n", *n, d.Round(time.Millisecond), float64(*n)/d.Seconds())
}
