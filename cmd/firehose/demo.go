package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// demoConfig adds the burst's shape to serve's configuration.
type demoConfig struct {
	Readings    int
	Concurrency int
	LandTimeout time.Duration
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var dc demoConfig
	cfg, err := parseServe("demo", "firehose demo [flags]",
		"Starts the whole stack in this process (HTTP gateway on a free loopback port, bridge), sends a burst of\nreadings over real HTTP to both endpoints, waits for them to land in PostgreSQL, prints what was accepted\nand what landed, and stops cleanly. Exits 1 if any accepted reading is missing or doubled.",
		args, stderr, func(c *serveConfig, fs *flag.FlagSet) {
			c.registerFlags(fs)
			setDefault(fs, "http-addr", "127.0.0.1:0")
			setDefault(fs, "mqtt-addr", "127.0.0.1:0")
			setDefault(fs, "log-level", "warn")
			fs.IntVar(&dc.Readings, "readings", 20000, "readings to send, half to /readings/fast, half to /v1/readings in arrays of 100")
			fs.IntVar(&dc.Concurrency, "concurrency", 32, "concurrent HTTP clients")
			fs.DurationVar(&dc.LandTimeout, "land-timeout", 60*time.Second, "longest to wait for accepted readings to land in PostgreSQL")
		})
	if err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return usageError{err}
	}
	if dc.Readings < 2 || dc.Concurrency < 1 {
		return usageError{errors.New("--readings must be at least 2 and --concurrency at least 1")}
	}
	logger, err := newLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	st, err := startStack(ctx, cfg, logger)
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = st.stop(false)
		}
	}()
	run := newRunID()
	base := "http://" + st.http.Addr().String()
	fmt.Fprintf(stdout, "firehose demo: stack up (HTTP %s, PostgreSQL %s, Redis %s, prefix %q, %d shards)\n",
		base, redactURL(cfg.Postgres), redactURL(cfg.Redis), cfg.Streams.Prefix, cfg.Streams.Count)
	fmt.Fprintf(stdout, "sending %d readings as devices demo-%s-*, %d clients ...\n", dc.Readings, run, dc.Concurrency)

	start := time.Now()
	res := sendBurst(ctx, base, run, dc)
	sendDur := time.Since(start)
	fmt.Fprintf(stdout, "sent in %s: %d accepted (%.0f readings/s), %d refused, %d errors\n",
		sendDur.Round(time.Millisecond), res.accepted.Load(), float64(res.accepted.Load())/sendDur.Seconds(), res.refused.Load(), res.errors.Load())

	landStart := time.Now()
	rows, distinct, err := waitLanded(ctx, st.pg, run, res.accepted.Load(), dc.LandTimeout)
	if err != nil {
		return err
	}
	landDur := time.Since(landStart)
	stopStart := time.Now()
	stopped = true
	stopErr := st.stop(false)

	accepted := res.accepted.Load()
	fmt.Fprintf(stdout, "\n%-28s %d\n", "accepted (HTTP 200)", accepted)
	fmt.Fprintf(stdout, "%-28s %d\n", "landed in readings", rows)
	fmt.Fprintf(stdout, "%-28s %d\n", "missing", max(accepted-distinct, 0))
	fmt.Fprintf(stdout, "%-28s %d\n", "duplicated", rows-distinct)
	fmt.Fprintf(stdout, "%-28s %s after the last answer\n", "all landed", landDur.Round(time.Millisecond))
	fmt.Fprintf(stdout, "%-28s %s\n", "clean stop", stopwatch(stopStart, stopErr))
	switch {
	case stopErr != nil:
		return fmt.Errorf("stop: %w", stopErr)
	case distinct != accepted || rows != distinct:
		return fmt.Errorf("demo failed: %d accepted, %d landed, %d distinct", accepted, rows, distinct)
	case res.accepted.Load() == 0:
		return errors.New("demo failed: nothing was accepted")
	}
	fmt.Fprintln(stdout, "\nOK: every accepted reading landed exactly once.")
	return nil
}

func stopwatch(start time.Time, err error) string {
	if err != nil {
		return "FAILED: " + err.Error()
	}
	return "in " + time.Since(start).Round(time.Millisecond).String()
}

// setDefault changes a registered flag's default (not marking it set, so the
// environment still applies).
func setDefault(fs *flag.FlagSet, name, value string) {
	if f := fs.Lookup(name); f != nil {
		f.DefValue = value
		_ = f.Value.Set(value)
	}
}

func newRunID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type burstResult struct {
	accepted, refused, errors atomic.Int64
}

// sendBurst posts dc.Readings readings: even jobs one at a time to the
// seed-shaped /readings/fast, odd jobs as arrays of 100 to /v1/readings. A 503
// is retried after its Retry-After, a few times, as a client should.
func sendBurst(ctx context.Context, base, run string, dc demoConfig) *burstResult {
	const arraySize = 100
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: dc.Concurrency, MaxConnsPerHost: dc.Concurrency},
	}
	defer client.CloseIdleConnections()
	type job struct {
		path, device string
		body         []byte
		n            int64
	}
	jobs := make(chan job)
	res := &burstResult{}
	var wg sync.WaitGroup
	for range dc.Concurrency {
		wg.Go(func() {
			for j := range jobs {
				switch code := postWithRetry(ctx, client, base+j.path, j.device, j.body); {
				case code == http.StatusOK:
					res.accepted.Add(j.n)
				case code == http.StatusServiceUnavailable:
					res.refused.Add(j.n)
				default:
					res.errors.Add(j.n)
				}
			}
		})
	}
	fast, native := dc.Readings/2, dc.Readings-dc.Readings/2
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

// waitLanded polls PostgreSQL until the run's rows reach want or timeout, and
// returns the rows and the distinct readings (device, sequence) among them.
func waitLanded(ctx context.Context, pg *pgxpool.Pool, run string, want int64, timeout time.Duration) (rows, distinct int64, err error) {
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
