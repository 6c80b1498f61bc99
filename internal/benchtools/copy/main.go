package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

func main() {
	url := flag.String("postgres", "postgres://127.0.0.1:5432/firehose_bench", "database with firehose's schema")
	n := flag.Int("n", 1_000_000, "rows to write")
	conns := flag.Int("conns", 2, "connections writing at once")
	batch := flag.Int("batch", 5000, "rows per COPY")
	devices := flag.Int("devices", 1000, "distinct device ids")
	payload := flag.Bool("payload", true, `give each row extra fields ({"seq": N})`)
	flag.Parse()

	ctx := context.Background()
	per := *n / *conns
	start := time.Now()
	var wg sync.WaitGroup
	for c := range *conns {
		wg.Go(func() {
			conn, err := pgx.Connect(ctx, *url)
			if err != nil {
				log.Fatal(err)
			}
			defer conn.Close(ctx)
			for done := 0; done < per; done += *batch {
				now := time.Now()
				rows := make([][]any, 0, *batch)
				for i := range min(*batch, per-done) {
					seq := c*per + done + i
					var p []byte
					if *payload {
						p = fmt.Appendf(nil, `{"seq":%d}`, seq)
					}
					rows = append(rows, []any{fmt.Sprintf("bench-%d", seq%*devices), now, now, float64(seq % 1000), p})
				}
				if _, err := conn.CopyFrom(ctx, pgx.Identifier{"readings"},
					[]string{"device_id", "ts", "received_at", "reading", "payload"}, pgx.CopyFromRows(rows)); err != nil {
					log.Fatal(err)
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	fmt.Printf("copied %d rows in %s (%.0f rows/s) over %d connections, batches of %d\n", per**conns, d.Round(time.Millisecond), float64(per**conns)/d.Seconds(), *conns, *batch)
}
