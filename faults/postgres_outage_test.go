package faults

import (
	"fmt"
	"testing"
	"time"

	"firehose/internal/testenv"
)

// TestPostgresStoppedUnderLoad stops the stack's PostgreSQL (a throwaway
// cluster of the test's own, stopped as a crash would: pg_ctl -m immediate)
// in the middle of a mixed HTTP and MQTT QoS 1 load, for 5 s (15 s in the
// long form), and starts it again. It shows that:
//
//   - the edges keep acknowledging while PostgreSQL is down (they need only
//     Redis): the accepted counters grow during the outage and the backlog
//     grows with them;
//   - the bridge retries with backoff (its error counter grows) and the
//     process stays up;
//   - after PostgreSQL is back the bridge drains the backlog to 0, and every
//     acknowledged reading landed exactly once.
func TestPostgresStoppedUnderLoad(t *testing.T) {
	skipShort(t)
	t.Parallel()
	outage := scale(5*time.Second, 15*time.Second)
	// The load outlasts the outage by a margin on both sides: readings are
	// acknowledged before, during and after it.
	duration := scale(14*time.Second, 40*time.Second)

	pg := StartPGCluster(t)
	_, prefix := testenv.Redis(t)
	svc := Services{Postgres: pg.CreateDB("firehose"), Redis: testenv.RedisURL(), Prefix: prefix}
	s := StartStack(t, svc)
	pid := s.Proc.Pid()
	l := StartLoad(t, s, LoadOpts{Duration: duration})

	// Mid-run: the load is flowing and the bridge has committed some of it.
	testenv.Eventually(t, 60*time.Second, func() bool {
		if l.proc.Exited() {
			t.Fatalf("the simulator ended before the outage; output:\n%s", l.Output())
		}
		acc, _ := outMetricSum(s, "firehose_http_readings_accepted_total")
		mq, _ := outMetricSum(s, "firehose_mqtt_readings_accepted_total")
		committed, _ := outMetricSum(s, "firehose_bridge_rows_committed_total")
		return acc > 500 && mq > 500 && committed > 0
	}, "the load did not start flowing; simulator output:\n%s", l.Output())

	acceptedBefore := outAccepted(t, s)
	backlogBefore := outMetric(t, s, "firehose_stream_backlog_entries")
	errorsBefore := outMetric(t, s, "firehose_bridge_errors_total")
	committedBefore := outMetric(t, s, "firehose_bridge_rows_committed_total")

	pg.Stop()
	stopped := time.Now()
	if code := outHealthDB(s); code != 503 {
		t.Errorf("GET /health/db answered %d with PostgreSQL stopped, want 503", code)
	}
	t.Logf("PostgreSQL stopped at %d readings accepted, backlog %.0f", int(acceptedBefore), backlogBefore)
	// Watch the stack while PostgreSQL is down: it must stay up, and the
	// backlog's peak is noted (the gauge is measured every 250 ms).
	backlogPeak := backlogBefore
	for time.Since(stopped) < outage {
		if s.Proc.Exited() {
			t.Fatalf("firehose exited while PostgreSQL was down; output:\n%s", s.Proc.Output())
		}
		if b, ok := outMetricSum(s, "firehose_stream_backlog_entries"); ok {
			backlogPeak = max(backlogPeak, b)
		}
		time.Sleep(250 * time.Millisecond) // pacing: samples of the outage, which lasts a set time by design
	}
	acceptedDuring := outAccepted(t, s) - acceptedBefore
	backlogEnd := outMetric(t, s, "firehose_stream_backlog_entries")
	backlogPeak = max(backlogPeak, backlogEnd)
	errorsDuring := outMetric(t, s, "firehose_bridge_errors_total") - errorsBefore
	committedDuring := outMetric(t, s, "firehose_bridge_rows_committed_total") - committedBefore
	stoppedFor := time.Since(stopped)
	pg.Start()
	down := time.Since(stopped) // until it accepts connections again
	t.Logf("PostgreSQL stopped for %s (accepting connections again after %s): %d readings accepted meanwhile, backlog %.0f -> %.0f (peak %.0f), %d bridge errors, %d rows committed",
		stoppedFor.Round(time.Millisecond), down.Round(time.Millisecond), int(acceptedDuring), backlogBefore, backlogEnd, backlogPeak, int(errorsDuring), int(committedDuring))

	if s.Proc.Exited() || s.Proc.Pid() != pid {
		t.Fatalf("firehose did not survive the outage; output:\n%s", s.Proc.Output())
	}
	// At 2,000 readings/s, 5 s of outage is ~10,000 readings; a tenth of
	// that is a margin for a loaded machine, far from "acks stopped".
	if want := 0.1 * 2000 * stoppedFor.Seconds(); acceptedDuring < want {
		t.Errorf("edges acknowledged %.0f readings during the %s outage, want at least %.0f: acks must continue into the backlog", acceptedDuring, outage, want)
	}
	// Nothing can be committed (a commit in flight at the stop may finish),
	// so the backlog grows by about what was accepted.
	if backlogPeak <= backlogBefore || backlogPeak < acceptedDuring/2 {
		t.Errorf("backlog %.0f before the outage, peak %.0f during it, with %.0f readings accepted meanwhile: want it to grow with them", backlogBefore, backlogPeak, acceptedDuring)
	}
	// Backoff, not a spin: each shard's retries double from 100 ms to the
	// 5 s cap (bridge.Config.MaxBackoff), so in d a shard fails at most
	// 6 times on the way up (0.1 ... 3.2 s), d/5s times at the cap, and
	// twice more (the failure that started it, one in flight at the end).
	maxErrors := 4 * (6 + down.Seconds()/5 + 2)
	switch {
	case errorsDuring <= 0:
		t.Errorf("firehose_bridge_errors_total did not grow while PostgreSQL was down: the bridge should fail, back off and retry")
	case errorsDuring > maxErrors:
		t.Errorf("%.0f bridge errors in a %s outage, want at most %.0f for 4 shards backing off from 100 ms to 5 s: the bridge retries without backing off", errorsDuring, down, maxErrors)
	}

	// The database check recovers by itself too.
	outWaitFor(t, 60*time.Second, "GET /health/db did not answer 200 after PostgreSQL came back", func() (bool, string) {
		code := outHealthDB(s)
		return code == 200, fmt.Sprintf("/health/db %d", code)
	})

	rep, dupMQTT, dupHTTP := WaitLandedOnce(t, svc, l)
	// The drain: every shard's stream is trimmed back to empty once the
	// bridge has committed it (measured by the producer every 250 ms).
	outWaitFor(t, 2*time.Minute, "the backlog did not drain after PostgreSQL came back", func() (bool, string) {
		b, ok := outMetricSum(s, "firehose_stream_backlog_entries")
		return ok && b == 0, fmt.Sprintf("backlog %.0f (read: %v)", b, ok)
	})
	if s.Proc.Exited() || s.Proc.Pid() != pid {
		t.Fatalf("firehose exited; output:\n%s", s.Proc.Output())
	}

	r := ResultOf(rep)
	r.Scenario = "3. PostgreSQL stopped under load"
	r.Load = LoadDesc(rep)
	r.Faults = fmt.Sprintf("throwaway PostgreSQL cluster stopped (pg_ctl -m immediate) for %s mid-run, then started (accepting again %s after the stop)",
		stoppedFor.Round(100*time.Millisecond), down.Round(100*time.Millisecond))
	r.Notes = fmt.Sprintf("during the outage: %.0f readings acknowledged, backlog %.0f -> peak %.0f, %.0f bridge errors (backoff 100 ms doubling to 5 s; bound %.0f), same process throughout; backlog 0 after the drain; simulator: %d errors, %d refused, %d MQTT reconnects; duplicates after resend: %d MQTT, %d HTTP; 0 stream entries committed twice",
		acceptedDuring, backlogBefore, backlogPeak, errorsDuring, maxErrors, rep.Send.Errors, rep.Send.Refused, rep.Send.Reconnects, dupMQTT, dupHTTP)
	Record(t, r)
	s.Stop(30 * time.Second)
}
