// Package simulator drives a firehose deployment over the wire like a fleet of
// real devices, and proves what landed.
//
// It talks to firehose only as clients do: HTTP POSTs to /readings/fast or
// /v1/readings, MQTT publishes under devices/<id>/readings (or the shapes'
// topics, below), and, to verify, SQL against the readings table. It
// imports no server package. Every device
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
// Config.Shape chooses what a device sends: reading (the above), telemetry
// (multi-metric JSON under sim/site<s>/line<l>/<id>/telemetry, or posted
// with ?rule=sim-telemetry), samples (uploads of Config.Batch samples,
// ?rule=sim-samples or sim/<id>/samples), sparkplug (each device a
// Sparkplug B edge node of group sim-<run>, with births, data by alias,
// rebirths on request and a death, encoded with protowire and the field
// numbers and datatypes of internal/spbwire, the wire format alone) or
// typed (the telemetry message under sim/site<s>/line<l>/<id>/typed, or
// posted with ?rule=sim-typed, which the rules route to the typed table
// sim_telemetry: a row a message). The rules the shapes need are
// deploy/simulate-rules.yaml. In these shapes the ledger's unit is a
// message (a sample), each with a strictly increasing device time in ms,
// and verification finds every row by (device, metric, ts): per metric,
// rows acknowledged, landed, missing, duplicated. In the shape typed a message is one row, found by (device,
// time) in sim_telemetry instead of readings, and each row is then checked
// column by column against what its device sent (ColumnCheck).
//
// With Config.Resend a device sends an acknowledged message again, as if
// its answer had been lost; every message of the new shapes carries its id
// <device>-<seq> (HTTP Idempotency-Key, JSON msg_id). The copy's rows count
// as duplicates from resends, not as a failure, unless Config.ExpectDedup.
//
// Load is open loop at Config.Rate readings/s (latency counted from each
// reading's intended send time, so a slow target cannot hide its latency), or
// closed loop when Rate is 0 (each device sends its next reading as soon as
// the previous one was acknowledged). A device sends one request or publish
// at a time and waits for its answer, as a simple device does.
package simulator
