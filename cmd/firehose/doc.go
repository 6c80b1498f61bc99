// Command firehose runs the firehose ingest pipeline: the MQTT broker, the
// HTTP gateway, the bridge to PostgreSQL, schema migrations, a demo and the
// fleet simulator, in one binary.
//
//	firehose serve   [flags]   run the roles (default broker,httpgw,bridge)
//	firehose config check FILE  validate a configuration file, map a sample
//	firehose migrate [flags]   apply the schema and exit
//	firehose demo    [flags]   run the stack, send a burst, report what landed
//	firehose apikey  NAME [DEVICES]  make an API key and its keys-file line
//	firehose mqttpasswd DEVICE       hash a device's password for --mqtt-auth
//	firehose simulate [flags]  drive a deployment with a simulated fleet
//	firehose rejected list|replay [flags]  inspect and replay dead letters
//	firehose status  [flags]   each shard: owner, backlog, checkpoint, lag
//	firehose version
//
// main only wires: every role lives in its own package.
package main
