package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"

	"firehose/internal/cli"
	"firehose/internal/configcheck"
	"firehose/internal/testenv"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "firehose.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// clearFirehoseEnv keeps a developer's FIREHOSE_* variables out of a test
// that runs commands in this process.
func clearFirehoseEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, cli.EnvPrefix) {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

func TestConfigFilePrecedenceForServe(t *testing.T) {
	file := writeConfig(t, "roles: [httpgw, bridge]\nbatch-size: 100\nshards: 8\nredis: redis://file:6379/0\nhttp-max-body: 2048\n")
	env := map[string]string{"FIREHOSE_SHARDS": "2", "FIREHOSE_REDIS_URL": "redis://env:6379/0"}
	var cfg serveConfig
	fs := newServeFlags(&cfg, &bytes.Buffer{})
	fs.LookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := cfg.parse(fs, "serve", []string{"--config", file, "--redis", "redis://flag:6379/0"}); err != nil {
		t.Fatal(err)
	}
	if cfg.Roles != "httpgw,bridge" || cfg.Bridge.BatchSize != 100 || cfg.HTTP.MaxBody != 2048 {
		t.Errorf("file not applied: roles %q, batch size %d, http max body %d", cfg.Roles, cfg.Bridge.BatchSize, cfg.HTTP.MaxBody)
	}
	if cfg.Streams.Count != 2 || cfg.Bridge.Streams.Count != 2 {
		t.Errorf("environment must win over the file: shards %d (bridge %d)", cfg.Streams.Count, cfg.Bridge.Streams.Count)
	}
	if cfg.Redis != "redis://flag:6379/0" {
		t.Errorf("flag must win over environment and file: redis %q", cfg.Redis)
	}
	if cfg.Bridge.BatchAge.String() != "200ms" {
		t.Errorf("a key the file does not give keeps its default: batch-age %s", cfg.Bridge.BatchAge)
	}
}

func TestServeRefusesBadConfigFile(t *testing.T) {
	clearFirehoseEnv(t)
	for _, tc := range []struct {
		name, text, want string // want follows "firehose: FILE:"
	}{
		{"unknown key", "roles: httpgw\nbatch-sise: 3\n", "2: unknown key batch-sise: did you mean batch-size?"},
		{"bad value", "batch-age: soon\n", `1: batch-age: invalid value "soon": want a duration such as 200ms, 15s or 1h`},
		{"value serve refuses", "roles: httpgw\n\nbatch-size: 0\n", "3: --batch-size 0: want 1 to 1,000,000"},
		{"unknown role", "roles: [httpgw, toaster]\n", `1: --roles: unknown role "toaster"`},
		{"duplicate key", "shards: 4\nshards: 8\n", "2: shards is already set on line 1"},
		{"not a mapping", "[batch-size, 5]\n", "1: want a mapping of flag names to values"},
		{"rules not a list", "roles: httpgw\nrules: {name: x}\n", "2: rules: want a list of rules"},
		{"rule with an unknown key", "rules:\n  - name: press\n    topic: a/{device_id}\n    metric: [v]\n", `4: rules: unknown key "metric" (a rule has device, endpoint`},
		{"rule that cannot work", "rules:\n  - name: press\n    topic: a/{device_id}\n  - name: b\n    topic: b/x\n    metrics: [v]\n", `2: rules: rule "press": no metrics`},
		{"rules of one name", "rules:\n  - {name: a, topic: \"a/{device_id}\", metrics: [v]}\n  - {name: a, topic: \"b/{device_id}\", metrics: [v]}\n", `3: rules: rule "a": the rule on line 2 has that name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeConfig(t, tc.text)
			var out, errOut bytes.Buffer
			code := run(context.Background(), []string{"serve", "--config", file}, &out, &errOut)
			msg := strings.TrimSpace(errOut.String())
			if code != 2 || !strings.HasPrefix(msg, "firehose: "+file+":"+tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("exit %d, stderr %q; want exit 2 and one line starting %q", code, msg, "firehose: "+file+":"+tc.want)
			}
		})
	}
}

func TestConfigCheck(t *testing.T) {
	clearFirehoseEnv(t)
	t.Setenv("FIREHOSE_SHARDS", "8")
	// Nothing listens on port 1: config check must not try to connect.
	file := writeConfig(t, "roles: [broker, httpgw]\nbatch-size: 2000\nredis: redis://:hunter2@127.0.0.1:1/0\npostgres: postgres://fh:s3cret@127.0.0.1:1/firehose?password=s3cret\nmqtt-addr: \"\"\nmqtt-ws-addr: \":0\"\nadmin-addr: 127.0.0.1:1\nadmin-token: t0psecret\n")
	check := func(t *testing.T, args ...string) (int, string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := run(context.Background(), append([]string{"config", "check", file}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}

	t.Run("settings", func(t *testing.T) {
		code, out, errOut := check(t)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		for _, want := range []string{"valid", "roles broker, httpgw", file + ":2", "FIREHOSE_SHARDS", "redis://:xxxxx@127.0.0.1:1/0", "mqtt-topic", "admin-token"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "hunter2") || strings.Contains(out, "s3cret") || strings.Contains(out, "t0psecret") {
			t.Errorf("output shows a password:\n%s", out)
		}
		if f := strings.Fields(settingLine(out, "admin-token")); len(f) != 3 || f[1] != "xxxxx" {
			t.Errorf("admin-token line %q: want its value hidden", settingLine(out, "admin-token"))
		}
		line := settingLine(out, "batch-size")
		if f := strings.Fields(line); len(f) != 3 || f[1] != "2000" || f[2] != file+":2" {
			t.Errorf("batch-size line %q", line)
		}
		if f := strings.Fields(settingLine(out, "batch-age")); len(f) != 3 || f[2] != "default" {
			t.Errorf("batch-age line %q", settingLine(out, "batch-age"))
		}
	})

	t.Run("mqtt sample", func(t *testing.T) {
		rep := checkJSON(t, check, "--topic", "devices/pump-7/readings", "--payload", `{"reading": 21.5, "ts": "2026-11-30T08:00:00Z", "battery": 97}`)
		s := rep.Sample
		if s == nil || s.Refused != nil || len(s.Rows) != 1 {
			t.Fatalf("sample %+v", s)
		}
		r := s.Rows[0]
		if r.DeviceID != "pump-7" || r.Reading != 21.5 || r.TS.Format("2006-01-02T15:04:05Z07:00") != "2026-11-30T08:00:00Z" || compact(r.Payload) != `{"battery":97}` {
			t.Errorf("row %+v", r)
		}
		if r.Shard < 0 || r.Shard >= 8 || !strings.HasPrefix(r.Stream, "firehose:readings:") {
			t.Errorf("row on shard %d of 8, stream %q", r.Shard, r.Stream)
		}
	})

	t.Run("mqtt sample refused", func(t *testing.T) {
		code, out, errOut := check(t, "--topic", "devices/pump-7/readings", "--payload", `{"reading": "warm"}`)
		if code != 0 || !strings.Contains(out, "refused, nothing lands: reading: must be a number") {
			t.Errorf("exit %d, stdout:\n%s\nstderr: %s", code, out, errOut)
		}
	})

	t.Run("wildcard topic", func(t *testing.T) {
		rep := checkJSON(t, check, "--topic", "devices/+/readings", "--payload", `1`)
		if rep.Sample == nil || rep.Sample.Refused == nil || !strings.Contains(rep.Sample.Refused.Reason, "wildcards") {
			t.Errorf("sample %+v", rep.Sample)
		}
	})

	t.Run("not a readings topic", func(t *testing.T) {
		rep := checkJSON(t, check, "--topic", "devices/pump-7/status", "--payload", `1`)
		if rep.Sample == nil || len(rep.Sample.Rows) != 0 || !strings.Contains(rep.Sample.Note, "not a readings topic") {
			t.Errorf("sample %+v", rep.Sample)
		}
	})

	t.Run("http sample", func(t *testing.T) {
		rep := checkJSON(t, check, "--endpoint", "/v1/readings", "--body", `[{"device_id": "a", "reading": 1}, {"device_id": "b", "reading": 2, "site": "north"}]`)
		if rep.Sample == nil || len(rep.Sample.Rows) != 2 || rep.Sample.Rows[1].DeviceID != "b" || compact(rep.Sample.Rows[1].Payload) != `{"site":"north"}` {
			t.Errorf("sample %+v", rep.Sample)
		}
		if string(rep.Sample.Rows[0].Payload) != "null" || !rep.Sample.Rows[0].TS.Equal(rep.Sample.Rows[0].ReceivedAt) {
			t.Errorf("a reading without ts or extra fields: %+v", rep.Sample.Rows[0])
		}
	})

	t.Run("http sample refused", func(t *testing.T) {
		rep := checkJSON(t, check, "--endpoint", "/v1/readings", "--body", `{"device_id": "a/b", "reading": 1}`)
		if rep.Sample == nil || rep.Sample.Refused == nil || rep.Sample.Refused.Status != 422 || !strings.Contains(string(rep.Sample.Refused.Answer), "device_id") {
			t.Errorf("sample %+v", rep.Sample)
		}
	})

	t.Run("fast endpoint with a device", func(t *testing.T) {
		code, out, errOut := check(t, "--endpoint", "/readings/fast", "--body", `{"id": 1, "reading": 5}`, "--device-id", "seed-2")
		if code != 0 || !strings.Contains(out, "1 row(s) would land") || !strings.Contains(out, "seed-2") {
			t.Errorf("exit %d, stdout:\n%s\nstderr: %s", code, out, errOut)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"--topic", "t", "--endpoint", "/v1/readings"},
			{"--endpoint", "/readings"},
			{"--body", "{}"},
			{"other.yaml"},
		} {
			if code, _, errOut := check(t, args...); code != 2 {
				t.Errorf("%q: exit %d, want 2; stderr %s", args, code, errOut)
			}
		}
	})
}

func TestConfigCheckRefusesAsServeDoes(t *testing.T) {
	clearFirehoseEnv(t)
	file := writeConfig(t, "roles: httpgw\nhttp-api-keys: /nonexistent/keys\n")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"config", "check", "--json", file}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "load --http-api-keys") {
		t.Errorf("exit %d, stderr %q; want exit 1 naming the key file", code, errOut.String())
	}
	var rep configcheck.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Valid || !strings.Contains(rep.Error, "http-api-keys") {
		t.Errorf("report %+v (%v)", rep, err)
	}

	file = writeConfig(t, "batch-size: 1\nbatch_age: 1s\n")
	out.Reset()
	errOut.Reset()
	code = run(context.Background(), []string{"config", "check", file, "--json"}, &out, &errOut)
	if err := json.Unmarshal(out.Bytes(), &rep); code != 1 || err != nil || rep.Line != 2 || !strings.Contains(rep.Error, "did you mean batch-age?") {
		t.Errorf("exit %d, report %+v (%v)", code, rep, err)
	}
}

// TestExampleConfigPassesCheck keeps deploy/firehose.example.yaml a file
// serve accepts, every key of it applied.
func TestExampleConfigPassesCheck(t *testing.T) {
	clearFirehoseEnv(t)
	const path = "../../deploy/firehose.example.yaml"
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"config", "check", path, "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep configcheck.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || !rep.Valid {
		t.Fatalf("report %s (%v)", out.String(), err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(data, &keys); err != nil {
		t.Fatal(err)
	}
	from := map[string]string{}
	for _, s := range rep.Settings {
		from[s.Flag] = s.From
	}
	for k := range keys {
		if from[k] != "file" {
			t.Errorf("key %s: from %q, want file", k, from[k])
		}
	}
	for _, want := range []string{"roles", "postgres", "redis", "batch-size", "batch-age", "high-water", "http-addr", "mqtt-addr", "log-level"} {
		if _, ok := keys[want]; !ok {
			t.Errorf("the example does not show %s", want)
		}
	}
}

// compact undoes the report's indentation of a JSON value.
func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

func settingLine(out, flag string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, flag+" ") {
			return l
		}
	}
	return ""
}

func checkJSON(t *testing.T, check func(*testing.T, ...string) (int, string, string), args ...string) configcheck.Report {
	t.Helper()
	code, out, errOut := check(t, append(args, "--json")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep configcheck.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	return rep
}

// TestIntegrationServeReadsConfigFile starts serve from a configuration
// file (one setting overridden by a flag) and checks that what config check
// predicted for a body is what lands.
func TestIntegrationServeReadsConfigFile(t *testing.T) {
	t.Parallel()
	pgURL := testenv.Postgres(t)
	_, prefix := testenv.Redis(t)
	addr := freeAddr(t)
	file := writeConfig(t, fmt.Sprintf("roles: [httpgw, bridge]\npostgres: %s\nredis: %s\nredis-prefix: %s\nhttp-addr: 127.0.0.1:1\nbatch-age: 50ms\nlog-level: warn\n",
		pgURL, testenv.RedisURL(), prefix))
	body := `[{"device_id": "cfg-a", "reading": 1.5, "ts": "2026-11-30T08:00:00Z", "site": "north"}, {"device_id": "cfg-b", "reading": 2}]`

	cmd := exec.Command(binary, "config", "check", file, "--endpoint", "/v1/readings", "--body", body, "--json")
	cmd.Env = cleanEnv()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("config check: %v", err)
	}
	var rep configcheck.Report
	if err := json.Unmarshal(out, &rep); err != nil || rep.Sample == nil || len(rep.Sample.Rows) != 2 {
		t.Fatalf("config check: %s (%v)", out, err)
	}

	p := start(t, "serve", "--config", file, "--http-addr", addr)
	base := "http://" + addr
	waitReady(t, p, base)
	if code, answer := post(t, base+"/v1/readings", "application/json", "", body); code != http.StatusOK {
		t.Fatalf("POST: %d %s", code, answer)
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		return countRows(t, pgURL, `SELECT count(*) FROM readings WHERE device_id LIKE 'cfg-%'`) == 2
	}, "readings did not land; output: %s", p.stderr.String())
	want := rep.Sample.Rows[0]
	conn, err := pgx.Connect(t.Context(), pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var ts time.Time
	var reading float64
	var payload string
	if err := conn.QueryRow(t.Context(), `SELECT ts, reading, payload::text FROM readings WHERE device_id = 'cfg-a'`).Scan(&ts, &reading, &payload); err != nil {
		t.Fatal(err)
	}
	if !ts.Equal(want.TS) || reading != want.Reading || payload != `{"site": "north"}` || compact(want.Payload) != `{"site":"north"}` {
		t.Errorf("landed ts %s reading %v payload %s; config check said ts %s reading %v payload %s", ts, reading, payload, want.TS, want.Reading, want.Payload)
	}
}

// TestSubscriberConfigFile: the subscriber's settings come from the file
// under their flags' names (lists as YAML sequences), its default topics
// follow the readings topic, and a subscriber without a broker is refused
// at the line of its roles.
func TestSubscriberConfigFile(t *testing.T) {
	clearFirehoseEnv(t)
	file := writeConfig(t, "roles: [subscriber, bridge]\nsubscribe-broker: [tcp://mq1:1883, tcp://mq2:1883]\n"+
		"subscribe-group: fh\nsubscribe-qos: 2\nsubscribe-client-id: fh-site-1\nmqtt-topic: plant/{device_id}/data\n")
	cfg, _, err := loadServe([]string{"--config", file}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Subscribe
	if strings.Join(s.Brokers, " ") != "tcp://mq1:1883 tcp://mq2:1883" || s.Group != "fh" || s.QoS != 2 || s.ClientID != "fh-site-1" {
		t.Errorf("subscriber settings from the file: %+v", s)
	}
	if strings.Join(s.Topics, " ") != "plant/+/data spBv1.0/#" {
		t.Errorf("default topics %v, want the readings topic's filter and Sparkplug B's", s.Topics)
	}
	bad := writeConfig(t, "roles: [subscriber, bridge]\n")
	if _, _, err := loadServe([]string{"--config", bad}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--subscribe-broker") {
		t.Errorf("a subscriber without a broker: %v, want a refusal naming --subscribe-broker", err)
	}
}

// config check shows a typed table's DDL and the row a sample becomes,
// column by column, and a value its column's type refuses with the rule,
// the column and the path.
func TestConfigCheckTypedTable(t *testing.T) {
	clearFirehoseEnv(t)
	file := writeConfig(t, `rules:
  - name: press
    topic: factory/{site}/{device_id}/telemetry
    time: ts
    table: press_telemetry
    columns:
      - {name: device_id, type: text, source: device}
      - {name: site, type: text, capture: site}
      - {name: time, type: timestamptz, source: time}
      - {name: rpm, type: integer, path: rpm, required: true}
    indexes:
      - {columns: [device_id, time]}
`)
	check := func(payload string) (int, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"config", "check", file, "--topic", "factory/berlin/press7/telemetry", "--payload", payload}, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	code, out := check(`{"ts": "2026-12-05T10:00:00Z", "rpm": 1200, "mode": "auto"}`)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, want := range []string{
		`CREATE TABLE "press_telemetry" (`, `PARTITION BY RANGE ("time")`,
		`CREATE INDEX "press_telemetry_device_id_time_idx" ON "press_telemetry" ("device_id", "time")`,
		"a row would land in press_telemetry",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for col, want := range map[string]string{"device_id": `"press7"`, "site": `"berlin"`, "time": "2026-12-05T10:00:00Z", "rpm": "1200", "extra": `{"mode":"auto"}`} {
		if f := strings.Fields(settingLine(out, "  "+col)); len(f) == 0 || f[len(f)-1] != want {
			t.Errorf("column %s: line %q, want value %s", col, settingLine(out, "  "+col), want)
		}
	}
	code, out = check(`{"ts": "2026-12-05T10:00:00Z", "rpm": "fast"}`)
	if code != 0 || !strings.Contains(out, `refused, nothing lands: rule "press": column "rpm": path "rpm": integer: want an integer, found a string`) {
		t.Errorf("exit %d, output:\n%s", code, out)
	}
}
