package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"firehose/internal/mqtttest"
	"firehose/internal/testenv"
)

// TestIntegrationServeDedupKeyIsSeriesIdentity reproduces issue 16's hole 2
// under both --dedup modes: readings that share a device id but not a series
// are not resends. Two presses named press7 on two sites publish the same
// time and msg_id through the README's rule factory/{site}/{line}/{device_id}/telemetry
// (the captures site and line are tags of the series), and two /readings/fast
// clients without X-Device-ID (both the default device) post ids 1 and 2 at
// one timestamp (and, under id, one Idempotency-Key). Every one of those
// readings lands; a true resend of each is still answered and not stored
// again. Under natural, readings timed by their receipt (fast, /v1/readings
// and MQTT without a time) are never merged, however alike.
func TestIntegrationServeDedupKeyIsSeriesIdentity(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"id", "natural"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			file := writeConfig(t, `dedup: `+mode+`
rules:
  - name: press-telemetry
    topic: factory/{site}/{line}/{device_id}/telemetry
    time: t
    time_format: unix_ms
    id: msg_id
    metrics: [temp, pressure]
`)
			mqttAddr := freeAddr(t)
			_, base, pgURL := startServe(t, "--config", file, "--mqtt-addr", mqttAddr, "--batch-age", "50ms")

			v3, err := mqtttest.ConnectV3(t, "tcp://"+mqttAddr, "press-gw-"+mode)
			if err != nil {
				t.Fatal(err)
			}
			pub := func(topic, payload string) { t.Helper(); pub3(t, v3, topic, payload) }
			postFast := func(key, body string) {
				t.Helper()
				if code, b := postKeyed(t, base+"/readings/fast", "application/json", "", key, body); code != http.StatusOK {
					t.Fatalf("POST /readings/fast %s: %d %s", body, code, b)
				}
			}

			tms := time.Now().Add(-time.Minute).UnixMilli()
			msg := fmt.Sprintf(`{"t": %d, "msg_id": 1, "temp": 71.2, "pressure": 3.1}`, tms)
			pub("factory/berlin/line3/press7/telemetry", msg)
			pub("factory/munich/line1/press7/telemetry", msg)
			pub("factory/berlin/line3/press7/telemetry", msg) // a true resend

			ts := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339Nano)
			key := ""
			if mode == "id" {
				key = "k-1" // two clients that chose the same key
			}
			postFast(key, `{"id": 1, "reading": 5, "timestamp": "`+ts+`"}`)
			postFast(key, `{"id": 2, "reading": 5, "timestamp": "`+ts+`"}`)
			postFast(key, `{"id": 1, "reading": 5, "timestamp": "`+ts+`"}`) // a true resend

			// Readings timed by their receipt, twice each on every path:
			// under natural none has a key, under id none has an id.
			for range 2 {
				postFast("", `{"id": 3, "reading": 6}`)
				if code, body := post(t, base+"/v1/readings", "application/json", "", `{"device_id": "rt-v1", "reading": 1}`); code != http.StatusOK {
					t.Fatalf("POST /v1/readings: %d %s", code, body)
				}
				pub("devices/rt-mqtt/readings", `{"reading": 1}`)
			}

			// The producer counts a duplicate before it answers: every
			// answer is in, so the count is final.
			if n, _ := metric(t, base+"/metrics", "firehose_producer_duplicates_total"); n != 3 {
				t.Errorf("firehose_producer_duplicates_total = %g, want 3 (the two resends' 2 + 1 readings)", n)
			}
			const want = 4 + 2 + 6
			testenv.Eventually(t, 2*time.Minute, func() bool { return countRows(t, pgURL, "SELECT count(*) FROM readings") >= want },
				"rows did not land: %d of %d", countRows(t, pgURL, "SELECT count(*) FROM readings"), want)
			for _, q := range []struct {
				sql  string
				want int
			}{
				{"SELECT count(*) FROM readings", want},
				{"SELECT count(*) FROM readings WHERE device_id = 'press7' AND payload->>'site' = 'berlin'", 2},
				{"SELECT count(*) FROM readings WHERE device_id = 'press7' AND payload->>'site' = 'munich'", 2},
				{"SELECT count(*) FROM readings WHERE device_id = 'seed' AND payload->>'id' IN ('1', '2')", 2},
				{"SELECT count(*) FROM readings WHERE device_id = 'seed' AND payload->>'id' = '3'", 2},
				{"SELECT count(*) FROM readings WHERE device_id IN ('rt-v1', 'rt-mqtt')", 4},
			} {
				if got := countRows(t, pgURL, q.sql); got != q.want {
					t.Errorf("%s = %d, want %d", q.sql, got, q.want)
				}
			}
		})
	}
}
