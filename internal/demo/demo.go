package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"firehose/simulator"
)

// Config is the shape of the demo's two fleets.
type Config struct {
	Readings     int           // HTTP readings, half to each endpoint
	Concurrency  int           // HTTP clients
	MQTTDevices  int           // MQTT devices at QoS 1; 0: no MQTT fleet
	MQTTRate     float64       // the MQTT fleet's readings/s
	MQTTDuration time.Duration // how long the MQTT fleet sends
	LandTimeout  time.Duration
}

// NewRunID is a fresh random run id, 8 hex digits, that keeps the device ids
// of one run apart from every other's.
func NewRunID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Fleet is the simulator's configuration for the MQTT fleet against the broker
// at mqttURL (tcp://host:port), publishing under topic and checking what
// landed in postgres; base is the HTTP gateway's URL, whose /metrics backlog
// ends the landing wait as soon as it is empty. Nil when c has no MQTT devices.
func Fleet(c Config, mqttURL, topic, postgres, base, run string) *simulator.Config {
	if c.MQTTDevices == 0 {
		return nil
	}
	sc := simulator.DefaultConfig()
	sc.Protocol = simulator.ProtocolMQTT
	sc.MQTT = mqttURL
	sc.MQTTTopic = topic
	sc.QoS = 1
	sc.Devices = c.MQTTDevices
	sc.Rate = c.MQTTRate
	sc.Duration = c.MQTTDuration
	sc.Postgres = postgres
	sc.Metrics = base + "/metrics"
	sc.LandTimeout = c.LandTimeout
	sc.RunID = "demo" + run
	return &sc
}

// Result counts the burst's readings by their final answer.
type Result struct {
	Accepted, Refused, Errors atomic.Int64
}

// Send posts c.Readings readings to the gateway at base with c.Concurrency
// clients: even jobs one at a time to the seed-shaped /readings/fast, odd jobs
// as arrays of 100 to /v1/readings. A 503 is retried after its Retry-After, a
// few times, as a client should.
func Send(ctx context.Context, base, run string, c Config) *Result {
	const arraySize = 100
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: c.Concurrency, MaxConnsPerHost: c.Concurrency},
	}
	defer client.CloseIdleConnections()
	type job struct {
		path, device string
		body         []byte
		n            int64
	}
	jobs := make(chan job)
	res := &Result{}
	var wg sync.WaitGroup
	for range c.Concurrency {
		wg.Go(func() {
			for j := range jobs {
				switch code := postWithRetry(ctx, client, base+j.path, j.device, j.body); {
				case code == http.StatusOK:
					res.Accepted.Add(j.n)
				case code == http.StatusServiceUnavailable:
					res.Refused.Add(j.n)
				default:
					res.Errors.Add(j.n)
				}
			}
		})
	}
	fast, native := c.Readings/2, c.Readings-c.Readings/2
	seq := 0
	send := func(j job) bool {
		select {
		case jobs <- j:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for i := 0; i < fast; i++ {
		seq++
		body := fmt.Appendf(nil, `{"id": %d, "reading": %d, "timestamp": %q}`, seq, seq%2000-1000, time.Now().UTC().Format(time.RFC3339Nano))
		if !send(job{path: "/readings/fast", device: fmt.Sprintf("demo-%s-fast-%d", run, i%8), body: body, n: 1}) {
			break
		}
	}
	for sent := 0; sent < native && ctx.Err() == nil; {
		var buf bytes.Buffer
		buf.WriteByte('[')
		n := min(arraySize, native-sent)
		for k := range n {
			seq++
			if k > 0 {
				buf.WriteByte(',')
			}
			fmt.Fprintf(&buf, `{"device_id":"demo-%s-%d","reading":%.2f,"seq":%d,"battery":%d}`, run, seq%50, 20+float64(seq%100)/10, seq, 100-seq%100)
		}
		buf.WriteByte(']')
		if !send(job{path: "/v1/readings", body: buf.Bytes(), n: int64(n)}) {
			break
		}
		sent += n
	}
	close(jobs)
	wg.Wait()
	return res
}

// postWithRetry posts body to url and returns the final status code, 0 when
// there was no answer; a 503 is retried up to 5 attempts in all.
func postWithRetry(ctx context.Context, client *http.Client, url, device string, body []byte) int {
	code := 0
	for attempt := 0; attempt < 5; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return 0
		}
		req.Header.Set("Content-Type", "application/json")
		if device != "" {
			req.Header.Set("X-Device-ID", device)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		code = resp.StatusCode
		if code != http.StatusServiceUnavailable {
			return code
		}
		wait := time.Second
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			wait = time.Duration(s) * time.Second
		}
		select {
		case <-ctx.Done():
			return code
		case <-time.After(wait):
		}
	}
	return code
}

// Querier is what WaitLanded needs of a PostgreSQL pool or connection.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// WaitLanded polls PostgreSQL until the run's distinct readings reach want or
// timeout passes, and returns the rows and the distinct readings (device,
// sequence) among them.
func WaitLanded(ctx context.Context, pg Querier, run string, want int64, timeout time.Duration) (rows, distinct int64, err error) {
	const q = `SELECT count(*), count(DISTINCT (device_id, coalesce(payload->>'seq', payload->>'id')))
		FROM readings WHERE device_id LIKE $1`
	deadline := time.Now().Add(timeout)
	for {
		if err := pg.QueryRow(ctx, q, "demo-"+run+"-%").Scan(&rows, &distinct); err != nil {
			return 0, 0, fmt.Errorf("count landed readings: %w", err)
		}
		if distinct >= want || time.Now().After(deadline) {
			return rows, distinct, nil
		}
		select {
		case <-ctx.Done():
			return rows, distinct, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
