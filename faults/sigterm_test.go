package faults

// Scenario 8: SIGTERM under load: the process drains and exits 0 within its
// shutdown timeout, and everything acknowledged lands.

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"firehose/internal/testenv"
	"firehose/stream"
)

// TestSIGTERMUnderLoad sends SIGTERM to `firehose serve` (every role) in the
// middle of a load with requests in flight and readings buffered in the
// bridge. The process must exit 0 within --shutdown-timeout, having
// committed every reading it had stored in Redis (the streams are empty when
// it has gone: nothing acknowledged waits for the next start). Readiness
// must not answer 200 again once the drain began. The stack is then started
// again so the readings the fleet resends after the refusals land, and the
// run must verify exactly once. The long form stops and restarts it several
// times in one run.
func TestSIGTERMUnderLoad(t *testing.T) {
	skipShort(t)
	t.Parallel()
	const shutdownTimeout = 10 * time.Second
	svc := SharedServices(t)
	s := StartStack(t, svc, "--batch-age", "1s", "--shutdown-timeout", shutdownTimeout.String())
	rdb := bkRedis(t)
	keys := stream.Streams{Prefix: svc.Prefix, Count: bkShards}.Keys()
	dur := scale(12*time.Second, 45*time.Second)
	stops := scale(1, 3)
	l := StartLoad(t, s, LoadOpts{Rate: 3000, Duration: dur})
	began := time.Now()

	var (
		tooks   []time.Duration
		buffers []float64
		ready   stReadySeen
	)
	for i := range stops {
		// Spread over the run, at full rate, with the bridge holding a
		// buffer.
		bkPause(time.Until(began.Add(dur * time.Duration(i+1) / time.Duration(stops+1))))
		var buffered float64
		testenv.Eventually(t, 30*time.Second, func() bool {
			buffered, _ = s.Metric("firehose_bridge_buffered_rows")
			return buffered > 0
		}, "the bridge never held a buffer")
		probe := stStartReadyProbe(s.HTTP())
		signalled := time.Now()
		s.Proc.Signal(syscall.SIGTERM)
		code, exited := s.Proc.Wait(shutdownTimeout + 10*time.Second)
		took := time.Since(signalled)
		seen := probe.Stop()
		if !exited {
			t.Fatalf("stop %d: still running %s after SIGTERM; output: %s", i+1, took, s.Proc.Output())
		}
		if code != 0 {
			t.Fatalf("stop %d: exited %d after SIGTERM (want 0); output: %s", i+1, code, s.Proc.Output())
		}
		if took > shutdownTimeout {
			t.Errorf("stop %d: exited after %s, over --shutdown-timeout %s", i+1, took, shutdownTimeout)
		}
		if seen.okAfterDown > 0 {
			t.Errorf("stop %d: /readyz answered 200 %d times after it had turned 503 or stopped answering", i+1, seen.okAfterDown)
		}
		// Everything the process stored in Redis, so everything it had
		// acknowledged, was committed before it exited.
		var left int64
		for _, k := range keys {
			n, err := rdb.XLen(context.Background(), k).Result()
			if err != nil {
				t.Fatalf("XLEN %s: %v", k, err)
			}
			left += n
		}
		if left != 0 {
			t.Errorf("stop %d: %d entries left in the streams after a clean exit: stored in Redis (so perhaps acknowledged) but not committed by the drain", i+1, left)
		}
		t.Logf("stop %d: SIGTERM with %v rows buffered in the bridge: exited 0 after %s, %d rows committed, %d entries left in Redis; /readyz during the drain: %s",
			i+1, buffered, took.Round(time.Millisecond), QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings"), left, seen)
		tooks, buffers = append(tooks, took), append(buffers, buffered)
		ready.add(seen)
		// The fleet keeps resending what was refused or unanswered; give
		// it a stack again.
		s.Restart()
	}

	rep := l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	bkAssertDrained(t, rdb, svc.Postgres, keys, time.Minute)

	r := ResultOf(rep)
	r.Scenario, r.Load = "8. SIGTERM under load", LoadDesc(rep)
	r.Faults = fmt.Sprintf("SIGTERM ×%d under load (bridge buffers %v rows), restarted after each exit", stops, buffers)
	r.Notes = fmt.Sprintf("exit 0 after %s (--shutdown-timeout %s); streams empty at every exit (all stored readings committed by the drain); /readyz after the signal: %s; %d MQTT publishes in flight at a disconnect resent without a PUBACK seen, %d readings landed without an ack",
		tkDurations(tooks), shutdownTimeout, ready, rep.Send.Unconfirmed, rep.Landing.LandedWithoutAck)
	Record(t, r)
	s.Stop(20 * time.Second)
}

// stReadyProbe asks /readyz every 5 ms until stopped and tallies the answers.
type stReadyProbe struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen stReadySeen
}

// stReadySeen is what the probe saw after the signal: answers 200, 503,
// other, connection failures, and 200s after a 503 or failure.
type stReadySeen struct {
	ok, unavailable, other, refused, okAfterDown int
}

func (s *stReadySeen) add(o stReadySeen) {
	s.ok += o.ok
	s.unavailable += o.unavailable
	s.other += o.other
	s.refused += o.refused
	s.okAfterDown += o.okAfterDown
}

func (s stReadySeen) String() string {
	return fmt.Sprintf("%d×200, %d×503, %d×other, %d×no answer (listener closed)", s.ok, s.unavailable, s.other, s.refused)
}

func stStartReadyProbe(base string) *stReadyProbe {
	p := &stReadyProbe{stop: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 2 * time.Second}
	go func() {
		defer close(p.done)
		down := false
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			resp, err := client.Get(base + "/readyz")
			p.mu.Lock()
			switch {
			case err != nil:
				p.seen.refused++
				down = true
			case resp.StatusCode == http.StatusOK:
				p.seen.ok++
				if down {
					p.seen.okAfterDown++
				}
			case resp.StatusCode == http.StatusServiceUnavailable:
				p.seen.unavailable++
				down = true
			default:
				p.seen.other++
			}
			p.mu.Unlock()
			if resp != nil {
				resp.Body.Close()
			}
			t := time.NewTimer(5 * time.Millisecond)
			select {
			case <-p.stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// Stop ends the probe and returns its tally.
func (p *stReadyProbe) Stop() stReadySeen {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen
}
