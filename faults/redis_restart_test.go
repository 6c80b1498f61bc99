package faults

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"firehose/internal/testenv"
)

// TestRedisRestartedUnderLoad kills the stack's Redis (a redis-server of the
// test's own, append-only with appendfsync always, so every entry Redis
// confirmed is on disk) with SIGKILL under a mixed HTTP and MQTT QoS 1 load,
// keeps it down for a few seconds and starts it again on the same port and
// data directory; once in the short form, three times in the long form. It
// shows that:
//
//   - while Redis is down the edges refuse and acknowledge nothing: /readyz
//     answers 503, HTTP answers 503 with Retry-After, MQTT 5 gets PUBACK 0x97,
//     MQTT 3.1.1 devices get no PUBACK and are disconnected (the simulator's
//     devices, which resend), and the accepted counters stand still;
//   - the same firehose process recovers by itself once Redis is back
//     (/readyz 200, acknowledgements resume, same pid);
//   - every reading acknowledged before, between or after the outages landed
//     exactly once; the only duplicates are readings a device resent after an
//     attempt that got no acknowledgement (dup_after_resend, counted).
func TestRedisRestartedUnderLoad(t *testing.T) {
	skipShort(t)
	t.Parallel()
	outages := scale(1, 3)
	down := scale(3*time.Second, 5*time.Second)
	flow := 5 * time.Second // between outages (long form)
	// Room for each outage, its recovery and a stretch of normal load
	// before the next one and after the last.
	duration := scale(16*time.Second, 55*time.Second)

	rs := StartRedis(t, true)
	svc := OwnServices(t, rs.URL())
	s := StartStack(t, svc)
	pid := s.Proc.Pid()
	l := StartLoad(t, s, LoadOpts{Duration: duration})

	underLoad := func(what string) { t.Helper(); outUnderLoad(t, l, what) }
	outWaitFlowing(t, s, l, "the first outage")

	probes := "probe-redis-" + testenv.ID() // device ids of the probes, refused one by one
	var (
		notes      []string
		totalDown  time.Duration
		maxRecover time.Duration
	)
	for i := 1; i <= outages; i++ {
		underLoad(fmt.Sprintf("outage %d", i))
		rs.Kill()
		killed := time.Now()

		// The producer notices at its next write or backlog measurement
		// (every 250 ms).
		outWaitFor(t, 15*time.Second, "/readyz did not answer 503 while Redis was down", func() (bool, string) {
			code, body := outReadyz(s)
			return code == 503 && strings.Contains(body, "redis_unavailable"), fmt.Sprintf("/readyz %d %s", code, body)
		})
		noticed := time.Since(killed)
		// A handler whose reading Redis confirmed just before the kill may
		// count it a moment later: read the counter after that moment (a
		// margin, not a wait on a condition: nothing tells when the last
		// such handler has counted).
		time.Sleep(500 * time.Millisecond)
		acceptedDown := outAccepted(t, s)
		httpRefusedBefore, mqttRefusedBefore := outRefused(t, s, "redis_unavailable")

		probe := fmt.Sprintf("%s-%d", probes, i)
		a, err := outProbeHTTP(s, probe)
		if err != nil || a.Code != 503 || a.RetryAfter == "" || !strings.Contains(a.Body, "redis_unavailable") {
			t.Errorf("outage %d: POST /v1/readings answered %+v, %v; want 503 with Retry-After and reason redis_unavailable", i, a, err)
		}
		if code, err := outProbeMQTT5(s, probe); err != nil || code != 0x97 {
			t.Errorf("outage %d: MQTT 5 publish at QoS 1 got reason code %#x, %v; want 0x97 (quota exceeded)", i, code, err)
		}
		if acked, closed, err := outProbeMQTT311(s, probe); err != nil || acked || !closed {
			t.Errorf("outage %d: MQTT 3.1.1 publish at QoS 1: acked %v, disconnected %v, %v; want no PUBACK and a disconnect", i, acked, closed, err)
		}

		// Keep Redis down for the rest of the outage; the process must stay up.
		for time.Since(killed) < down {
			if s.Proc.Exited() {
				t.Fatalf("firehose exited while Redis was down; output:\n%s", s.Proc.Output())
			}
			time.Sleep(100 * time.Millisecond) // the outage lasts a set time by design
		}
		acceptedWhileDown := outAccepted(t, s) - acceptedDown
		httpRefused, mqttRefused := outRefused(t, s, "redis_unavailable")
		httpRefused -= httpRefusedBefore
		mqttRefused -= mqttRefusedBefore
		rs.Start()
		restarted := time.Now()
		totalDown += restarted.Sub(killed)

		if acceptedWhileDown != 0 {
			t.Errorf("outage %d: %.0f readings acknowledged while Redis was down: an acknowledgement of something not stored", i, acceptedWhileDown)
		}
		if httpRefused <= 0 || mqttRefused <= 0 {
			t.Errorf("outage %d: refusals while Redis was down: HTTP %.0f, MQTT %.0f; want both > 0 (the simulator keeps sending)", i, httpRefused, mqttRefused)
		}

		// Recovery without a restart of firehose.
		outWaitFor(t, 60*time.Second, "/readyz did not answer 200 after Redis came back", func() (bool, string) {
			if s.Proc.Exited() {
				t.Fatalf("firehose exited after Redis came back; output:\n%s", s.Proc.Output())
			}
			code, body := outReadyz(s)
			return code == 200, fmt.Sprintf("/readyz %d %s", code, body)
		})
		recovered := time.Since(restarted)
		maxRecover = max(maxRecover, recovered)
		underLoad(fmt.Sprintf("the recovery from outage %d", i))
		outWaitFor(t, 60*time.Second, "acknowledgements did not resume after Redis came back", func() (bool, string) {
			underLoad(fmt.Sprintf("the recovery from outage %d", i))
			h, ok1 := outMetricSum(s, "firehose_http_readings_accepted_total")
			m, ok2 := outMetricSum(s, "firehose_mqtt_readings_accepted_total")
			return ok1 && ok2 && h+m > acceptedDown+500, fmt.Sprintf("accepted %.0f, %.0f at the outage", h+m, acceptedDown)
		})
		// A stretch of normal load before the next outage.
		if i < outages {
			time.Sleep(flow) // pacing: load between outages
		}
		if s.Proc.Pid() != pid {
			t.Fatalf("firehose was restarted (pid %d, was %d)", s.Proc.Pid(), pid)
		}
		note := fmt.Sprintf("outage %d: down %s, noticed in %s, refused meanwhile HTTP %.0f / MQTT %.0f, acked meanwhile %.0f, ready again %s after the restart",
			i, restarted.Sub(killed).Round(10*time.Millisecond), noticed.Round(10*time.Millisecond), httpRefused, mqttRefused, acceptedWhileDown, recovered.Round(10*time.Millisecond))
		t.Log(note)
		notes = append(notes, note)
	}

	rep, dupMQTT, dupHTTP := WaitLandedOnce(t, svc, l)
	// Refused means not stored: the probes' readings must never land.
	if n := QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings WHERE starts_with(device_id, $1)", probes); n != 0 {
		t.Errorf("%d readings of the probes, each refused while Redis was down, landed", n)
	}
	if rep.Send.Refused+rep.Send.Errors == 0 {
		t.Errorf("the simulator saw no refusal or error across %d Redis outages", outages)
	}
	if rep.Send.Reconnects == 0 {
		t.Errorf("no MQTT 3.1.1 device was disconnected across %d Redis outages: refused publishes must not be acknowledged", outages)
	}
	if rep.Landing.Unexpected != 0 {
		t.Errorf("%d rows of readings the fleet never sent", rep.Landing.Unexpected)
	}
	if s.Proc.Exited() || s.Proc.Pid() != pid {
		t.Fatalf("firehose did not keep serving; output:\n%s", s.Proc.Output())
	}
	outWaitFor(t, 2*time.Minute, "the backlog did not drain after the outages", func() (bool, string) {
		b, ok := outMetricSum(s, "firehose_stream_backlog_entries")
		return ok && b == 0, fmt.Sprintf("backlog %.0f (read: %v)", b, ok)
	})
	t.Logf("simulator's first error: %s", rep.Send.FirstError)
	t.Logf("simulator: acked %d (%d after a resend), refused %d, errors %d, reconnects %d, unconfirmed %d, given up %d; landed %d, dup_after_resend %d, landed without ack %d",
		rep.Send.Acked, rep.Send.AckedAfterResend, rep.Send.Refused, rep.Send.Errors, rep.Send.Reconnects, rep.Send.Unconfirmed, rep.Send.GivenUp,
		rep.Landing.Readings, rep.Landing.DupAfterResend, rep.Landing.LandedWithoutAck)

	r := ResultOf(rep)
	r.Scenario = "4. Redis restarted under load"
	r.Load = LoadDesc(rep)
	r.Faults = fmt.Sprintf("own redis-server (appendonly, appendfsync always) killed with SIGKILL %d× for ~%s each (%s in all), restarted on the same port and data dir",
		outages, down, totalDown.Round(100*time.Millisecond))
	r.Refused = rep.Send.Refused + rep.Send.Errors
	r.Notes = fmt.Sprintf("%s; simulator: %d HTTP 503, %d errors/failed publishes, %d MQTT disconnects, %d unconfirmed, %d acked after a resend, %d landed without an ack; duplicates after resend: %d MQTT, %d HTTP, 0 stream entries committed twice; same pid throughout, ready again within %s; refused = 503s + errors",
		strings.Join(notes, "; "), rep.Send.Refused, rep.Send.Errors, rep.Send.Reconnects, rep.Send.Unconfirmed, rep.Send.AckedAfterResend, rep.Landing.LandedWithoutAck,
		dupMQTT, dupHTTP, maxRecover.Round(10*time.Millisecond))
	Record(t, r)
	s.Stop(30 * time.Second)
}
