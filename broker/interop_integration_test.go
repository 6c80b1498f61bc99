package broker

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"firehose/internal/testenv"
)

// message is one reading a test publishes and what must land of it.
type message struct {
	device  string
	qos     byte
	value   float64   // unique per device: identifies the row
	ts      time.Time // zero: a bare number, whose ts is its time of receipt
	payload string    // what is published
	extra   string    // the JSON the payload column must hold; "" means NULL
}

func (m message) topic() string { return "devices/" + m.device + "/readings" }

// messages makes perQoS readings of device at each QoS: most JSON objects
// with a measured time and extra fields, every fourth a bare number.
func messages(device, client string, perQoS int) []message {
	base := time.Now().UTC().Add(-time.Minute).Truncate(time.Microsecond)
	var ms []message
	for qos := range byte(3) {
		for k := range perQoS {
			m := message{device: device, qos: qos, value: float64(int(qos)*1000+k) + 0.25}
			if k%4 == 3 {
				m.payload = strconv.FormatFloat(m.value, 'g', -1, 64)
			} else {
				m.ts = base.Add(time.Duration(int(qos)*1000+k) * time.Millisecond)
				m.extra = fmt.Sprintf(`{"seq": %d, "qos": %d, "client": %q, "meta": {"fw": [1, 2]}}`, k, qos, client)
				m.payload = fmt.Sprintf(`{"reading": %v, "ts": %q, "seq": %d, "qos": %d, "client": %q, "meta": {"fw": [1, 2]}}`,
					m.value, m.ts.Format(time.RFC3339Nano), k, qos, client)
			}
			ms = append(ms, m)
		}
	}
	return ms
}

// checkLanded checks the readings table against what was published: every
// QoS 1/2 reading exactly once with its values, a QoS 0 reading at most once,
// nothing else. It returns the number of rows.
func checkLanded(t *testing.T, s *testStack, ms []message, since time.Time) int {
	t.Helper()
	key := func(dev string, v float64) string { return dev + "|" + strconv.FormatFloat(v, 'g', -1, 64) }
	byKey := map[string][]row{}
	rows := s.rows("")
	for _, r := range rows {
		byKey[key(r.Device, r.Value)] = append(byKey[key(r.Device, r.Value)], r)
	}
	now := time.Now()
	for _, m := range ms {
		k := key(m.device, m.value)
		got := byKey[k]
		delete(byKey, k)
		switch {
		case m.qos > 0 && len(got) != 1:
			t.Errorf("%s QoS %d reading %v landed %d times, want exactly once", m.device, m.qos, m.value, len(got))
			continue
		case len(got) > 1:
			t.Errorf("%s QoS 0 reading %v landed %d times, want at most once", m.device, m.value, len(got))
			continue
		case len(got) == 0:
			continue
		}
		r := got[0]
		if r.Received.Before(since.Add(-time.Millisecond)) || r.Received.After(now) {
			t.Errorf("%s %v: received_at %v not within the test (%v to %v)", m.device, m.value, r.Received, since, now)
		}
		wantTS := m.ts
		if wantTS.IsZero() {
			wantTS = r.Received
		}
		if !r.TS.Equal(wantTS) {
			t.Errorf("%s %v: ts %v, want %v", m.device, m.value, r.TS, wantTS)
		}
		switch {
		case m.extra == "" && r.Payload != nil:
			t.Errorf("%s %v: payload %s, want NULL", m.device, m.value, r.Payload)
		case m.extra != "" && !jsonEqual(r.Payload, []byte(m.extra)):
			t.Errorf("%s %v: payload %s, want %s", m.device, m.value, r.Payload, m.extra)
		}
	}
	for k, rs := range byKey {
		t.Errorf("%d unexpected rows %s: %+v", len(rs), k, rs)
	}
	return len(rows)
}

func countQoS(ms []message) (n [3]int) {
	for _, m := range ms {
		n[m.qos]++
	}
	return n
}

// TestIntegrationPahoClientsLandExactlyOnce publishes QoS 0, 1 and 2 readings
// from several devices with two MQTT clients nobody here wrote,
// eclipse/paho.mqtt.golang (3.1.1) and eclipse/paho.golang (5), and checks
// what landed in PostgreSQL and what the metrics say.
func TestIntegrationPahoClientsLandExactlyOnce(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{bridge: true})
	since := time.Now()
	const devices, perQoS = 3, 12
	var all []message
	var mu sync.Mutex
	var wg sync.WaitGroup
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		t.Errorf(format, args...)
	}

	v3 := make([]mqtt.Client, devices)
	v5 := make([]*v5Client, devices)
	for i := range devices {
		v3[i] = mustConnectV3(t, "tcp://"+s.tcpAddr(), fmt.Sprintf("paho3-%d", i))
		v5[i] = mustConnectV5(t, s.tcpAddr(), fmt.Sprintf("paho5-%d", i))
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return s.metric("firehose_mqtt_clients_connected") == 2*devices },
		"firehose_mqtt_clients_connected = %v, want %d", s.metric("firehose_mqtt_clients_connected"), 2*devices)

	for i := range devices {
		// paho.mqtt.golang: every publish sent at once, then every token
		// awaited, so many QoS 1/2 publishes are in flight together.
		ms3 := messages(fmt.Sprintf("paho3-dev-%d", i), "paho.mqtt.golang", perQoS)
		all = append(all, ms3...)
		wg.Go(func() {
			toks := make([]mqtt.Token, len(ms3))
			for j, m := range ms3 {
				toks[j] = v3[i].Publish(m.topic(), m.qos, false, m.payload)
			}
			for j, tok := range toks {
				if err := waitToken(tok, 15*time.Second); err != nil {
					fail("paho.mqtt.golang publish %s QoS %d %v: %v", ms3[j].device, ms3[j].qos, ms3[j].value, err)
				}
			}
		})
		// paho.golang: one goroutine per QoS, each waiting for its
		// acknowledgement before the next publish.
		ms5 := messages(fmt.Sprintf("paho5-dev-%d", i), "paho.golang", perQoS)
		all = append(all, ms5...)
		for qos := range byte(3) {
			wg.Go(func() {
				for _, m := range ms5 {
					if m.qos != qos {
						continue
					}
					code, err := tryPublishV5(v5[i], m.topic(), m.qos, m.payload, 15*time.Second)
					if err != nil || code != 0 {
						fail("paho.golang publish %s QoS %d %v: reason code %#x, %v", m.device, m.qos, m.value, code, err)
					}
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	n := countQoS(all)
	s.settle(n[1]+n[2], 15*time.Second)
	landed := checkLanded(t, s, all, since)
	t.Logf("published %d QoS 0, %d QoS 1, %d QoS 2 readings; %d rows landed", n[0], n[1], n[2], landed)

	for qos, want := range n {
		got := s.metric("firehose_mqtt_publishes_total", "qos", strconv.Itoa(qos))
		if qos == 0 && got > float64(want) || qos > 0 && got != float64(want) {
			t.Errorf("firehose_mqtt_publishes_total{qos=%q} = %v, want %d", strconv.Itoa(qos), got, want)
		}
	}
	if got := s.metric("firehose_mqtt_readings_accepted_total"); got != float64(landed) {
		t.Errorf("firehose_mqtt_readings_accepted_total = %v, want the %d rows landed", got, landed)
	}
	if got := s.metric("firehose_mqtt_ack_duration_seconds"); got != float64(n[1]+n[2]) {
		t.Errorf("firehose_mqtt_ack_duration_seconds count = %v, want one per QoS 1/2 reading, %d", got, n[1]+n[2])
	}
	if got := s.metric("firehose_mqtt_readings_refused_total", "reason", "invalid"); got != 0 {
		t.Errorf("firehose_mqtt_readings_refused_total{reason=invalid} = %v, want 0", got)
	}

	for i := range devices {
		v3[i].Disconnect(100)
		if err := v5[i].Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
			t.Errorf("MQTT 5 DISCONNECT: %v", err)
		}
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return s.metric("firehose_mqtt_clients_connected") == 0 },
		"firehose_mqtt_clients_connected = %v after every client disconnected", s.metric("firehose_mqtt_clients_connected"))
}

// TestIntegrationMosquittoPubLandsExactlyOnce publishes with the mosquitto
// command-line client, MQTT 3.1.1 and 5, QoS 1 and 2, a JSON object and a bare
// number each.
func TestIntegrationMosquittoPubLandsExactlyOnce(t *testing.T) {
	const bin = "/usr/bin/mosquitto_pub"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("mosquitto_pub not installed (%v): install the mosquitto-clients package to run this interop test", err)
	}
	t.Parallel()
	s := newStack(t, stackOptions{bridge: true})
	since := time.Now()
	host, port, _ := strings.Cut(s.tcpAddr(), ":")
	var all []message
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, version := range []string{"mqttv311", "mqttv5"} {
		for _, qos := range []byte{1, 2} {
			dev := fmt.Sprintf("mosq-%s-q%d", version, qos)
			ts := time.Now().UTC().Add(-time.Second).Truncate(time.Microsecond)
			for _, m := range []message{
				{device: dev, qos: qos, value: 21.5, ts: ts, extra: `{"via": "mosquitto_pub"}`,
					payload: fmt.Sprintf(`{"reading": 21.5, "ts": %q, "via": "mosquitto_pub"}`, ts.Format(time.RFC3339Nano))},
				{device: dev, qos: qos, value: -7, payload: "-7"},
			} {
				all = append(all, m)
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					cmd := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "-V", version, "-q", strconv.Itoa(int(m.qos)),
						"-i", fmt.Sprintf("%s-%v", dev, m.value), "-t", m.topic(), "-m", m.payload)
					out, err := cmd.CombinedOutput()
					if err != nil || len(out) > 0 {
						mu.Lock()
						t.Errorf("mosquitto_pub -V %s -q %d %q: %v: %s", version, m.qos, m.payload, err, out)
						mu.Unlock()
					}
				})
			}
		}
	}
	wg.Wait()
	s.settle(len(all), 15*time.Second)
	if n := checkLanded(t, s, all, since); n != len(all) {
		t.Errorf("%d rows landed, want %d", n, len(all))
	}

	// A payload that is not a reading: mosquitto_pub (MQTT 5) is told why.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "-V", "mqttv5", "-q", "1",
		"-t", "devices/mosq-bad/readings", "-m", "twenty").CombinedOutput()
	if !strings.Contains(strings.ToLower(string(out)), "payload format invalid") {
		t.Errorf("mosquitto_pub of an invalid payload printed %q, want it to report \"payload format invalid\"", out)
	}
}
