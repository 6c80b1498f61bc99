package faults

// Helpers of the outage and backpressure scenarios (postgres_outage_test.go,
// redis_restart_test.go, backpressure_test.go). Their names start with out
// so that they do not clash with other scenarios' helpers.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqttpk "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/internal/mqtttest"
	"firehose/internal/testenv"
)

// outMetricSum sums every sample of a metric family (all label sets) on the
// stack's /metrics; ok is false when /metrics could not be read or the family
// is absent.
func outMetricSum(s *Stack, name string) (sum float64, ok bool) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(s.HTTP() + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		return 0, false
	}
	for _, line := range strings.Split(buf.String(), "\n") {
		rest, found := strings.CutPrefix(line, name)
		if !found {
			continue
		}
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // another family whose name starts the same
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum, ok = sum+v, true
	}
	return sum, ok
}

// outMetric is outMetricSum that waits (bounded) for a readable answer: on a
// loaded machine one scrape may time out.
func outMetric(t *testing.T, s *Stack, name string) float64 {
	t.Helper()
	var v float64
	testenv.Eventually(t, 30*time.Second, func() bool {
		var ok bool
		v, ok = outMetricSum(s, name)
		return ok
	}, "metric %s not readable at %s/metrics", name, s.HTTP())
	return v
}

// outAccepted is the readings the stack's edges acknowledged so far (HTTP and
// MQTT).
func outAccepted(t *testing.T, s *Stack) float64 {
	t.Helper()
	return outMetric(t, s, "firehose_http_readings_accepted_total") + outMetric(t, s, "firehose_mqtt_readings_accepted_total")
}

// outRefused is the readings the edges refused for reason (HTTP and MQTT).
func outRefused(t *testing.T, s *Stack, reason string) (httpN, mqttN float64) {
	t.Helper()
	label := `{reason="` + reason + `"}`
	return outMetric(t, s, "firehose_http_readings_refused_total"+label), outMetric(t, s, "firehose_mqtt_readings_refused_total"+label)
}

// outReadyz is the status code of the stack's /readyz (0 if it did not
// answer) and its body.
func outReadyz(s *Stack) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(s.HTTP() + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}

// outHealthDB is the status code of the stack's GET /health/db (0 if it did
// not answer).
func outHealthDB(s *Stack) int {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(s.HTTP() + "/health/db")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// outHTTPAnswer is what one POST of the probe got.
type outHTTPAnswer struct {
	Code       int
	RetryAfter string
	Body       string
}

// outProbeHTTP posts one reading of device (not one of the simulator's, so
// the run's verification does not see it) to /v1/readings.
func outProbeHTTP(s *Stack, device string) (outHTTPAnswer, error) {
	c := http.Client{Timeout: 10 * time.Second}
	body := fmt.Sprintf(`{"device_id":%q,"reading":1}`, device)
	resp, err := c.Post(s.HTTP()+"/v1/readings", "application/json", strings.NewReader(body))
	if err != nil {
		return outHTTPAnswer{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return outHTTPAnswer{Code: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), Body: string(b)}, nil
}

// outProbeMQTT5 connects an MQTT 5 client as device, publishes one reading
// at QoS 1 and returns the PUBACK's reason code (0 success, 0x97 quota
// exceeded ...), then disconnects.
func outProbeMQTT5(s *Stack, device string) (byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.MQTTAddr)
	if err != nil {
		return 0, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: 10 * time.Second, PingHandler: mqtttest.NoPinger{}})
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: device, Username: device, UsernameFlag: true, CleanStart: true, KeepAlive: 30}); err != nil {
		conn.Close()
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
		}
	}()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: "devices/" + device + "/readings", QoS: 1, Payload: []byte(`{"reading":1}`)})
	if resp != nil {
		// paho returns a failure reason code with the response and an
		// error; the code is the answer.
		return resp.ReasonCode, nil
	}
	return 0, err
}

// outProbeMQTT311 connects as device over MQTT 3.1.1 (raw packets, so that
// no client library resends or reconnects), publishes one reading at QoS 1
// and reads what the broker answers until it closes the connection or 10 s
// pass. acked is true if a PUBACK came; closed if the broker closed the
// connection.
func outProbeMQTT311(s *Stack, device string) (acked, closed bool, err error) {
	conn, err := net.DialTimeout("tcp", s.MQTTAddr, 10*time.Second)
	if err != nil {
		return false, false, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	cp := mqttpk.NewControlPacket(mqttpk.Connect).(*mqttpk.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.CleanSession, cp.Keepalive = true, 30
	cp.ClientIdentifier, cp.Username, cp.UsernameFlag = device, device, true
	if err := cp.Write(conn); err != nil {
		return false, false, fmt.Errorf("write CONNECT: %w", err)
	}
	pk, err := mqttpk.ReadPacket(conn)
	if err != nil {
		return false, false, fmt.Errorf("read CONNACK: %w", err)
	}
	if ca, ok := pk.(*mqttpk.ConnackPacket); !ok || ca.ReturnCode != 0 {
		return false, false, fmt.Errorf("CONNECT answered %v", pk)
	}
	pub := mqttpk.NewControlPacket(mqttpk.Publish).(*mqttpk.PublishPacket)
	pub.TopicName, pub.Qos, pub.MessageID, pub.Payload = "devices/"+device+"/readings", 1, 1, []byte(`{"reading":1}`)
	if err := pub.Write(conn); err != nil {
		return false, false, fmt.Errorf("write PUBLISH: %w", err)
	}
	for {
		pk, err := mqttpk.ReadPacket(conn)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return acked, false, nil
			}
			return acked, true, nil // EOF or reset: the broker closed it
		}
		if pa, ok := pk.(*mqttpk.PubackPacket); ok && pa.MessageID == 1 {
			acked = true
		}
	}
}

// outRedis is a client of a test-owned Redis, closed when the test ends.
func outRedis(t *testing.T, url string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries = -1
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// outUsedMemory is Redis's used_memory (INFO memory), in bytes.
func outUsedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	info, err := rdb.InfoMap(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	v, ok := info["Memory"]["used_memory"]
	if !ok {
		return 0, fmt.Errorf("INFO memory has no used_memory")
	}
	return strconv.ParseInt(v, 10, 64)
}

// outStreamLen is the readings in all the deployment's shard streams: the
// backlog the high-water mark is about. A batch entry counts its readings
// (its count field), any other entry one; counted from the entries
// themselves, not from the producer's counter.
func outStreamLen(ctx context.Context, rdb *redis.Client, keys []string) (int64, error) {
	pipe := rdb.Pipeline()
	cmds := make([]*redis.XMessageSliceCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.XRange(ctx, k, "-", "+")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	var n int64
	for _, c := range cmds {
		for _, m := range c.Val() {
			count, err := strconv.ParseInt(fmt.Sprint(m.Values[ingest.FieldCount]), 10, 64)
			if err != nil || count < 1 {
				count = 1
			}
			n += count
		}
	}
	return n, nil
}

// outPeaks samples, every interval until stopped, the RSS of some processes,
// a Redis server's used_memory and its backlog, and keeps the peaks.
type outPeaks struct {
	mu      sync.Mutex
	RSS     map[string]int64 // peak RSS by process name
	Memory  int64            // peak used_memory
	Backlog int64            // peak readings in the streams
	Samples int
	Errors  int // samples Redis did not answer

	pids map[string]func() int
	stop chan struct{}
	done chan struct{}
}

// outSample starts sampling; pids names the processes to watch (a func, so
// that a process started later is picked up; 0 means not running).
func outSample(rdb *redis.Client, keys []string, interval time.Duration, pids map[string]func() int) *outPeaks {
	p := &outPeaks{RSS: map[string]int64{}, pids: pids, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			p.sample(rdb, keys)
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *outPeaks) sample(rdb *redis.Client, keys []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	mem, err1 := outUsedMemory(ctx, rdb)
	n, err2 := outStreamLen(ctx, rdb, keys)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Samples++
	for name, pid := range p.pids {
		if id := pid(); id > 0 {
			p.RSS[name] = max(p.RSS[name], RSS(id))
		}
	}
	if err1 != nil || err2 != nil {
		p.Errors++
		return
	}
	p.Memory = max(p.Memory, mem)
	p.Backlog = max(p.Backlog, n)
}

// Stop ends the sampling (idempotent) and returns the peaks.
func (p *outPeaks) Stop() *outPeaks {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	return p
}

// Peaks reads the peaks so far.
func (p *outPeaks) Peaks() (rss map[string]int64, memory, backlog int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rss = make(map[string]int64, len(p.RSS))
	for k, v := range p.RSS {
		rss[k] = v
	}
	return rss, p.Memory, p.Backlog
}

// outMiB formats bytes as MiB.
func outMiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// outWaitFor polls cond every 200 ms until it holds. timeout is what the
// wait should take on an idle machine, not a bound (see
// testenv.Eventually): the wait goes on until the test is about to run out
// of time, then fails t with what cond last said of the state. A wait past
// timeout is logged.
func outWaitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(10 * time.Minute)
	if dl, ok := t.Deadline(); ok {
		deadline = dl.Add(-20 * time.Second)
	}
	for {
		ok, state := cond()
		if ok {
			if took := time.Since(start); took > timeout {
				t.Logf("slow: a wait took %s, expected within %s (had it failed: %s)", took.Round(time.Millisecond), timeout, what)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s (the test's time ran out): %s; %s", time.Since(start).Round(time.Millisecond), what, state)
		}
		time.Sleep(200 * time.Millisecond) // the poll interval
	}
}

// outSameEntryTwice counts readings of the run (devices starting with
// prefix) that landed more than once with the same received_at: one stream
// entry committed twice by the bridge, as opposed to a device's resend,
// which the edge receives, and stamps, again. It must be 0 whatever the
// simulator counted as dup_after_resend.
func outSameEntryTwice(t *testing.T, dbURL, prefix string) int64 {
	t.Helper()
	return QueryInt(t, dbURL, `SELECT count(*) FROM (SELECT 1 FROM readings WHERE starts_with(device_id, $1)
		GROUP BY device_id, coalesce(payload->>'seq', payload->>'id'), received_at HAVING count(*) > 1) d`, prefix)
}

// outDupsByProtocol counts the extra rows of readings that landed more than
// once, split by the protocol of their device in a mixed fleet (devices
// sim-<run>-2, -4, ... publish over MQTT, the odd ones post over HTTP).
func outDupsByProtocol(t *testing.T, dbURL, prefix string) (overMQTT, overHTTP int64) {
	t.Helper()
	q := `SELECT coalesce(sum(n - 1), 0)::bigint FROM (
		SELECT count(*) AS n FROM readings WHERE starts_with(device_id, $1)
		AND (substr(device_id, length($1) + 1)::int % 2 = 0) = $2
		GROUP BY device_id, coalesce(payload->>'seq', payload->>'id') HAVING count(*) > 1) d`
	return QueryInt(t, dbURL, q, prefix, true), QueryInt(t, dbURL, q, prefix, false)
}

// outUnderLoad fails t when the load l has already ended, before what.
func outUnderLoad(t *testing.T, l *Load, what string) {
	t.Helper()
	if l.proc.Exited() {
		t.Fatalf("the simulator ended before %s: make the load longer; output:\n%s", what, l.Output())
	}
}

// outWaitFlowing waits until both edges of s acknowledged 500 readings of l.
func outWaitFlowing(t *testing.T, s *Stack, l *Load, before string) {
	t.Helper()
	outWaitFor(t, 60*time.Second, "the load did not start flowing", func() (bool, string) {
		outUnderLoad(t, l, before)
		h, _ := outMetricSum(s, "firehose_http_readings_accepted_total")
		m, _ := outMetricSum(s, "firehose_mqtt_readings_accepted_total")
		return h > 500 && m > 500, fmt.Sprintf("accepted: HTTP %.0f, MQTT %.0f", h, m)
	})
}
