// Package bridge moves readings from the shard streams in Redis into
// PostgreSQL, exactly once, in COPY batches.
//
// For each shard a bridge takes a PostgreSQL advisory lock on a connection of
// its own; only the holder reads the shard's stream and writes its rows, on
// that same connection, so a bridge that lost its session cannot write. The
// shard's checkpoint (the id of the last stream entry committed) is written in
// the transaction that COPYs the batch, and is the reading cursor: a new owner
// resumes right after it, so entries a dead owner had read but not committed
// are read again and nothing committed is written twice. After each commit the
// stream is trimmed below the checkpoint, which keeps Redis memory bounded.
//
// The bridges of a deployment share its shards: each is a row in
// bridge_members while it lives, and every LockRetry it rebalances so that K
// bridges on N shards own at most ceil(N/K) each, handing a shard over only
// after committing the batch in hand (members.go has the bounds). The lock
// stays the fence: the sharing decides who tries to take which shard, never
// who may write.
//
//	b, err := bridge.New(bridge.Config{Postgres: url, Streams: streams}, rdb, logger, registry)
//	if err != nil { ... }
//	err = b.Run(ctx) // until ctx ends; commits what it holds before returning
package bridge
