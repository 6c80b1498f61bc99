package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/stream"
)

func main() {
	url := flag.String("redis", "redis://127.0.0.1:6379/0", "Redis URL")
	prefix := flag.String("prefix", "bench", "key prefix (--redis-prefix of the bridge)")
	shards := flag.Int("shards", 4, "shard count")
	n := flag.Int("n", 1_000_000, "readings to write")
	devices := flag.Int("devices", 1000, "distinct device ids")
	payload := flag.Bool("payload", true, `give each reading extra fields ({"seq": N})`)
	via := flag.String("via", "xadd", "xadd (one v1 entry per reading, pipelined) or producer (firehose's producer, -callers at once)")
	callers := flag.Int("callers", 200, "with -via producer: concurrent callers, one reading in flight each")
	flag.Parse()

	opt, err := redis.ParseURL(*url)
	if err != nil {
		log.Fatal(err)
	}
	// As firehose serve does: the producer refuses a client that retries.
	opt.MaxRetries = -1
	opt.PoolSize = max(opt.PoolSize, 8)
	rdb := redis.NewClient(opt)
	ctx := context.Background()
	streams := stream.Streams{Prefix: *prefix, Count: *shards}
	if err := streams.Check(ctx, rdb); err != nil {
		log.Fatal(err)
	}
	reading := func(i int, now time.Time) ingest.Reading {
		r := ingest.Reading{
			DeviceID:   fmt.Sprintf("bench-%d", i%*devices),
			Time:       now,
			ReceivedAt: now,
			Value:      float64(i % 1000),
		}
		if *payload {
			r.Payload = fmt.Appendf(nil, `{"seq":%d}`, i)
		}
		return r
	}
	start := time.Now()
	switch *via {
	case "xadd":
		const pipe = 1000
		for done := 0; done < *n; {
			p := rdb.Pipeline()
			now := time.Now()
			for i := 0; i < pipe && done < *n; i++ {
				r := reading(done, now)
				p.XAdd(ctx, &redis.XAddArgs{Stream: streams.Key(streams.Shard(r.DeviceID)),
					Values: []any{ingest.FieldVersion, ingest.CodecVersion, ingest.FieldBody, ingest.AppendEncode(nil, &r)}})
				done++
			}
			if _, err := p.Exec(ctx); err != nil {
				log.Fatal(err)
			}
		}
	case "producer":
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		prod := stream.NewProducer(rdb, streams, stream.ProducerConfig{HighWater: -1}, logger, prometheus.NewRegistry())
		rctx, stop := context.WithCancel(ctx)
		runErr := make(chan error, 1)
		go func() { runErr <- prod.Run(rctx) }()
		var next atomic.Int64
		var wg sync.WaitGroup
		for range *callers {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= *n {
						return
					}
					r := reading(i, time.Now())
					if err := prod.Add(ctx, []ingest.Reading{r}); err != nil {
						log.Fatalf("reading %d: %v", i, err)
					}
				}
			})
		}
		wg.Wait()
		stop()
		if err := <-runErr; err != nil {
			log.Fatal(err)
		}
	default:
		log.Fatalf("-via %q: want xadd or producer", *via)
	}
	d := time.Since(start)
	fmt.Printf("wrote %d readings in %s (%.0f/s)\n", *n, d.Round(time.Millisecond), float64(*n)/d.Seconds())
}
