package faults

// The subscriber role's scenarios: firehose subscribes to a Mosquitto of
// the test's own (persistence on, no queue limit, as docs/subscribe.md
// requires) that the simulated fleet publishes to, and a fault hits the
// subscriber or the broker mid-run. What counts is what the devices had
// acknowledged by Mosquitto: all of it lands, nothing acknowledged is lost
// by firehose; at QoS 2 nothing twice; at QoS 1 nothing twice that the
// broker did not deliver twice or that a store in doubt did not write twice
// (subRedelivered): the messages it had in flight at each fault.
//
// In flight means what Mosquitto sent and had not read the acknowledgement
// of, which --subscribe-receive-maximum should bound. Mosquitto 2.0.11 does
// not keep to it: with Receive Maximum 10, a raw client that stopped
// acknowledging got 23 more messages on a new session, thousands in a
// second once the session had resumed; here it resent up to 352 messages
// after one SIGKILL with Receive Maximum 200. The subscriber still takes at
// most Receive Maximum unacknowledged messages per connection (TCP holds
// the rest back), but the acknowledgements it wrote that Mosquitto had not
// read yet when a fault hit are lost with the connection: at QoS 1 those
// messages, past Receive Maximum, are stored again (258 duplicates for one
// SIGKILL, 1 run in about 15).

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"firehose/internal/testenv"
	"firehose/simulator"
)

// subReceiveMaximum bounds the messages a subscriber holds unacknowledged:
// at QoS 1 the bound of what one crash may store twice, with a broker that
// keeps to it.
const subReceiveMaximum = 200

// subLoadExtra turns off the simulator's backlog scrape: the readings a
// broker upstream acknowledged may still wait there (queued for the
// subscriber's session while it reconnects) when firehose's own backlog is
// empty, so the landing wait must last until every acknowledged reading
// landed, or its timeout.
var subLoadExtra = []string{"--metrics", "off"}

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
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("output of %s (%s):\n%s", clientID, strings.Join(s.Args[:3], " "), s.Proc.Output())
		}
	})
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
			l := StartLoad(t, s, LoadOpts{Extra: subLoadExtra, Protocol: "mqtt", QoS: qos, Devices: 100, Rate: 1500, Duration: scale(8*time.Second, 30*time.Second)})
			edgeWaitLanded(t, s)
			var redelivered int64
			for i := 0; i < kills; i++ {
				redelivered += subRedelivered(s)
				s.Proc.Signal(syscall.SIGKILL)
				s.Proc.Wait(10 * time.Second)
				time.Sleep(500 * time.Millisecond) // the broker queues for the session meanwhile
				s.start()
			}
			rep := l.Wait(5 * time.Minute)
			redelivered += subRedelivered(s)
			subAssert(t, rep, l, subAllowDup(qos, redelivered))
			r := ResultOf(rep)
			r.Scenario = fmt.Sprintf("subscriber SIGKILLed under load, QoS %d", qos)
			r.Load = LoadDesc(rep) + ", through Mosquitto 2"
			r.Faults = fmt.Sprintf("%d× SIGKILL of the subscriber, restarted after 0.5 s", kills)
			r.Notes = subDupNote(qos, redelivered, kills)
			Record(t, r)
		})
	}
}

// subRedelivered is how many PUBLISH packets the broker marked as sent
// before (DUP) to the subscriber of s since it started, plus the messages
// whose store failed in doubt (firehose_subscriber_stored_in_doubt_total: a
// Redis round trip that timed out on a loaded box may have written them,
// and they are stored again), 0 when its metrics cannot be read. At QoS 1
// each may be stored again, and nothing else may.
func subRedelivered(s *Stack) int64 {
	v, _ := s.Metric("firehose_subscriber_redeliveries_total")
	d, _ := s.Metric("firehose_subscriber_stored_in_doubt_total")
	return int64(v) + int64(d)
}

// subAllowDup is the duplicates allowed at qos: at QoS 1 the broker's
// redeliveries and the stores in doubt (subRedelivered), none at QoS 2.
func subAllowDup(qos int, redelivered int64) int64 {
	if qos == 1 {
		return redelivered
	}
	return 0
}

// subDupNote says, for RELIABILITY.md, what the broker resent after faults
// faults, and so the duplicates allowed.
func subDupNote(qos int, redelivered int64, faults int) string {
	note := fmt.Sprintf("Mosquitto resent %d messages (DUP; Receive Maximum %d × %d faults = %d)", redelivered, subReceiveMaximum, faults, subReceiveMaximum*faults)
	if qos == 1 {
		return note + "; duplicates allowed: those (QoS 1 stores a resent message again)"
	}
	return note + "; QoS 2 recognises them: no duplicate allowed"
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

// subConnects is how many connections the subscriber of s opened (each
// CONNACKed and subscribed), 0 when its metrics cannot be read.
func subConnects(s *Stack) float64 {
	v, _ := s.Metric(`firehose_subscriber_connects_total{result="ok"}`)
	return v
}

// subWaitConnected waits until the subscriber of s has opened more than
// after connections and is connected now.
func subWaitConnected(t *testing.T, s *Stack, after float64, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, func() bool {
		c, _ := s.Metric("firehose_subscriber_connected")
		return c == 1 && subConnects(s) > after
	}, "the subscriber did not reconnect; output: %s", s.Proc.Output())
}

// TestSubscriberBrokerRestarted: Mosquitto is stopped with SIGTERM mid-run
// (it saves its persistence file: the sessions, what it queued for the
// subscriber and what was in flight) and started again on the same port.
// The devices and the subscriber reconnect; the subscriber's session
// resumes, and every reading Mosquitto acknowledged lands.
func TestSubscriberBrokerRestarted(t *testing.T) {
	skipShort(t)
	for _, qos := range []int{1, 2} {
		t.Run(fmt.Sprintf("qos %d", qos), func(t *testing.T) {
			t.Parallel()
			broker := testenv.StartMosquitto(t)
			svc := SharedServices(t)
			s := StartSubscriber(t, svc, broker, "fh-sub-"+testenv.ID(), qos)
			restarts := scale(1, 3)
			l := StartLoad(t, s, LoadOpts{Extra: subLoadExtra, Protocol: "mqtt", QoS: qos, Devices: 100, Rate: 1000, Duration: scale(6*time.Second, 40*time.Second)})
			edgeWaitLanded(t, s)
			present := 0
			for i := 0; i < restarts; i++ {
				if i > 0 {
					time.Sleep(5 * time.Second) // load between restarts
				}
				before := subConnects(s)
				broker.Restart(t)
				subWaitConnected(t, s, before, 60*time.Second)
				if v, _ := s.Metric("firehose_subscriber_session_present"); v == 1 {
					present++
				}
			}
			rep := l.Wait(5 * time.Minute)
			redelivered := subRedelivered(s)
			subAssert(t, rep, l, subAllowDup(qos, redelivered))
			if rep.Send.Reconnects == 0 {
				t.Errorf("the devices never lost their connection: the restart did not happen under load; simulator output:\n%s", l.Output())
			}
			if present != restarts {
				t.Errorf("Mosquitto had the subscriber's session after %d of %d restarts: its persistence lost it", present, restarts)
			}
			r := ResultOf(rep)
			r.Scenario = fmt.Sprintf("subscriber: Mosquitto restarted under load, QoS %d", qos)
			r.Load = LoadDesc(rep) + ", through Mosquitto 2"
			r.Faults = fmt.Sprintf("%d× SIGTERM of Mosquitto (persistence saved at exit), restarted on the same port", restarts)
			r.Notes = fmt.Sprintf("%d device reconnects; the subscriber's session resumed every time; %s. "+
				"Mosquitto's own caveat: on a crash (SIGKILL, power loss) what it acknowledged since its last save (autosave_interval, default 30 min) is lost; SIGTERM saves everything",
				rep.Send.Reconnects, subDupNote(qos, redelivered, restarts))
			Record(t, r)
		})
	}
}

// TestSubscriberBrokerFrozen: the network path to Mosquitto freezes
// (SIGSTOP: the TCP connections stay open, nothing moves) for longer than
// the subscriber's keep alive, then thaws. The subscriber must notice the
// dead connection by its keep alive, reconnect once the broker answers,
// and lose nothing.
func TestSubscriberBrokerFrozen(t *testing.T) {
	skipShort(t)
	for _, qos := range []int{1, 2} {
		t.Run(fmt.Sprintf("qos %d", qos), func(t *testing.T) {
			t.Parallel()
			const keepAlive = 2 * time.Second
			freeze := 3 * keepAlive // the subscriber gives up after 2 keep alives without a packet
			broker := testenv.StartMosquitto(t)
			svc := SharedServices(t)
			s := StartSubscriber(t, svc, broker, "fh-sub-"+testenv.ID(), qos,
				"--subscribe-keepalive", keepAlive.String(), "--subscribe-connect-timeout", "2s")
			freezes := scale(1, 3)
			l := StartLoad(t, s, LoadOpts{Extra: subLoadExtra, Protocol: "mqtt", QoS: qos, Devices: 100, Rate: 1000, Duration: scale(10*time.Second, 45*time.Second)})
			edgeWaitLanded(t, s)
			for i := 0; i < freezes; i++ {
				if i > 0 {
					time.Sleep(5 * time.Second) // load between freezes
				}
				before := subConnects(s)
				broker.Pause()
				// The subscriber must see the connection dead while the
				// broker is still frozen: by its keep alive, not by the
				// broker's thaw.
				testenv.Eventually(t, freeze, func() bool {
					c, ok := s.Metric("firehose_subscriber_connected")
					return ok && c == 0
				}, "the subscriber still counts itself connected %s into a freeze of the broker (keep alive %s)", freeze, keepAlive)
				time.Sleep(time.Second) // frozen a while longer: reconnects fail meanwhile
				broker.Resume()
				subWaitConnected(t, s, before, 60*time.Second)
			}
			rep := l.Wait(5 * time.Minute)
			redelivered := subRedelivered(s)
			subAssert(t, rep, l, subAllowDup(qos, redelivered))
			r := ResultOf(rep)
			r.Scenario = fmt.Sprintf("subscriber: Mosquitto frozen (SIGSTOP) past the keep alive, QoS %d", qos)
			r.Load = LoadDesc(rep) + ", through Mosquitto 2"
			r.Faults = fmt.Sprintf("%d× SIGSTOP of Mosquitto until the subscriber saw the connection dead (keep alive %s) plus 1 s, then SIGCONT", freezes, keepAlive)
			r.Notes = "the subscriber noticed by its keep alive and reconnected after the thaw; " + subDupNote(qos, redelivered, freezes)
			Record(t, r)
		})
	}
}

// subAcked is how many messages the subscriber of s acknowledged as taken
// (stored, dead-lettered, or recognised as stored before).
func subAcked(s *Stack) float64 {
	var n float64
	for _, outcome := range []string{"stored", "dead_letter", "redelivered"} {
		v, _ := s.Metric(`firehose_subscriber_acks_total{outcome="` + outcome + `"}`)
		n += v
	}
	return n
}

// TestSubscriberRedisStalled: the Redis of the subscriber's stack stalls
// (SIGSTOP) mid-run while Mosquitto keeps sending. Nothing is acknowledged
// during the stall; the messages held are retried, Receive Maximum keeps
// the broker from sending more; past --subscribe-retry-timeout the
// subscriber closes the connection, and resumes its session (the broker
// resends what it held) once Redis answers again. Everything lands.
func TestSubscriberRedisStalled(t *testing.T) {
	skipShort(t)
	for _, qos := range []int{1, 2} {
		t.Run(fmt.Sprintf("qos %d", qos), func(t *testing.T) {
			t.Parallel()
			// Past the producer's round-trip timeout (5 s), after which the
			// first attempt fails, plus the retry timeout.
			stall := scale(9*time.Second, 15*time.Second)
			stalls := scale(1, 3)
			broker := testenv.StartMosquitto(t)
			rs := testenv.StartRedisServer(t)
			svc := OwnServices(t, rs.URL())
			s := StartSubscriber(t, svc, broker, "fh-sub-"+testenv.ID(), qos,
				"--subscribe-retry-timeout", "2s", "--subscribe-connect-timeout", "2s")
			l := StartLoad(t, s, LoadOpts{Extra: subLoadExtra, Protocol: "mqtt", QoS: qos, Devices: 100, Rate: 1000,
				Duration: time.Duration(stalls)*(stall+scale(3*time.Second, 8*time.Second)) + 3*time.Second})
			edgeWaitLanded(t, s)
			var heldMax, reconnects float64
			for i := 0; i < stalls; i++ {
				if i > 0 {
					time.Sleep(scale(3*time.Second, 8*time.Second)) // load between stalls
				}
				connects := subConnects(s)
				rs.Pause()
				time.Sleep(time.Second) // acknowledgements of what Redis confirmed before are written
				acked := subAcked(s)
				received, _ := outMetricSum(s, "firehose_subscriber_messages_total")
				time.Sleep(stall - time.Second) // the stall itself
				if a := subAcked(s); a != acked {
					t.Errorf("%.0f messages acknowledged while Redis was stalled", a-acked)
				}
				// Receive Maximum: the broker sends at most that many
				// unacknowledged messages per connection.
				during, _ := outMetricSum(s, "firehose_subscriber_messages_total")
				conns := subConnects(s) - connects
				if bound := (conns + 1) * subReceiveMaximum; during-received > bound {
					t.Errorf("%.0f messages received during the stall over %.0f connections: over Receive Maximum (%d) per connection",
						during-received, conns, subReceiveMaximum)
				}
				heldMax = max(heldMax, during-received)
				reconnects += conns
				if conns == 0 {
					t.Errorf("the subscriber kept its connection through a stall of %s: it should have closed it past the retry timeout", stall)
				}
				rs.Resume()
				subWaitConnected(t, s, subConnects(s)-1, 60*time.Second)
			}
			rep := l.Wait(5 * time.Minute)
			// At QoS 1 the messages resent to each new connection are
			// retried (refused at once: the producer knows Redis down); at
			// QoS 2 a new connection fails earlier, reading its packet ids'
			// epochs from Redis, and takes no message.
			retries, _ := outMetricSum(s, "firehose_subscriber_store_retries_total")
			if qos == 1 && retries == 0 {
				t.Errorf("no store attempt was retried during the stall")
			}
			// At QoS 1 stored again: the messages of the write in flight
			// when Redis stopped (executed when it resumed, its answer
			// lost), and those stored after the message whose retry timeout
			// ended the session once Redis was back; all resent by the
			// broker.
			redelivered := subRedelivered(s)
			subAssert(t, rep, l, subAllowDup(qos, redelivered))
			r := ResultOf(rep)
			r.Scenario = fmt.Sprintf("subscriber: Redis stalled while Mosquitto keeps sending, QoS %d", qos)
			r.Load = LoadDesc(rep) + ", through Mosquitto 2"
			r.Faults = fmt.Sprintf("%d× SIGSTOP of the subscriber's Redis for %s (retry timeout 2 s), then SIGCONT", stalls, stall)
			r.Notes = fmt.Sprintf("nothing acknowledged during a stall; %.0f connections closed and made again during the stalls; at most %.0f messages taken during one (Receive Maximum %d per connection; at QoS 2 a new connection ends reading its epochs from Redis before it takes any); %.0f store attempts retried; %s",
				reconnects, heldMax, subReceiveMaximum, retries, subDupNote(qos, redelivered, stalls))
			Record(t, r)
		})
	}
}

// TestSubscriberShareGroupMemberKilled: two subscribers, each a process of
// its own, split the messages as one share group ($share/g/...), and one
// bridge commits; one member is SIGKILLed mid-run and restarted with its
// client id. Mosquitto keeps the killed member's in-flight messages (and
// those its round robin gives it meanwhile) in its session until it
// returns: everything lands.
func TestSubscriberShareGroupMemberKilled(t *testing.T) {
	skipShort(t)
	for _, qos := range []int{1, 2} {
		t.Run(fmt.Sprintf("qos %d", qos), func(t *testing.T) {
			t.Parallel()
			broker := testenv.StartMosquitto(t)
			svc := SharedServices(t)
			id := testenv.ID()
			member := func(name string) *Stack {
				return StartSubscriber(t, svc, broker, "fh-"+name+"-"+id, qos, "--roles", "subscriber", "--subscribe-group", "g")
			}
			a, b := member("a"), member("b")
			bridge := StartBridge(t, svc)
			bridge.WaitReady(20 * time.Second)
			target := &Stack{t: t, Services: svc, MQTTAddr: broker.Addr(), HTTPAddr: bridge.HTTPAddr}
			kills := scale(1, 3)
			l := StartLoad(t, target, LoadOpts{Extra: subLoadExtra, Protocol: "mqtt", QoS: qos, Devices: 100, Rate: 1000, Duration: scale(8*time.Second, 40*time.Second)})
			edgeWaitLanded(t, bridge)
			testenv.Eventually(t, 30*time.Second, func() bool { return subAcked(a) > 0 && subAcked(b) > 0 },
				"the group's members did not both take messages: a %.0f, b %.0f", subAcked(a), subAcked(b))
			var redelivered int64
			for i := 0; i < kills; i++ {
				if i > 0 {
					time.Sleep(5 * time.Second) // load between kills
				}
				redelivered += subRedelivered(a)
				a.Proc.Signal(syscall.SIGKILL)
				a.Proc.Wait(10 * time.Second)
				time.Sleep(time.Second) // the broker keeps a's share meanwhile
				a.start()
			}
			rep := l.Wait(5 * time.Minute)
			if subAcked(a) == 0 {
				t.Errorf("the restarted member took nothing: its session's messages were not resent to it")
			}
			redelivered += subRedelivered(a) + subRedelivered(b)
			subAssert(t, rep, l, subAllowDup(qos, redelivered))
			r := ResultOf(rep)
			r.Scenario = fmt.Sprintf("subscriber: one of a share group of two SIGKILLed, QoS %d", qos)
			r.Load = LoadDesc(rep) + ", through Mosquitto 2, $share/g, two subscriber processes and one bridge"
			r.Faults = fmt.Sprintf("%d× SIGKILL of one member, restarted with its client id after 1 s", kills)
			r.Notes = fmt.Sprintf("Mosquitto keeps the killed member's in-flight messages, and what its round robin gives it meanwhile, in its session until it returns (until --subscribe-session-expiry); %s", subDupNote(qos, redelivered, kills))
			Record(t, r)
		})
	}
}
