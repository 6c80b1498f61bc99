// Package broker is firehose's embedded MQTT broker: devices publish readings
// to it over MQTT 3.1.1 or 5, and it acknowledges a QoS 1 or 2 reading only
// once the reading is durable in Redis.
//
// It is a mochi-mqtt server with hooks. Publishes to the readings topic
// (devices/{device_id}/readings by default) are decoded, validated and handed
// to the shared ingest Producer before mochi writes the PUBACK or PUBREC;
// concurrent publishes of many devices share XADD round trips (group
// commit). Refusals use MQTT 5 reason codes (0x99 payload format invalid, 0x87
// not authorized, 0x97 quota exceeded); an MQTT 3.1.1 device gets no
// acknowledgement for a transient refusal and resends. Every other topic is
// ordinary publish/subscribe, and readings are also delivered to subscribers
// (a dashboard may subscribe to devices/+/readings). Under --mqtt-auth
// everything a client's credentials line does not allow is denied: its
// client id is its username; it publishes (retained messages and wills too)
// only its own topics — under its own device id, mapped rows of its own
// device, its own Sparkplug B edge node in the groups its line names
// (sparkplug=GROUP) — plus what its write=FILTER fields grant, the only way
// to send Sparkplug B commands or STATE; it reads only topics under its own
// device id plus its read=FILTER grants; failed logins are throttled per
// source address before bcrypt runs.
//
// Memory is bounded: per session (--mqtt-max-inflight), per connection
// (--mqtt-max-writes-pending), for disconnected sessions (their number,
// oldest evicted, and the messages queued for them all), and for retained
// messages (count and bytes; past them the retain flag is dropped). See
// Config for the arithmetic.
//
// A mochi hook per concern: who connects, publishes and reads
// (hook_auth.go), the ingest of publishes (hook.go), the bounds
// on sessions, wills and retained messages (hook_bounds.go), and each MQTT 5
// client's Receive Maximum, which the hook keeps to in place of mochi's
// deadlock-prone send quota (hook_flow.go). What a
// publish's topic and payload become is package mqttmsg's, shared with the
// subscriber role; the ingest hook checks the client between its Route and
// Read, and answers.
//
//	b, err := broker.New(cfg, producer, logger, registry)
//	if err != nil { ... }
//	if err := b.Listen(); err != nil { ... } // port in use: a clear error
//	err = b.Run(ctx)                          // until ctx ends, then drains
package broker
