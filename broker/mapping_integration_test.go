package broker

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"firehose/mapping"
)

// TestIntegrationMappingRules publishes real devices' shapes through the
// broker with mapping rules into PostgreSQL: a press's multi-metric JSON on
// a topic hierarchy lands a row per metric with its tags; a gateway's array
// of samples lands a row per sample; a message a rule cannot map is refused
// (0x99, with the rule and the path as reason string) and lands nothing,
// while its neighbours land; the default readings topic still works beside
// the rules.
func TestIntegrationMappingRules(t *testing.T) {
	t.Parallel()
	rules, err := mapping.New([]mapping.Rule{
		{Name: "press", Topic: "factory/{site}/{line}/{device_id}/telemetry", Time: "t", TimeFormat: "unix_ms", Metrics: []string{"*"}},
		{Name: "uploads", Topic: "gw/{device_id}/upload", Samples: "samples", Time: "ts", Metrics: []string{"flow=v"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := newStack(t, stackOptions{bridge: true, cfg: Config{Rules: rules}})
	c := mustConnectV5(t, s.tcpAddr(), "press-gw")
	now := time.Now().UTC().Truncate(time.Millisecond)

	publish := func(topic, payload string) (byte, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
		if resp == nil {
			t.Fatalf("publish %s: %v", topic, err)
		}
		reason := ""
		if resp.Properties != nil {
			reason = resp.Properties.ReasonString
		}
		return resp.ReasonCode, reason
	}
	t0 := now.Add(-time.Minute).UnixMilli()
	if code, r := publish("factory/berlin/line3/press7/telemetry",
		`{"t": `+strconv.FormatInt(t0, 10)+`, "temp": 71.2, "pressure": 3.1, "rpm": 1200, "state": "run"}`); code != 0 {
		t.Fatalf("press telemetry: 0x%02x %s", code, r)
	}
	if code, r := publish("gw/pump-7/upload",
		`{"samples": [{"ts": "`+now.Add(-2*time.Minute).Format(time.RFC3339Nano)+`", "v": 1.2}, {"ts": "`+now.Add(-time.Minute).Format(time.RFC3339Nano)+`", "v": 1.3}]}`); code != 0 {
		t.Fatalf("samples: 0x%02x %s", code, r)
	}
	// Unmappable: the second sample has no value.
	code, reason := publish("gw/pump-8/upload", `{"samples": [{"ts": "`+now.Format(time.RFC3339)+`", "v": 1}, {"ts": "`+now.Format(time.RFC3339)+`"}]}`)
	if code != 0x99 || !strings.Contains(reason, `rule "uploads"`) || !strings.Contains(reason, `path "samples.1.v"`) {
		t.Errorf("unmappable message: 0x%02x %q, want 0x99 naming the rule and the path", code, reason)
	}
	if code, r := publish("devices/plain-1/readings", `{"reading": 5}`); code != 0 {
		t.Fatalf("default topic: 0x%02x %s", code, r)
	}

	s.settle(6, 10*time.Second)
	for _, q := range []struct {
		sql  string
		want int
	}{
		{"SELECT count(*) FROM readings", 6},
		{"SELECT count(*) FROM readings WHERE device_id = 'press7' AND metric IN ('temp', 'pressure', 'rpm') AND ts = $1 " +
			"AND payload @> '{\"site\": \"berlin\", \"line\": \"line3\", \"state\": \"run\"}'", 3},
		{"SELECT count(*) FROM readings WHERE device_id = 'pump-7' AND metric = 'flow' AND reading IN (1.2, 1.3)", 2},
		{"SELECT count(*) FROM readings WHERE device_id = 'pump-8'", 0},
		{"SELECT count(*) FROM readings WHERE device_id = 'plain-1' AND metric = 'reading' AND reading = 5", 1},
	} {
		args := []any{}
		if strings.Contains(q.sql, "$1") {
			args = append(args, time.UnixMilli(t0))
		}
		if got := s.count(q.sql, args...); got != q.want {
			t.Errorf("%s = %d, want %d", q.sql, got, q.want)
		}
	}
}
