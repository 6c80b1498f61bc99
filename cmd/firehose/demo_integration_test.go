package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"firehose/internal/testenv"
)

// TestIntegrationDemo runs firehose demo, small, against a database and key
// prefix of its own: both fleets are counted, every acknowledged reading
// lands once, and the status command it ends with runs as printed.
func TestIntegrationDemo(t *testing.T) {
	t.Parallel()
	pgURL := testenv.Postgres(t)
	_, prefix := testenv.Redis(t)
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"demo", "--postgres", pgURL, "--redis", testenv.RedisURL(), "--redis-prefix", prefix,
		"--batch-age", "50ms", "--readings", "1000", "--concurrency", "8",
		"--mqtt-devices", "20", "--mqtt-rate", "400", "--mqtt-duration", "1s", "--land-timeout", "30s"}, &out, &errOut)
	text := out.String()
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, text, errOut.String())
	}
	for _, re := range []string{
		`HTTP clients \(200 OK\) +1000 +1000 +0 +0\n`,
		`OK: every acknowledged reading \(HTTP and MQTT\) landed exactly once`,
		`docs/guarantees\.md`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("demo output does not match %q:\n%s", re, text)
		}
	}

	mq := regexp.MustCompile(`MQTT devices, QoS 1 \(PUBACK\) +(\d+) +(\d+) +0 +0\n`).FindStringSubmatch(text)
	if mq == nil || mq[1] == "0" || mq[1] != mq[2] {
		t.Errorf("the MQTT fleet's line is not n acknowledged, n landed, 0 missing, 0 duplicated:\n%s", text)
	}

	// The status command names the demo's deployment: run it as printed.
	m := regexp.MustCompile(`(?m)^  \S+ (status( .*)?)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no status command in the demo's output:\n%s", text)
	}
	args := strings.Fields(strings.ReplaceAll(m[1], "'", ""))
	if !strings.Contains(m[1], "--redis-prefix "+prefix) {
		t.Errorf("status command %q does not name the prefix %s", m[1], prefix)
	}
	var sout, serr bytes.Buffer
	if code := run(t.Context(), args, &sout, &serr); code != 0 {
		t.Fatalf("%s exited %d: %s", m[1], code, serr.String())
	}
	if !strings.Contains(sout.String(), prefix+":readings:") {
		t.Errorf("status shows no stream of %s:\n%s", prefix, sout.String())
	}
}
