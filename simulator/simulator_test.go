package simulator

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"flag"
	"math"
	"net"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"firehose/internal/testcert"
)

func TestPayloads(t *testing.T) {
	at := time.Date(2026, 11, 28, 8, 0, 0, 123456789, time.UTC)
	r := reading{seq: 17, value: 21.4567, battery: 93, at: at}
	for _, tc := range []struct {
		name  string
		body  []byte
		want  map[string]any
		extra []string
	}{
		{"fast", appendFast(nil, r), map[string]any{"id": 17.0, "reading": 21.0, "timestamp": "2026-11-28T08:00:00.123456789Z"}, nil},
		{"v1", appendV1(nil, "sim-ab-3", r, 0), map[string]any{"device_id": "sim-ab-3", "reading": 21.457, "ts": "2026-11-28T08:00:00.123456789Z", "seq": 17.0, "battery": 93.0}, nil},
		{"mqtt", appendMQTT(nil, r, 0), map[string]any{"reading": 21.457, "ts": "2026-11-28T08:00:00.123456789Z", "seq": 17.0, "battery": 93.0}, nil},
		{"mqtt extra", appendMQTT(nil, r, 9), map[string]any{"seq": 17.0, "fw": "1.4.2"}, []string{"rssi", "temp_c", "humidity", "fw", "uptime_s", "lat", "lon", "x8", "x9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got map[string]any
			if err := json.Unmarshal(tc.body, &got); err != nil {
				t.Fatalf("not JSON: %s: %v", tc.body, err)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v (body %s)", k, got[k], v, tc.body)
				}
			}
			for _, k := range tc.extra {
				if _, ok := got[k]; !ok {
					t.Errorf("no extra field %s in %s", k, tc.body)
				}
			}
			if tc.extra == nil && len(got) != len(tc.want) {
				t.Errorf("fields %v, want exactly %v", got, tc.want)
			}
		})
	}
}

func TestSmallintClamps(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want int64
	}{{21.5, 22}, {-3.4, -3}, {1e9, 32767}, {-1e9, -32768}} {
		if got := smallint(tc.in); got != tc.want {
			t.Errorf("smallint(%g) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestDeviceReadingsAreRealistic(t *testing.T) {
	d := newDevice("run1", 4, false)
	if d.id != "sim-run1-5" {
		t.Fatalf("id %q", d.id)
	}
	again := newDevice("run1", 4, false)
	start := time.Now()
	prev := d.value
	for i := range 5000 {
		r := d.next(start.Add(time.Duration(i) * time.Second))
		if r.seq != uint64(i+1) {
			t.Fatalf("seq %d at reading %d", r.seq, i)
		}
		if math.Abs(r.value-prev) > 1 {
			t.Fatalf("value jumped from %g to %g: a sensor drifts", prev, r.value)
		}
		if r.value < d.base-10 || r.value > d.base+10 {
			t.Fatalf("value %g strayed from its base %g", r.value, d.base)
		}
		if r.battery < 5 || r.battery > 100 {
			t.Fatalf("battery %d", r.battery)
		}
		prev = r.value
		if r2 := again.next(r.at); r2 != r {
			t.Fatalf("a device's readings must be reproducible: %+v vs %+v", r, r2)
		}
	}
	if len(d.flags) != 5000 {
		t.Fatalf("ledger has %d entries", len(d.flags))
	}
	if other := newDevice("run1", 5, false); other.base == d.base {
		t.Error("two devices share a base value")
	}
}

func TestScheduleIsOpenLoop(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    schedule
	}{
		{"steady", schedule{rate: 1000}},
		{"ramp", schedule{rate: 1000, ramp: 2 * time.Second}},
		{"slow", schedule{rate: 0.5, ramp: 10 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := time.Duration(-1)
			for k := int64(0); k < 5000; k++ {
				at := tc.s.At(k)
				if at < prev {
					t.Fatalf("At(%d) = %s before At(%d) = %s", k, at, k-1, prev)
				}
				prev = at
				// Due counts the readings due strictly before t.
				if got := tc.s.Due(at + time.Nanosecond); got < k+1 || got > k+2 {
					t.Fatalf("Due(At(%d)+1ns) = %d, want %d", k, got, k+1)
				}
			}
			if tc.s.At(0) != 0 {
				t.Errorf("the first reading is due at %s, want at once", tc.s.At(0))
			}
		})
	}
	s := schedule{rate: 1000, ramp: 2 * time.Second}
	// During the ramp half the steady count is due; after it, rate a second.
	if got := s.Due(2 * time.Second); got != 1000 {
		t.Errorf("Due(ramp) = %d, want 1000", got)
	}
	if got := s.Due(3 * time.Second); got != 2000 {
		t.Errorf("Due(ramp+1s) = %d, want 2000", got)
	}
	if d := s.At(2500) - s.At(2499); d < 999*time.Microsecond || d > 1001*time.Microsecond {
		t.Errorf("steady spacing %s, want 1ms", d)
	}
	// The devices' share of the schedule adds up to it: device d of n sends
	// k = j*n + d.
	const n, dur = 7, 3 * time.Second
	var sum int64
	for d := range int64(n) {
		for j := int64(0); s.At(j*n+d) < dur; j++ {
			sum++
		}
	}
	if want := s.Due(dur); sum != want {
		t.Errorf("devices send %d readings, the schedule has %d due", sum, want)
	}
}

func TestTallyClassifiesEveryReading(t *testing.T) {
	const (
		s = flagSent
		a = flagSent | flagAcked
		r = flagSent | flagAcked | flagResent
		u = flagSent | flagResent // resent, never acked
		q = flagSent | flagQoS0
	)
	for _, tc := range []struct {
		name   string
		flags  []uint8
		landed []uint8
		want   tally
	}{
		{"all landed once", []uint8{a, a, a}, []uint8{1, 1, 1}, tally{rows: 3, readings: 3}},
		{"acked missing", []uint8{a, a, a}, []uint8{1, 0}, tally{rows: 1, readings: 1, missing: 2,
			missingRefs: []Ref{{"d", 2}, {"d", 3}}}},
		{"duplicate of a once-acked reading is a bug", []uint8{a, a}, []uint8{1, 3}, tally{rows: 4, readings: 2, dupOnce: 2,
			dupOnceRefs: []Ref{{"d", 2}}}},
		{"duplicate after a resend is allowed", []uint8{r, a}, []uint8{2, 1}, tally{rows: 3, readings: 2, dupResent: 1}},
		{"unacked may land, even twice", []uint8{s, u, u}, []uint8{1, 2, 0}, tally{rows: 3, readings: 2, landedUnacked: 2, dupResent: 1}},
		{"qos0 loss is counted apart", []uint8{q, q, q}, []uint8{1, 0, 1}, tally{rows: 2, readings: 2, qos0Sent: 3, qos0Landed: 2, qos0Lost: 1}},
		{"qos0 twice is a bug", []uint8{q}, []uint8{2}, tally{rows: 2, readings: 1, qos0Sent: 1, qos0Landed: 1, dupOnce: 1,
			dupOnceRefs: []Ref{{"d", 1}}}},
		{"rows the fleet never sent", []uint8{a, 0}, []uint8{1, 1, 2}, tally{rows: 4, readings: 3, unexpected: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got tally
			got.add("d", tc.flags, tc.landed)
			if !equalTally(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func equalTally(a, b tally) bool {
	ja, _ := json.Marshal([]any{a.rows, a.readings, a.missing, a.dupOnce, a.dupResent, a.landedUnacked, a.unexpected,
		a.qos0Sent, a.qos0Landed, a.qos0Lost, a.missingRefs, a.dupOnceRefs})
	jb, _ := json.Marshal([]any{b.rows, b.readings, b.missing, b.dupOnce, b.dupResent, b.landedUnacked, b.unexpected,
		b.qos0Sent, b.qos0Landed, b.qos0Lost, b.missingRefs, b.dupOnceRefs})
	return bytes.Equal(ja, jb)
}

func TestTallySamplesAreBounded(t *testing.T) {
	flags := make([]uint8, 1000)
	for i := range flags {
		flags[i] = flagSent | flagAcked
	}
	var got tally
	got.add("d", flags, nil)
	if got.missing != 1000 || len(got.missingRefs) != maxSamples {
		t.Errorf("missing %d with %d named, want 1000 with %d", got.missing, len(got.missingRefs), maxSamples)
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP firehose_stream_backlog_entries Entries ...
# TYPE firehose_stream_backlog_entries gauge
firehose_stream_backlog_entries{shard="0"} 120
firehose_stream_backlog_entries{shard="1"} 30
firehose_stream_backlog_entries_other 99
firehose_bridge_rows_committed_total 1.5e+06
firehose_http_requests_total{code="200"} 7
`
	got, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if got.backlog != 150 || got.committed != 1.5e6 {
		t.Errorf("got %+v, want backlog 150, committed 1500000", got)
	}
	got, _ = parseMetrics(strings.NewReader("go_goroutines 5\n"))
	if got.backlog != -1 || got.committed != -1 {
		t.Errorf("absent metrics: got %+v, want -1s", got)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"1", time.Second}, {" 3 ", 3 * time.Second}, {"0", minRetryWait}, {"3600", maxRetryWait},
		{"Sat, 28 Nov 2026 08:00:02 GMT", 2 * time.Second}, {"soon", 0},
	} {
		if got := retryAfter(tc.in, now); got != tc.want {
			t.Errorf("retryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestLatenciesUnderConcurrency(t *testing.T) {
	l := newLatencies()
	interval := newHist()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var drained int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				l.drain(interval)
				drained += interval.TotalCount()
				return
			default:
				l.drain(interval)
				drained += interval.TotalCount()
			}
		}
	}()
	for w := range 8 {
		wg.Go(func() {
			for i := range 5000 {
				l.record(w, time.Duration(i)*time.Microsecond)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-done
	if drained != 40000 || l.total.TotalCount() != 40000 {
		t.Errorf("drained %d, total %d, want 40000", drained, l.total.TotalCount())
	}
	if l.total.Max() < 4990 || l.total.Max() > 5010 {
		t.Errorf("max %d µs, want ~4999", l.total.Max())
	}
}

func TestBuckets(t *testing.T) {
	h := newHist()
	for _, us := range []int64{100, 120, 1000, 1100, 50000} {
		_ = h.RecordValue(us)
	}
	bs := buckets(h, 10)
	var n int64
	for i, b := range bs {
		n += b.Count
		if b.ToMs <= b.FromMs || (i > 0 && math.Abs(b.FromMs-bs[i-1].ToMs) > 1e-3) {
			t.Errorf("bucket %d %+v does not follow %+v", i, b, bs[max(i-1, 0)])
		}
	}
	if n != 5 {
		t.Errorf("buckets hold %d values, want 5", n)
	}
	if bs[0].FromMs > 0.1 || bs[len(bs)-1].ToMs < 50 {
		t.Errorf("buckets span %g..%g ms, want 0.1..50", bs[0].FromMs, bs[len(bs)-1].ToMs)
	}
	if buckets(newHist(), 10) != nil {
		t.Error("an empty histogram has buckets")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"mqtt", func(c *Config) { c.Protocol = ProtocolMQTT; c.QoS = 2 }, ""},
		{"bad protocol", func(c *Config) { c.Protocol = "carrier-pigeon" }, "--protocol"},
		{"batch on fast", func(c *Config) { c.Endpoint = EndpointFast; c.Batch = 10 }, "--batch 10"},
		{"bad qos", func(c *Config) { c.Protocol = ProtocolMQTT; c.QoS = 3 }, "--qos"},
		{"topic without device", func(c *Config) { c.Protocol = ProtocolMQTT; c.MQTTTopic = "readings" }, "{device_id}"},
		{"wildcard topic", func(c *Config) { c.Protocol = ProtocolMQTT; c.MQTTTopic = "d/{device_id}/#" }, "wildcards"},
		{"no devices", func(c *Config) { c.Devices = 0 }, "--devices"},
		{"mixed needs two", func(c *Config) { c.Protocol = ProtocolMixed; c.Devices = 1 }, "at least 2"},
		{"bad http url", func(c *Config) { c.HTTP = "ftp://x" }, "--http"},
		{"bad mqtt url", func(c *Config) { c.Protocol = ProtocolMQTT; c.MQTT = "http://x" }, "--mqtt"},
		{"bad run id", func(c *Config) { c.RunID = "Run_1" }, "--run-id"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "--rate"},
		{"zero duration", func(c *Config) { c.Duration = 0 }, "--duration"},
		{"bad shape", func(c *Config) { c.Shape = "blob" }, "--shape"},
		{"telemetry over mixed", func(c *Config) { c.Shape = ShapeTelemetry; c.Protocol = ProtocolMixed }, ""},
		{"samples in batches", func(c *Config) { c.Shape = ShapeSamples; c.Batch = 100 }, ""},
		{"sparkplug over http", func(c *Config) { c.Shape = ShapeSparkplug }, "--protocol mqtt"},
		{"sparkplug", func(c *Config) { c.Shape = ShapeSparkplug; c.Protocol = ProtocolMQTT; c.SparkplugDevices = 3 }, ""},
		{"telemetry batches over HTTP", func(c *Config) { c.Shape = ShapeTelemetry; c.Batch = 5 }, ""},
		{"telemetry batches over MQTT", func(c *Config) { c.Shape = ShapeTelemetry; c.Protocol = ProtocolMQTT; c.Batch = 5 }, "--batch 5"},
		{"samples on fast", func(c *Config) { c.Shape = ShapeSamples; c.Endpoint = EndpointFast }, "--endpoint v1"},
		{"too many metrics", func(c *Config) { c.Shape = ShapeTelemetry; c.MetricCount = 33 }, "--metric-count"},
		{"resend above 1", func(c *Config) { c.Resend = 1.5 }, "--resend"},
		{"extra fields in a shape", func(c *Config) { c.Shape = ShapeSamples; c.ExtraFields = 2 }, "--extra-fields"},
		{"typed over mixed", func(c *Config) { c.Shape = ShapeTyped; c.Protocol = ProtocolMixed; c.MetricCount = 5 }, ""},
		{"typed over mqtt", func(c *Config) { c.Shape = ShapeTyped; c.Protocol = ProtocolMQTT; c.QoS = 0 }, ""},
		{"typed batches over HTTP", func(c *Config) { c.Shape = ShapeTyped; c.Batch = 5 }, ""},
		{"typed batches over mixed", func(c *Config) { c.Shape = ShapeTyped; c.Protocol = ProtocolMixed; c.Batch = 5 }, "--batch 5"},
		{"typed on fast", func(c *Config) { c.Shape = ShapeTyped; c.Endpoint = EndpointFast }, "--endpoint v1"},
		{"typed with extra fields", func(c *Config) { c.Shape = ShapeTyped; c.ExtraFields = 1 }, "--extra-fields"},
		{"client certificate over ssl", func(c *Config) {
			c.Protocol, c.MQTT, c.MQTTCert, c.MQTTKey = ProtocolMQTT, "ssl://127.0.0.1:8883", "certs/{device_id}.pem", "certs/{device_id}.key"
		}, ""},
		{"client certificate without key", func(c *Config) { c.Protocol, c.MQTT, c.MQTTCert = ProtocolMQTT, "ssl://127.0.0.1:8883", "c.pem" }, "go together"},
		{"client certificate over tcp", func(c *Config) { c.Protocol, c.MQTTCert, c.MQTTKey = ProtocolMQTT, "c.pem", "c.key" }, "not an ssl:// URL"},
		{"typed without metrics", func(c *Config) { c.Shape = ShapeTyped; c.MetricCount = 0 }, "--metric-count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.change(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.RunID) != 8 || c.Metrics != "http://127.0.0.1:8080/metrics" || c.DevicePrefix() != "sim-"+c.RunID+"-" {
		t.Errorf("derived settings: run id %q, metrics %q", c.RunID, c.Metrics)
	}
}

func TestEveryFlagHasUsage(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.RegisterFlags(fs)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		if f.Usage == "" {
			t.Errorf("--%s has no usage", f.Name)
		}
	})
	if n < 20 {
		t.Errorf("only %d flags", n)
	}
}

func TestPasswordsFile(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/pw"
	writeTestFile(t, path, "# devices\nsim-a-1 s3cret\n\n* fallback\n")
	p, err := loadPasswords("shared", path)
	if err != nil {
		t.Fatal(err)
	}
	if p.of("sim-a-1") != "s3cret" || p.of("sim-a-2") != "fallback" {
		t.Errorf("passwords %+v", p)
	}
	writeTestFile(t, path, "lonely\n")
	if _, err := loadPasswords("", path); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad line: %v", err)
	}
}

// TestDeviceTLS checks that each device presents the certificate its id
// names, and has a session cache of its own over ssl:// with --tls-resume
// (none without: a full handshake each connection).
func TestDeviceTLS(t *testing.T) {
	certFile, keyFile, _ := testcert.SelfSigned(t)
	dir := t.TempDir()
	for _, id := range []string{"sim-a-1", "sim-a-2"} {
		for from, to := range map[string]string{certFile: dir + "/" + id + ".pem", keyFile: dir + "/" + id + ".key"} {
			b, err := os.ReadFile(from)
			if err != nil {
				t.Fatal(err)
			}
			writeTestFile(t, to, string(b))
		}
	}
	cfg := DefaultConfig()
	if !cfg.TLSResume {
		t.Error("--tls-resume is off by default")
	}
	cfg.MQTT = "ssl://127.0.0.1:8883"
	cfg.MQTTCert, cfg.MQTTKey = dir+"/{device_id}.pem", dir+"/{device_id}.key"
	f := &fleet{cfg: &cfg}
	fleetConf := &tls.Config{ServerName: "broker"}
	got, err := f.deviceTLS(newDevice("a", 0, true), fleetConf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Certificates) != 1 || got.ServerName != "broker" || got.ClientSessionCache == nil || len(fleetConf.Certificates) != 0 || fleetConf.ClientSessionCache != nil {
		t.Errorf("device TLS config: %d certificates, server name %q, session cache %v; the fleet's now has %d certificates, cache %v",
			len(got.Certificates), got.ServerName, got.ClientSessionCache, len(fleetConf.Certificates), fleetConf.ClientSessionCache)
	}
	other, err := f.deviceTLS(newDevice("a", 1, true), fleetConf)
	if err != nil {
		t.Fatal(err)
	}
	if other.ClientSessionCache == got.ClientSessionCache {
		t.Error("two devices share a session cache")
	}
	if _, err := f.deviceTLS(newDevice("a", 2, true), fleetConf); err == nil || !strings.Contains(err.Error(), "sim-a-3") {
		t.Errorf("a device without a certificate file: %v, want an error naming it", err)
	}
	cfg.TLSResume = false
	if got, err := f.deviceTLS(newDevice("a", 0, true), fleetConf); err != nil || got.ClientSessionCache != nil || len(got.Certificates) != 1 {
		t.Errorf("--tls-resume=false: %v, session cache %v; want none", err, got.ClientSessionCache)
	}
	cfg.MQTTCert, cfg.MQTTKey, cfg.TLSResume = "", "", true
	if got, err := f.deviceTLS(newDevice("a", 0, true), nil); err != nil || got == nil || got.ClientSessionCache == nil {
		t.Errorf("no certificate, --tls-resume: %v, %+v; want a configuration with a session cache", err, got)
	}
	cfg.MQTT = "tcp://127.0.0.1:1883"
	if got, err := f.deviceTLS(newDevice("a", 0, true), nil); err != nil || got != nil {
		t.Errorf("over tcp://: %v, %+v; want no TLS configuration", err, got)
	}
}

// TestOpenTLSResumesAcrossRestarts: a device's connections through the
// simulator's dialer resume its TLS session on a restarted listener that
// shares the session ticket key, as an edge with --mqtt-tls-ticket-keys,
// and the report counts them.
func TestOpenTLSResumesAcrossRestarts(t *testing.T) {
	certFile, keyFile, pool := testcert.SelfSigned(t)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		t.Fatal(err)
	}
	// listen serves TLS handshakes and one byte each (the byte carries the
	// session ticket to the client) until the test ends or stop.
	listen := func() (addr string, stop func()) {
		sc := &tls.Config{Certificates: []tls.Certificate{pair}}
		sc.SetSessionTicketKeys([][32]byte{key})
		ln, err := tls.Listen("tcp", "127.0.0.1:0", sc)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte{1})
				_ = c.Close()
			}
		})
		var once sync.Once
		stop = func() { once.Do(func() { _ = ln.Close(); wg.Wait() }) }
		t.Cleanup(stop)
		return ln.Addr().String(), stop
	}
	cfg := DefaultConfig()
	cfg.MQTT = "ssl://localhost:8883"
	f := &fleet{cfg: &cfg}
	tc, err := f.deviceTLS(newDevice("a", 0, true), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	connect := func(addr string) {
		t.Helper()
		_, port, _ := net.SplitHostPort(addr)
		c, err := f.openTLS(tc)(&url.URL{Scheme: "ssl", Host: "localhost:" + port}, mqtt.ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	addr, stop := listen()
	connect(addr)
	stop()
	addr, _ = listen()
	connect(addr)
	if full, resumed := f.c.tlsFull.Load(), f.c.tlsResumed.Load(); full != 1 || resumed != 1 {
		t.Errorf("handshakes: %d full, %d resumed; want 1 full, then 1 resumed on the restarted listener", full, resumed)
	}
}

func TestShapeBodies(t *testing.T) {
	tel := appendTelemetry(nil, "", "sim-r-7", 4, 1764600000123, 21.25, 5)
	want := `{"t":1764600000123,"temp":21.25,"pressure":3.063,"rpm":1204,"m3":24.25,"m4":25.25,"seq":4,"msg_id":"sim-r-7-4"}`
	if string(tel) != want {
		t.Errorf("telemetry over MQTT:\n%s\nwant\n%s", tel, want)
	}
	if tel := appendTelemetry(nil, "sim-r-7", "sim-r-7", 4, 1, 0, 1); !strings.HasPrefix(string(tel), `{"device":"sim-r-7","t":1,"temp":0,`) || !json.Valid(tel) {
		t.Errorf("telemetry over HTTP: %s", tel)
	}
	s := appendSample(nil, 1764600000007, 1.23456, 9)
	if string(s) != `{"ts":"2025-12-01T14:40:00.007Z","v":1.235,"seq":9}` {
		t.Errorf("sample: %s", s)
	}
	d := newDevice("r", 12, true)
	if got := telemetryTopic(d, "telemetry"); got != "sim/site1/line2/sim-r-13/telemetry" {
		t.Errorf("topic %s", got)
	}
	if got := telemetryTopic(newDevice("r", 1234, true), "typed"); got != "sim/site13/line4/sim-r-1235/typed" {
		t.Errorf("typed topic %s", got)
	}
	d.clock = -time.Hour
	now := time.UnixMilli(1764600000000)
	a, b := d.deviceMs(now), d.deviceMs(now)
	if a != now.Add(-time.Hour).UnixMilli() || b != a+1 {
		t.Errorf("device clock: %d then %d, want strictly increasing from the device's time", a, b)
	}
}

func TestLedgerRowsAcked(t *testing.T) {
	const (
		a = flagSent | flagAcked
		q = flagSent | flagQoS0
	)
	names := []string{"temp", "rpm"}
	node := &ledger{flags: []uint8{a | flagBirth, a, 0, q}, metrics: names, birthMetrics: nodeBirthNames(names)}
	dev := &ledger{flags: []uint8{a | flagBirth, flagSent}, metrics: names, birthMetrics: names}
	acked, qos0, births := rowsAcked([]*ledger{node, dev})
	// The NBIRTH lands bdSeq, the rebirth control and both metrics; the
	// DBIRTH and the NDATA two each.
	if acked != 4+2+2 || qos0 != 2 || births != 2 {
		t.Errorf("rows acked %d, QoS 0 %d, births %d; want 8, 2, 2", acked, qos0, births)
	}
}

// TestDeadLetterTally: a unit marked flagDeadLetter (a Sparkplug NDATA with
// an alias no birth gave, at QoS 1/2) carries no row: it is not in the
// rows acknowledged, a row of it is partial storage, and its dead letter
// is expected once it was acknowledged.
func TestDeadLetterTally(t *testing.T) {
	const (
		a  = flagSent | flagAcked
		dl = flagSent | flagAcked | flagDeadLetter
	)
	names := []string{"temp", "rpm"}
	node := &ledger{rowID: "g/n", flags: []uint8{a | flagBirth, a, dl, dl, flagSent | flagDeadLetter},
		ts: []int64{10, 20, 30, 40, 50}, metrics: names, birthMetrics: nodeBirthNames(names)}
	acked, qos0, births := rowsAcked([]*ledger{node})
	if acked != 4+2 || qos0 != 0 || births != 1 {
		t.Errorf("rows acked %d, QoS 0 %d, births %d; want 6, 0, 1", acked, qos0, births)
	}

	// Landed: the birth's 4 rows, the NDATA's 2, nothing of the first dead
	// letter, one row (temp) of the second: partial storage.
	stride := 4
	c := make([]uint8, len(node.flags)*stride)
	for mi := range 4 {
		c[mi] = 1
	}
	c[1*stride], c[1*stride+1] = 1, 1
	c[3*stride] = 1
	var rt rowTally
	events := map[string]*EventCheck{}
	rt.classify(node, c, stride, func(name string) *EventCheck {
		if events[name] == nil {
			events[name] = &EventCheck{Metric: name}
		}
		return events[name]
	})
	var land Landing
	land.fromRowTally(&rt)
	if land.RowsAcked != 6 || land.Missing != 0 || land.Partial != 1 || len(land.PartialSample) != 1 ||
		land.PartialSample[0] != (Ref{"g/n temp", 4}) || land.DupOnceAcked != 0 || land.LandedWithoutAck != 0 {
		t.Errorf("landing %+v", land)
	}
	if rt.checks["temp"].Partial != 1 || rt.checks["rpm"].Partial != 0 || rt.checks["temp"].RowsAcked != 2 {
		t.Errorf("temp %+v, rpm %+v", *rt.checks["temp"], *rt.checks["rpm"])
	}

	// Dead letters: the first forced unit's twice (a QoS 1 resend of the
	// same message), none of the second's (a failure), one of the
	// unacknowledged unit's, one of the NDATA (unit 2) and one of a
	// device the run does not know.
	d := countDeadLetters([]*ledger{node}, []edgeLetter{{"g/n", 30}, {"g/n", 30}, {"g/n", 50}, {"g/n", 20}, {"g/x", 30}})
	want := DeadLetterCheck{Expected: 2, Found: 5, Missing: 1, MissingSample: []Ref{{"g/n", 4}}, Again: 1, Unacked: 1, Other: 2}
	if !reflect.DeepEqual(*d, want) {
		t.Errorf("dead letters %+v, want %+v", *d, want)
	}
	land.Rows, land.DeadLetters = 7, d
	rep := &Report{Config: RunConfig{Shape: ShapeSparkplug, QoS: 1}, Send: Send{Sent: 5, Acked: 4}, Landing: &land}
	if f := rep.failures(); len(f) != 2 || !strings.Contains(f[0], "partial storage") || !strings.Contains(f[1], "1 of 2 acknowledged NDATA") {
		t.Errorf("failures %q", f)
	}

	// The dead letter's device time is its payload's timestamp.
	p := appendSparkplug(nil, 1764600000123, 7, true, spMetrics(0, 1, 7, 2, false))
	if got := spTimestamp(p); got != 1764600000123 {
		t.Errorf("payload timestamp %d", got)
	}
	if got := spTimestamp([]byte{0xff}); got != -1 {
		t.Errorf("timestamp of garbage %d, want -1", got)
	}
}
