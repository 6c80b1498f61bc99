package faults

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"firehose/internal/mqtttest"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
)

// Limits the bad-input stack runs with, so that the corpus can go past them
// cheaply. The corpus's expected answers name them.
const (
	biMaxBody   = 262144 // --http-max-body
	biMaxItems  = 1000   // --http-max-items
	biMaxPacket = 32768  // --mqtt-max-packet-bytes
)

// biHTTPCase is one request of testdata/badinput/http/manifest.json.
type biHTTPCase struct {
	Name     string `json:"name"`
	File     string `json:"file"`     // the body, in testdata/badinput/http
	Endpoint string `json:"endpoint"` // /v1/readings or /readings/fast
	Method   string `json:"method"`   // default POST
	// ContentType is sent as Content-Type: absent means application/json,
	// "-" no header at all.
	ContentType string            `json:"content_type"`
	Headers     map[string]string `json:"headers"`
	Repeat      int               `json:"repeat"`    // the body is the file this many times
	RepeatTo    int               `json:"repeat_to"` // ... or as many times as it takes to pass this many bytes
	Chunked     bool              `json:"chunked"`   // Transfer-Encoding: chunked
	WantStatus  int               `json:"want_status"`
	WantBody    []string          `json:"want_body"` // substrings of the answer naming the problem
	// Accepted cases: the device whose rows must land, how many per round,
	// and the payload they carry (unknown fields land in payload).
	LandDevice  string          `json:"land_device"`
	WantRows    int             `json:"want_rows"`
	WantPayload json.RawMessage `json:"want_payload"`
}

// biMQTTCase is one publish of testdata/badinput/mqtt/manifest.json.
type biMQTTCase struct {
	Name     string `json:"name"`
	Topic    string `json:"topic"`
	TopicHex string `json:"topic_hex"` // the topic's bytes in hex, when not UTF-8
	File     string `json:"file"`      // the payload, in testdata/badinput/mqtt
	PadTo    int    `json:"pad_to"`    // spaces appended up to this many bytes
	// Client is "paho" (an MQTT 5 client for the reason code, a 3.1.1
	// client for drop-and-count) or "raw" (packets written by hand, for what
	// the libraries will not send).
	Client string `json:"client"`
	// WantV5 and WantV311 are the answers to a QoS 1 publish: "puback",
	// "puback:0xNN" (MQTT 5 reason code), "disconnect:0xNN", "closed".
	WantV5      string          `json:"want_v5"`
	WantV311    string          `json:"want_v311"`
	LandDevice  string          `json:"land_device"`
	WantPayload json.RawMessage `json:"want_payload"`
}

func (c biHTTPCase) body(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "badinput", "http", c.File))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case c.Repeat > 0:
		return bytes.Repeat(b, c.Repeat)
	case c.RepeatTo > 0:
		return bytes.Repeat(b, c.RepeatTo/len(b)+1)
	}
	return b
}

func (c biMQTTCase) topic(t *testing.T) []byte {
	t.Helper()
	if c.TopicHex == "" {
		return []byte(c.Topic)
	}
	b, err := hex.DecodeString(c.TopicHex)
	if err != nil {
		t.Fatalf("case %s: topic_hex: %v", c.Name, err)
	}
	return b
}

func (c biMQTTCase) payload(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "badinput", "mqtt", c.File))
	if err != nil {
		t.Fatal(err)
	}
	if c.PadTo > len(b) {
		b = append(b, bytes.Repeat([]byte(" "), c.PadTo-len(b))...)
	}
	return b
}

// invalid reports whether the case reaches firehose's hook as an invalid
// reading (refused with 0x99 to MQTT 5, dropped and counted for 3.1.1).
func (c biMQTTCase) invalid() bool { return c.WantV5 == "puback:0x99" }

func biManifest[T any](t *testing.T, edge string) []T {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "badinput", edge, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []T
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatalf("testdata/badinput/%s/manifest.json: %v", edge, err)
	}
	return cases
}

// TestBadInputHasNoEffect throws the corpus of testdata/badinput at both
// edges while a simulated load runs: every bad input gets a clear refusal
// (HTTP status and a body naming the problem; MQTT 5 reason code; MQTT 3.1.1
// drop-and-count), none of it lands, slow clients neither block others nor
// hold their connection past the server's timeouts, and the readings around
// the bad ones - the load's, and controls sent on the same connections right
// after each bad input - land exactly once.
func TestBadInputHasNoEffect(t *testing.T) {
	skipShort(t)
	t.Parallel()
	httpCases := biManifest[biHTTPCase](t, "http")
	mqttCases := biManifest[biMQTTCase](t, "mqtt")
	svc := SharedServices(t)
	rules, err := filepath.Abs(filepath.Join("testdata", "badinput", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := StartStack(t, svc, "--http-max-body", strconv.Itoa(biMaxBody), "--http-max-items", strconv.Itoa(biMaxItems),
		"--mqtt-max-packet-bytes", strconv.Itoa(biMaxPacket), "--config", rules)
	rdb := edgeRedis(t, s)
	l := StartLoad(t, s, LoadOpts{Devices: 100, Rate: scale(500.0, 2000.0), Duration: scale(15*time.Second, 60*time.Second)})
	edgeWaitLoadRunning(t, s, l)

	// Latency of good requests before anything bad happens, then all along.
	probe := &biProbe{url: s.HTTP() + "/v1/readings"}
	before := probe.run(10)
	stopProbe := probe.loop()

	slow := biStartSlowloris(t, s.HTTPAddr, scale(20, 100), scale(5, 20))

	rounds := scale(1, 3)
	nb := biStartNeighbours(t, s)
	mqttInvalid, deadLetters := 0, 0
	for range rounds {
		biRunHTTPCases(t, s, nb, httpCases)
		inv, dl := biRunMQTTCases(t, s, nb, mqttCases)
		mqttInvalid += inv
		deadLetters += dl
	}

	// Slow headers: the server closes each within its 5 s header timeout.
	for i, d := range slow.waitHeaders(t, 90*time.Second) {
		if d < 4*time.Second || d > 20*time.Second {
			t.Errorf("slow-header connection %d closed after %s: want about the server's 5s header timeout", i, d.Round(time.Millisecond))
		}
	}
	if Long() {
		// Slow bodies: the 30 s read timeout ends them (an answer naming the
		// timeout, or the connection closed).
		for i, r := range slow.waitBodies(t, 120*time.Second) {
			if r.after < 25*time.Second || r.after > 60*time.Second {
				t.Errorf("slow-body connection %d ended after %s: want about the server's 30s read timeout", i, r.after.Round(time.Millisecond))
			}
			if r.answer != "" && (!strings.Contains(r.answer, "400") || !strings.Contains(r.answer, "read request body")) {
				t.Errorf("slow-body connection %d answered %q: want 400 naming the read of the body, or no answer", i, r.answer)
			}
		}
	} else {
		slow.stopBodies()
	}
	during := stopProbe()
	probe.check(t, before, during)

	rep := l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	edgeWaitDrained(t, s, rdb, 2*time.Minute)

	if ids := edgeStrangers(t, svc.Postgres); len(ids) > 0 {
		t.Errorf("readings of refused inputs landed, devices %q", ids)
	}
	// The typed table of rules.yaml's bad-typed rules (serve created it):
	// every message to it is refused.
	if n := QueryInt(t, svc.Postgres, "SELECT count(*) FROM bad_typed"); n != 0 {
		t.Errorf("bad_typed has %d rows: a message its column types refuse got through", n)
	}
	if n := QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings_rejected WHERE source <> 'edge'"); n != 0 {
		t.Errorf("readings_rejected has %d rows: something invalid got past the edges into a stream", n)
	}
	// MQTT 3.1.1 cannot be told a payload is invalid: each acknowledged one
	// is stored whole as an edge dead letter.
	if n := QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings_rejected WHERE source = 'edge'"); n != int64(deadLetters) {
		t.Errorf("readings_rejected has %d edge dead letters, want %d (the invalid MQTT 3.1.1 publishes acknowledged)", n, deadLetters)
	}
	for _, c := range httpCases {
		if c.LandDevice == "" {
			continue
		}
		if got, want := edgeRowsOf(t, svc.Postgres, c.LandDevice, c.WantPayload), int64(c.WantRows*rounds); got != want {
			t.Errorf("HTTP %s: %d rows of %s with payload %s, want %d", c.Name, got, c.LandDevice, c.WantPayload, want)
		}
	}
	for _, c := range mqttCases {
		if c.LandDevice == "" {
			continue
		}
		// Sent by the MQTT 5 and the 3.1.1 client each round.
		if got, want := edgeRowsOf(t, svc.Postgres, c.LandDevice, c.WantPayload), int64(2*rounds); got != want {
			t.Errorf("MQTT %s: %d rows of %s with payload %s, want %d", c.Name, got, c.LandDevice, c.WantPayload, want)
		}
	}
	nb.check(t, svc.Postgres)
	probe.checkLanded(t, svc.Postgres)

	// MQTT: every invalid reading was counted, and nothing else was.
	if got, _ := s.Metric(`firehose_mqtt_readings_refused_total{reason="invalid"}`); int(got) != mqttInvalid {
		t.Errorf(`firehose_mqtt_readings_refused_total{reason="invalid"} = %v, want %d (the invalid publishes of the corpus)`, got, mqttInvalid)
	}
	edgeNoFiveHundreds(t, s)
	if s.Proc.Exited() {
		t.Fatalf("firehose exited: %s", s.Proc.Output())
	}

	r := ResultOf(rep)
	r.Scenario = "6. bad input"
	r.Load = LoadDesc(rep)
	r.Faults = fmt.Sprintf("%d HTTP and %d MQTT bad inputs of testdata/badinput (%d round(s)), %d slow-header and %d slow-body connections",
		len(httpCases), len(mqttCases), rounds, slow.headers, slow.bodies)
	r.Notes = fmt.Sprintf("each refused with its status / reason code, none landed, readings_rejected empty; %d control readings sent right after bad ones landed once each; probe latency p50 %s before, %s during slowloris",
		nb.sent(), biMedian(before).Round(time.Millisecond), biMedian(during).Round(time.Millisecond))
	Record(t, r)
	s.Stop(30 * time.Second)
}

// biRunHTTPCases sends each case and checks its answer, with a control
// reading after each one.
func biRunHTTPCases(t *testing.T, s *Stack, nb *biNeighbours, cases []biHTTPCase) {
	t.Helper()
	for _, c := range cases {
		method := c.Method
		if method == "" {
			method = http.MethodPost
		}
		var headers [][2]string
		switch c.ContentType {
		case "":
			headers = append(headers, [2]string{"Content-Type", "application/json"})
		case "-":
		default:
			headers = append(headers, [2]string{"Content-Type", c.ContentType})
		}
		names := make([]string, 0, len(c.Headers))
		for k := range c.Headers {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			headers = append(headers, [2]string{k, c.Headers[k]})
		}
		status, body, err := edgeRawRequest(s.HTTPAddr, method, c.Endpoint, headers, c.body(t), c.Chunked)
		switch {
		case err != nil:
			t.Errorf("HTTP %s: %v (status %d, body %.300q)", c.Name, err, status, body)
		case status != c.WantStatus:
			t.Errorf("HTTP %s: status %d, want %d; body %.300q", c.Name, status, c.WantStatus, body)
		default:
			for _, w := range c.WantBody {
				if !strings.Contains(body, w) {
					t.Errorf("HTTP %s: answer %.300q does not name the problem: want %q in it", c.Name, body, w)
				}
			}
		}
		nb.http(t)
	}
}

// biRunMQTTCases publishes each case over MQTT 5 and 3.1.1 and checks the
// answers, each followed by a control reading on the same connection; it
// returns how many invalid readings firehose's hook should have counted.
// biRunMQTTCases sends the MQTT cases, and returns how many publishes were
// refused as invalid and how many of those (MQTT 3.1.1's, acknowledged) are
// edge dead letters.
func biRunMQTTCases(t *testing.T, s *Stack, nb *biNeighbours, cases []biMQTTCase) (invalid, deadLetters int) {
	t.Helper()
	for i, c := range cases {
		topic, payload := c.topic(t), c.payload(t)
		switch c.Client {
		case "paho":
			code, ok, err := nb.v5.publish(string(topic), payload)
			if got := fmt.Sprintf("puback:0x%02x", code); !ok || got != c.WantV5 {
				t.Errorf("MQTT 5 %s: answer %s (PUBACK %v, err %v), want %s", c.Name, got, ok, err, c.WantV5)
			}
			if err := edgePublishV3(nb.v3, string(topic), payload); err != nil || c.WantV311 != "puback" {
				t.Errorf("MQTT 3.1.1 %s: publish: %v; want %s", c.Name, err, c.WantV311)
			}
			if !nb.v3.IsConnectionOpen() {
				t.Fatalf("MQTT 3.1.1 %s: the broker disconnected the client", c.Name)
			}
			if c.invalid() {
				invalid += 2
				deadLetters++
			}
		case "raw":
			for _, v := range []struct {
				version byte
				want    string
			}{{5, c.WantV5}, {4, c.WantV311}} {
				conn, err := edgeDialMQTT(s.MQTTAddr, v.version, fmt.Sprintf("bad-input-raw-%d-%d-%d", v.version, i, time.Now().UnixNano()))
				if err != nil {
					t.Errorf("MQTT %d %s: connect: %v", v.version, c.Name, err)
					continue
				}
				got := conn.outcome(v.version, edgePublishPacket(v.version, topic, payload), 15*time.Second)
				conn.Close()
				if got != v.want {
					t.Errorf("MQTT protocol %d %s: answer %s, want %s", v.version, c.Name, got, v.want)
				}
				if c.invalid() && strings.HasPrefix(v.want, "puback") {
					invalid++
					if v.version == 4 {
						deadLetters++
					}
				}
			}
		default:
			t.Fatalf("MQTT case %s: unknown client %q", c.Name, c.Client)
		}
		nb.mqtt(t)
	}
	return invalid, deadLetters
}

// biNeighbours send a good reading right after each bad input, on the same
// MQTT connections the bad publishes used: each must be acknowledged and
// land exactly once.
type biNeighbours struct {
	s        *Stack
	client   *http.Client
	v5       *edgeV5
	v3       mqtt3.Client
	nHTTP    int
	nV5, nV3 int
}

const (
	biNeighbourHTTP = "ok-http-neighbour"
	biNeighbourV5   = "ok-mqtt-v5-neighbour"
	biNeighbourV3   = "ok-mqtt-v3-neighbour"
)

func biStartNeighbours(t *testing.T, s *Stack) *biNeighbours {
	t.Helper()
	nb := &biNeighbours{s: s, client: &http.Client{Timeout: 15 * time.Second}}
	conn, err := net.DialTimeout("tcp", s.MQTTAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v5, ca, err := edgeConnectV5(t, conn, &paho.Connect{ClientID: "bad-input-v5", CleanStart: true, KeepAlive: 30})
	if err != nil {
		t.Fatalf("MQTT 5 connect: %v (CONNACK %+v)", err, ca)
	}
	// MQTT 5 clients are told the packet limit, so a conforming one never
	// goes past it.
	if p := ca.Properties; p == nil || p.MaximumPacketSize == nil || *p.MaximumPacketSize != biMaxPacket {
		t.Errorf("CONNACK does not announce the maximum packet size %d: %+v", biMaxPacket, p)
	}
	nb.v5 = v5
	if nb.v3, err = mqtttest.ConnectV3(t, s.MQTT(), "bad-input-v3"); err != nil {
		t.Fatalf("MQTT 3.1.1 connect: %v", err)
	}
	return nb
}

func (nb *biNeighbours) http(t *testing.T) {
	t.Helper()
	nb.nHTTP++
	body := fmt.Sprintf(`{"device_id":%q,"reading":%d,"seq":%d}`, biNeighbourHTTP, nb.nHTTP, nb.nHTTP)
	resp, err := nb.client.Post(nb.s.HTTP()+"/v1/readings", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("control reading %d after a bad request: %v", nb.nHTTP, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("control reading %d after a bad request: %d %s", nb.nHTTP, resp.StatusCode, b)
	}
}

func (nb *biNeighbours) mqtt(t *testing.T) {
	t.Helper()
	nb.nV5++
	p := fmt.Sprintf(`{"reading":%d,"seq":%d}`, nb.nV5, nb.nV5)
	if code, ok, err := nb.v5.publish("devices/"+biNeighbourV5+"/readings", []byte(p)); !ok || code != 0 {
		t.Fatalf("MQTT 5 control reading %d after a bad publish: PUBACK %v, code 0x%02x, err %v", nb.nV5, ok, code, err)
	}
	nb.nV3++
	p = fmt.Sprintf(`{"reading":%d,"seq":%d}`, nb.nV3, nb.nV3)
	if err := edgePublishV3(nb.v3, "devices/"+biNeighbourV3+"/readings", []byte(p)); err != nil {
		t.Fatalf("MQTT 3.1.1 control reading %d after a bad publish: %v", nb.nV3, err)
	}
}

func (nb *biNeighbours) sent() int { return nb.nHTTP + nb.nV5 + nb.nV3 }

// check requires every control reading to have landed exactly once.
func (nb *biNeighbours) check(t *testing.T, dbURL string) {
	t.Helper()
	for _, d := range []struct {
		device string
		n      int
	}{{biNeighbourHTTP, nb.nHTTP}, {biNeighbourV5, nb.nV5}, {biNeighbourV3, nb.nV3}} {
		rows := QueryInt(t, dbURL, "SELECT count(*) FROM readings WHERE device_id = $1", d.device)
		distinct := QueryInt(t, dbURL, "SELECT count(DISTINCT payload->>'seq') FROM readings WHERE device_id = $1", d.device)
		if rows != int64(d.n) || distinct != int64(d.n) {
			t.Errorf("control readings of %s: %d rows, %d distinct, want %d once each", d.device, rows, distinct, d.n)
		}
	}
}

// biProbe measures good requests' latency.
type biProbe struct {
	url string
	mu  sync.Mutex
	n   int // requests sent (each a reading that must land)
}

const biProbeDevice = "ok-http-probe"

func (p *biProbe) one() (time.Duration, error) {
	p.mu.Lock()
	p.n++
	seq := p.n
	p.mu.Unlock()
	body := fmt.Sprintf(`{"device_id":%q,"reading":1,"seq":%d}`, biProbeDevice, seq)
	c := &http.Client{Timeout: 15 * time.Second}
	start := time.Now()
	resp, err := c.Post(p.url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	return time.Since(start), nil
}

type biSample struct {
	d   time.Duration
	err error
}

func (p *biProbe) run(n int) []biSample {
	var out []biSample
	for range n {
		d, err := p.one()
		out = append(out, biSample{d, err})
		time.Sleep(50 * time.Millisecond) // pacing of the probes
	}
	return out
}

// loop probes every 100 ms until the returned function is called, which
// returns the samples.
func (p *biProbe) loop() func() []biSample {
	stop := make(chan struct{})
	done := make(chan []biSample)
	go func() {
		var out []biSample
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- out
				return
			case <-t.C:
				d, err := p.one()
				out = append(out, biSample{d, err})
			}
		}
	}()
	return func() []biSample { close(stop); return <-done }
}

// check requires every probe to succeed, within 3 s each, and the median
// while slow clients hold connections to stay near the median before.
func (p *biProbe) check(t *testing.T, before, during []biSample) {
	t.Helper()
	for _, set := range [][]biSample{before, during} {
		for i, s := range set {
			if s.err != nil {
				t.Errorf("probe %d: %v", i, s.err)
			} else if s.d > 3*time.Second {
				t.Errorf("probe %d took %s: the gateway was blocked", i, s.d)
			}
		}
	}
	if len(during) < 20 {
		t.Errorf("only %d probes ran during the bad input", len(during))
	}
	mb, md := biMedian(before), biMedian(during)
	t.Logf("probe latency p50: %s before, %s during (%d probes)", mb, md, len(during))
	if md > 5*mb+250*time.Millisecond {
		t.Errorf("probe latency p50 rose from %s to %s while slow clients held connections", mb, md)
	}
}

func (p *biProbe) checkLanded(t *testing.T, dbURL string) {
	t.Helper()
	p.mu.Lock()
	n := p.n
	p.mu.Unlock()
	if got := QueryInt(t, dbURL, "SELECT count(DISTINCT payload->>'seq') FROM readings WHERE device_id = $1", biProbeDevice); got != int64(n) {
		t.Errorf("probe readings: %d landed, want %d", got, n)
	}
	if got := QueryInt(t, dbURL, "SELECT count(*) FROM readings WHERE device_id = $1", biProbeDevice); got != int64(n) {
		t.Errorf("probe readings: %d rows, want %d", got, n)
	}
}

func biMedian(ss []biSample) time.Duration {
	var ds []time.Duration
	for _, s := range ss {
		if s.err == nil {
			ds = append(ds, s.d)
		}
	}
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// biSlowloris holds connections that send a request a byte at a time.
type biSlowloris struct {
	headers, bodies int
	headerDone      chan time.Duration // when the server closed each slow-header connection
	bodyDone        chan biSlowResult
	stop            chan struct{}
}

type biSlowResult struct {
	after  time.Duration
	answer string // the start of what the server sent, if anything
}

// biStartSlowloris opens headers connections that trickle request headers
// and bodies connections that send complete headers and then trickle a
// body, a byte every 200 ms each.
func biStartSlowloris(t *testing.T, addr string, headers, bodies int) *biSlowloris {
	t.Helper()
	sl := &biSlowloris{headers: headers, bodies: bodies,
		headerDone: make(chan time.Duration, headers), bodyDone: make(chan biSlowResult, bodies), stop: make(chan struct{})}
	t.Cleanup(sl.stopBodies)
	for i := range headers {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		head := []byte(fmt.Sprintf("POST /v1/readings HTTP/1.1\r\nHost: %s\r\nX-Slow-%d: ", addr, i))
		go func() {
			r := biTrickle(conn, head, nil, sl.stop)
			sl.headerDone <- r.after
		}()
	}
	// The body would be a valid reading of a bad-... device, were it ever
	// completed: it never is (Content-Length promises more).
	body := []byte(`{"device_id":"bad-slowloris","reading":1,"pad":"` + strings.Repeat("z", 4000))
	for range bodies {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		head := []byte(fmt.Sprintf("POST /v1/readings HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", addr, len(body)+100))
		go func() { sl.bodyDone <- biTrickle(conn, head, body, sl.stop) }()
	}
	return sl
}

// biTrickle writes head at once, then rest (or, with rest nil, header
// bytes forever) a byte every 200 ms, until the server sends something or
// closes the connection, or stop is closed. It returns how long the
// connection lived.
func biTrickle(conn net.Conn, head, rest []byte, stop <-chan struct{}) biSlowResult {
	start := time.Now()
	read := make(chan biSlowResult, 1)
	go func() {
		b := make([]byte, 256)
		n, _ := conn.Read(b) // blocks until the server answers or closes
		read <- biSlowResult{after: time.Since(start), answer: string(b[:n])}
	}()
	_, _ = conn.Write(head)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case r := <-read:
			conn.Close()
			return r
		case <-stop:
			conn.Close()
			return biSlowResult{after: time.Since(start), answer: "stopped by the test"}
		case <-tick.C:
			c := byte('a')
			if rest != nil {
				if i >= len(rest) {
					continue
				}
				c = rest[i]
			}
			_, _ = conn.Write([]byte{c})
		}
	}
}

func (sl *biSlowloris) waitHeaders(t *testing.T, timeout time.Duration) []time.Duration {
	t.Helper()
	var out []time.Duration
	deadline := time.After(timeout)
	for len(out) < sl.headers {
		select {
		case d := <-sl.headerDone:
			out = append(out, d)
		case <-deadline:
			t.Fatalf("%d of %d slow-header connections still open after %s: the server does not time them out", sl.headers-len(out), sl.headers, timeout)
		}
	}
	return out
}

func (sl *biSlowloris) waitBodies(t *testing.T, timeout time.Duration) []biSlowResult {
	t.Helper()
	var out []biSlowResult
	deadline := time.After(timeout)
	for len(out) < sl.bodies {
		select {
		case r := <-sl.bodyDone:
			out = append(out, r)
		case <-deadline:
			t.Fatalf("%d of %d slow-body connections still open after %s: the server does not time them out", sl.bodies-len(out), sl.bodies, timeout)
		}
	}
	return out
}

// stopBodies ends the trickles still running (idempotent).
func (sl *biSlowloris) stopBodies() {
	select {
	case <-sl.stop:
	default:
		close(sl.stop)
	}
}
