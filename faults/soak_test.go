package faults

// The soak (make soak, never in make test): a fleet of MQTT devices with
// persistent sessions that leave and come back in waves, beside HTTP load,
// for minutes, with the memory of every process sampled each second. It is
// the proof of the broker's memory bound (issue 8, hole 4): offline
// persistent sessions, the subscribers of devices/# among them, must not make
// the broker hold without limit what is published while they are away.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"firehose/internal/mqtttest"
	"firehose/internal/testenv"
	"firehose/simulator"
	"firehose/stream"
)

// soakConfig is the soak's shape. Every field has a SOAK_ variable; the
// defaults are the run RELIABILITY.md reports.
type soakConfig struct {
	Duration        time.Duration // SOAK_DURATION: how long the fleet publishes, default 10m
	Devices         int           // SOAK_DEVICES: MQTT devices, half MQTT 5 and half 3.1.1, default 2000
	MQTTRate        float64       // SOAK_MQTT_RATE: readings/s of the whole MQTT fleet, default 200 (one per device every 10 s)
	HTTPDevices     int           // SOAK_HTTP_DEVICES: devices of the HTTP load (firehose simulate), default 50
	HTTPRate        float64       // SOAK_HTTP_RATE: readings/s of the HTTP load, default 100
	Wave            time.Duration // SOAK_WAVE: a quarter of the fleet leaves every Wave, default 30s (Duration/8 if shorter)
	Away            time.Duration // SOAK_AWAY: how long a leaving quarter stays away, default 1.5 x Wave
	WildcardEvery   int           // SOAK_WILDCARD_EVERY: every n-th device also subscribes to devices/#, default 50 (40 of 2000); 0 none
	Ghosts          int           // SOAK_GHOSTS: devices/# subscribers that leave at once and never return, default 200 (as in issue 8)
	ConnectParallel int           // SOAK_CONNECT_PARALLEL: MQTT connects under way at once, default 32
	RSSBound        int64         // SOAK_RSS_BOUND_MIB: the firehose process's RSS bound, default 512 MiB
	RedisBound      int64         // SOAK_REDIS_BOUND_MIB: Redis used_memory bound, default 64 MiB
	AbortRSS        int64         // SOAK_ABORT_RSS_MIB: past this RSS the run stops early to spare the machine, default 3072 MiB
	Out             string        // SOAK_OUT: directory for samples.csv and summary.md, default a new one under $TMPDIR
	Flags           []string      // SOAK_FIREHOSE_FLAGS: more flags for firehose serve, space-separated, default "--memory-limit 384MiB"
	Env             []string      // SOAK_FIREHOSE_ENV: NAME=value pairs for firehose serve (e.g. GOMEMLIMIT=400MiB), space-separated
}

func soakConfigFromEnv(t *testing.T) soakConfig {
	t.Helper()
	c := soakConfig{Duration: 10 * time.Minute, Devices: 2000, MQTTRate: 200, HTTPDevices: 50, HTTPRate: 100,
		WildcardEvery: 50, Ghosts: 200, ConnectParallel: 32,
		RSSBound: 512 << 20, RedisBound: 64 << 20, AbortRSS: 3072 << 20}
	dur := func(name string, p *time.Duration) {
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				t.Fatalf("%s=%q: want a positive duration such as 1m", name, v)
			}
			*p = d
		}
	}
	num := func(name string, p *int) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				t.Fatalf("%s=%q: want a whole number >= 0", name, v)
			}
			*p = n
		}
	}
	rate := func(name string, p *float64) {
		if v := os.Getenv(name); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 {
				t.Fatalf("%s=%q: want a positive rate", name, v)
			}
			*p = f
		}
	}
	mib := func(name string, p *int64) {
		n := int(*p >> 20)
		num(name, &n)
		*p = int64(n) << 20
	}
	dur("SOAK_DURATION", &c.Duration)
	// A short run still sees every quarter leave and return.
	c.Wave = min(30*time.Second, c.Duration/8)
	num("SOAK_DEVICES", &c.Devices)
	rate("SOAK_MQTT_RATE", &c.MQTTRate)
	num("SOAK_HTTP_DEVICES", &c.HTTPDevices)
	rate("SOAK_HTTP_RATE", &c.HTTPRate)
	dur("SOAK_WAVE", &c.Wave)
	c.Away = c.Wave * 3 / 2
	dur("SOAK_AWAY", &c.Away)
	num("SOAK_WILDCARD_EVERY", &c.WildcardEvery)
	num("SOAK_GHOSTS", &c.Ghosts)
	num("SOAK_CONNECT_PARALLEL", &c.ConnectParallel)
	mib("SOAK_RSS_BOUND_MIB", &c.RSSBound)
	mib("SOAK_REDIS_BOUND_MIB", &c.RedisBound)
	mib("SOAK_ABORT_RSS_MIB", &c.AbortRSS)
	c.Out = os.Getenv("SOAK_OUT")
	// The deployment's advice for a process with a memory budget: a soft
	// limit under it, so garbage does not grow to twice the live data
	// (without it the peak was 595 MiB for ~270 MiB live).
	c.Flags = []string{"--memory-limit", "384MiB"}
	if v, ok := os.LookupEnv("SOAK_FIREHOSE_FLAGS"); ok {
		c.Flags = strings.Fields(v)
	}
	c.Env = strings.Fields(os.Getenv("SOAK_FIREHOSE_ENV"))
	for _, kv := range c.Env {
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" || strings.HasPrefix(name, "FIREHOSE_") {
			t.Fatalf("SOAK_FIREHOSE_ENV: %q is not NAME=value (FIREHOSE_ variables are not passed: use SOAK_FIREHOSE_FLAGS)", kv)
		}
	}
	switch {
	case c.Devices < 4 || c.Devices > 20000:
		t.Fatalf("SOAK_DEVICES=%d: want 4 to 20000", c.Devices)
	case c.Away >= 4*c.Wave:
		t.Fatalf("SOAK_AWAY=%s: want less than 4 x SOAK_WAVE (%s), so that a quarter is back before its next wave", c.Away, 4*c.Wave)
	case c.ConnectParallel < 1:
		c.ConnectParallel = 1
	case c.HTTPDevices < 1:
		c.HTTPDevices = 1
	}
	return c
}

// TestSoak runs the stack for SOAK_DURATION (10 minutes by default) under a
// fleet of MQTT devices with persistent sessions that leave and return in
// waves, and HTTP load, and shows that memory stays bounded and that every
// acknowledged reading landed exactly once. Skipped unless FIREHOSE_SOAK is
// set (make soak, scripts/soak.sh).
//
// The stack is private: `firehose serve` (every role) on free loopback
// ports, a redis-server of its own (AOF everysec), a database of its own.
// The fleet runs in this test process (paho.golang for MQTT 5, paho.mqtt.golang
// for 3.1.1, alternating): every device subscribes at QoS 1 to its own
// commands topic, devices/<id>/commands, with a persistent session (MQTT 5:
// session expiry 1 h, clean start only on the first connection; 3.1.1: clean
// session false), publishes a retained status and then readings at QoS 1,
// each with its own sequence number, one at a time, resending one that got no
// acknowledgement. Every SOAK_WILDCARD_EVERY-th device also subscribes to
// devices/# (auth is off), and SOAK_GHOSTS more subscribers of devices/#
// leave for good at the start: their sessions are the queues the broker
// must bound. Every SOAK_WAVE a quarter of the fleet leaves (a third of its
// devices by closing the TCP connection, the rest with DISCONNECT) and comes
// back SOAK_AWAY later; while it is away a commander publishes one command
// to each of its devices, delivered when they return. HTTP load comes from
// `firehose simulate` (StartLoad).
//
// Each second it samples the RSS of firehose serve, firehose simulate, this
// test process (the MQTT fleet), redis-server and the database's PostgreSQL
// backends, Redis's used_memory and the streams' length, into samples.csv.
// It asserts at the end: the firehose process's RSS stayed under
// SOAK_RSS_BOUND_MIB, Redis used_memory under SOAK_REDIS_BOUND_MIB and the
// streams drained to 0 (trimmed), and no acknowledged reading (MQTT or HTTP)
// is missing or, acknowledged on its only attempt, duplicated. summary.md
// holds the row for RELIABILITY.md.
func TestSoak(t *testing.T) {
	if os.Getenv("FIREHOSE_SOAK") == "" {
		t.Skip("the soak runs only with FIREHOSE_SOAK set: make soak (SOAK_DURATION=1m for a short one)")
	}
	skipShort(t)
	cfg := soakConfigFromEnv(t)
	runID := testenv.ID()
	out := cfg.Out
	if out == "" {
		out = filepath.Join(os.TempDir(), "firehose-soak-"+runID)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("soak %s: %+v; results in %s", runID, cfg, out)

	rs := StartRedis(t, false)
	prefix := "fhsoak-" + runID
	svc := Services{Postgres: testenv.Postgres(t), Redis: rs.URL(), Prefix: prefix}
	debugAddr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	// Children inherit the test's environment (the Go runtime of this
	// process read its own at start-up, so GOMEMLIMIT and the like here
	// reach firehose serve and firehose simulate only).
	for _, kv := range cfg.Env {
		name, value, _ := strings.Cut(kv, "=")
		t.Setenv(name, value)
	}
	s := StartStack(t, svc, append([]string{"--debug-addr", debugAddr}, cfg.Flags...)...)
	rdb := outRedis(t, rs.URL())
	keys := stream.Streams{Prefix: prefix}.Keys()

	fleet := newSoakFleet(cfg, s.MQTTAddr, "soak-"+runID+"-")
	var load atomic.Pointer[Load]
	smp, err := startSoakSampler(out, s, debugAddr, rdb, keys, svc.Postgres, cfg.AbortRSS, map[string]func() int{
		"firehose": s.Proc.Pid,
		"simulate": func() int {
			if l := load.Load(); l != nil && !l.proc.Exited() {
				return l.proc.Pid()
			}
			return 0
		},
		"fleet": os.Getpid,
		"redis": rs.Pid,
	}, fleet)
	if err != nil {
		t.Fatal(err)
	}
	defer smp.Stop()
	time.Sleep(3 * time.Second) // pacing: idle samples
	idle := smp.Snapshot()

	// The run: the fleet connects (paced), then publishes and leaves in
	// waves until the deadline or an abort; the HTTP load runs beside it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-smp.aborted:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := fleet.ghosts(ctx); err != nil {
		t.Fatalf("ghost subscribers: %v", err)
	}
	connectStart := time.Now()
	if err := fleet.connectAll(ctx); err != nil {
		t.Fatalf("connect the fleet: %v", err)
	}
	connectTook := time.Since(connectStart)
	t.Logf("%d devices connected in %s", cfg.Devices, connectTook.Round(time.Millisecond))
	l := StartLoad(t, s, LoadOpts{Devices: cfg.HTTPDevices, Protocol: "http", Rate: cfg.HTTPRate, Duration: cfg.Duration})
	load.Store(l)
	fleet.run(ctx, cfg.Duration)
	aborted := ctx.Err() != nil
	cancel()
	rep := &simulator.Report{}
	if aborted {
		l.proc.Kill() // its report would take the rest of the duration
	} else {
		rep = l.Wait(cfg.Duration + 5*time.Minute)
	}
	runTook := time.Since(connectStart)

	// Landing: every acknowledged MQTT reading in readings, by device and
	// sequence number; the simulator has verified its own.
	mq := fleet.verify(t, svc.Postgres, 3*time.Minute)
	drained := true
	var backlog int64
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n, err := outStreamLen(context.Background(), rdb, keys)
		backlog = n
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			drained = false
			break
		}
		time.Sleep(time.Second) // the poll interval
	}
	time.Sleep(2 * time.Second) // pacing: samples of the drained stack
	smp.Stop()
	st := smp.Stats()
	abortedAt := smp.AbortedAt()

	// The record.
	httpAcked, httpLanded, httpLost, httpDup, httpResendDup := rep.Send.Acked, int64(0), int64(-1), int64(-1), int64(0)
	if rep.Landing != nil {
		httpLanded, httpLost, httpDup, httpResendDup = rep.Landing.Readings, rep.Landing.Missing, rep.Landing.DupOnceAcked, rep.Landing.DupAfterResend
	}
	fs := fleet.stats()
	wildcards := fleet.wildcardCount()
	loadDesc := fmt.Sprintf("%d MQTT devices QoS 1 (%d MQTT 5, %d 3.1.1; persistent sessions; %d also on devices/#, + %d devices/# subscribers gone for good) at %.0f/s + %d HTTP devices at %.0f/s open loop, %s",
		cfg.Devices, (cfg.Devices+1)/2, cfg.Devices/2, wildcards, cfg.Ghosts, cfg.MQTTRate, cfg.HTTPDevices, cfg.HTTPRate, cfg.Duration)
	waves := fmt.Sprintf("%d waves: a quarter leaves every %s for %s (1/3 closing TCP, 2/3 DISCONNECT); %d reconnects, session present on %d; %d commands to absent devices, %d delivered on return; %d deliveries to devices/# subscribers",
		fs.Waves, cfg.Wave, cfg.Away, fs.Reconnects, fs.SessionPresent, fs.CommandsSent, fs.CommandsGot, fs.WildcardGot)
	acked := mq.Acked + httpAcked
	landed := mq.Landed + httpLanded
	lost := mq.Missing + max(httpLost, 0)
	dups := mq.DupOnceAcked + max(httpDup, 0)
	fh, rd := st["firehose"], st["redis"]
	command := "make soak"
	if v := os.Getenv("SOAK_DURATION"); v != "" && cfg.Duration != 10*time.Minute {
		command = "SOAK_DURATION=" + v + " make soak"
	}
	var sum strings.Builder
	fmt.Fprintf(&sum, "| scenario | load | devices | waves | acked | landed | lost | dup. of once-acked | RSS max firehose | RSS max redis | command |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&sum, "| soak | %s | %d MQTT + %d HTTP | %s | %d | %d | %d | %d | %s (bound %s) | %s (used_memory max %s, bound %s) | `%s` |\n\n",
		loadDesc, cfg.Devices, cfg.HTTPDevices, waves, acked, landed, lost, dups, outMiB(fh.Max), outMiB(cfg.RSSBound), outMiB(rd.Max), outMiB(st["redis_used_memory"].Max), outMiB(cfg.RedisBound), command)
	cpu := smp.CPU()
	fmt.Fprintf(&sum, "| process | RSS idle | RSS median | RSS max | CPU (cores, mean) |\n|---|---|---|---|---|\n")
	for _, name := range []string{"firehose", "go_memstats_heap_inuse_bytes", "simulate", "fleet", "redis", "postgres", "redis_used_memory"} {
		v := st[name]
		if _, ok := st[name]; !ok {
			continue
		}
		label := map[string]string{"firehose": "firehose serve (all roles)", "go_memstats_heap_inuse_bytes": "firehose serve: Go heap in use (its /metrics)", "simulate": "firehose simulate (HTTP load)", "fleet": "go test (the MQTT fleet, sampler)",
			"redis": "redis-server", "postgres": "PostgreSQL backends of the database (sum, shared memory counted in each)", "redis_used_memory": "Redis used_memory (INFO memory)"}[name]
		idleMiB := "-" // not running yet
		if b, ok := idle[name]; ok {
			idleMiB = outMiB(b)
		}
		cores := "-"
		if c, ok := cpu[name]; ok {
			cores = fmt.Sprintf("%.2f", c)
		}
		fmt.Fprintf(&sum, "| %s | %s | %s | %s | %s |\n", label, idleMiB, outMiB(v.Median), outMiB(v.Max), cores)
	}
	fmt.Fprintf(&sum, "\nMQTT: acked %d, landed %d (rows %d), lost %d, dup. of once-acked %d, dup. after resend %d, resent %d, refused %d, given up %d, unexpected disconnects %d, connect failures %d.\n",
		mq.Acked, mq.Landed, mq.Rows, mq.Missing, mq.DupOnceAcked, mq.DupResend, fs.Resent, fs.Refused, fs.GivenUp, fs.Drops, fs.ConnectFailures)
	if aborted {
		fmt.Fprintf(&sum, "HTTP (firehose simulate): stopped by the abort, not verified.\n")
	} else {
		fmt.Fprintf(&sum, "HTTP (firehose simulate): acked %d, landed %d, lost %d, dup. of once-acked %d, dup. after resend %d, refused %d, errors %d.\n",
			httpAcked, httpLanded, httpLost, httpDup, httpResendDup, rep.Send.Refused, rep.Send.Errors)
	}
	if _, ok := st["firehose_mqtt_offline_sessions"]; ok {
		fmt.Fprintf(&sum, "Broker (its /metrics): offline sessions max %d, offline queued messages max %d (median %d), retained messages max %d, deliveries dropped %d, goroutines max %d; heap profile at the RSS peak: heap-peak.pb.gz.\n",
			st["firehose_mqtt_offline_sessions"].Max, st["firehose_mqtt_offline_queued_messages"].Max, st["firehose_mqtt_offline_queued_messages"].Median,
			st["firehose_mqtt_retained_messages"].Max, st["firehose_mqtt_deliveries_dropped_total"].Max, st["go_goroutines"].Max)
	}
	fmt.Fprintf(&sum, "Streams: peak %d entries, %d at the end (drained: %v). Fleet connected in %s; run %s; %d samples every 1 s in samples.csv. Machine: %d cores (shared), %s; commit %s; firehose flags: %q; environment: %q.\n",
		int64(st["stream_entries"].Max), backlog, drained, connectTook.Round(time.Millisecond), runTook.Round(time.Second), st["firehose"].N, runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"), soakCommit(), strings.Join(s.Args, " "), strings.Join(cfg.Env, " "))
	if !abortedAt.IsZero() {
		fmt.Fprintf(&sum, "ABORTED: firehose RSS passed %s after %s; the run was stopped early.\n", outMiB(cfg.AbortRSS), abortedAt.Sub(connectStart).Round(time.Second))
	}
	_ = os.WriteFile(filepath.Join(out, "summary.md"), []byte(sum.String()), 0o644)
	_ = os.WriteFile(filepath.Join(out, "firehose.log"), []byte(s.Proc.Output()), 0o644)
	t.Logf("summary (%s):\n%s", filepath.Join(out, "summary.md"), sum.String())
	r := Result{Scenario: "soak", Load: loadDesc, Faults: waves, Acked: acked, Landed: landed, Lost: lost, DupOnceAcked: dups,
		DupResend: mq.DupResend + httpResendDup, Refused: fs.Refused + rep.Send.Refused + rep.Send.Errors, Command: command,
		Notes: fmt.Sprintf("RSS max/median: firehose %s/%s (bound %s), redis-server %s/%s, Redis used_memory max %s (bound %s)",
			outMiB(fh.Max), outMiB(fh.Median), outMiB(cfg.RSSBound), outMiB(rd.Max), outMiB(rd.Median), outMiB(st["redis_used_memory"].Max), outMiB(cfg.RedisBound))}
	Record(t, r)
	if data, err := json.Marshal(r); err == nil {
		_ = os.WriteFile(filepath.Join(out, "result.json"), data, 0o644)
	}

	// The verdict.
	if !abortedAt.IsZero() {
		t.Errorf("firehose RSS passed the abort limit %s: the run stopped after %s", outMiB(cfg.AbortRSS), abortedAt.Sub(connectStart).Round(time.Second))
	}
	if fh.Max > cfg.RSSBound {
		t.Errorf("firehose serve peak RSS %s, want at most %s (idle %s)", outMiB(fh.Max), outMiB(cfg.RSSBound), outMiB(idle["firehose"]))
	}
	if m := st["redis_used_memory"].Max; m > cfg.RedisBound {
		t.Errorf("Redis peak used_memory %s, want at most %s", outMiB(m), outMiB(cfg.RedisBound))
	}
	if !drained {
		t.Errorf("the streams hold %d entries 2 minutes after the load: not trimmed", backlog)
	}
	if mq.Acked == 0 || (httpAcked == 0 && !aborted) {
		t.Errorf("acknowledged: MQTT %d, HTTP %d; want both > 0; simulator output:\n%s", mq.Acked, httpAcked, l.Output())
	}
	if mq.Missing != 0 || mq.DupOnceAcked != 0 {
		t.Errorf("MQTT exactly-once violated: %d acknowledged readings missing (e.g. %v), %d once-acknowledged readings duplicated (e.g. %v)",
			mq.Missing, mq.MissingSample, mq.DupOnceAcked, mq.DupSample)
	}
	if !aborted && (rep.Landing == nil || httpLost != 0 || httpDup != 0) {
		t.Errorf("HTTP exactly-once violated or not verified: lost %d, dup. of once-acked %d; simulator output:\n%s", httpLost, httpDup, l.Output())
	}
	if smp.Errors() > st["firehose"].N/10 {
		t.Errorf("%d of %d samples of Redis or PostgreSQL failed", smp.Errors(), st["firehose"].N)
	}
	if abortedAt.IsZero() {
		s.Stop(60 * time.Second)
	}
}

// Ledger flags of one reading (flags[seq-1]).
const (
	soakAcked  uint8 = 1 << iota // an attempt got PUBACK 0x00
	soakResent                   // sent more than once, or an attempt's outcome is unknown
)

// soakMaxAttempts bounds the attempts at one reading.
const soakMaxAttempts = 50

// soakFleet is the MQTT devices of the soak and the commander.
type soakFleet struct {
	cfg      soakConfig
	addr     string // host:port of the broker
	prefix   string // device ids are prefix + index
	devices  []*soakDevice
	interval time.Duration // between one device's readings
	sem      chan struct{} // paces connects
	start    time.Time     // of the waves

	online          atomic.Int64
	waves           atomic.Int64
	reconnects      atomic.Int64 // connects after the first
	sessionPresent  atomic.Int64 // of the reconnects, CONNACK said session present
	drops           atomic.Int64 // connections lost unasked
	connectFailures atomic.Int64
	resent          atomic.Int64
	refused         atomic.Int64 // PUBACK with a failure reason code
	givenUp         atomic.Int64
	commandsSent    atomic.Int64
	commandsGot     atomic.Int64
	wildcardGot     atomic.Int64
	acked           atomic.Int64
}

// soakDevice is one device: its ledger and its connection. Only its own
// goroutine touches it while the fleet runs.
type soakDevice struct {
	idx      int
	id       string
	v5       bool
	wildcard bool // also subscribes to devices/#
	abrupt   bool // leaves by closing its TCP connection
	quarter  int
	flags    []uint8
	pending  uint64 // seq of a reading not yet acknowledged, 0 none
	attempts int    // of pending
	conn     soakConn
	st       *state.State // MQTT 5 session state, kept across connections
	c3       mqtt.Client  // MQTT 3.1.1 client, reconnected across connections
	raw3     atomic.Pointer[net.Conn]
	lost3    chan struct{}
	started  bool // connected once
}

// soakConn is one connection of a device.
type soakConn interface {
	// publish sends one QoS 1 message and waits (bounded) for its PUBACK:
	// acked, refused with a reason code, or neither (unknown).
	publish(topic string, payload []byte, retain bool, qos byte) (acked, refused bool)
	done() <-chan struct{} // closed when the connection ended
	leave(abrupt bool)
}

func newSoakFleet(cfg soakConfig, addr, prefix string) *soakFleet {
	f := &soakFleet{cfg: cfg, addr: addr, prefix: prefix, sem: make(chan struct{}, cfg.ConnectParallel),
		interval: time.Duration(float64(cfg.Devices) / cfg.MQTTRate * float64(time.Second))}
	for i := range cfg.Devices {
		d := &soakDevice{idx: i + 1, id: prefix + strconv.Itoa(i+1), v5: i%2 == 0, abrupt: i%3 == 2, quarter: i * 4 / cfg.Devices}
		d.wildcard = cfg.WildcardEvery > 0 && i%cfg.WildcardEvery == cfg.WildcardEvery/2
		f.devices = append(f.devices, d)
	}
	return f
}

func (f *soakFleet) wildcardCount() int {
	n := 0
	for _, d := range f.devices {
		if d.wildcard {
			n++
		}
	}
	return n
}

// onMessage counts a message delivered to a device.
func (f *soakFleet) onMessage(d *soakDevice, topic string) {
	if topic == "devices/"+d.id+"/commands" {
		f.commandsGot.Add(1)
		return
	}
	f.wildcardGot.Add(1)
}

const soakSessionExpiry = 3600 // seconds asked by MQTT 5 devices; the broker caps it

// connect opens a connection for d: the first one starts a clean session and
// subscribes; later ones resume it.
func (f *soakFleet) connect(ctx context.Context, d *soakDevice) error {
	select {
	case f.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-f.sem }()
	var (
		c       soakConn
		present bool
		err     error
	)
	if d.v5 {
		c, present, err = f.connect5(ctx, d, d.id, !d.started)
	} else {
		c, present, err = f.connect3(d)
	}
	if err != nil {
		f.connectFailures.Add(1)
		return err
	}
	if d.started {
		f.reconnects.Add(1)
		if present {
			f.sessionPresent.Add(1)
		}
	}
	d.conn = c
	f.online.Add(1)
	if !d.started || !present {
		filters := []string{"devices/" + d.id + "/commands"}
		if d.wildcard {
			filters = append(filters, "devices/#")
		}
		if err := soakSubscribe(ctx, d, filters); err != nil {
			f.connectFailures.Add(1)
			d.disconnect(f, true)
			return fmt.Errorf("subscribe %s: %w", d.id, err)
		}
	}
	d.started = true
	// A retained status per device: the broker's retained store holds one
	// per topic.
	c.publish("devices/"+d.id+"/status", []byte(`{"online":true}`), true, 0)
	return nil
}

// soakSubscribe subscribes d's connection to filters at QoS 1.
func soakSubscribe(ctx context.Context, d *soakDevice, filters []string) error {
	switch c := d.conn.(type) {
	case *soakConn5:
		var subs []paho.SubscribeOptions
		for _, f := range filters {
			subs = append(subs, paho.SubscribeOptions{Topic: f, QoS: 1})
		}
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		_, err := c.c.Subscribe(sctx, &paho.Subscribe{Subscriptions: subs})
		return err
	case *soakConn3:
		m := map[string]byte{}
		for _, f := range filters {
			m[f] = 1
		}
		tok := d.c3.SubscribeMultiple(m, nil)
		if !tok.WaitTimeout(15 * time.Second) {
			return errors.New("no SUBACK within 15s")
		}
		return tok.Error()
	}
	return nil
}

// soakConn5 is an MQTT 5 connection (paho.golang).
type soakConn5 struct {
	c    *paho.Client
	conn net.Conn
}

func (f *soakFleet) connect5(ctx context.Context, d *soakDevice, id string, clean bool) (*soakConn5, bool, error) {
	if d.st == nil {
		d.st = state.NewInMemory()
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", f.addr)
	if err != nil {
		return nil, false, err
	}
	cfg := paho.ClientConfig{Conn: conn, Session: d.st, PacketTimeout: 15 * time.Second, PingHandler: mqtttest.NoPinger{}}
	if d.idx > 0 {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			f.onMessage(d, pr.Packet.Topic)
			return true, nil
		}}
	}
	c := paho.NewClient(cfg)
	expiry := uint32(soakSessionExpiry)
	// paho.golang sizes a channel by the Receive Maximum asked for (65,535
	// pointers if none): ask for a small one.
	recvMax := uint16(32)
	if d.wildcard || d.idx <= 0 {
		recvMax = 256
	}
	ca, err := c.Connect(dctx, &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: f.keepAlive(),
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, ReceiveMaximum: &recvMax}})
	if err != nil {
		conn.Close()
		return nil, false, fmt.Errorf("connect %s: %w", id, err)
	}
	return &soakConn5{c: c, conn: conn}, ca.SessionPresent, nil
}

// keepAlive is what devices ask for: well over the time between their
// readings (MQTT 5 devices here send no PINGREQ), under the broker's cap.
func (f *soakFleet) keepAlive() uint16 {
	return uint16(min(max(120, 3*f.interval/time.Second), 590))
}

func (c *soakConn5) publish(topic string, payload []byte, retain bool, qos byte) (acked, refused bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: payload})
	if err == nil {
		return true, false
	}
	return false, resp != nil && resp.ReasonCode >= 0x80
}

func (c *soakConn5) done() <-chan struct{} { return c.c.Done() }

func (c *soakConn5) leave(abrupt bool) {
	if abrupt {
		c.conn.Close()
	} else {
		_ = c.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	}
	select {
	case <-c.c.Done():
	case <-time.After(5 * time.Second):
		c.conn.Close()
	}
}

// soakConn3 is an MQTT 3.1.1 connection (paho.mqtt.golang); the client is
// the device's, connected again for each connection.
type soakConn3 struct {
	d    *soakDevice
	lost chan struct{}
}

func (f *soakFleet) connect3(d *soakDevice) (*soakConn3, bool, error) {
	if d.c3 == nil {
		o := mqtt.NewClientOptions().AddBroker("tcp://" + f.addr).SetClientID(d.id).
			SetProtocolVersion(4).SetCleanSession(false).SetAutoReconnect(false).
			SetConnectTimeout(15 * time.Second).SetWriteTimeout(10 * time.Second).
			SetKeepAlive(time.Duration(f.keepAlive()) * time.Second).SetOrderMatters(false).
			SetMessageChannelDepth(32).SetResumeSubs(false)
		o.SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			conn, err := net.DialTimeout("tcp", u.Host, 15*time.Second)
			if err == nil {
				d.raw3.Store(&conn)
			}
			return conn, err
		})
		o.SetConnectionLostHandler(func(mqtt.Client, error) {
			if ch := d.lost3; ch != nil {
				select {
				case <-ch:
				default:
					close(ch)
				}
			}
		})
		o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { f.onMessage(d, m.Topic()) })
		d.c3 = mqtt.NewClient(o)
	}
	d.lost3 = make(chan struct{})
	lost := d.lost3
	tok := d.c3.Connect()
	if !tok.WaitTimeout(20 * time.Second) {
		d.c3.Disconnect(0)
		return nil, false, fmt.Errorf("connect %s: no CONNACK within 20s", d.id)
	}
	if err := tok.Error(); err != nil {
		return nil, false, fmt.Errorf("connect %s: %w", d.id, err)
	}
	return &soakConn3{d: d, lost: lost}, tok.(*mqtt.ConnectToken).SessionPresent(), nil
}

func (c *soakConn3) publish(topic string, payload []byte, retain bool, qos byte) (acked, refused bool) {
	tok := c.d.c3.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(10 * time.Second) {
		return false, false
	}
	return tok.Error() == nil, false
}

func (c *soakConn3) done() <-chan struct{} { return c.lost }

func (c *soakConn3) leave(abrupt bool) {
	if abrupt {
		if p := c.d.raw3.Load(); p != nil {
			(*p).Close()
		}
		select {
		case <-c.lost:
		case <-time.After(5 * time.Second):
		}
		if c.d.c3.IsConnected() {
			c.d.c3.Disconnect(0)
		}
		return
	}
	c.d.c3.Disconnect(250)
}

func (d *soakDevice) disconnect(f *soakFleet, abrupt bool) {
	if d.conn == nil {
		return
	}
	d.conn.leave(abrupt)
	d.conn = nil
	f.online.Add(-1)
}

// ghosts connects the subscribers of devices/# that leave at once and never
// come back, their sessions kept by the broker.
func (f *soakFleet) ghosts(ctx context.Context) error {
	for i := range f.cfg.Ghosts {
		g := &soakDevice{idx: -i - 1, id: f.prefix + "ghost-" + strconv.Itoa(i+1), v5: i%2 == 0, wildcard: true}
		if err := f.connect(ctx, g); err != nil { // subscribes to devices/#
			return err
		}
		g.disconnect(f, false)
	}
	return nil
}

// connectAll connects every device (paced by the semaphore) and subscribes.
func (f *soakFleet) connectAll(ctx context.Context) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for _, d := range f.devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			for attempt := 0; attempt < 5; attempt++ {
				if err = f.connect(ctx, d); err == nil {
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
			mu.Lock()
			first = cmp.Or(first, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return first
}

// leaveAt is when a device of quarter q next leaves after now: wave k
// (k = 1, 2, ...) at start + k*Wave sends quarter (k-1) mod 4 away.
func (f *soakFleet) leaveAt(q int, now time.Time) time.Time {
	k := q + 1
	for at := f.start.Add(time.Duration(k) * f.cfg.Wave); ; at = f.start.Add(time.Duration(k) * f.cfg.Wave) {
		if at.After(now) {
			return at
		}
		k += 4
	}
}

// run lets the fleet publish and leave in waves for d, then disconnects it.
func (f *soakFleet) run(ctx context.Context, d time.Duration) {
	f.start = time.Now()
	ctx, cancel := context.WithDeadline(ctx, f.start.Add(d))
	defer cancel()
	var wg sync.WaitGroup
	for _, dev := range f.devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.runDevice(ctx, dev)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.commander(ctx)
	}()
	wg.Wait()
}

// runDevice is one device's life: readings every interval while connected,
// away during its quarter's waves, back again.
func (f *soakFleet) runDevice(ctx context.Context, d *soakDevice) {
	defer d.disconnect(f, false)
	next := f.start.Add(rand.N(f.interval))
	leave := f.leaveAt(d.quarter, f.start)
	backoff := time.Second
	for ctx.Err() == nil {
		if d.conn == nil {
			if err := f.connect(ctx, d); err != nil {
				if !soakSleep(ctx, backoff) {
					return
				}
				backoff = min(2*backoff, 10*time.Second)
				continue
			}
			backoff = time.Second
		}
		wait := time.Until(next)
		if l := time.Until(leave); l < wait {
			wait = l
		}
		timer := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-d.conn.done():
			timer.Stop()
			f.drops.Add(1)
			d.conn = nil
			f.online.Add(-1)
			continue
		case <-timer.C:
		}
		now := time.Now()
		if !now.Before(leave) {
			d.disconnect(f, d.abrupt)
			if !soakSleep(ctx, time.Until(leave.Add(f.cfg.Away))) {
				return
			}
			leave = f.leaveAt(d.quarter, time.Now())
			continue
		}
		if f.publish(d) {
			next = next.Add(f.interval)
			if next.Before(now) {
				next = now.Add(f.interval)
			}
		} else {
			next = now.Add(time.Second) // the resend
		}
	}
}

// publish sends d's pending reading, or a new one, and reports whether it
// was acknowledged (or given up).
func (f *soakFleet) publish(d *soakDevice) bool {
	if d.pending == 0 {
		d.flags = append(d.flags, 0)
		d.pending, d.attempts = uint64(len(d.flags)), 0
	}
	seq := d.pending
	d.attempts++
	if d.attempts > 1 {
		d.flags[seq-1] |= soakResent
		f.resent.Add(1)
	}
	payload := fmt.Appendf(nil, `{"reading":%d,"seq":%d}`, 10+seq%50, seq)
	acked, refused := d.conn.publish("devices/"+d.id+"/readings", payload, false, 1)
	switch {
	case acked:
		d.flags[seq-1] |= soakAcked
		f.acked.Add(1)
		d.pending = 0
		return true
	case refused:
		f.refused.Add(1)
	default:
		d.flags[seq-1] |= soakResent // may have been stored: a resend may duplicate it
	}
	if d.attempts >= soakMaxAttempts {
		f.givenUp.Add(1)
		d.pending = 0
		return true
	}
	return false
}

// commander sends, a few seconds after each wave left, one QoS 1 command to
// every device of the quarter that is away: it waits in their sessions.
func (f *soakFleet) commander(ctx context.Context) {
	cmdr := &soakDevice{idx: 0, id: f.prefix + "commander", v5: true}
	defer func() {
		if cmdr.conn != nil {
			cmdr.conn.leave(false)
		}
	}()
	for k := 1; ; k++ {
		if !soakSleep(ctx, time.Until(f.start.Add(time.Duration(k)*f.cfg.Wave))) {
			return
		}
		f.waves.Add(1)
		if !soakSleep(ctx, min(5*time.Second, f.cfg.Away/3)) {
			return
		}
		if cmdr.conn != nil {
			select {
			case <-cmdr.conn.done():
				cmdr.conn = nil
			default:
			}
		}
		if cmdr.conn == nil {
			c, _, err := f.connect5(ctx, cmdr, cmdr.id, true)
			if err != nil {
				continue
			}
			cmdr.conn = c
		}
		// 16 publishes under way at once: the commands go out while the
		// quarter is away, whatever the machine's load.
		q := (k - 1) % 4
		body := []byte(`{"cmd":"report","wave":` + strconv.Itoa(k) + `}`)
		work := make(chan *soakDevice)
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for d := range work {
					if ok, _ := cmdr.conn.publish("devices/"+d.id+"/commands", body, false, 1); ok {
						f.commandsSent.Add(1)
					}
				}
			}()
		}
		for _, d := range f.devices {
			if d.quarter == q && ctx.Err() == nil {
				work <- d
			}
		}
		close(work)
		wg.Wait()
	}
}

func soakSleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// soakFleetStats is what the fleet counted.
type soakFleetStats struct {
	Waves, Reconnects, SessionPresent, Drops, ConnectFailures, Resent, Refused, GivenUp, CommandsSent, CommandsGot, WildcardGot int64
}

func (f *soakFleet) stats() soakFleetStats {
	return soakFleetStats{f.waves.Load(), f.reconnects.Load(), f.sessionPresent.Load(), f.drops.Load(), f.connectFailures.Load(),
		f.resent.Load(), f.refused.Load(), f.givenUp.Load(), f.commandsSent.Load(), f.commandsGot.Load(), f.wildcardGot.Load()}
}

// soakLanding is the fleet's readings checked against what landed.
type soakLanding struct {
	Acked, Landed, Rows, Missing, DupOnceAcked, DupResend int64
	MissingSample, DupSample                              []string
}

// verify waits (bounded) until every acknowledged reading of the fleet is in
// readings, then classifies them by device and sequence number.
func (f *soakFleet) verify(t *testing.T, dbURL string, timeout time.Duration) soakLanding {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l := f.check(t, dbURL)
		if l.Missing == 0 || time.Now().After(deadline) {
			return l
		}
		time.Sleep(2 * time.Second) // the poll interval
	}
}

func (f *soakFleet) check(t *testing.T, dbURL string) soakLanding {
	t.Helper()
	ctx, conn, done := dbConn(t, dbURL, 2*time.Minute)
	defer done()
	rows, err := conn.Query(ctx, `SELECT device_id, payload->>'seq', count(*) FROM readings
		WHERE starts_with(device_id, $1) GROUP BY 1, 2`, f.prefix)
	if err != nil {
		t.Fatalf("read the fleet's readings: %v", err)
	}
	landed := make(map[int][]uint8, len(f.devices))
	var l soakLanding
	for rows.Next() {
		var (
			dev   string
			seqs  *string
			count int64
		)
		if err := rows.Scan(&dev, &seqs, &count); err != nil {
			t.Fatal(err)
		}
		l.Rows += count
		idx, err1 := strconv.Atoi(strings.TrimPrefix(dev, f.prefix))
		var seq uint64
		err2 := errors.New("no seq")
		if seqs != nil {
			seq, err2 = strconv.ParseUint(*seqs, 10, 64)
		}
		if err1 != nil || err2 != nil || idx < 1 || idx > len(f.devices) || seq < 1 || seq > 1<<24 {
			continue
		}
		s := landed[idx]
		if int(seq) > len(s) {
			s = append(s, make([]uint8, int(seq)-len(s))...)
		}
		s[seq-1] = uint8(min(int64(s[seq-1])+count, 255))
		landed[idx] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read the fleet's readings: %v", err)
	}
	for _, d := range f.devices {
		got := landed[d.idx]
		for i, fl := range d.flags {
			var n uint8
			if i < len(got) {
				n = got[i]
			}
			if n > 0 {
				l.Landed++
			}
			if fl&soakAcked == 0 {
				continue
			}
			l.Acked++
			ref := d.id + " seq " + strconv.Itoa(i+1)
			switch {
			case n == 0:
				l.Missing++
				if len(l.MissingSample) < 5 {
					l.MissingSample = append(l.MissingSample, ref)
				}
			case n > 1 && fl&soakResent == 0:
				l.DupOnceAcked++
				if len(l.DupSample) < 5 {
					l.DupSample = append(l.DupSample, ref)
				}
			case n > 1:
				l.DupResend += int64(n - 1)
			}
		}
	}
	return l
}

// soakStat is the distribution of one sampled column.
type soakStat struct {
	Max, Median int64
	N           int
}

// soakSampler samples memory every second into a CSV file and keeps the
// samples for the summary.
type soakSampler struct {
	mu       sync.Mutex
	cols     []string
	samples  map[string][]int64
	errors   int
	cpu      map[string][2]soakCPUMark // first and last CPU time seen per process
	abortAt  time.Time
	aborted  chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

var soakColumns = []string{"firehose", "simulate", "fleet", "redis", "postgres", "redis_used_memory", "stream_entries", "mqtt_online", "mqtt_acked"}

// soakGauges are the firehose metrics sampled with the memory: Go's heap
// and goroutines, and the broker's sessions and queues (absent on commits
// before the broker's bounds: left empty).
var soakGauges = []string{"go_memstats_heap_inuse_bytes", "go_goroutines", "firehose_mqtt_clients_connected", "firehose_mqtt_offline_sessions",
	"firehose_mqtt_offline_queued_messages", "firehose_mqtt_retained_messages", "firehose_mqtt_deliveries_dropped_total"}

// startSoakSampler samples every second into out/samples.csv, and saves a
// heap profile of the firehose process (from debugAddr) at each new RSS
// peak, at most every 15 s, as out/heap-peak.pb.gz.
func startSoakSampler(out string, st *Stack, debugAddr string, rdb *redis.Client, keys []string, dbURL string, abortRSS int64, pids map[string]func() int, f *soakFleet) (*soakSampler, error) {
	file, err := os.Create(filepath.Join(out, "samples.csv"))
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(file, "elapsed_s,firehose_rss_bytes,simulate_rss_bytes,fleet_rss_bytes,redis_rss_bytes,postgres_backends_rss_bytes,redis_used_memory_bytes,stream_entries,mqtt_online,mqtt_acked,"+strings.Join(soakGauges, ","))
	var (
		peakRSS     int64
		lastProfile time.Time
		profiling   sync.WaitGroup
	)
	defer profiling.Wait()
	s := &soakSampler{cols: append(slices.Clone(soakColumns), soakGauges...), samples: map[string][]int64{}, cpu: map[string][2]soakCPUMark{}, aborted: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(s.done)
		defer file.Close()
		var pg *pgx.Conn
		defer func() {
			if pg != nil {
				pg.Close(context.Background())
			}
		}()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 900*time.Millisecond)
			row := map[string]int64{}
			for name, pid := range pids {
				if id := pid(); id > 0 {
					row[name] = RSS(id)
					if c, ok := soakCPUTime(id); ok {
						s.markCPU(name, c)
					}
				}
			}
			failed := false
			if mem, err := outUsedMemory(ctx, rdb); err == nil {
				row["redis_used_memory"] = mem
			} else {
				failed = true
			}
			if n, err := outStreamLen(ctx, rdb, keys); err == nil {
				row["stream_entries"] = n
			} else {
				failed = true
			}
			if pg == nil {
				pg, _ = pgx.Connect(ctx, dbURL)
			}
			if pg != nil {
				var backends []int32
				if err := pg.QueryRow(ctx, `SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity
					WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&backends); err == nil {
					for _, b := range backends {
						row["postgres"] += RSS(int(b))
					}
				} else {
					failed = true
					pg.Close(context.Background())
					pg = nil
				}
			}
			cancel()
			row["mqtt_online"] = f.online.Load()
			row["mqtt_acked"] = f.acked.Load()
			gauges := make([]string, len(soakGauges))
			for i, g := range soakGauges {
				if v, ok := outMetricSum(st, g); ok {
					gauges[i] = strconv.FormatFloat(v, 'f', -1, 64)
					row[g] = int64(v)
				}
			}
			fmt.Fprintf(file, "%.0f,%d,%d,%d,%d,%d,%d,%d,%d,%d,%s\n", time.Since(start).Seconds(), row["firehose"], row["simulate"], row["fleet"], row["redis"],
				row["postgres"], row["redis_used_memory"], row["stream_entries"], row["mqtt_online"], row["mqtt_acked"], strings.Join(gauges, ","))
			if rss := row["firehose"]; rss > peakRSS {
				peakRSS = rss
				if time.Since(lastProfile) >= 15*time.Second && rss > 64<<20 {
					lastProfile = time.Now()
					profiling.Add(1)
					go func() {
						defer profiling.Done()
						soakHeapProfile(debugAddr, filepath.Join(out, "heap-peak.pb.gz"))
					}()
				}
			}
			s.mu.Lock()
			for _, c := range s.cols {
				if v, ok := row[c]; ok && (v > 0 || !slices.Contains(soakColumns[:6], c)) {
					s.samples[c] = append(s.samples[c], v)
				}
			}
			if failed {
				s.errors++
			}
			if row["firehose"] > abortRSS && s.abortAt.IsZero() {
				s.abortAt = time.Now()
				close(s.aborted)
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s, nil
}

// soakCPUMark is a process's CPU time (user + system) at a moment.
type soakCPUMark struct {
	cpu time.Duration
	at  time.Time
}

func (s *soakSampler) markCPU(name string, c time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.cpu[name]
	now := soakCPUMark{c, time.Now()}
	if !ok {
		m[0] = now
	}
	m[1] = now
	s.cpu[name] = m
}

// CPU is the cores each process used on average while it was sampled.
func (s *soakSampler) CPU() map[string]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]float64{}
	for name, c := range s.cpu {
		if wall := c[1].at.Sub(c[0].at); wall > 0 {
			m[name] = float64(c[1].cpu-c[0].cpu) / float64(wall)
		}
	}
	return m
}

// soakCPUTime is a process's user + system CPU time, from /proc/<pid>/stat
// (in clock ticks of 10 ms, as on every Linux the suite runs on).
func soakCPUTime(pid int) (time.Duration, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after its closing parenthesis (field 3 is the state; 14, 15 utime, stime).
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+st) * 10 * time.Millisecond, true
}

// soakHeapProfile saves the heap profile of the process serving pprof at
// addr (best effort: a profile that cannot be had is no failure).
func soakHeapProfile(addr, path string) {
	c := http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get("http://" + addr + "/debug/pprof/heap")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return
	}
	_ = os.WriteFile(path+".tmp", data, 0o644)
	_ = os.Rename(path+".tmp", path)
}

// Stop ends the sampling (idempotent).
func (s *soakSampler) Stop() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

// Snapshot is the last sample of each column.
func (s *soakSampler) Snapshot() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]int64{}
	for c, v := range s.samples {
		if len(v) > 0 {
			m[c] = v[len(v)-1]
		}
	}
	return m
}

// Stats is the max and median of every column.
func (s *soakSampler) Stats() map[string]soakStat {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]soakStat{}
	for c, v := range s.samples {
		if len(v) == 0 {
			continue
		}
		sorted := slices.Clone(v)
		slices.Sort(sorted)
		m[c] = soakStat{Max: sorted[len(sorted)-1], Median: sorted[len(sorted)/2], N: len(sorted)}
	}
	return m
}

// Errors is the samples in which Redis or PostgreSQL did not answer.
func (s *soakSampler) Errors() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.errors
}

// AbortedAt is when the firehose RSS passed the abort limit (zero: never).
func (s *soakSampler) AbortedAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.abortAt
}

// soakCommit is the commit the soak ran at: SOAK_COMMIT, else git describe
// --always --dirty.
func soakCommit() string {
	if c := os.Getenv("SOAK_COMMIT"); c != "" {
		return c
	}
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
