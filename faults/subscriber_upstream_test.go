package faults

import (
	"fmt"
	"testing"
	"time"

	"firehose/internal/testenv"
)

// TestSubscriberFromFirehoseBroker: firehose's own broker as the upstream
// of another deployment's subscriber (as a site's firehose feeding a
// central one): the simulated fleet publishes at QoS 1 to the upstream
// stack's broker, which stores the readings in its own deployment and
// delivers them to the subscriber, and every reading the upstream
// acknowledged lands once in the subscriber's database.
//
// Long form only (make faults) for now: beside a CPU hog (stress-ng --cpu 2,
// make test with the race detector) the upstream broker jammed (devices got
// no PUBACK in time, 44 publishes a second) and 50 readings it had
// acknowledged, the last of each device, had not reached the subscriber
// 3 minutes later: under investigation (issue 18's note), most likely
// messages the embedded broker holds in flight for the subscriber's session
// and resends only on a reconnect.
func TestSubscriberFromFirehoseBroker(t *testing.T) {
	skipShort(t)
	if !Long() {
		t.Skip("long form only (FIREHOSE_FAULTS=long, make faults): see the comment")
	}
	t.Parallel()
	upstream := StartStack(t, SharedServices(t))
	svc := SharedServices(t)
	s := &Stack{t: t, Services: svc, MQTTAddr: upstream.MQTTAddr}
	s.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	s.Args = []string{"serve", "--roles", "subscriber,bridge",
		"--postgres", svc.Postgres, "--redis", svc.Redis, "--redis-prefix", svc.Prefix,
		"--admin-addr", s.HTTPAddr, "--batch-age", "50ms", "--log-level", "warn",
		"--subscribe-broker", upstream.MQTT(), "--subscribe-client-id", "fh-central-" + testenv.ID()}
	s.start()
	l := StartLoad(t, s, LoadOpts{Extra: subLoadExtra, Protocol: "mqtt", QoS: 1, Devices: 50, Rate: 1000, Duration: scale(5*time.Second, 30*time.Second)})
	rep := l.Wait(5 * time.Minute)
	subAssert(t, rep, l, 0)
	r := ResultOf(rep)
	r.Scenario = "subscriber of firehose's own broker (a second deployment)"
	r.Load = LoadDesc(rep) + ", through the upstream stack's broker"
	r.Faults = "none: the upstream path itself"
	Record(t, r)
}
