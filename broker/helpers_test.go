package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"firehose/bridge"
	"firehose/ingest"
	"firehose/internal/mqtttest"
	"firehose/internal/pahostore"
	"firehose/internal/syncbuf"
	"firehose/internal/testenv"
	"firehose/stream"
)

func TestMain(m *testing.M) {
	// go-redis prints its dial failures to stderr; the tests that stop Redis
	// make plenty of them on purpose.
	redis.SetLogger(quietRedis{})
	os.Exit(m.Run())
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// stackOptions describe a broker under test and what surrounds it.
type stackOptions struct {
	cfg      Config                // a zero listener set means TCP on 127.0.0.1:0
	producer stream.ProducerConfig // BacklogInterval defaults to 50ms here
	rdb      *redis.Client         // nil: the test Redis under a prefix of its own
	prefix   string                // key prefix when rdb is set
	bridge   bool                  // start a bridge into a database of the test's own
	logger   *slog.Logger          // nil: discard
}

// testStack is a broker with a real stream.Producer on Redis and, when asked,
// a real bridge into PostgreSQL, all stopped when the test ends.
type testStack struct {
	t        *testing.T
	b        *Broker
	reg      *prometheus.Registry
	producer *stream.Producer
	rdb      *redis.Client
	streams  stream.Streams
	log      *slog.Logger
	pgURL    string
	pg       *pgxpool.Pool

	runDone  chan struct{}
	runErr   error
	cancel   context.CancelFunc
	stopOnce sync.Once
	stopErr  error
}

func newStack(t *testing.T, o stackOptions) *testStack {
	t.Helper()
	s := &testStack{t: t, reg: prometheus.NewRegistry(), rdb: o.rdb, log: o.logger}
	prefix := o.prefix
	if s.rdb == nil {
		s.rdb, prefix = testenv.Redis(t)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.streams = stream.Streams{Prefix: prefix, Count: 2}
	if o.producer.BacklogInterval == 0 {
		o.producer.BacklogInterval = 50 * time.Millisecond
	}
	s.producer = stream.NewProducer(s.rdb, s.streams, o.producer, s.log, s.reg)
	pctx, stopProducer := context.WithCancel(context.Background())
	producerDone := make(chan struct{})
	go func() {
		defer close(producerDone)
		_ = s.producer.Run(pctx)
	}()
	// Cleanups run last-registered first: the broker stops before the
	// producer it feeds, as firehose serve stops them.
	t.Cleanup(func() { stopProducer(); <-producerDone })

	if o.bridge {
		s.startBridge()
	}

	cfg := o.cfg
	if cfg.Addr == "" && cfg.TLSAddr == "" && cfg.WSAddr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	b, err := New(cfg, s.producer, s.log, s.reg)
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	if err := b.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	s.b = b
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.runDone = make(chan struct{})
	go func() {
		defer close(s.runDone)
		s.runErr = b.Run(ctx)
	}()
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("stop broker: %v", err)
		}
	})
	return s
}

// stop cancels Run's context and waits for Run to return; it returns Run's
// error, or an error if Run outlives the shutdown timeout by 5 seconds.
func (s *testStack) stop() error {
	s.stopOnce.Do(func() {
		s.cancel()
		select {
		case <-s.runDone:
			s.stopErr = s.runErr
		case <-time.After(s.b.cfg.ShutdownTimeout + 5*time.Second):
			s.stopErr = fmt.Errorf("Run did not return within the shutdown timeout %s + 5s", s.b.cfg.ShutdownTimeout)
		}
	})
	return s.stopErr
}

// startBridge starts a bridge on the stack's streams into a database of the
// test's own (created on first use).
func (s *testStack) startBridge() {
	s.t.Helper()
	if s.pgURL == "" {
		s.pgURL = testenv.Postgres(s.t)
		pool, err := pgxpool.New(context.Background(), s.pgURL)
		if err != nil {
			s.t.Fatal(err)
		}
		s.pg = pool
		s.t.Cleanup(pool.Close)
	}
	br, err := bridge.New(bridge.Config{
		Postgres:   s.pgURL,
		Streams:    s.streams,
		BatchSize:  500,
		BatchAge:   30 * time.Millisecond,
		LockRetry:  100 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	}, s.rdb, s.log, prometheus.NewRegistry())
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = br.Run(ctx)
	}()
	s.t.Cleanup(func() { cancel(); <-done })
}

// tcpAddr is the broker's plain TCP address, host:port.
func (s *testStack) tcpAddr() string { return s.b.Addr("tcp").String() }

// streamLen is the number of readings in the stack's shard streams (a
// batch entry holds many); -1 if Redis could not tell.
func (s *testStack) streamLen() int64 {
	var n int64
	for _, k := range s.streams.Keys() {
		msgs, err := s.rdb.XRange(context.Background(), k, "-", "+").Result()
		if err != nil {
			return -1
		}
		for _, m := range msgs {
			rs, err := ingest.DecodeEntry(m.Values)
			if err != nil {
				return -1
			}
			n += int64(len(rs))
		}
	}
	return n
}

// streamReadings decodes every entry of the stack's shard streams.
func (s *testStack) streamReadings() []ingest.Reading {
	s.t.Helper()
	var rs []ingest.Reading
	for _, k := range s.streams.Keys() {
		msgs, err := s.rdb.XRange(s.t.Context(), k, "-", "+").Result()
		if err != nil {
			s.t.Fatalf("xrange %s: %v", k, err)
		}
		for _, m := range msgs {
			part, err := ingest.DecodeEntry(m.Values)
			if err != nil {
				s.t.Fatalf("decode %s %s: %v", k, m.ID, err)
			}
			rs = append(rs, part...)
		}
	}
	return rs
}

// count runs a counting query on the stack's database.
func (s *testStack) count(query string, args ...any) int {
	s.t.Helper()
	var n int
	if err := s.pg.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		s.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// settle waits until at least want rows landed and nothing is left on the
// way: the producer's queue and the streams are empty (the bridge trims what
// it committed), so no further row can appear.
func (s *testStack) settle(want int, timeout time.Duration) {
	s.t.Helper()
	var queued float64
	var inStreams int64
	var rows int
	testenv.Eventually(s.t, timeout, func() bool {
		queued, inStreams = s.metric("firehose_producer_queued_readings"), s.streamLen()
		rows = s.count("SELECT count(*) FROM readings")
		return queued == 0 && inStreams == 0 && rows >= want
	}, "readings did not settle: %v", lazy(func() string {
		// Formatted when the wait fails: the last values it saw.
		return fmt.Sprintf("%d rows (want %d), %d readings in the streams, %v queued in the producer", rows, want, inStreams, queued)
	}))
}

// lazy is a message part formatted only when it is printed.
type lazy func() string

func (l lazy) String() string { return l() }

// row is a landed reading.
type row struct {
	Device   string
	TS       time.Time
	Received time.Time
	Value    float64
	Payload  []byte // nil when NULL
}

func (s *testStack) rows(where string, args ...any) []row {
	s.t.Helper()
	q := "SELECT device_id, ts, received_at, reading, payload::text FROM readings"
	if where != "" {
		q += " WHERE " + where
	}
	rs, err := s.pg.Query(context.Background(), q, args...)
	if err != nil {
		s.t.Fatalf("%s: %v", q, err)
	}
	out, err := pgx.CollectRows(rs, func(r pgx.CollectableRow) (row, error) {
		var x row
		var p *string
		err := r.Scan(&x.Device, &x.TS, &x.Received, &x.Value, &p)
		if p != nil {
			x.Payload = []byte(*p)
		}
		return x, err
	})
	if err != nil {
		s.t.Fatalf("%s: %v", q, err)
	}
	return out
}

// metric is the value of a counter or gauge of the stack's registry, or the
// sample count of a histogram; labels are name, value pairs. A metric that
// does not exist fails the test.
func (s *testStack) metric(name string, labels ...string) float64 {
	s.t.Helper()
	m := testenv.Metric(s.t, s.reg, name, labels...)
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	s.t.Fatalf("metric %s has no value", name)
	return 0
}

func mustConnectV3(t *testing.T, url, clientID string, mods ...func(*mqtt.ClientOptions)) mqtt.Client {
	t.Helper()
	c, err := mqtttest.ConnectV3(t, url, clientID, mods...)
	if err != nil {
		t.Fatalf("MQTT 3.1.1 client %s: connect to %s: %v", clientID, url, err)
	}
	return c
}

// publishV3 publishes and waits for the acknowledgement (QoS 1/2).
func publishV3(t *testing.T, c mqtt.Client, topic string, qos byte, payload string) {
	t.Helper()
	if err := waitToken(c.Publish(topic, qos, false, payload), 10*time.Second); err != nil {
		t.Fatalf("MQTT 3.1.1 publish to %s at QoS %d: %v", topic, qos, err)
	}
}

// waitToken waits for a paho 3.1.1 token and returns its error, or an error
// if it did not complete in time.
func waitToken(tok mqtt.Token, timeout time.Duration) error {
	if !tok.WaitTimeout(timeout) {
		return fmt.Errorf("not completed within %s", timeout)
	}
	return tok.Error()
}

// v5Client is an MQTT 5 client (eclipse/paho.golang) with what the server
// sent it on the side.
type v5Client struct {
	*paho.Client
	disconnects chan *paho.Disconnect // DISCONNECT packets from the server
	received    chan *paho.Publish    // messages of its subscriptions
}

// connectV5 dials addr and connects an MQTT 5 client; on a refused CONNECT it
// returns the CONNACK and an error.
func connectV5(t *testing.T, addr string, cp *paho.Connect) (*v5Client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	return connectV5Conn(t, conn, cp)
}

// connectV5Conn is connectV5 over a connection the test dialled.
func connectV5Conn(t *testing.T, conn net.Conn, cp *paho.Connect) (*v5Client, *paho.Connack, error) {
	t.Helper()
	c := &v5Client{disconnects: make(chan *paho.Disconnect, 4), received: make(chan *paho.Publish, 1000)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn:               conn,
		PacketTimeout:      15 * time.Second,
		PingHandler:        mqtttest.NoPinger{},
		OnServerDisconnect: func(d *paho.Disconnect) { c.disconnects <- d },
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case c.received <- pr.Packet:
			default:
			}
			return true, nil
		}},
	})
	// Generous: a password hashed at bcrypt's full cost takes seconds to
	// check under the race detector on a loaded machine; the answer, not
	// its speed, is what the tests assert.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		return nil, ca, err
	}
	t.Cleanup(func() {
		select {
		case <-c.Done():
			return
		default:
		}
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Errorf("MQTT 5 client %s did not shut down", cp.ClientID)
		}
	})
	return c, ca, nil
}

func mustConnectV5(t *testing.T, addr, clientID string) *v5Client {
	t.Helper()
	c, _, err := connectV5(t, addr, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30})
	if err != nil {
		t.Fatalf("MQTT 5 client %s: connect to %s: %v", clientID, addr, err)
	}
	return c
}

// publishV5 publishes and returns the reason code of the PUBACK (QoS 1) or of
// the PUBREC, or PUBCOMP when the PUBREC was a success (QoS 2); 0 for QoS 0.
// It fails the test if no answer comes.
func publishV5(t *testing.T, c *v5Client, topic string, qos byte, payload string) byte {
	t.Helper()
	code, err := tryPublishV5(c, topic, qos, payload, 15*time.Second)
	if err != nil {
		t.Fatalf("MQTT 5 publish to %s at QoS %d: %v", topic, qos, err)
	}
	return code
}

func tryPublishV5(c *v5Client, topic string, qos byte, payload string, timeout time.Duration) (byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return tryPublishV5WithContext(ctx, c, topic, qos, payload)
}

func tryPublishV5WithContext(ctx context.Context, c *v5Client, topic string, qos byte, payload string) (byte, error) {
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
	if resp != nil {
		// paho answers a failure reason code in a PUBACK with the
		// response and an error; the code is what the tests look at.
		return resp.ReasonCode, nil
	}
	return 0, err
}

// jsonEqual reports whether two JSON texts hold the same value (jsonb
// reorders keys and reformats).
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// freeAddr is a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// redisServer is a throwaway redis-server of one test, on a loopback port of
// its own, with an append-only file fsynced on every write so that what it
// confirmed survives a SIGKILL. It is killed when the test ends.
type redisServer struct {
	t    *testing.T
	port int
	dir  string
	out  *syncbuf.Buffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

const redisServerBin = "/usr/bin/redis-server"

func startRedisServer(t *testing.T) *redisServer {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped under -short")
	}
	if _, err := os.Stat(redisServerBin); err != nil {
		t.Skipf("%s not installed: %v", redisServerBin, err)
	}
	_, port, _ := net.SplitHostPort(freeAddr(t))
	r := &redisServer{t: t, dir: t.TempDir(), out: &syncbuf.Buffer{}}
	r.port, _ = strconv.Atoi(port)
	t.Cleanup(r.kill)
	r.start()
	return r
}

// start starts redis-server on the server's port and directory and waits
// until it answers.
func (r *redisServer) start() {
	r.t.Helper()
	r.mu.Lock()
	cmd := exec.Command(redisServerBin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", r.dir,
		"--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning")
	cmd.Stdout, cmd.Stderr = r.out, r.out
	if err := cmd.Start(); err != nil {
		r.mu.Unlock()
		r.t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()

	c := redis.NewClient(&redis.Options{Addr: r.addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	testenv.Eventually(r.t, 10*time.Second, func() bool {
		select {
		case <-done:
			r.t.Fatalf("redis-server exited at start: %s", r.out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		return c.Ping(ctx).Err() == nil
	}, "redis-server on %s does not answer: %s", r.addr(), r.out.String())
}

func (r *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// kill kills redis-server with SIGKILL (a stopped one too) and waits for it.
func (r *redisServer) kill() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// signal sends sig (SIGSTOP, SIGCONT) to the running redis-server.
func (r *redisServer) signal(sig os.Signal) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		r.t.Fatal("redis-server is not running")
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("signal redis-server: %v", err)
	}
}

// client is a go-redis client of the server configured as firehose serve
// configures its own: no automatic retries, context deadlines honoured.
func (r *redisServer) client() *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr:                  r.addr(),
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
		DialTimeout:           500 * time.Millisecond,
		ReadTimeout:           3 * time.Second,
		WriteTimeout:          3 * time.Second,
	})
	r.t.Cleanup(func() { c.Close() })
	return c
}

// discard is a logger that drops everything.
var discard = slog.New(slog.DiscardHandler)

// nopProducer accepts everything and stores nothing: for tests of what
// happens before a reading reaches the producer.
type nopProducer struct{}

func (nopProducer) Add(context.Context, []ingest.Reading) error { return nil }
func (nopProducer) Enqueue(ingest.Reading) error                { return nil }
func (nopProducer) AddDeadLetter(context.Context, ingest.DeadLetter) error {
	return nil
}

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// ackSniffer counts the MQTT packets a client receives, by packet type, on
// every connection it opens: paho.mqtt.golang completes the token of a
// publish it resends after a reconnect as soon as the resend is queued, so
// only the wire tells whether the broker acknowledged.
type ackSniffer struct {
	mu     sync.Mutex
	counts [16]int // by MQTT control packet type
	conns  int
}

// MQTT control packet types the tests look for.
const (
	typePuback = 4
	typePubrec = 5
)

func (a *ackSniffer) count(typ byte) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.counts[typ]
}

func (a *ackSniffer) connections() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.conns
}

// dial is a paho.mqtt.golang OpenConnectionFunc for tcp:// brokers.
func (a *ackSniffer) dial(uri *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", uri.Host, 5*time.Second)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.conns++
	a.mu.Unlock()
	return &sniffConn{Conn: c, a: a}, nil
}

// sniffConn parses the fixed headers of the packets read from the server.
type sniffConn struct {
	net.Conn
	a     *ackSniffer
	state int // 0: fixed header byte, 1: remaining length, 2: body
	typ   byte
	rem   int
	mult  int
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	for i := 0; i < n; i++ {
		b := p[i]
		switch c.state {
		case 0:
			c.typ, c.rem, c.mult, c.state = b>>4, 0, 1, 1
		case 1:
			c.rem += int(b&0x7f) * c.mult
			c.mult *= 128
			if b&0x80 == 0 {
				c.state = 2
				if c.rem == 0 {
					c.done()
				}
			}
		case 2:
			skip := min(c.rem, n-i)
			c.rem -= skip
			i += skip - 1
			if c.rem == 0 {
				c.done()
			}
		}
	}
	return n, err
}

func (c *sniffConn) done() {
	c.a.mu.Lock()
	c.a.counts[c.typ]++
	c.a.mu.Unlock()
	c.state = 0
}

// resendingV3 are the options of an MQTT 3.1.1 device that keeps its session
// and resends what was not acknowledged: clean session off, automatic
// reconnection with a short backoff, and an ackSniffer on its connections.
func resendingV3(a *ackSniffer, lost *atomic.Int64) func(*mqtt.ClientOptions) {
	return func(o *mqtt.ClientOptions) {
		o.SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).
			SetStore(pahostore.New()).SetCustomOpenConnectionFn(a.dial).
			SetConnectionLostHandler(func(mqtt.Client, error) { lost.Add(1) })
	}
}

// writeCredentials writes a credentials file of devices (id -> bcrypt hash)
// at path.
func writeCredentials(t *testing.T, path string, devices map[string]string) {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("# device-id bcrypt-hash\n")
	for dev, hash := range devices {
		fmt.Fprintf(&b, "%s %s\n", dev, hash)
	}
	// Write and rename, as an operator's tool should: the broker never
	// reads a half-written file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// v5Creds is an MQTT 5 CONNECT with a device's credentials.
func v5Creds(clientID, user, password string) *paho.Connect {
	return &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30,
		Username: user, UsernameFlag: true, Password: []byte(password), PasswordFlag: true}
}

// publishUntilRevoked publishes on topic through c until the broker
// disconnects c, as it does a client whose credentials were revoked (a
// publish in the moment between the change and the disconnection is
// refused 0x87, and the next one tried); it returns the publishes
// acknowledged before, and whether c was disconnected (with DISCONNECT
// 0x87). No bound on how long the broker takes: a busy box is slow.
func publishUntilRevoked(t *testing.T, c *v5Client, topic string, payload func(i int) string) (acked int, disconnected bool) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() bool {
		select {
		case <-c.Done():
			disconnected = true
			return true
		default:
		}
		code, err := tryPublishV5(c, topic, 1, payload(acked), 15*time.Second)
		switch {
		case err != nil: // disconnected meanwhile, or slow: the next round tells
		case code == 0:
			acked++
		case code == codeNotAuthorized: // revoked, not yet disconnected
		default:
			t.Fatalf("publish to %s while being revoked: reason code %#x", topic, code)
		}
		return false
	}, "a client publishing on %s is not disconnected after its credentials were revoked", topic)
	if disconnected {
		select {
		case d := <-c.disconnects:
			if d.ReasonCode != codeNotAuthorized {
				t.Errorf("revoked client disconnected with reason %#x, want 0x87", d.ReasonCode)
			}
		case <-time.After(5 * time.Second):
			t.Error("revoked client disconnected without a DISCONNECT packet")
		}
	}
	return acked, disconnected
}
