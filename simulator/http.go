package simulator

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"firehose/internal/backoff"
)

// Bounds of the wait before resending after a 503 (its Retry-After) or an
// error (doubling from the first to the last, each ±20%: internal/backoff).
const (
	minRetryWait   = 100 * time.Millisecond
	maxRetryWait   = 10 * time.Second
	firstBackoff   = 100 * time.Millisecond
	maxBackoff     = 2 * time.Second
	maxAutoHTTPInF = 256 // in-flight HTTP requests when --concurrency is 0
)

// httpTarget is the fleet's one HTTP client and what every request shares.
type httpTarget struct {
	client *http.Client
	url    string        // the endpoint's full URL
	fast   bool          // /readings/fast (else /v1/readings)
	sem    chan struct{} // a slot per request in flight
}

func newHTTPTarget(cfg *Config, tlsConf *tls.Config, inFlight int) *httpTarget {
	tr := &http.Transport{
		// Load goes straight to the target: no proxy from the environment.
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        inFlight,
		MaxIdleConnsPerHost: inFlight,
		IdleConnTimeout:     90 * time.Second,
		TLSClientConfig:     tlsConf,
		TLSHandshakeTimeout: cfg.Timeout,
		DisableCompression:  true,
	}
	path := "/v1/readings"
	switch {
	case cfg.Endpoint == EndpointFast:
		path = "/readings/fast"
	case cfg.Shape == ShapeTelemetry:
		path += "?rule=" + RuleTelemetry
	case cfg.Shape == ShapeSamples:
		path += "?rule=" + RuleSamples
	case cfg.Shape == ShapeTyped:
		path += "?rule=" + RuleTyped
	}
	return &httpTarget{
		client: &http.Client{Transport: tr, Timeout: cfg.Timeout},
		url:    strings.TrimSuffix(cfg.HTTP, "/") + path,
		fast:   cfg.Endpoint == EndpointFast,
		sem:    make(chan struct{}, inFlight),
	}
}

func (t *httpTarget) close() { t.client.CloseIdleConnections() }

// headers builds a device's request headers once; requests share the map
// (a device sends one request at a time, and the client only reads it).
func (t *httpTarget) headers(d *device, apiKey string) http.Header {
	h := http.Header{"Content-Type": {"application/json"}}
	if apiKey != "" {
		h["Authorization"] = []string{"Bearer " + apiKey}
	}
	if t.fast {
		h["X-Device-Id"] = []string{d.id}
	}
	return h
}

// answer is what one HTTP attempt got back.
type answer struct {
	code       int
	retryAfter time.Duration // from a 503's Retry-After; 0 if none
	body       string        // the start of a rejection's body, for the error message
}

// post sends body once. ctx bounds the attempt; a transport error (refused,
// reset, timeout) is returned as err.
func (t *httpTarget) post(ctx context.Context, h http.Header, body []byte) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return answer{}, fmt.Errorf("build request: %w", err)
	}
	req.Header = h
	resp, err := t.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	a := answer{code: resp.StatusCode}
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable:
		a.retryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	case resp.StatusCode >= 400:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		a.body = strings.TrimSpace(string(b))
	}
	// Drain what is left so the connection is reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return a, nil
}

// retryAfter reads a Retry-After value (seconds or an HTTP date), bounded to
// [minRetryWait, maxRetryWait]; 0 when absent or unreadable.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0
	}
	return min(max(d, minRetryWait), maxRetryWait)
}

// sendHTTP delivers one request carrying the readings first..first+n-1 of d,
// as a device would: on a 503 it resends the same readings after
// Retry-After, on an error or a 5xx after a doubling backoff, up to
// MaxAttempts; a 4xx other than 503 is final. Latency runs from intended, the
// time the request was due (open loop), or from the first attempt's start
// (closed loop). ctx ending stops resending (the attempt in flight
// completes).
func (f *fleet) sendHTTP(ctx context.Context, d *device, h http.Header, body []byte, first uint64, n int, intended time.Time) {
	d.mark(first, n, flagSent)
	f.c.sent.Add(int64(n))
	// The attempt in flight completes even after ctx ends (Timeout bounds
	// it): its answer says whether the readings were stored.
	reqCtx := d.reqCtx
	bo := backoff.New(firstBackoff, maxBackoff)
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			// The earlier attempt got no answer we could trust, so it may
			// have been stored: a duplicate of these readings is allowed.
			d.mark(first, n, flagResent)
		}
		select {
		case f.http.sem <- struct{}{}:
		case <-ctx.Done():
			f.c.givenUp.Add(int64(n))
			return
		}
		if attempt == 1 && !f.open {
			// Closed loop has no schedule: latency runs from the moment a
			// slot was free, not from the wait for one (with --concurrency
			// below the devices, devices queue for slots).
			intended = time.Now()
		}
		a, err := f.http.post(reqCtx, h, body)
		<-f.http.sem
		f.c.requests.Add(1)
		var wait time.Duration
		switch {
		case err == nil && a.code == http.StatusOK:
			d.mark(first, n, flagAcked)
			f.c.acked.Add(int64(n))
			if attempt > 1 {
				f.c.ackedResent.Add(int64(n))
			}
			f.lat.record(d.idx, time.Since(intended))
			return
		case err == nil && a.code == http.StatusServiceUnavailable:
			f.c.refused.Add(1)
			wait = a.retryAfter
			if wait == 0 {
				wait = time.Second
			}
		case err != nil || a.code >= 500:
			f.c.errors.Add(1)
			if err != nil {
				f.noteError(err)
			} else {
				f.noteError(fmt.Errorf("HTTP %d: %s", a.code, a.body))
			}
			wait = bo.Next()
		default:
			f.c.reject("HTTP "+strconv.Itoa(a.code), n)
			err := fmt.Errorf("POST %s answered %d: %s", f.http.url, a.code, a.body)
			if strings.Contains(a.body, "no mapping rule") {
				f.abortNow(fmt.Errorf("the target has no mapping rule for --shape %s (%w): start firehose serve with --config deploy/simulate-rules.yaml, or add its rules to the target's configuration file", f.cfg.Shape, err))
				return
			}
			f.noteRejection(err)
			return
		}
		if attempt >= f.cfg.MaxAttempts {
			f.c.givenUp.Add(int64(n))
			return
		}
		if !sleep(ctx, wait) {
			f.c.givenUp.Add(int64(n))
			return
		}
	}
}

// resendHTTP posts an acknowledged request's body once more, as a device
// whose answer was lost does (Config.Resend); it is counted as a resend, not
// as sent.
func (f *fleet) resendHTTP(ctx context.Context, d *device, h http.Header, body []byte, first uint64, n int) {
	d.mark(first, n, flagResentOnPurpose)
	f.c.resends.Add(1)
	f.c.resentUnits.Add(int64(n))
	select {
	case f.http.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	a, err := f.http.post(d.reqCtx, h, body)
	<-f.http.sem
	f.c.requests.Add(1)
	if err == nil && a.code == http.StatusOK {
		f.c.resendsAcked.Add(1)
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// checkHTTP makes sure the gateway answers at all before the fleet starts:
// any HTTP answer will do (a deployment may not serve /livez).
func checkHTTP(ctx context.Context, t *httpTarget, base string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/livez", nil)
	if err != nil {
		return fmt.Errorf("check the HTTP gateway: %w", err)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		var ue interface{ Timeout() bool }
		if errors.As(err, &ue) && ue.Timeout() {
			return fmt.Errorf("the HTTP gateway at %s did not answer within 10s: %w", redact(base), err)
		}
		return fmt.Errorf("cannot reach the HTTP gateway at %s: %w", redact(base), err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil
}
