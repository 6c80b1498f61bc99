// Package backoff is the one retry schedule of firehose's loops (the
// bridge's shard sessions and membership, the simulator's resends and
// verification queries): waits doubling from a first to a cap, each
// jittered so that many clients failing together do not retry together.
//
//	bo := backoff.New(100*time.Millisecond, 5*time.Second)
//	for !done() {
//		d := bo.Next() // ~100ms, ~200ms, ~400ms ... ~5s, each ±20%
//		... wait d, or until ctx ends ...
//	}
//	bo.Reset() // after a success: the next failure starts again at ~100ms
package backoff
