package faults

// Helpers of the edge scenarios (bad input, poison, auth): raw MQTT and HTTP
// on the wire for what client libraries will not send, MQTT 5 and 3.1.1
// clients, and checks of what landed. Names start with "edge" so that they
// do not clash with other scenarios' helpers.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"firehose/internal/mqtttest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// edgeShards is the shard count of the stacks these scenarios start (the
// default of firehose serve).
const edgeShards = 4

// edgeStreams is the stream layout of a stack started with the default
// shard count.
func edgeStreams(s *Stack) stream.Streams {
	return stream.Streams{Prefix: s.Services.Prefix, Count: edgeShards}
}

// edgeRedis is a go-redis client of the stack's Redis, closed when t ends.
func edgeRedis(t *testing.T, s *Stack) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(s.Services.Redis)
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries = -1 // a retried pipeline could add an entry twice
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// edgeWaitLoadRunning waits until both edges have accepted readings of the
// simulated load, so that what follows happens under load.
func edgeWaitLoadRunning(t *testing.T, s *Stack, l *Load) {
	t.Helper()
	testenv.Eventually(t, 90*time.Second, func() bool {
		if l.proc.Exited() {
			t.Fatalf("the load ended before it started sending; output:\n%s", l.Output())
		}
		h, _ := s.Metric("firehose_http_readings_accepted_total")
		m, _ := s.Metric("firehose_mqtt_readings_accepted_total")
		return h > 0 && m > 0
	}, "the load did not start sending over both HTTP and MQTT; simulator output:\n%s", edgeLazy(l.Output))
}

// edgeLazy formats as what it returns at the time of formatting: for
// failure messages of testenv.Eventually, whose arguments are evaluated
// before the wait.
type edgeLazy func() string

func (f edgeLazy) String() string { return f() }

// edgeWaitDrained waits until every entry written to the stack's streams is
// committed (or rejected) by the bridge: each stream's checkpoint has
// reached the stream's last id. No further row can appear afterwards unless
// something writes again.
func edgeWaitDrained(t *testing.T, s *Stack, rdb *redis.Client, timeout time.Duration) {
	t.Helper()
	pending := ""
	testenv.Eventually(t, timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, key := range edgeStreams(s).Keys() {
			info, err := rdb.XInfoStream(ctx, key).Result()
			if err != nil {
				if strings.Contains(err.Error(), "no such key") {
					continue
				}
				pending = err.Error()
				return false
			}
			last, err := stream.ParseStreamID(info.LastGeneratedID)
			if err != nil {
				t.Fatalf("stream %s: last id %q: %v", key, info.LastGeneratedID, err)
			}
			if last == (stream.StreamID{}) {
				continue
			}
			cp := edgeCheckpoint(t, s.Services.Postgres, key)
			if cp.Less(last) {
				pending = fmt.Sprintf("%s: checkpoint %s, last entry %s", key, cp, last)
				return false
			}
		}
		return true
	}, "the bridge did not commit everything written to the streams: %s", edgeLazy(func() string { return pending }))
}

// edgeCheckpoint is the bridge's checkpoint of stream key (zero when none).
func edgeCheckpoint(t *testing.T, dbURL, key string) stream.StreamID {
	t.Helper()
	ctx, conn, done := dbConn(t, dbURL, 10*time.Second)
	defer done()
	var last string
	err := conn.QueryRow(ctx, "SELECT last_id FROM bridge_checkpoints WHERE stream = $1", key).Scan(&last)
	if errors.Is(err, pgx.ErrNoRows) {
		return stream.StreamID{}
	}
	if err != nil {
		t.Fatalf("read checkpoint of %s: %v", key, err)
	}
	id, err := stream.ParseStreamID(last)
	if err != nil {
		t.Fatalf("checkpoint of %s: %v", key, err)
	}
	return id
}

// edgeStrangers lists (at most 20 of) the device ids that landed but belong
// neither to the simulated fleet (sim-...) nor to the controls the test sent
// on purpose (ok-...): a row of a refused input.
func edgeStrangers(t *testing.T, dbURL string) []string {
	t.Helper()
	ctx, conn, done := dbConn(t, dbURL, 30*time.Second)
	defer done()
	rows, err := conn.Query(ctx, `SELECT DISTINCT device_id FROM readings
		WHERE device_id NOT LIKE 'sim-%' AND device_id NOT LIKE 'ok-%' ORDER BY 1 LIMIT 20`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// edgeRowsOf counts the rows of device; with payload set, only those whose
// payload equals it (as jsonb).
func edgeRowsOf(t *testing.T, dbURL, device string, payload []byte) int64 {
	t.Helper()
	if payload == nil {
		return QueryInt(t, dbURL, "SELECT count(*) FROM readings WHERE device_id = $1", device)
	}
	return QueryInt(t, dbURL, "SELECT count(*) FROM readings WHERE device_id = $1 AND payload = $2::jsonb", device, string(payload))
}

// edgeNoFiveHundreds fails t if the gateway answered any request with a 5xx
// other than 503 (backpressure).
func edgeNoFiveHundreds(t *testing.T, s *Stack) {
	t.Helper()
	resp, err := http.Get(s.HTTP() + "/metrics")
	if err != nil {
		t.Fatalf("get metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "firehose_http_requests_total{") && strings.Contains(line, `code="5`) &&
			!strings.Contains(line, `code="503"`) && !strings.HasSuffix(line, " 0") {
			t.Errorf("the gateway answered with a server error: %s", line)
		}
	}
}

// --- MQTT on the wire ---------------------------------------------------

// edgeMQTTConn is an MQTT connection written packet by packet, for what a
// client library refuses to send (wildcards in a topic name, invalid UTF-8,
// packets over the server's limit) or to speak plain MQTT to a TLS port.
type edgeMQTTConn struct {
	conn net.Conn
	br   *bufio.Reader
}

func edgeAppendVarint(b []byte, n int) []byte {
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func edgeAppendString(b []byte, s []byte) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

func edgePacket(first byte, body []byte) []byte {
	return append(edgeAppendVarint([]byte{first}, len(body)), body...)
}

// edgeConnectPacket is a CONNECT of protocol version 4 (3.1.1) or 5 with a
// clean session, a 30 s keep-alive and, if user is set, credentials.
func edgeConnectPacket(version byte, clientID, user, password string) []byte {
	b := edgeAppendString(nil, []byte("MQTT"))
	flags := byte(0x02)
	if user != "" {
		flags |= 0x80 | 0x40
	}
	b = append(b, version, flags, 0, 30)
	if version == 5 {
		b = append(b, 0) // no properties
	}
	b = edgeAppendString(b, []byte(clientID))
	if user != "" {
		b = edgeAppendString(b, []byte(user))
		b = edgeAppendString(b, []byte(password))
	}
	return edgePacket(0x10, b)
}

// edgePublishPacket is a QoS 1 PUBLISH with packet id 1.
func edgePublishPacket(version byte, topic, payload []byte) []byte {
	b := edgeAppendString(nil, topic)
	b = append(b, 0, 1)
	if version == 5 {
		b = append(b, 0) // no properties
	}
	return edgePacket(0x32, append(b, payload...))
}

// edgeDialMQTT connects and sends a CONNECT; it returns the connection once
// the CONNACK accepted it.
func edgeDialMQTT(addr string, version byte, clientID string) (*edgeMQTTConn, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &edgeMQTTConn{conn: conn, br: bufio.NewReader(conn)}
	if _, err := conn.Write(edgeConnectPacket(version, clientID, "", "")); err != nil {
		conn.Close()
		return nil, fmt.Errorf("write CONNECT: %w", err)
	}
	typ, body, err := c.read(10 * time.Second)
	switch {
	case err != nil:
		conn.Close()
		return nil, fmt.Errorf("read CONNACK: %w", err)
	case typ != 2 || len(body) < 2 || body[1] != 0:
		conn.Close()
		return nil, fmt.Errorf("CONNECT refused: packet type %d, body % x", typ, body)
	}
	return c, nil
}

// read reads one packet: its type (the high nibble of the first byte) and
// body.
func (c *edgeMQTTConn) read(timeout time.Duration) (byte, []byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	first, err := c.br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		b, err := c.br.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mult
		mult *= 128
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return 0, nil, err
	}
	return first >> 4, body, nil
}

// outcome publishes (the packet already built) and says what came back
// within timeout, in the corpus's words: "puback" (3.1.1), "puback:0xNN"
// (5), "disconnect:0xNN" (a DISCONNECT, then the connection closed),
// "closed" (closed without a packet), or "no answer".
func (c *edgeMQTTConn) outcome(version byte, publish []byte, timeout time.Duration) string {
	// The server may close before reading all of a large packet: write
	// while reading, and ignore a failed write (the read tells).
	go func() { _, _ = c.conn.Write(publish) }()
	typ, body, err := c.read(timeout)
	switch {
	case err != nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "no answer"
		}
		return "closed"
	case typ == 4 && version == 4:
		return "puback"
	case typ == 4:
		code := byte(0)
		if len(body) > 2 {
			code = body[2]
		}
		return fmt.Sprintf("puback:0x%02x", code)
	case typ == 14:
		code := byte(0)
		if len(body) > 0 {
			code = body[0]
		}
		// After a DISCONNECT the server must close the connection.
		if _, _, err := c.read(timeout); err == nil {
			return fmt.Sprintf("disconnect:0x%02x, then more packets", code)
		}
		return fmt.Sprintf("disconnect:0x%02x", code)
	}
	return fmt.Sprintf("packet type %d", typ)
}

func (c *edgeMQTTConn) Close() { c.conn.Close() }

// edgeV5 is an MQTT 5 client (eclipse/paho.golang) over conn.
type edgeV5 struct {
	*paho.Client
	id string
}

// edgeConnectV5 connects an MQTT 5 client over conn (plain or TLS). It
// returns the CONNACK also when the server refused it (with an error).
func edgeConnectV5(t *testing.T, conn net.Conn, cp *paho.Connect) (*edgeV5, *paho.Connack, error) {
	t.Helper()
	c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: 15 * time.Second, PingHandler: mqtttest.NoPinger{}})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		return nil, ca, err
	}
	t.Cleanup(func() {
		select {
		case <-c.Done():
		default:
			_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		}
	})
	return &edgeV5{Client: c, id: cp.ClientID}, ca, nil
}

// publish publishes at QoS 1 and returns the PUBACK's reason code; ok is
// false if no PUBACK came (the connection ended, or the time ran out).
func (c *edgeV5) publish(topic string, payload []byte) (code byte, ok bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
	if resp != nil {
		// paho returns a failure reason code with the response and an
		// error: the code is what counts.
		return resp.ReasonCode, true, nil
	}
	return 0, false, err
}

// edgePublishV3 publishes at QoS 1 and waits for the PUBACK.
func edgePublishV3(c mqtt3.Client, topic string, payload []byte) error {
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(15 * time.Second) {
		return errors.New("no PUBACK within 15s")
	}
	return tok.Error()
}

// --- HTTP on the wire ---------------------------------------------------

// edgeRawRequest sends one HTTP/1.1 request written byte by byte (so that
// headers net/http would refuse to send, such as a NUL in a value, reach the
// server) on a connection of its own, and returns the answer's status and
// body. With chunked the body goes in 8 KiB chunks.
func edgeRawRequest(addr, method, path string, headers [][2]string, body []byte, chunked bool) (int, string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	var req []byte
	req = fmt.Appendf(req, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, path, addr)
	for _, h := range headers {
		req = fmt.Appendf(req, "%s: %s\r\n", h[0], h[1])
	}
	if chunked {
		req = append(req, "Transfer-Encoding: chunked\r\n\r\n"...)
		for rest := body; len(rest) > 0; {
			n := min(len(rest), 8<<10)
			req = fmt.Appendf(req, "%x\r\n", n)
			req = append(append(req, rest[:n]...), "\r\n"...)
			rest = rest[n:]
		}
		req = append(req, "0\r\n\r\n"...)
	} else {
		if method != http.MethodGet || len(body) > 0 {
			req = fmt.Appendf(req, "Content-Length: %d\r\n", len(body))
		}
		req = append(append(req, "\r\n"...), body...)
	}
	// The server may answer (413) and close before reading everything:
	// write while reading the answer.
	go func() { _, _ = conn.Write(req) }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", fmt.Errorf("read answer: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, string(b), fmt.Errorf("read answer body: %w", err)
	}
	return resp.StatusCode, string(b), nil
}

// --- TLS ----------------------------------------------------------------

// edgeDialTLS opens a TLS connection trusting pool.
func edgeDialTLS(addr string, pool *x509.CertPool) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
}

// edgeWriteFile writes data to path atomically (a temporary file renamed
// over it), as an operator's tool should: a reader never sees half a file.
func edgeWriteFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
