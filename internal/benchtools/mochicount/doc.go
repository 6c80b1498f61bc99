// Command mochicount is the ceiling firehose's broker is measured against: a
// mochi-mqtt server whose only hook counts the publishes it receives, with
// no decoding, no Redis and no PostgreSQL. It prints the count every second
// and serves it at /count for load generators that verify their own sends.
//
//	go run ./internal/benchtools/mochicount -addr 127.0.0.1:18884
package main
