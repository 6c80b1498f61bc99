package main

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"firehose/internal/mqtttest"
	"firehose/internal/testenv"
)

// exampleRules are the README's "Mapping your devices" rules, as a
// configuration file holds them.
const exampleRules = `rules:
  - name: press-telemetry
    topic: factory/{site}/{line}/{device_id}/telemetry
    time: t
    time_format: unix_ms
    metrics: ["*"]
  - name: pump-upload
    endpoint: /v1/readings
    device: device
    samples: samples
    time: ts
    metrics: [flow=v]
`

// TestIntegrationServeAppliesMappingRules runs firehose serve with mapping
// rules from its configuration file: a press's multi-metric telemetry over
// MQTT lands a row per metric, a gateway's sample array over HTTP a row per
// sample, an unmappable upload is refused 422 naming the rule and the path,
// and config check shows the same rows for the same sample.
func TestIntegrationServeAppliesMappingRules(t *testing.T) {
	t.Parallel()
	file := writeConfig(t, exampleRules)
	mqttAddr := freeAddr(t)
	_, base, pgURL := startServe(t, "--config", file, "--mqtt-addr", mqttAddr, "--batch-age", "50ms")

	now := time.Now().UTC().Truncate(time.Millisecond)
	press := `{"t": ` + strconv.FormatInt(now.Add(-time.Second).UnixMilli(), 10) + `, "temp": 71.2, "pressure": 3.1, "rpm": 1200}`
	c, err := mqtttest.ConnectV3(t, "tcp://"+mqttAddr, "press-gw")
	if err != nil {
		t.Fatal(err)
	}
	tok := c.Publish("factory/berlin/line3/press7/telemetry", 1, false, press)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	ts := now.Add(-time.Minute).Format(time.RFC3339Nano)
	upload := `{"device": "pump-7", "samples": [{"ts": "` + ts + `", "v": 1.2}, {"ts": "` + ts + `", "v": 1.3}]}`
	if code, body := post(t, base+"/v1/readings?rule=pump-upload", "application/json", "", upload); code != http.StatusOK {
		t.Fatalf("upload: %d %s", code, body)
	}
	if code, body := post(t, base+"/v1/readings?rule=pump-upload", "application/json", "", `{"device": "pump-8", "samples": [{"ts": "`+ts+`"}]}`); code != http.StatusUnprocessableEntity ||
		!strings.Contains(body, `"rule":"pump-upload"`) || !strings.Contains(body, `"path":"samples.0.v"`) {
		t.Errorf("unmappable upload: %d %s", code, body)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return countRows(t, pgURL, "SELECT count(*) FROM readings") >= 5 },
		"rows did not land: %d of 5", countRows(t, pgURL, "SELECT count(*) FROM readings"))
	for _, q := range []struct {
		sql  string
		want int
	}{
		{"SELECT count(*) FROM readings", 5},
		{`SELECT count(*) FROM readings WHERE device_id = 'press7' AND metric IN ('temp', 'pressure', 'rpm') AND payload @> '{"site": "berlin", "line": "line3"}'`, 3},
		{"SELECT count(*) FROM readings WHERE device_id = 'pump-7' AND metric = 'flow'", 2},
	} {
		if got := countRows(t, pgURL, q.sql); got != q.want {
			t.Errorf("%s = %d, want %d", q.sql, got, q.want)
		}
	}

	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"config", "check", file, "--topic", "factory/berlin/line3/press7/telemetry", "--payload", press}, &out, &errOut); code != 0 {
		t.Fatalf("config check: exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"3 row(s) would land", " temp ", " pressure ", " rpm ", "mapped by rule press-telemetry"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("config check output lacks %q:\n%s", want, out.String())
		}
	}
}
