// Package stream owns firehose's Redis layout and is, with the bridge, the
// only package that talks to Redis: the shard streams' keys and hash tags,
// their metadata, the Producer that makes readings durable in them before an
// edge acknowledges, deduplication, shard health, the Sparkplug B state
// store, and every Lua script (the bridge's fencing scripts included).
//
//	streams := stream.Streams{Prefix: "firehose", Count: 4}
//	if err := streams.Check(ctx, rdb); err != nil { ... } // shard count and layout, once per deployment
//	p := stream.NewProducer(rdb, streams, stream.ProducerConfig{}, logger, registry)
//	go p.Run(ctx)
//	if err := p.Add(ctx, readings); err != nil { ... } // refuse, do not ack
//	// here the readings are in Redis: acknowledge them.
//
// # Where the layout lives in the code
//
// The layout and the entry format are described once, for operators and
// newcomers, in docs/design.md ("The Redis layout", "The stream format");
// this is the map from that page to the code. A deployment of prefix P and
// N shards has:
//
//   - P:meta, a hash: the shard count ("shards") and the key layout
//     (LayoutLegacy, LayoutSpread) the first process recorded (Streams.Check),
//     and the settings every edge must share (CheckDedup, ClaimRetention).
//   - per shard, its stream P:readings:{tag} (Streams.Key) and beside it, with
//     the same hash tag so that they share a cluster slot, its metadata hash
//     P:meta:{tag} (Streams.ShardMetaKey: MetaGeneration, MetaDeployment,
//     MetaBacklog) and, with --dedup, its two dedup sets
//     (Streams.ShardDedupKeys), and per subscriber session its once
//     records (Streams.ShardOnceKey, see Producer.AddOnce).
//   - per subscriber session, its packet ids' epochs (Streams.SessionKey,
//     SessionState).
//   - with Sparkplug B, the edge nodes' state under its own prefix
//     (SparkplugStore).
//
// Every stream entry has a field ingest.FieldVersion naming the encoding of
// its body, ingest.FieldBody; batch entries and dead letters also carry
// ingest.FieldCount, the readings they count for in the shard's backlog. A
// replay entry has ingest.FieldReplayOf and its body under
// ingest.FieldReplayBody instead. The encodings are described in
// ingest/codec.go (versions 1 to 4), ingest/deadletter.go (5) and
// ingest/replay.go. Entries are written by the Producer (readings and dead
// letters) and WriteReplays; the bridge reads them with a consumer group,
// and trims what it committed (TrimScript).
//
// The generation protocol: before any entry is stored in a shard, in the
// same pipeline, the shard gets a generation token (MetaGeneration) if it
// has none, so that the bridge tells a stream that lost its tail from a new
// one.
package stream
