// Package ingest is the contract between firehose's edges and its bridge: the
// Reading type and its validation, the versioned stream encoding, the routing of
// devices to shard streams, and the Producer that makes readings durable in Redis
// Streams before an edge acknowledges them.
//
// An edge (the HTTP gateway, the MQTT broker) builds Readings, validates them and
// hands them to one shared Producer:
//
//	streams := ingest.Streams{Prefix: "firehose", Count: 4}
//	p := ingest.NewProducer(rdb, streams, ingest.ProducerConfig{}, logger, registry)
//	go p.Run(ctx)
//	r := ingest.Reading{DeviceID: "pump-7", Value: 21.5, ReceivedAt: time.Now()}
//	if err := r.Validate(ingest.DefaultLimits); err != nil { ... } // ErrInvalidReading
//	if err := p.Add(ctx, []ingest.Reading{r}); err != nil { ... } // refuse, do not ack
//	// here the reading is in Redis: acknowledge it.
//
// The bridge reads the same streams and decodes entries with Decode.
package ingest
