// Package configcheck shows what a configuration of firehose serve does
// without running it: each setting's effective value and where it came from
// (secrets redacted), and the rows a sample MQTT publish or HTTP request
// would land in the readings table, mapped through the edges' own decoding
// with a producer that keeps the readings instead of storing them. Like
// cmd/firehose, it sits above the edges: nothing but the command imports it.
//
//	s := configcheck.MQTT(configcheck.Edges{MQTT: mqttCfg, Streams: streams}, "devices/pump-7/readings", []byte(`{"reading":21.5}`), time.Now())
package configcheck
