// Package faults is firehose's fault suite: Go tests that run the real
// binary under simulated load (HTTP and MQTT QoS 1, through firehose
// simulate), kill, cut and poison its parts — the bridge, PostgreSQL, Redis,
// the edges' input — and check in PostgreSQL, by device and sequence number,
// that every acknowledged reading landed exactly once.
//
// The package holds no product code; its tests are the suite. `make test`
// runs each scenario in a short form; `make faults` runs the long form
// (FIREHOSE_FAULTS=long) and writes the results RELIABILITY.md tabulates:
//
//	go test -race ./faults/                          # short
//	FIREHOSE_FAULTS=long go test -timeout 60m ./faults/   # long
//
// TestCampaign (campaign_*_test.go) is the seeded fault campaign: one
// generator draws a random mix of every ingest path and a fault schedule
// from a seed, one checker judges what the clients saw against what was
// stored; `make campaign` runs its long form, `make campaign SEED=N` one seed.
package faults
