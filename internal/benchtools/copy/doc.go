// Command copy is the ceiling the bridge's drain rate is measured against:
// pgx CopyFrom of readings generated in memory straight into the readings
// table (same schema, same indexes), from a few connections at once, with no
// Redis, no decoding and no checkpoint.
//
//	go run ./internal/benchtools/copy -postgres postgres://127.0.0.1:5432/firehose_bench -n 1000000
package main
