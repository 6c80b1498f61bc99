// Package ingest is the reading and everything about it that needs no
// Redis: the Reading type, its validation (Limits), its JSON, the versioned
// encodings of stream entries (codec.go: readings, batches, dead letters,
// replays), and the errors with which a producer refuses readings.
//
// An edge (the HTTP gateway, the MQTT broker) builds Readings, validates them
// and hands them to a producer (stream.Producer), which makes them durable in
// Redis before the edge acknowledges them:
//
//	var r ingest.Reading
//	if err := ingest.ParseObject(body, &r); err != nil { ... } // ErrInvalidReading: 422
//	r.ReceivedAt = time.Now()
//	if err := r.Validate(ingest.DefaultLimits); err != nil { ... } // ErrInvalidReading
//	if err := p.Add(ctx, []ingest.Reading{r}); err != nil { ... } // ErrUnavailable...: refuse, do not ack
//
// The bridge decodes the entries it reads with Decode, SplitBatch and
// DecodeDeadLetter. Where entries are stored, and under which keys, is the
// stream package's.
package ingest
