// Package simulator drives a firehose deployment over the wire like a fleet of
// real devices, and proves what landed.
//
// It talks to firehose only as clients do: HTTP POSTs to /readings/fast or
// /v1/readings, MQTT publishes under devices/<id>/readings, and, to verify,
// SQL against the readings table. It imports no server package. Every device
// id carries the run's id (sim-<run>-<n>), so runs never mix; each device
// numbers its readings from 1 (seq), so after the run every acknowledged
// reading can be looked for in PostgreSQL by device and sequence number.
//
//	cfg := simulator.DefaultConfig()
//	cfg.HTTP = "http://127.0.0.1:8080"
//	cfg.Postgres = "postgres://127.0.0.1:5432/firehose"
//	cfg.Devices, cfg.Rate, cfg.Duration = 1000, 5000, 30*time.Second
//	rep, err := simulator.Run(ctx, cfg, slog.Default(), nil) // or os.Stdout: a progress line a second
//	if err != nil { ... }                // could not run (bad config, unreachable target)
//	rep.WriteSummary(os.Stdout)          // the table
//	_ = rep.WriteFiles("report")         // report.json and report.html
//	if !rep.OK { ... }                   // an acked reading is missing or duplicated
//
// Load is open loop at Config.Rate readings/s (latency counted from each
// reading's intended send time, so a slow target cannot hide its latency), or
// closed loop when Rate is 0 (each device sends its next reading as soon as
// the previous one was acknowledged). A device sends one request or publish
// at a time and waits for its answer, as a simple device does.
package simulator
