package faults

// The subscriber role's scenarios: firehose subscribes to a Mosquitto of
// the test's own (persistence on, no queue limit, as docs/subscribe.md
// requires) that the simulated fleet publishes to, and a fault hits the
// subscriber or the broker mid-run. What counts is what the devices had
// acknowledged by Mosquitto: all of it lands, nothing acknowledged is lost
// by firehose; at QoS 2 nothing twice, at QoS 1 at most the messages in
// flight at each crash (--subscribe-receive-maximum).

import (
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"firehose/internal/testenv"
	"firehose/simulator"
)

// subReceiveMaximum bounds the messages a subscriber holds unacknowledged:
// at QoS 1 the bound of what one crash may store twice.
const subReceiveMaximum = 200

// StartSubscriber runs `firehose serve --roles subscriber,bridge` against
// svc, subscribed to broker as clientID at qos, with an admin endpoint for
// its metrics; it waits until /readyz answers.
func StartSubscriber(t *testing.T, svc Services, broker *testenv.Mosquitto, clientID string, qos int, extra ...string) *Stack {
	t.Helper()
	s := &Stack{t: t, Services: svc, MQTTAddr: broker.Addr()}
	admin := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	s.HTTPAddr = admin // /metrics, /readyz
	s.Args = append([]string{"serve", "--roles", "subscriber,bridge",
		"--postgres", svc.Postgres, "--redis", svc.Redis, "--redis-prefix", svc.Prefix,
		"--admin-addr", admin, "--batch-age", "50ms", "--log-level", "warn",
		"--subscribe-broker", broker.URL(), "--subscribe-client-id", clientID, "--subscribe-qos", strconv.Itoa(qos),
		"--subscribe-receive-maximum", strconv.Itoa(subReceiveMaximum)}, extra...)
	s.start()
	return s
}

// subAssert fails t unless every reading Mosquitto acknowledged landed, and
// at most allowDup of them twice.
func subAssert(t *testing.T, rep *simulator.Report, l *Load, allowDup int64) {
	t.Helper()
	switch {
	case rep.Landing == nil:
		t.Fatalf("the run was not verified; simulator output:\n%s", l.Output())
	case rep.Send.Acked == 0:
		t.Fatalf("nothing was acknowledged; simulator output:\n%s", l.Output())
	case rep.Landing.Missing != 0:
		t.Fatalf("%d readings acknowledged by the broker never landed (e.g. %v); simulator output:\n%s",
			rep.Landing.Missing, rep.Landing.MissingSample, l.Output())
	case rep.Landing.DupOnceAcked > allowDup:
		t.Fatalf("%d readings landed twice, over the bound of %d (e.g. %v); simulator output:\n%s",
			rep.Landing.DupOnceAcked, allowDup, rep.Landing.DupOnceAckedSample, l.Output())
	}
}

// TestSubscriberKilledUnderLoad: the subscriber is SIGKILLed mid-run and
// restarted with the same client id; its persistent session at Mosquitto
// kept what came meanwhile and resends what was in flight.
func TestSubscriberKilledUnderLoad(t *testing.T) {
	skipShort(t)
	for _, qos := range []int{1, 2} {
		t.Run(fmt.Sprintf("qos %d", qos), func(t *testing.T) {
			t.Parallel()
			broker := testenv.StartMosquitto(t)
			svc := SharedServices(t)
			s := StartSubscriber(t, svc, broker, "fh-sub-"+testenv.ID(), qos)
			kills := scale(1, 3)
			l := StartLoad(t, s, LoadOpts{Protocol: "mqtt", QoS: qos, Devices: 100, Rate: 1500, Duration: scale(8*time.Second, 30*time.Second)})
			edgeWaitLanded(t, s)
			for i := 0; i < kills; i++ {
				s.Proc.Signal(syscall.SIGKILL)
				s.Proc.Wait(10 * time.Second)
				time.Sleep(500 * time.Millisecond) // the broker queues for the session meanwhile
				s.start()
			}
			rep := l.Wait(5 * time.Minute)
			allow := int64(0)
			if qos == 1 {
				allow = int64(kills * subReceiveMaximum)
			}
			subAssert(t, rep, l, allow)
			r := ResultOf(rep)
			r.Scenario = fmt.Sprintf("subscriber SIGKILLed under load, QoS %d", qos)
			r.Load = LoadDesc(rep) + ", through Mosquitto 2"
			r.Faults = fmt.Sprintf("%d× SIGKILL of the subscriber, restarted after 0.5 s", kills)
			r.Notes = fmt.Sprintf("duplicates allowed: %d (QoS 1: the messages in flight at each crash)", allow)
			Record(t, r)
		})
	}
}

// edgeWaitLanded waits until the stack has committed some rows, so that
// what follows happens under load.
func edgeWaitLanded(t *testing.T, s *Stack) {
	t.Helper()
	testenv.Eventually(t, 90*time.Second, func() bool {
		v, _ := s.Metric("firehose_bridge_rows_committed_total")
		return v > 0
	}, "no rows committed; output: %s", s.Proc.Output())
}
