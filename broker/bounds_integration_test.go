package broker

import (
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"firehose/internal/testenv"
)

// reading230 is a reading of about 230 bytes, as in the issue's
// reproduction.
func reading230(i int) string {
	p := fmt.Sprintf(`{"reading": %d, "unit": "kPa", "note": "%s"}`, i, strings.Repeat("x", 180))
	return p
}

// persistentSubscribers subscribes n MQTT 3.1.1 clients sub-0 ... to filter
// at QoS 1 with a persistent session (clean session off), then disconnects
// them one by one, waiting until the broker recorded each as disconnected.
func persistentSubscribers(t *testing.T, s *testStack, n int, filter string) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("sub-%d", i)
		c := mustConnectV3(t, "tcp://"+s.tcpAddr(), id, func(o *mqtt.ClientOptions) { o.SetCleanSession(false) })
		if err := waitToken(c.Subscribe(filter, 1, nil), 10*time.Second); err != nil {
			t.Fatalf("%s subscribes: %v", id, err)
		}
		c.Disconnect(50)
		testenv.Eventually(t, 10*time.Second, func() bool {
			cl, ok := s.b.srv.Clients.Get(id)
			return ok && cl.Closed() && s.b.bounds.sess.count() == min(i+1, s.b.cfg.MaxOfflineSessions)
		}, "the session of %s was not recorded as disconnected", id)
	}
}

// publishReadings publishes n readings of ~230 bytes at QoS 1 from one
// MQTT 3.1.1 device, 100 at a time.
func publishReadings(t *testing.T, s *testStack, dev string, n int) {
	t.Helper()
	c := mustConnectV3(t, "tcp://"+s.tcpAddr(), dev)
	topic := "devices/" + dev + "/readings"
	for i := 0; i < n; i += 100 {
		var toks []mqtt.Token
		for j := i; j < min(i+100, n); j++ {
			toks = append(toks, c.Publish(topic, 1, false, reading230(j)))
		}
		for _, tok := range toks {
			if err := waitToken(tok, 15*time.Second); err != nil {
				t.Fatalf("publish: %v", err)
			}
		}
	}
	c.Disconnect(50)
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestIntegrationBoundedOfflineSessions reproduces issue 8's hole 4 at a
// small scale: persistent subscribers to devices/# go away, then readings
// are published. Past --mqtt-max-offline-sessions the oldest sessions are
// evicted; each kept session holds exactly --mqtt-max-inflight messages
// (mochi's default would keep 8,192 each); the heap grows by about that
// much, not by sessions x readings; a subscriber that comes back gets its
// queued messages.
//
// Not parallel: it measures the process's heap.
func TestIntegrationBoundedOfflineSessions(t *testing.T) {
	const (
		subscribers = 30
		kept        = 20
		inflight    = 50
		readings    = 2000
	)
	s := newStack(t, stackOptions{cfg: Config{MaxInflight: inflight, MaxOfflineSessions: kept}})
	persistentSubscribers(t, s, subscribers, "devices/#")
	if got := s.metric("firehose_mqtt_sessions_evicted_total"); got != subscribers-kept {
		t.Errorf("firehose_mqtt_sessions_evicted_total = %v, want %d", got, subscribers-kept)
	}
	for i := range subscribers - kept {
		if _, ok := s.b.srv.Clients.Get(fmt.Sprintf("sub-%d", i)); ok {
			t.Errorf("sub-%d, among the oldest disconnected, was not evicted", i)
		}
	}
	before := heapInUse()
	publishReadings(t, s, "pub-1", readings)
	s.settleStreams(readings)
	after := heapInUse()

	total := 0
	for i := subscribers - kept; i < subscribers; i++ {
		cl, ok := s.b.srv.Clients.Get(fmt.Sprintf("sub-%d", i))
		if !ok {
			t.Fatalf("sub-%d, among the newest disconnected, was evicted", i)
		}
		if n := cl.State.Inflight.Len(); n != inflight {
			t.Errorf("sub-%d holds %d messages, want --mqtt-max-inflight %d", i, n, inflight)
		}
		total += cl.State.Inflight.Len()
	}
	if got := s.metric("firehose_mqtt_offline_queued_messages"); got < float64(total-kept) || got > float64(total) {
		t.Errorf("firehose_mqtt_offline_queued_messages = %v, want %d (each session's count may lag by one)", got, total)
	}
	// Each queued message costs ~1.2 KiB: 20 x 50 of them ~1.2 MiB. Unbounded,
	// 20 x 2,000 would be ~48 MiB.
	grown := int64(after) - int64(before)
	t.Logf("heap in use %d KiB before the readings, %d KiB after (%+d KiB) for %d queued messages", before>>10, after>>10, grown>>10, total)
	if grown > 8<<20 {
		t.Errorf("heap in use grew by %d KiB for %d sessions x %d messages, want under 8 MiB", grown>>10, kept, inflight)
	}

	// Full, each session left the topic index: mochi no longer copies every
	// reading for it.
	if got := s.metric("firehose_mqtt_offline_sessions_full_total", "reason", "session_queue_full"); got != kept {
		t.Errorf("firehose_mqtt_offline_sessions_full_total{session_queue_full} = %v, want %d", got, kept)
	}

	// The newest subscriber comes back, gets its queued readings, and its
	// subscription works again.
	var got atomic.Int64
	c := mustConnectV3(t, "tcp://"+s.tcpAddr(), fmt.Sprintf("sub-%d", subscribers-1), func(o *mqtt.ClientOptions) {
		o.SetCleanSession(false).SetDefaultPublishHandler(func(mqtt.Client, mqtt.Message) { got.Add(1) })
	})
	testenv.Eventually(t, 10*time.Second, func() bool { return got.Load() >= inflight },
		"the subscriber that came back got %d of its %d queued messages", got.Load(), inflight)
	publishReadings(t, s, "pub-1", 1)
	testenv.Eventually(t, 10*time.Second, func() bool { return got.Load() >= inflight+1 },
		"the subscriber that came back does not receive new readings")
	c.Disconnect(50)
}

// settleStreams waits until n readings are in the stack's streams (no
// bridge runs): every publish was handled.
func (s *testStack) settleStreams(n int) {
	s.t.Helper()
	testenv.Eventually(s.t, 30*time.Second, func() bool { return s.streamLen() >= int64(n) },
		"%d of %d readings reached the streams", s.streamLen(), n)
}

// TestIntegrationOfflineMessageBudget: the messages queued for all
// disconnected sessions together stop at --mqtt-max-offline-messages; the
// sessions stop receiving, counted, and the readings are still stored.
func TestIntegrationOfflineMessageBudget(t *testing.T) {
	t.Parallel()
	const (
		subscribers = 10
		budget      = 300
		readings    = 200
	)
	s := newStack(t, stackOptions{cfg: Config{MaxInflight: 100, MaxOfflineMessages: budget}})
	persistentSubscribers(t, s, subscribers, "devices/+/readings")
	publishReadings(t, s, "pub-2", readings)
	s.settleStreams(readings)
	total := 0
	for i := range subscribers {
		cl, ok := s.b.srv.Clients.Get(fmt.Sprintf("sub-%d", i))
		if !ok {
			t.Fatalf("sub-%d was evicted", i)
		}
		total += cl.State.Inflight.Len()
	}
	// Each session's count in the total may lag by its last message.
	if total < budget || total > budget+subscribers {
		t.Errorf("%d messages queued for %d disconnected sessions, want %d (+ at most %d)", total, subscribers, budget, subscribers)
	}
	if got := s.metric("firehose_mqtt_offline_sessions_full_total", "reason", "offline_queue_full"); got != subscribers {
		t.Errorf("firehose_mqtt_offline_sessions_full_total{offline_queue_full} = %v, want %d", got, subscribers)
	}
}

// TestIntegrationExpiredSessionForgotten: once a session expires, its
// subscriptions go with it (mochi 2.7.9 leaves them in its topic index, and
// a later client of the same id received their messages without having
// subscribed).
func TestIntegrationExpiredSessionForgotten(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{cfg: Config{SessionExpiry: time.Second}})
	expiry := uint32(1)
	c, _, err := connectV5(t, s.tcpAddr(), &paho.Connect{ClientID: "exp-1", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		t.Fatal(err)
	}
	if code := subscribeV5(t, c, "devices/+/readings"); code != 1 {
		t.Fatalf("subscribe: %#x", code)
	}
	_ = c.Disconnect(&paho.Disconnect{})
	testenv.Eventually(t, 10*time.Second, func() bool { _, ok := s.b.srv.Clients.Get("exp-1"); return !ok },
		"the session of exp-1 did not expire")
	testenv.Eventually(t, 5*time.Second, func() bool { return s.b.bounds.sess.count() == 0 },
		"the expired session is still counted")

	again := mustConnectV5(t, s.tcpAddr(), "exp-1")
	if code := subscribeV5(t, again, "exp-1/#"); code != 1 {
		t.Fatalf("subscribe: %#x", code)
	}
	pub := mustConnectV5(t, s.tcpAddr(), "pub-3")
	publishV5(t, pub, "devices/pub-3/readings", 1, "1")
	publishV5(t, pub, "devices/pub-3/barrier", 1, "x")
	publishV5(t, again, "exp-1/fence", 1, "fence")
	select {
	case p := <-again.received:
		if p.Topic != "exp-1/fence" {
			t.Errorf("a new session of exp-1 received %q, a message of its expired session's subscription", p.Topic)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the fence did not come back")
	}
}

// TestIntegrationRetainedBounded: past --mqtt-max-retained (count) or
// --mqtt-max-retained-bytes a publish is delivered, and a reading stored and
// acknowledged, without being retained; replacing or clearing a retained
// topic is always allowed.
func TestIntegrationRetainedBounded(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{cfg: Config{MaxRetained: 5, MaxRetainedBytes: 1000}})
	c := mustConnectV5(t, s.tcpAddr(), "ret-1")
	retain := func(topic, payload string) byte {
		t.Helper()
		ctx := t.Context()
		resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(payload)})
		if resp == nil {
			t.Fatalf("publish to %s: %v", topic, err)
		}
		return resp.ReasonCode
	}
	for i := range 8 {
		retain(fmt.Sprintf("status/%d", i), "0123456789")
	}
	retain("status/0", "replaced")                                // a replacement: still 5
	retain("status/1", "")                                        // cleared: 4
	retain("status/big", strings.Repeat("x", 1000))               // past the bytes
	if code := retain("devices/ret-1/readings", "7"); code != 0 { // a reading: 5
		t.Errorf("a retained reading: reason code %#x, want 0 (stored)", code)
	}
	retain("status/9", "0123456789") // past the count
	// mochi retains its own $SYS topics besides, outside the bounds.
	kept := 0
	for topic := range s.b.srv.Topics.Retained.GetAll() {
		if !strings.HasPrefix(topic, "$SYS/") {
			kept++
		}
	}
	if kept != 5 {
		t.Errorf("mochi keeps %d retained messages, want 5", kept)
	}
	if got := s.metric("firehose_mqtt_retained_messages"); got != 5 {
		t.Errorf("firehose_mqtt_retained_messages = %v, want 5", got)
	}
	if got := s.metric("firehose_mqtt_retain_dropped_total"); got != 5 {
		t.Errorf("firehose_mqtt_retain_dropped_total = %v, want 5 (status/5-7, big, 9)", got)
	}
	want := map[string]bool{"status/0": true, "status/2": true, "status/3": true, "status/4": true, "devices/ret-1/readings": true}
	for topic := range s.b.srv.Topics.Retained.GetAll() {
		if !want[topic] && !strings.HasPrefix(topic, "$SYS/") {
			t.Errorf("%s is retained", topic)
		}
	}
}
