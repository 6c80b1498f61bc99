// Package subscriber is firehose's subscriber role: it connects to an MQTT
// broker that already serves a fleet (Mosquitto, EMQX, HiveMQ, firehose's own
// broker) as a client with a persistent session, subscribes, and stores what
// it receives with the promise of firehose's own broker: a message is
// acknowledged to the broker (PUBACK, PUBREC) only once Redis holds its
// readings, in the order MQTT requires.
//
// One network connection at a time is a session (session.go): CONNECT with
// clean start off, SUBSCRIBE, then a read loop that hands each PUBLISH to a
// store goroutine and queues its acknowledgement, which the acker writes in
// arrival order once the store has answered. A message that is not a reading
// is written as an edge dead letter and then acknowledged; a transient
// failure (backlog over the high-water mark, Redis down) is retried, and past
// Config.RetryTimeout the connection is closed so that the broker resends
// when the session resumes. At QoS 2 each message is stored with its packet
// id's epoch (stream.Once), so a PUBLISH the broker redelivers after a crash
// is recognised and not stored again; at QoS 1 a redelivery is stored again
// (a duplicate, counted), bounded by the messages in flight: Receive Maximum
// with a broker that keeps to it (Mosquitto 2.0 sends past it: PUBACKs it
// had not read when the connection broke count too). A decoder that is a
// Rebirther (NewDecoder's) has the session publish its Sparkplug B Rebirth
// requests to the broker (QoS 0).
//
// The wire format is mochi-mqtt's packets codec (MQTT 3.1.1 and 5), over
// TCP, TLS or WebSocket (wire.go).
//
//	s, err := subscriber.New(cfg, producer, sessions, reader, logger, registry)
//	err = s.Run(ctx) // until ctx ends; reconnects with backoff
package subscriber
