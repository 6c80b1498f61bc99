package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"firehose/internal/testenv"
	"firehose/partition"
)

// TestIntegrationEdgesShareTheDedupWindow reproduces issue 16's hole 7: two
// edges of one deployment with --dedup-window 5m and 7m numbered their
// windows differently and each dropped the other's sets, so a resend seconds
// after the original was stored twice. The first edge records its window
// (and mode) in the deployment's metadata; an edge started with another
// window, or another mode, is refused at start naming both values, and one
// with the same settings runs.
func TestIntegrationEdgesShareTheDedupWindow(t *testing.T) {
	t.Parallel()
	pgURL := testenv.Postgres(t)
	_, prefix := testenv.Redis(t)
	edge := func(extra ...string) (*proc, string) {
		addr := freeAddr(t)
		args := stackArgs(t, pgURL, prefix, addr, append([]string{"--roles", "httpgw,broker"}, extra...)...)
		return start(t, args...), "http://" + addr
	}
	first, base := edge("--dedup", "id", "--dedup-window", "5m")
	waitReady(t, first, base)

	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--dedup", "id", "--dedup-window", "7m"}, []string{"--dedup-window 7m0s", "records --dedup-window 5m0s"}},
		{[]string{"--dedup", "natural", "--dedup-window", "5m"}, []string{"--dedup natural", "records --dedup id"}},
		{nil, []string{"--dedup off", "records --dedup id"}},
	} {
		other, _ := edge(c.args...)
		code, exited := other.wait(time.Minute)
		out := other.stderr.String()
		if !exited || code == 0 {
			t.Errorf("an edge with %q beside one with --dedup id --dedup-window 5m: exited %v (code %d), want refused at start; output: %s", c.args, exited, code, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("an edge with %q: output %q does not say %q", c.args, out, w)
			}
		}
	}
	same, sameBase := edge("--dedup", "id", "--dedup-window", "5m")
	waitReady(t, same, sameBase)
}

// TestIntegrationRetentionBoundsReadingAge reproduces issue 16's hole 8:
// with --retention 1d a reading 3 days old was acknowledged, landed in the
// default partition and was deleted by the next maintenance. Edges now
// refuse, as an invalid reading (HTTP 422, MQTT 5 PUBACK 0x99), readings
// older than the retention minus one partition interval, and a reading
// inside that bound is stored and survives a maintenance pass. Start-up
// refuses a --max-reading-age beyond the bound, and a retention that leaves
// no age.
func TestIntegrationRetentionBoundsReadingAge(t *testing.T) {
	t.Parallel()
	mqttAddr := freeAddr(t)
	_, base, pgURL := startServe(t, "--retention", "1d", "--partition-interval", "1h", "--mqtt-addr", mqttAddr, "--batch-age", "50ms")
	old := time.Now().UTC().Add(-72 * time.Hour).Format(time.RFC3339Nano)
	inside := time.Now().UTC().Add(-12 * time.Hour).Format(time.RFC3339Nano)

	for _, c := range []struct{ path, device, body string }{
		{"/v1/readings", "", `{"device_id": "ret-old", "reading": 1, "ts": "` + old + `"}`},
		{"/readings/fast", "ret-old", `{"id": 1, "reading": 1, "timestamp": "` + old + `"}`},
	} {
		code, body := post(t, base+c.path, "application/json", c.device, c.body)
		if code != http.StatusUnprocessableEntity || !strings.Contains(body, "--retention") {
			t.Errorf("POST %s of a reading 3 days old under --retention 1d: %d %s; want 422 naming --retention", c.path, code, body)
		}
	}
	c5 := connectV5(t, mqttAddr, "ret-mqtt")
	pubCode := func(payload string) (byte, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		// paho answers a refusal with an error beside the PUBACK.
		resp, err := c5.Publish(ctx, &paho.Publish{Topic: "devices/ret-mqtt/readings", QoS: 1, Payload: []byte(payload)})
		if resp == nil {
			t.Fatalf("publish: no PUBACK: %v", err)
		}
		var reason string
		if resp.Properties != nil {
			reason = resp.Properties.ReasonString
		}
		return resp.ReasonCode, reason
	}
	if code, reason := pubCode(`{"reading": 1, "ts": "` + old + `"}`); code != 0x99 {
		t.Errorf("MQTT 5 publish of a reading 3 days old: PUBACK 0x%02x (%s), want 0x99", code, reason)
	}

	if code, body := post(t, base+"/v1/readings", "application/json", "", `{"device_id": "ret-ok", "reading": 2, "ts": "`+inside+`"}`); code != http.StatusOK {
		t.Fatalf("POST /v1/readings of a reading 12 hours old: %d %s", code, body)
	}
	if code, reason := pubCode(`{"reading": 3, "ts": "` + inside + `"}`); code != 0 {
		t.Fatalf("MQTT 5 publish of a reading 12 hours old: PUBACK 0x%02x (%s)", code, reason)
	}
	landed := func() int {
		return countRows(t, pgURL, "SELECT count(*) FROM readings WHERE device_id IN ('ret-ok', 'ret-mqtt')")
	}
	testenv.Eventually(t, 2*time.Minute, func() bool { return landed() == 2 }, "the readings inside the bound did not land: %d of 2", landed())

	// A maintenance pass with the deployment's retention, as the bridge
	// runs one every minute.
	pool, err := pgxpool.New(t.Context(), pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	pm := partition.New(partition.Config{Retention: 24 * time.Hour}, pool, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err := pm.Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := landed(); n != 2 {
		t.Errorf("after a maintenance pass: %d of the 2 readings inside the bound left", n)
	}
	if n := countRows(t, pgURL, "SELECT count(*) FROM readings WHERE device_id IN ('ret-old', 'ret-mqtt') AND ts < now() - interval '2 days'"); n != 0 {
		t.Errorf("%d readings 3 days old stored", n)
	}

	// Start-up refusals.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--retention", "1d", "--partition-interval", "1h", "--max-reading-age", "48h"}, "--max-reading-age 48h0m0s exceeds what --retention 24h0m0s keeps"},
		{[]string{"--retention", "1d"}, "is not longer than the partition interval"},
	} {
		pg := testenv.Postgres(t)
		_, prefix := testenv.Redis(t)
		p := start(t, stackArgs(t, pg, prefix, freeAddr(t), c.args...)...)
		code, exited := p.wait(time.Minute)
		if out := p.stderr.String(); !exited || code == 0 || !strings.Contains(out, c.want) {
			t.Errorf("serve %q: exited %v (code %d), output %q; want refused at start saying %q", c.args, exited, code, out, c.want)
		}
	}
}

// TestIntegrationEdgesLearnRetention: an edge started before any process
// recorded a retention accepts old readings; once a bridge (here the test,
// as a bridge started with --retention 1d --partition-interval 1h does)
// records one, the running edge refuses readings beyond the bound within
// stream.RetentionRefresh, without a restart.
func TestIntegrationEdgesLearnRetention(t *testing.T) {
	t.Parallel()
	pgURL := testenv.Postgres(t)
	rdb, prefix := testenv.Redis(t)
	addr := freeAddr(t)
	base := "http://" + addr
	edge := start(t, stackArgs(t, pgURL, prefix, addr, "--roles", "httpgw")...)
	waitReady(t, edge, base)
	old := `{"device_id": "learn", "reading": 1, "ts": "` + time.Now().UTC().Add(-72*time.Hour).Format(time.RFC3339Nano) + `"}`
	if code, body := post(t, base+"/v1/readings", "application/json", "", old); code != http.StatusOK {
		t.Fatalf("no retention recorded: a reading 3 days old answered %d %s, want 200", code, body)
	}
	if err := rdb.HSet(t.Context(), prefix+":meta", "retention_s", 86400, "partition_interval_s", 3600).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func() bool {
		code, _ := post(t, base+"/v1/readings", "application/json", "", old)
		return code == http.StatusUnprocessableEntity
	}, "the edge still accepts readings 3 days old after the retention 1d was recorded")
}
