// Command fill writes a backlog of readings into firehose's shard streams, so
// that the bridge's drain rate, or Redis's memory per backlogged reading, can
// be measured on its own.
//
// With -via xadd (the default) it writes one entry per reading, in the
// stream encoding version 1, with pipelined XADDs of 1,000. With -via
// producer it goes through firehose's own producer (stream.Producer, high
// water off) with -callers concurrent callers, each adding one reading at a
// time and waiting for its confirmation, as that many devices with one QoS 1
// publish in flight each would: the entries are whatever the producer writes
// for that load (one per reading today, one per shard and round trip once
// batch entries land).
//
//	go run ./internal/benchtools/fill -redis redis://127.0.0.1:6379/0 -prefix bench -shards 4 -n 1000000
//	go run ./internal/benchtools/fill -via producer -callers 200 -n 1000000
package main
