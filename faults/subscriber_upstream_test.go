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
// It once jammed (beside a CPU hog, and 1 run in 5 on an idle box): the
// devices got no PUBACK in time and the last reading of each device, which
// the upstream had acknowledged, never reached the subscriber. mochi
// v2.7.9's flow control deadlocked on the subscriber's session: after a
// PUBACK it read-locked the session's in-flight messages twice
// (Inflight.NextImmediate, GetAll) while a device's delivery waited for the
// write lock between the two. The broker now keeps to the subscriber's
// Receive Maximum itself (broker/hook_flow.go), mochi's send quota off.
func TestSubscriberFromFirehoseBroker(t *testing.T) {
	skipShort(t)
	t.Parallel()
	// As docs/subscribe.md asks of an upstream broker: it does not drop
	// what it holds for the subscriber, here 10 s of the load, where the
	// default (256) is a quarter of a second.
	upstream := StartStack(t, SharedServices(t), "--mqtt-max-inflight", "10000", "--mqtt-max-writes-pending", "10000")
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
	for _, reason := range []string{"session_full", "write_queue_full"} {
		if v, _ := upstream.Metric(`firehose_mqtt_deliveries_dropped_total{reason="` + reason + `"}`); v > 0 {
			t.Logf("the upstream broker dropped %v messages for the subscriber (%s)", v, reason)
		}
	}
	subAssert(t, rep, l, 0)
	r := ResultOf(rep)
	r.Scenario = "subscriber of firehose's own broker (a second deployment)"
	r.Load = LoadDesc(rep) + ", through the upstream stack's broker"
	r.Faults = "none: the upstream path itself"
	Record(t, r)
}
