package faults

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"firehose/internal/testenv"
	"firehose/stream"
)

// TestBackpressureBounded drives more load than the bridge drains and shows
// that the backlog and memory stay bounded and nothing acknowledged is lost.
//
// The stack runs its edges only (--roles broker,httpgw) with --high-water
// 5000 against a redis-server of the test's own (so that its used_memory is
// this test's alone); the bridge is not running at first, so it drains
// nothing, which is slower than any intake on any machine. Once the backlog
// has sat at the mark for a while, a bridge slowed down on purpose
// (--batch-size 50) starts beside the load; when the load ends, the backlog
// drains to 0. Every 200 ms the test samples the edges' and the bridge's RSS
// and Redis's used_memory and stream lengths.
//
// It shows that the backlog stops at the mark, give or take the readings in
// flight when it was crossed (see backpressureMargin); that the edges refuse
// visibly (HTTP 503 with Retry-After, MQTT 5 PUBACK 0x97, MQTT 3.1.1
// disconnects, /readyz 503) and acknowledge nothing while it is full; that
// the peaks of memory stay under bounds derived from the mark; and that,
// after the drain, every acknowledged reading landed exactly once.
func TestBackpressureBounded(t *testing.T) {
	skipShort(t)
	t.Parallel()
	const (
		highWater = 5000
		devices   = 200
		rate      = 4000 // readings/s: the mark is reached in ~1.3 s
	)
	// Every reading the producer admitted is counted in its estimate of the
	// backlog once Redis confirmed it, so the backlog passes the mark by at
	// most the readings admitted but not yet confirmed when it was reached.
	// Each simulated device has one request or publish outstanding (1
	// reading each), and an HTTP request the client abandoned after its 5 s
	// timeout may still be queued in the producer: at most 2 per device.
	const backpressureMargin = 2 * devices
	hold := scale(4*time.Second, 20*time.Second)      // at the mark, bridge stopped
	duration := scale(16*time.Second, 60*time.Second) // of the load

	rs := StartRedis(t, false)
	prefix := "fhtest-" + testenv.ID()
	svc := Services{Postgres: testenv.Postgres(t), Redis: rs.URL(), Prefix: prefix}
	s := StartStack(t, svc, "--roles", "broker,httpgw", "--high-water", fmt.Sprint(highWater))
	rdb := outRedis(t, rs.URL())
	keys := stream.Streams{Prefix: prefix}.Keys()

	var bridge atomic.Pointer[Stack]
	idle := outSample(rdb, keys, 200*time.Millisecond, map[string]func() int{"edges": s.Proc.Pid, "redis": rs.Pid})
	time.Sleep(time.Second) // pacing: a few samples of the idle stack, for the report (nothing asserted on it)
	_, memIdle, _ := idle.Stop().Peaks()
	rssIdle := idle.RSS["edges"]

	peaks := outSample(rdb, keys, 200*time.Millisecond, map[string]func() int{
		"edges": s.Proc.Pid,
		"redis": rs.Pid,
		"bridge": func() int {
			if b := bridge.Load(); b != nil && !b.Proc.Exited() {
				return b.Proc.Pid()
			}
			return 0
		},
	})
	defer peaks.Stop()
	l := StartLoad(t, s, LoadOpts{Devices: devices, Rate: rate, Duration: duration})

	// The mark is reached and the edges refuse. The producer's estimate
	// (last measured backlog + what it wrote since) may say "full" a moment
	// before a measurement finds the streams under the mark again and opens
	// the gate for a while: only a measurement over the mark (the gauge,
	// set by each measurement, summing above it) keeps every later one over
	// it, since nothing drains.
	ctx := t.Context()
	outWaitFor(t, 60*time.Second, "the backlog did not reach the high-water mark with the bridge stopped", func() (bool, string) {
		if l.proc.Exited() {
			t.Fatalf("the simulator ended before the backlog was full; output:\n%s", l.Output())
		}
		n, err := outStreamLen(ctx, rdb, keys)
		g, ok := outMetricSum(s, "firehose_stream_backlog_entries")
		code, body := outReadyz(s)
		return err == nil && n > highWater && ok && g > highWater && code == 503 && strings.Contains(body, "backlog_full"),
			fmt.Sprintf("readings in the streams %d (%v), backlog gauge %.0f, /readyz %d %s", n, err, g, code, body)
	})
	reached := time.Now()
	probe := "probe-backpressure-" + testenv.ID()
	if a, err := outProbeHTTP(s, probe); err != nil || a.Code != 503 || a.RetryAfter == "" || !strings.Contains(a.Body, "backlog_full") {
		t.Errorf("POST /v1/readings over the mark answered %+v, %v; want 503 with Retry-After and reason backlog_full", a, err)
	}
	if code, err := outProbeMQTT5(s, probe); err != nil || code != 0x97 {
		t.Errorf("MQTT 5 publish at QoS 1 over the mark got reason code %#x, %v; want 0x97 (quota exceeded)", code, err)
	}
	if acked, closed, err := outProbeMQTT311(s, probe); err != nil || acked || !closed {
		t.Errorf("MQTT 3.1.1 publish at QoS 1 over the mark: acked %v, disconnected %v, %v; want no PUBACK and a disconnect", acked, closed, err)
	}

	// Hold at the mark under load: nothing drains, so nothing more may be
	// acknowledged than the readings in flight when the mark was crossed.
	// Those in flight when the mark was measured are within the margin.
	acceptedFull := outAccepted(t, s)
	httpRefused0, mqttRefused0 := outRefused(t, s, "backlog_full")
	for time.Since(reached) < hold {
		if s.Proc.Exited() {
			t.Fatalf("firehose exited at the high-water mark; output:\n%s", s.Proc.Output())
		}
		time.Sleep(200 * time.Millisecond) // the hold: a deliberate stretch of load at the mark
	}
	acceptedHeld := outAccepted(t, s) - acceptedFull
	httpRefused, mqttRefused := outRefused(t, s, "backlog_full")
	httpRefused -= httpRefused0
	mqttRefused -= mqttRefused0
	atMark, err := outStreamLen(ctx, rdb, keys)
	if err != nil {
		t.Fatal(err)
	}
	if acceptedHeld > backpressureMargin {
		t.Errorf("%.0f readings acknowledged during %s at the mark with nothing draining, want at most %d", acceptedHeld, hold, backpressureMargin)
	}
	if httpRefused <= 0 || mqttRefused <= 0 {
		t.Errorf("refusals at the mark: HTTP %.0f, MQTT %.0f; want both > 0", httpRefused, mqttRefused)
	}
	if l.proc.Exited() {
		t.Fatalf("the simulator ended during the hold: make the load longer; output:\n%s", l.Output())
	}
	t.Logf("at the mark for %s: %d readings in the streams, %.0f acknowledged, refused HTTP %.0f / MQTT %.0f", hold, atMark, acceptedHeld, httpRefused, mqttRefused)

	// A slow bridge starts while the load goes on; then the load ends.
	b := StartBridge(t, svc, "--batch-size", "50", "--batch-age", "500ms")
	bridge.Store(b)
	bridgeStarted := time.Since(reached)
	rep, dupMQTT, dupHTTP := WaitLandedOnce(t, svc, l)
	// Refused means not stored: the probe's readings must never land.
	if n := QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings WHERE device_id = $1", probe); n != 0 {
		t.Errorf("%d readings of the probe, each refused over the mark, landed", n)
	}
	outWaitFor(t, 2*time.Minute, "the backlog did not drain once the load stopped", func() (bool, string) {
		n, err := outStreamLen(ctx, rdb, keys)
		g, ok := outMetricSum(s, "firehose_stream_backlog_entries")
		return err == nil && n == 0 && ok && g == 0, fmt.Sprintf("readings in the streams %d (%v), backlog gauge %.0f", n, err, g)
	})
	// Under the mark again, the same process accepts again.
	outWaitFor(t, 30*time.Second, "/readyz did not answer 200 after the drain", func() (bool, string) {
		code, body := outReadyz(s)
		return code == 200, fmt.Sprintf("/readyz %d %s", code, body)
	})
	peaks.Stop()
	rss, memPeak, backlogPeak := peaks.Peaks()

	if rep.Send.Refused == 0 {
		t.Errorf("the simulator saw no 503 over the high-water mark")
	}
	if rep.Send.Reconnects == 0 {
		t.Errorf("no MQTT 3.1.1 device was disconnected over the high-water mark")
	}
	if backlogPeak > highWater+backpressureMargin {
		t.Errorf("backlog peaked at %d readings, want at most the mark %d + %d in flight", backlogPeak, highWater, backpressureMargin)
	}
	// Bounds. firehose (edges): the most live data they hold by design is
	// the producer's queue (65,536 readings of ~200 bytes: 13 MiB) and the
	// buffers of ~200 connections (under 10 MiB); with Go's GC the heap may
	// reach twice the live data, ~46 MiB: 96 MiB above idle leaves twice
	// that again for a loaded machine, and is far below a process keeping
	// what it refuses. Redis: idle, plus the mark's entries (and those in
	// flight) at 512 bytes each (they take ~100), plus 8 MiB for client
	// query and output buffers and the AOF buffer. The bridge holds at most
	// 4 shards x 50 rows.
	rssBound := rssIdle + 96<<20
	memBound := memIdle + (highWater+backpressureMargin)*512 + 8<<20
	if rss["edges"] > rssBound {
		t.Errorf("firehose (edges) peak RSS %s, want at most %s", outMiB(rss["edges"]), outMiB(rssBound))
	}
	if rss["bridge"] > 128<<20 {
		t.Errorf("bridge peak RSS %s, want at most 128 MiB", outMiB(rss["bridge"]))
	}
	if memPeak > memBound {
		t.Errorf("Redis peak used_memory %s, want at most %s", outMiB(memPeak), outMiB(memBound))
	}
	if peaks.Errors > peaks.Samples/10 {
		t.Errorf("%d of %d samples of Redis failed", peaks.Errors, peaks.Samples)
	}
	notes := fmt.Sprintf("high-water %d; peak backlog %d readings (bound %d = mark + 2 per device in flight), %d at the mark after %s with the bridge stopped; %.0f acked during that hold; refused there HTTP %.0f / MQTT %.0f; slow bridge (--batch-size 50) started %s after the mark; peak RSS edges %s (idle %s, bound %s), bridge %s, redis-server %s; Redis peak used_memory %s (idle %s, bound %s); %d samples every 200 ms; backlog 0 after the load; duplicates after resend: %d MQTT, %d HTTP, 0 stream entries committed twice",
		highWater, backlogPeak, highWater+backpressureMargin, atMark, hold, acceptedHeld, httpRefused, mqttRefused,
		bridgeStarted.Round(100*time.Millisecond), outMiB(rss["edges"]), outMiB(rssIdle), outMiB(rssBound), outMiB(rss["bridge"]), outMiB(rss["redis"]),
		outMiB(memPeak), outMiB(memIdle), outMiB(memBound), peaks.Samples, dupMQTT, dupHTTP)
	t.Log(notes)
	t.Logf("simulator's first error: %s", rep.Send.FirstError)
	t.Logf("simulator: acked %d, refused %d, errors %d, reconnects %d, unconfirmed %d, given up %d, late %d",
		rep.Send.Acked, rep.Send.Refused, rep.Send.Errors, rep.Send.Reconnects, rep.Send.Unconfirmed, rep.Send.GivenUp, rep.Send.Scheduled-rep.Send.Sent)

	r := ResultOf(rep)
	r.Scenario = "5. Backpressure"
	r.Load = LoadDesc(rep)
	r.Faults = fmt.Sprintf("load above the drain: bridge stopped for %s at the mark, then a slow bridge (--batch-size 50); --high-water %d", bridgeStarted.Round(100*time.Millisecond), highWater)
	r.Refused = rep.Send.Refused + rep.Send.Errors
	r.Notes = notes
	Record(t, r)
	b.Stop(30 * time.Second)
	s.Stop(30 * time.Second)
}
