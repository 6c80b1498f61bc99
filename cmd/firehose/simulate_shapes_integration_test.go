package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"firehose/internal/testenv"
	"firehose/simulator"
)

// simulateRules is the rules file the shapes need, as shipped.
var simulateRules = filepath.Join("..", "..", "deploy", "simulate-rules.yaml")

// rowsByMetric counts a run's rows per metric in PostgreSQL, independently
// of the simulator: device ids start with prefix.
func rowsByMetric(t *testing.T, pgURL, prefix string) map[string]int64 {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), `SELECT metric, count(*) FROM readings WHERE starts_with(device_id, $1) GROUP BY 1`, prefix)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for rows.Next() {
		var m string
		var n int64
		if err := rows.Scan(&m, &n); err != nil {
			t.Fatal(err)
		}
		out[m] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkRowsOnce checks that a report says every acknowledged row landed
// once per metric, and that PostgreSQL agrees metric by metric.
func checkRowsOnce(t *testing.T, rep *simulator.Report, got map[string]int64) {
	t.Helper()
	l := rep.Landing
	if l == nil || !rep.OK || rep.Send.Acked == 0 {
		t.Fatalf("report OK %v, acked %d, failures %v", rep.OK, rep.Send.Acked, rep.Failures)
	}
	if l.Missing != 0 || l.DupOnceAcked != 0 || l.Unexpected != 0 || l.RowsLanded != l.RowsAcked || l.RowsAcked != rep.Send.RowsAcked {
		t.Errorf("rows acked %d (send: %d), landed %d, missing %d, duplicated %d, unexpected %d",
			l.RowsAcked, rep.Send.RowsAcked, l.RowsLanded, l.Missing, l.DupOnceAcked, l.Unexpected)
	}
	var total int64
	for _, m := range l.Metrics {
		if m.RowsAcked == 0 || m.RowsLanded != m.RowsAcked || got[m.Metric] != m.RowsLanded {
			t.Errorf("metric %s: acked %d, landed %d; PostgreSQL %d", m.Metric, m.RowsAcked, m.RowsLanded, got[m.Metric])
		}
		total += m.RowsAcked
	}
	for _, e := range l.Events {
		if e.Acked == 0 || e.Landed != e.Acked || got[e.Metric] != e.Landed {
			t.Errorf("%s: acked %d, landed %d; PostgreSQL %d", e.Metric, e.Acked, e.Landed, got[e.Metric])
		}
		total += e.Acked
	}
	var all int64
	for _, n := range got {
		all += n
	}
	if total != all || total != l.Rows || rep.Send.ReadingsAcked == 0 || rep.Send.RowsPerS <= 0 {
		t.Errorf("rows: %d in the metrics' checks, %d in the report, %d in PostgreSQL; readings acked %d, %g rows/s",
			total, l.Rows, all, rep.Send.ReadingsAcked, rep.Send.RowsPerS)
	}
}

// TestIntegrationSimulateShapes runs each shape a short while against a
// stack with deploy/simulate-rules.yaml: every metric of every acknowledged
// message lands once, as PostgreSQL confirms metric by metric.
func TestIntegrationSimulateShapes(t *testing.T) {
	t.Parallel()
	st := startSimStack(t, "--config", simulateRules)
	for _, tc := range []struct {
		name    string
		mqtt    bool
		args    []string
		metrics []string
	}{
		{"telemetry over MQTT", true, []string{"--protocol", "mqtt", "--shape", "telemetry", "--devices", "12", "--rate", "600"},
			[]string{"temp", "pressure", "rpm"}},
		{"telemetry over HTTP, 5 metrics", false, []string{"--shape", "telemetry", "--metric-count", "5", "--devices", "6", "--rate", "300"},
			[]string{"temp", "pressure", "rpm", "m3", "m4"}},
		{"samples over HTTP", false, []string{"--shape", "samples", "--batch", "20", "--devices", "6", "--rate", "0", "--concurrency", "4"},
			[]string{"v"}},
		{"samples over MQTT", true, []string{"--protocol", "mqtt", "--shape", "samples", "--batch", "10", "--devices", "6", "--rate", "1000"},
			[]string{"v"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.mqtt {
				needBroker(t, st)
			}
			run := "sh" + testenv.ID()
			code, out, rep := simulate(t, append([]string{"--http", st.http, "--mqtt", st.mqtt, "--metrics", "off",
				"--postgres", st.pgURL, "--run-id", run, "--duration", "1500ms"}, tc.args...)...)
			t.Logf("\n%s", out)
			if code != 0 || rep == nil {
				t.Fatalf("exit %d", code)
			}
			got := rowsByMetric(t, st.pgURL, "sim-"+run+"-")
			checkRowsOnce(t, rep, got)
			if len(rep.Landing.Metrics) != len(tc.metrics) {
				t.Errorf("metrics checked: %+v, want %v", rep.Landing.Metrics, tc.metrics)
			}
			for _, m := range tc.metrics {
				if got[m] == 0 {
					t.Errorf("no row of metric %s", m)
				}
			}
		})
	}
}

// TestIntegrationSimulateSparkplug runs Sparkplug B edge nodes with devices
// and forced rebirths: the broker asks for rebirths, the nodes answer, and
// births, data and deaths land a row each per metric. The datatypes in the
// rows show that the broker's own decoder (package sparkplug) read the
// simulator's encoding.
func TestIntegrationSimulateSparkplug(t *testing.T) {
	t.Parallel()
	st := startSimStack(t)
	needBroker(t, st)
	run := "sp" + testenv.ID()
	code, out, rep := simulate(t, "--mqtt", st.mqtt, "--metrics", "off", "--postgres", st.pgURL, "--run-id", run,
		"--protocol", "mqtt", "--shape", "sparkplug", "--sparkplug-devices", "2", "--metric-count", "6",
		"--sparkplug-rebirth-every", "4", "--devices", "4", "--rate", "200", "--duration", "2s")
	t.Logf("\n%s", out)
	if code != 0 || rep == nil {
		t.Fatalf("exit %d", code)
	}
	prefix := "sim-" + run + "/"
	got := rowsByMetric(t, st.pgURL, prefix)
	checkRowsOnce(t, rep, got)
	s := rep.Send
	if s.RebirthsForced == 0 || s.RebirthsAsked == 0 || s.RebirthsAnswered == 0 || s.RebirthsAnswered > s.RebirthsAsked || s.DeathsAcked != 4 {
		t.Errorf("rebirths forced %d, asked %d, answered %d; deaths %d", s.RebirthsForced, s.RebirthsAsked, s.RebirthsAnswered, s.DeathsAcked)
	}
	// Each edge node was born once at the start and once per rebirth
	// answered; each of its devices likewise.
	if nb := got["sparkplug/NBIRTH"]; nb != 4+s.RebirthsAnswered || got["sparkplug/DBIRTH"] != 2*nb || got["sparkplug/NDEATH"] != 4 {
		t.Errorf("births and deaths in PostgreSQL: %v; %d rebirths answered", got, s.RebirthsAnswered)
	}
	conn, err := pgx.Connect(t.Context(), st.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// At QoS 1 each acknowledged NDATA with the unknown alias is an edge
	// dead letter, whole, and none of its rows landed.
	var letters int64
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM readings_rejected
		WHERE source = 'edge' AND edge_kind = 'sparkplug' AND starts_with(device_id, $1)`, prefix).Scan(&letters); err != nil {
		t.Fatal(err)
	}
	if d := rep.Landing.DeadLetters; d == nil || d.Expected == 0 || d.Missing != 0 || d.Found < d.Expected || d.Found != letters || rep.Landing.Partial != 0 {
		t.Errorf("dead letters %+v, partial rows %d; %d in readings_rejected", d, rep.Landing.Partial, letters)
	}
	if !strings.Contains(out, "dead letters") {
		t.Errorf("no dead letters line in the summary")
	}
	rows, err := conn.Query(t.Context(), `SELECT DISTINCT metric, payload->>'datatype' FROM readings
		WHERE starts_with(device_id, $1) AND metric NOT LIKE 'sparkplug/%'`, prefix)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for rows.Next() {
		var m, dt string
		if err := rows.Scan(&m, &dt); err != nil {
			t.Fatal(err)
		}
		types[m] = dt
	}
	want := map[string]string{"bdSeq": "Int64", "Node Control/Rebirth": "Boolean", "temp": "Double", "pressure": "Float",
		"rpm": "UInt32", "m3": "Int64", "m4": "Int16", "m5": "Boolean"}
	for m, dt := range want {
		if types[m] != dt {
			t.Errorf("metric %s landed with datatype %q, want %q (all: %v)", m, types[m], dt, types)
		}
	}
}

// resendFleets are the fleets of the resend tests: a shape over a protocol,
// and the rows a resent unit lands.
var resendFleets = []struct {
	name   string
	mqtt   bool
	args   []string
	perMsg int64
}{
	{"telemetry over MQTT", true, []string{"--protocol", "mqtt", "--shape", "telemetry", "--devices", "8", "--rate", "400"}, 3},
	{"samples over HTTP", false, []string{"--shape", "samples", "--batch", "10", "--devices", "6", "--rate", "600"}, 1},
	{"readings over HTTP", false, []string{"--batch", "4", "--devices", "6", "--rate", "600"}, 1},
}

// TestIntegrationSimulateResendsDuplicate resends a fifth of the
// acknowledged messages against a target that does not deduplicate: each
// resend lands once more, counted as a duplicate from resends, not as a
// failure; with --expect-dedup the same run fails.
func TestIntegrationSimulateResendsDuplicate(t *testing.T) {
	t.Parallel()
	st := startSimStack(t, "--config", simulateRules)
	for _, tc := range resendFleets {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.mqtt {
				needBroker(t, st)
			}
			run := "rs" + testenv.ID()
			base := append([]string{"--http", st.http, "--mqtt", st.mqtt, "--metrics", "off", "--postgres", st.pgURL,
				"--duration", "1500ms", "--resend", "0.2"}, tc.args...)
			code, out, rep := simulate(t, append(base, "--run-id", run)...)
			t.Logf("\n%s", out)
			if code != 0 || rep == nil || !rep.OK {
				t.Fatalf("exit %d", code)
			}
			s, l := rep.Send, rep.Landing
			if s.Resends == 0 || s.ResendsAcked != s.Resends {
				t.Fatalf("resends %d, acknowledged %d", s.Resends, s.ResendsAcked)
			}
			var rows int64
			for _, n := range rowsByMetric(t, st.pgURL, "sim-"+run+"-") {
				rows += n
			}
			// Every acknowledged resend landed once more: exactly the
			// duplicates from resends, and nothing else is duplicated.
			if l.DupFromResends != s.ResentUnits*tc.perMsg || rows != s.RowsAcked+l.DupFromResends ||
				l.DupOnceAcked != 0 || l.Missing != 0 || l.DupAfterResend != 0 {
				t.Errorf("resent %d messages (%d units); duplicates from resends %d, duplicated %d, missing %d; PostgreSQL %d rows for %d acked",
					s.Resends, s.ResentUnits, l.DupFromResends, l.DupOnceAcked, l.Missing, rows, s.RowsAcked)
			}
			if !strings.Contains(out, "duplicates from resends") {
				t.Error("the summary does not show the duplicates from resends")
			}
			code, out, rep = simulate(t, append(base, "--run-id", run+"d", "--expect-dedup")...)
			if code != 1 || rep == nil || rep.OK || !strings.Contains(out, "--expect-dedup") {
				t.Errorf("with --expect-dedup: exit %d, want 1 naming --expect-dedup:\n%s", code, out)
			}
		})
	}
}

// TestIntegrationSimulateResendsDeduplicated is the same fleets against a
// target run with --dedup id: every resend (the simulator's message id, as
// msg_id in the payload and Idempotency-Key over HTTP) is answered and not
// stored again, so --expect-dedup passes and PostgreSQL holds each row once.
func TestIntegrationSimulateResendsDeduplicated(t *testing.T) {
	t.Parallel()
	st := startSimStack(t, "--config", simulateRules, "--dedup", "id")
	for _, tc := range resendFleets {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.mqtt {
				needBroker(t, st)
			}
			run := "rd" + testenv.ID()
			code, out, rep := simulate(t, append([]string{"--http", st.http, "--mqtt", st.mqtt, "--metrics", "off", "--postgres", st.pgURL,
				"--duration", "1500ms", "--resend", "0.2", "--expect-dedup", "--run-id", run}, tc.args...)...)
			if code != 0 || rep == nil || !rep.OK {
				t.Fatalf("exit %d:\n%s", code, out)
			}
			if rep.Send.Resends == 0 || rep.Landing.DupFromResends != 0 {
				t.Fatalf("resends %d, duplicates from resends %d:\n%s", rep.Send.Resends, rep.Landing.DupFromResends, out)
			}
			got := rowsByMetric(t, st.pgURL, "sim-"+run+"-")
			if rep.Landing.RowsAcked == 0 { // the reading shape: a row per acknowledged reading
				if l := rep.Landing; got["reading"] != rep.Send.Acked || l.Missing != 0 || l.DupOnceAcked != 0 || l.DupAfterResend != 0 {
					t.Errorf("%d rows for %d readings acked; missing %d, duplicated %d", got["reading"], rep.Send.Acked, l.Missing, l.DupOnceAcked)
				}
				return
			}
			checkRowsOnce(t, rep, got)
		})
	}
}

// TestIntegrationSimulateShapeWithoutRules runs the shapes against a target
// without deploy/simulate-rules.yaml: over HTTP the first refusal stops the
// run naming the missing rule; over MQTT 3.1.1, whose broker acknowledges
// what no rule maps, the verification says no row landed and why.
func TestIntegrationSimulateShapeWithoutRules(t *testing.T) {
	t.Parallel()
	st := startSimStack(t)
	code, out, _ := simulate(t, "--http", st.http, "--metrics", "off", "--postgres", st.pgURL,
		"--shape", "samples", "--batch", "5", "--devices", "2", "--rate", "100", "--duration", "1s")
	if code != 1 || !strings.Contains(out, "no mapping rule") || !strings.Contains(out, "deploy/simulate-rules.yaml") {
		t.Errorf("HTTP: exit %d:\n%s", code, out)
	}
	needBroker(t, st)
	code, out, rep := simulate(t, "--mqtt", st.mqtt, "--metrics", "off", "--postgres", st.pgURL, "--land-timeout", "3s",
		"--protocol", "mqtt", "--shape", "telemetry", "--devices", "2", "--rate", "50", "--duration", "1s")
	if code != 1 || rep == nil || !strings.Contains(out, "no row landed") || !strings.Contains(out, "deploy/simulate-rules.yaml") {
		t.Errorf("MQTT: exit %d:\n%s", code, out)
	}
}

// TestIntegrationSimulateTyped runs the shape typed against a stack with
// deploy/simulate-rules.yaml (serve creates sim_telemetry at the bridge's
// start): every acknowledged message lands one row of sim_telemetry, column
// by column as sent, and none in readings; the metrics past the table's
// columns land in its extra column.
func TestIntegrationSimulateTyped(t *testing.T) {
	t.Parallel()
	st := startSimStack(t, "--config", simulateRules)
	for _, tc := range []struct {
		name string
		mqtt bool
		args []string
	}{
		{"over MQTT and HTTP", true, []string{"--protocol", "mixed", "--devices", "12", "--rate", "600"}},
		{"over HTTP, 5 metrics", false, []string{"--metric-count", "5", "--devices", "6", "--rate", "300"}},
		{"over HTTP in NDJSON batches", false, []string{"--batch", "20", "--devices", "6", "--rate", "0", "--concurrency", "4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.mqtt {
				needBroker(t, st)
			}
			run := "ty" + testenv.ID()
			code, out, rep := simulate(t, append([]string{"--http", st.http, "--mqtt", st.mqtt, "--metrics", "off",
				"--postgres", st.pgURL, "--run-id", run, "--duration", "1500ms", "--shape", "typed"}, tc.args...)...)
			t.Logf("\n%s", out)
			if code != 0 || rep == nil || !rep.OK {
				t.Fatalf("exit %d, report %+v", code, rep)
			}
			l := rep.Landing
			if l.Columns == nil || l.Columns.Rows == 0 || l.Columns.Mismatched != 0 || l.Missing != 0 || l.DupOnceAcked != 0 {
				t.Fatalf("landing %+v, columns %+v", l, l.Columns)
			}
			prefix := "sim-" + run + "-"
			rows := testenv.QueryInt(t, st.pgURL, "SELECT count(*) FROM sim_telemetry WHERE starts_with(device_id, $1)", prefix)
			if rows != rep.Send.Acked || rows != l.Columns.Rows {
				t.Errorf("sim_telemetry holds %d rows of the run; %d messages acknowledged, %d rows checked", rows, rep.Send.Acked, l.Columns.Rows)
			}
			if n := testenv.QueryInt(t, st.pgURL, "SELECT count(*) FROM readings WHERE starts_with(device_id, $1)", prefix); n != 0 {
				t.Errorf("%d readings rows of a typed run", n)
			}
		})
	}
}
