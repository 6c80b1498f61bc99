package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"firehose/internal/cli"
	"firehose/internal/testenv"
	"firehose/simulator"
)

// simStack is a firehose serve process of a test's own, with its HTTP
// gateway and (when the binary has the broker role) its MQTT broker on free
// loopback ports.
type simStack struct {
	pgURL, http, mqtt string // mqtt is "" without a broker
	pid               int    // of the serve process
}

var brokerCheck = sync.OnceValue(func() bool {
	out, _ := exec.Command(binary, "serve", "--help").CombinedOutput()
	return bytes.Contains(out, []byte("--mqtt-addr"))
})

// needBroker skips t when firehose serve has no MQTT broker yet.
func needBroker(t *testing.T, st simStack) {
	t.Helper()
	if st.mqtt == "" {
		t.Skip("firehose serve --help lists no --mqtt-addr: the broker role is not built, so the MQTT end-to-end run is skipped")
	}
}

func startSimStack(t *testing.T, extra ...string) simStack {
	t.Helper()
	pgURL := testenv.Postgres(t)
	_, prefix := testenv.Redis(t)
	httpAddr := freeAddr(t)
	st := simStack{pgURL: pgURL, http: "http://" + httpAddr}
	args := []string{"serve", "--postgres", pgURL, "--redis", testenv.RedisURL(), "--redis-prefix", prefix,
		"--http-addr", httpAddr, "--log-level", "warn", "--batch-age", "50ms"}
	if brokerCheck() {
		mqttAddr := freeAddr(t)
		st.mqtt = "tcp://" + mqttAddr
		args = append(args, "--mqtt-addr", mqttAddr)
	}
	p := start(t, append(args, extra...)...)
	waitReady(t, p, st.http)
	st.pid = p.cmd.Process.Pid
	return st
}

// simulate runs firehose simulate in this process and returns its exit
// code, its output and the report it wrote.
func simulate(t *testing.T, args ...string) (int, string, *simulator.Report) {
	t.Helper()
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	code := run(t.Context(), append([]string{"simulate", "--report", dir, "--log-level", "warn", "--land-timeout", "30s"}, args...), &out, &errOut)
	text := out.String() + errOut.String()
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		return code, text, nil
	}
	var rep simulator.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report.json: %v", err)
	}
	page, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil || bytes.Count(page, []byte("<svg")) < 3 {
		t.Errorf("report.html missing or without charts: %v", err)
	}
	return code, text, &rep
}

// landedCounts is what PostgreSQL holds for a run, counted independently of
// the simulator.
type landedCounts struct {
	rows, distinct, maxSeqs int64
	withBattery, withRSSI   int64
}

func countLanded(t *testing.T, pgURL, prefix string) landedCounts {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var c landedCounts
	err = conn.QueryRow(t.Context(), `
		WITH r AS (SELECT device_id, coalesce(payload->>'seq', payload->>'id')::bigint AS seq, payload
		           FROM readings WHERE starts_with(device_id, $1))
		SELECT (SELECT count(*) FROM r), (SELECT count(DISTINCT (device_id, seq)) FROM r),
		       (SELECT coalesce(sum(m), 0) FROM (SELECT max(seq) AS m FROM r GROUP BY device_id) d),
		       (SELECT count(*) FROM r WHERE payload ? 'battery'), (SELECT count(*) FROM r WHERE payload ? 'rssi')`,
		prefix).Scan(&c.rows, &c.distinct, &c.maxSeqs, &c.withBattery, &c.withRSSI)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestIntegrationSimulateReportMatchesRows runs short simulations of every
// kind against a real stack and checks that each report's counts are the
// rows PostgreSQL holds.
func TestIntegrationSimulateReportMatchesRows(t *testing.T) {
	t.Parallel()
	st := startSimStack(t)
	for _, tc := range []struct {
		name string
		mqtt bool
		args []string
		qos0 bool
	}{
		{"http fast closed loop", false, []string{"--endpoint", "fast", "--rate", "0", "--devices", "20", "--concurrency", "10"}, false},
		{"http v1 batches open loop", false, []string{"--endpoint", "v1", "--batch", "25", "--rate", "3000", "--ramp", "500ms", "--devices", "30", "--extra-fields", "3"}, false},
		{"mqtt qos1 open loop", true, []string{"--protocol", "mqtt", "--qos", "1", "--rate", "1500", "--devices", "40", "--extra-fields", "1"}, false},
		{"mixed qos2 closed loop", true, []string{"--protocol", "mixed", "--qos", "2", "--rate", "0", "--devices", "16"}, false},
		{"mqtt qos0", true, []string{"--protocol", "mqtt", "--qos", "0", "--rate", "1000", "--devices", "20"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.mqtt {
				needBroker(t, st)
			}
			run := "t" + testenv.ID()
			args := append([]string{"--http", st.http, "--mqtt", st.mqtt, "--metrics", st.http + "/metrics", "--postgres", st.pgURL,
				"--run-id", run, "--duration", "2s"}, tc.args...)
			code, out, rep := simulate(t, args...)
			if code != 0 || rep == nil {
				t.Fatalf("exit %d:\n%s", code, out)
			}
			t.Logf("\n%s", out)
			got := countLanded(t, st.pgURL, "sim-"+run+"-")
			l := rep.Landing
			if l == nil || l.Rows != got.rows || l.Readings != got.distinct {
				t.Fatalf("report says %+v; PostgreSQL has %d rows, %d distinct readings", l, got.rows, got.distinct)
			}
			if rep.Send.Sent == 0 || l.Missing != 0 || l.DupOnceAcked != 0 || l.Unexpected != 0 {
				t.Errorf("sent %d, missing %d, duplicated %d, unexpected %d", rep.Send.Sent, l.Missing, l.DupOnceAcked, l.Unexpected)
			}
			if tc.qos0 {
				if rep.Send.QoS0 != rep.Send.Sent || l.QoS0Sent != rep.Send.Sent || l.QoS0Landed != got.distinct {
					t.Errorf("QoS 0: sent %d, published %d, report landed %d of %d, PostgreSQL %d", rep.Send.Sent, rep.Send.QoS0, l.QoS0Landed, l.QoS0Sent, got.distinct)
				}
			} else {
				// Every acknowledged reading is there, once: without resends on
				// a quiet stack the rows are exactly the acknowledged readings,
				// numbered 1..n on each device.
				if rep.Send.Acked+rep.Send.QoS0 != got.rows || got.rows != got.distinct || got.maxSeqs != got.rows {
					t.Errorf("acked %d (+%d QoS 0); PostgreSQL %d rows, %d distinct, seqs up to %d", rep.Send.Acked, rep.Send.QoS0, got.rows, got.distinct, got.maxSeqs)
				}
			}
			if !l.HasCommitTimes || l.ReceiptToCommit.Count != got.rows || l.ReceiptToCommit.P50Ms <= 0 || l.ReceiptToCommit.P99Ms < l.ReceiptToCommit.P50Ms {
				t.Errorf("end-to-end latency: %+v", l.ReceiptToCommit)
			}
			if strings.Contains(strings.Join(tc.args, " "), "extra-fields") && got.withRSSI != got.rows {
				t.Errorf("%d of %d rows carry the extra field rssi", got.withRSSI, got.rows)
			}
			if !strings.Contains(strings.Join(tc.args, " "), "fast") && got.withBattery != got.rows {
				t.Errorf("%d of %d rows carry battery", got.withBattery, got.rows)
			}
			if len(rep.Series) < 2 || rep.AckLatency.Count == 0 {
				t.Errorf("series of %d seconds, %d latency samples", len(rep.Series), rep.AckLatency.Count)
			}
			var backlogSeen bool
			for _, s := range rep.Series {
				backlogSeen = backlogSeen || s.Backlog >= 0
			}
			if !backlogSeen {
				t.Error("the backlog was never scraped from the gateway's /metrics")
			}
		})
	}
}

// lossyProxy stands between the fleet and a real gateway and breaks the
// promise: it answers some requests 200 without passing them on (acked,
// never stored) and passes others on twice (acked once, stored twice).
type lossyProxy struct {
	target              string
	dropEvery, dupEvery int64
	n, dropped, duped   atomic.Int64
}

func (p *lossyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.Method != http.MethodPost {
		forward(w, r, p.target, body)
		return
	}
	switch n := p.n.Add(1); {
	case n%p.dropEvery == 0:
		p.dropped.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"buffered","message":"Reading buffered for processing"}`)
	case n%p.dupEvery == 0:
		p.duped.Add(1)
		forward(io.Discard, r, p.target, body)
		forward(w, r, p.target, body)
	default:
		forward(w, r, p.target, body)
	}
}

// forward posts body to target's path with r's headers and copies the answer
// to w (a ResponseWriter, or io.Discard).
func forward(w io.Writer, r *http.Request, target string, body []byte) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	rw, isRW := w.(http.ResponseWriter)
	if err != nil {
		if isRW {
			http.Error(rw, err.Error(), http.StatusBadGateway)
		}
		return
	}
	defer resp.Body.Close()
	if isRW {
		for k, v := range resp.Header {
			rw.Header()[k] = v
		}
		rw.WriteHeader(resp.StatusCode)
	}
	_, _ = io.Copy(w, resp.Body)
}

// TestIntegrationSimulateLossyTargetFails drives a target that loses and
// duplicates acknowledged readings: the report names them and the command
// exits 1.
func TestIntegrationSimulateLossyTargetFails(t *testing.T) {
	t.Parallel()
	st := startSimStack(t)
	proxy := &lossyProxy{target: st.http, dropEvery: 37, dupEvery: 53}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	code, out, rep := simulate(t, "--http", "http://"+ln.Addr().String(), "--metrics", st.http+"/metrics", "--postgres", st.pgURL,
		"--endpoint", "fast", "--rate", "1000", "--devices", "10", "--duration", "1500ms")
	t.Logf("proxy dropped %d requests, duplicated %d\n%s", proxy.dropped.Load(), proxy.duped.Load(), out)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if rep == nil || rep.OK || rep.Landing == nil {
		t.Fatalf("report: %+v", rep)
	}
	if rep.Landing.Missing != proxy.dropped.Load() || proxy.dropped.Load() == 0 {
		t.Errorf("report says %d missing, the proxy dropped %d", rep.Landing.Missing, proxy.dropped.Load())
	}
	if rep.Landing.DupOnceAcked != proxy.duped.Load() || proxy.duped.Load() == 0 {
		t.Errorf("report says %d duplicates of once-acked readings, the proxy doubled %d", rep.Landing.DupOnceAcked, proxy.duped.Load())
	}
	for _, want := range []string{"FAILED", "acknowledged readings are missing (e.g. sim-", "first and only attempt"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// TestIntegrationSimulateRowsDeletedBeforeVerify deletes some of a run's rows
// after they landed and before the verification: they are reported missing
// by device and sequence number.
func TestIntegrationSimulateRowsDeletedBeforeVerify(t *testing.T) {
	t.Parallel()
	st := startSimStack(t)
	cfg := simulator.DefaultConfig()
	cfg.HTTP, cfg.Postgres, cfg.Metrics = st.http, st.pgURL, "off"
	cfg.Devices, cfg.Rate, cfg.Duration, cfg.Batch, cfg.LandTimeout = 5, 500, time.Second, 5, 30*time.Second
	cfg.RunID = "del" + testenv.ID()
	var deleted int64
	cfg.BeforeVerify = func() error {
		conn, err := pgx.Connect(t.Context(), st.pgURL)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		tag, err := conn.Exec(t.Context(), `DELETE FROM readings WHERE starts_with(device_id, $1) AND (payload->>'seq')::int % 7 = 3`, cfg.DevicePrefix())
		deleted = tag.RowsAffected()
		return err
	}
	rep, err := simulator.Run(t.Context(), cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if deleted == 0 || rep.OK || rep.Landing.Missing != deleted || len(rep.Landing.MissingSample) == 0 {
		t.Fatalf("deleted %d rows; report OK %v, missing %d (%v)", deleted, rep.OK, rep.Landing.Missing, rep.Landing.MissingSample)
	}
	for _, ref := range rep.Landing.MissingSample {
		if ref.Seq%7 != 3 || !strings.HasPrefix(ref.Device, cfg.DevicePrefix()) {
			t.Errorf("named missing %s, which was not deleted", ref)
		}
	}
}

func TestSimulateUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad protocol", []string{"simulate", "--protocol", "smoke"}, 2, "--protocol"},
		{"batch on fast", []string{"simulate", "--endpoint", "fast", "--batch", "5"}, 2, "--batch 5"},
		{"argument", []string{"simulate", "now"}, 2, "takes no arguments"},
		{"unreachable gateway", []string{"simulate", "--http", "http://" + freeAddr(t), "--postgres", ""}, 1, "cannot reach the HTTP gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(t.Context(), tc.args, &out, &errOut)
			msg := strings.TrimSpace(errOut.String())
			if code != tc.code || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("exit %d, stderr %q; want %d and one line with %q", code, msg, tc.code, tc.want)
			}
		})
	}
}

func TestSimulateHelpAndEnvironment(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"simulate", "--help"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d", code)
	}
	help := errOut.String()
	var cfg simulator.Config
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(help, "--"+f.Name) || !strings.Contains(help, cli.EnvName(f.Name)) {
			t.Errorf("help does not document --%s and %s", f.Name, cli.EnvName(f.Name))
		}
	})
	for _, want := range []string{"--report", "FIREHOSE_DEVICES", "FIREHOSE_POSTGRES_URL", "--land-timeout"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %s", want)
		}
	}
	// The environment twins: serve's PostgreSQL variable, the fleet's size.
	cfg = simulator.DefaultConfig()
	cfs := cli.NewFlagSet("simulate", "", "")
	cfg.RegisterFlags(cfs.FlagSet)
	env := map[string]string{"FIREHOSE_DEVICES": "250", "FIREHOSE_POSTGRES_URL": "postgres://db/x", "FIREHOSE_QOS": "2"}
	cfs.LookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := cfs.Parse([]string{"--qos", "0"}); err != nil {
		t.Fatal(err)
	}
	if cfg.Devices != 250 || cfg.Postgres != "postgres://db/x" || cfg.QoS != 0 {
		t.Errorf("devices %d, postgres %q, qos %d", cfg.Devices, cfg.Postgres, cfg.QoS)
	}
}

// TestIntegrationSimulateRunIDAgain runs the same fleet (same device ids, as
// a fleet with provisioned credentials has) twice: the second run verifies
// only its own rows.
func TestIntegrationSimulateRunIDAgain(t *testing.T) {
	t.Parallel()
	st := startSimStack(t)
	run := "again" + testenv.ID()
	var acked int64
	for i := range 2 {
		code, out, rep := simulate(t, "--http", st.http, "--postgres", st.pgURL, "--run-id", run,
			"--devices", "4", "--rate", "400", "--duration", "1s")
		if code != 0 || rep == nil || rep.Landing.Rows != rep.Send.Acked || rep.Landing.DupOnceAcked != 0 {
			t.Fatalf("run %d: exit %d\n%s", i+1, code, out)
		}
		acked += rep.Send.Acked
	}
	// Each run numbers its readings from 1 again, so the (device, seq)
	// pairs overlap; each run verified only its own rows, and together they
	// are every row. (The runs need not send the same number: an open loop
	// on a busy machine may fall short of its rate.)
	if got := countLanded(t, st.pgURL, "sim-"+run+"-"); got.rows != acked || got.distinct >= got.rows {
		t.Errorf("two runs of the same fleet: %d rows, %d distinct (device, seq), %d acknowledged by the two runs", got.rows, got.distinct, acked)
	}
}

// TestIntegrationSimulateUnderBackpressure drives a stack whose backlog soon
// passes a tiny high-water mark: HTTP devices get 503s and resend, MQTT
// devices are disconnected and their clients resend after reconnecting. The
// run must still verify cleanly: resends are told apart from bugs.
func TestIntegrationSimulateUnderBackpressure(t *testing.T) {
	t.Parallel()
	st := startSimStack(t, "--high-water", "300", "--batch-age", "700ms", "--batch-size", "100000")
	needBroker(t, st)
	run := "bp" + testenv.ID()
	code, out, rep := simulate(t, "--http", st.http, "--mqtt", st.mqtt, "--postgres", st.pgURL, "--run-id", run,
		"--protocol", "mixed", "--qos", "1", "--devices", "40", "--rate", "1500", "--duration", "3s", "--max-attempts", "20")
	t.Logf("\n%s", out)
	if code != 0 || rep == nil {
		t.Fatalf("exit %d", code)
	}
	if rep.Send.Refused == 0 || rep.Send.Reconnects == 0 {
		t.Errorf("no backpressure seen: %d 503s, %d reconnects", rep.Send.Refused, rep.Send.Reconnects)
	}
	got := countLanded(t, st.pgURL, "sim-"+run+"-")
	if l := rep.Landing; l.Rows != got.rows || l.Readings != got.distinct || l.Missing != 0 || l.DupOnceAcked != 0 {
		t.Errorf("report %+v; PostgreSQL %d rows, %d distinct", l, got.rows, got.distinct)
	}
}
