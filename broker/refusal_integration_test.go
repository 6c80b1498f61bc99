package broker

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"firehose/ingest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// MQTT 5 reason codes the broker answers refused readings with.
const (
	codeNotAuthorized       = 0x87
	codeQuotaExceeded       = 0x97
	codePayloadFormatBad    = 0x99
	codeBadUserNameOrPasswd = 0x86
)

// TestIntegrationV5RefusalReasonCodes checks the reason codes an MQTT 5
// device gets for a payload that is not a reading (0x99) and for a reading
// published under another device's id (0x87), at QoS 1 (PUBACK) and QoS 2
// (PUBREC), and that none of them lands. An MQTT 3.1.1 device's invalid
// payload is acknowledged, dropped and counted.
func TestIntegrationV5RefusalReasonCodes(t *testing.T) {
	t.Parallel()
	creds := filepath.Join(t.TempDir(), "creds")
	writeCredentials(t, creds, map[string]string{"dev-a": cheapHash(t, "pw-a"), "dev-b": cheapHash(t, "pw-b")})
	s := newStack(t, stackOptions{bridge: true, cfg: Config{AuthFile: creds}})

	c, _, err := connectV5(t, s.tcpAddr(), v5Creds("dev-a", "dev-a", "pw-a"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		topic   string
		payload string
		want    byte
	}{
		{"not a number", "devices/dev-a/readings", "twenty", codePayloadFormatBad},
		{"reading is a string", "devices/dev-a/readings", `{"reading": "20"}`, codePayloadFormatBad},
		{"NaN", "devices/dev-a/readings", `NaN`, codePayloadFormatBad},
		{"device_id of another device", "devices/dev-a/readings", `{"device_id": "dev-b", "reading": 1}`, codePayloadFormatBad},
		{"measured two hours ahead", "devices/dev-a/readings", fmt.Sprintf(`{"reading": 1, "ts": %q}`, time.Now().Add(2*time.Hour).Format(time.RFC3339)), codePayloadFormatBad},
		{"another device's topic", "devices/dev-b/readings", `{"reading": 666}`, codeNotAuthorized},
		{"an unknown device's topic", "devices/dev-z/readings", `667`, codeNotAuthorized},
	} {
		for _, qos := range []byte{1, 2} {
			if got := publishV5(t, c, tc.topic, qos, tc.payload); got != tc.want {
				t.Errorf("%s at QoS %d: reason code %#x, want %#x", tc.name, qos, got, tc.want)
			}
		}
	}
	// QoS 0 has no answer; the refusals are counted all the same.
	publishV5(t, c, "devices/dev-a/readings", 0, "zero")
	publishV5(t, c, "devices/dev-b/readings", 0, "668")
	// The client stays connected and its next reading lands.
	if got := publishV5(t, c, "devices/dev-a/readings", 1, `{"reading": 1, "marker": "v5"}`); got != 0 {
		t.Fatalf("valid reading after the refusals: reason code %#x, want 0", got)
	}

	// MQTT 3.1.1 cannot say why: an invalid payload is acknowledged (else the
	// device would resend it forever) and dropped. (Its client id is the
	// device's: it takes the MQTT 5 connection's session over.)
	v3 := mustConnectV3(t, "tcp://"+s.tcpAddr(), "dev-a", func(o *mqtt.ClientOptions) { o.SetUsername("dev-a").SetPassword("pw-a") })
	publishV3(t, v3, "devices/dev-a/readings", 1, "twenty-one")
	publishV3(t, v3, "devices/dev-a/readings", 2, `{"reading": []}`)
	publishV3(t, v3, "devices/dev-a/readings", 1, `{"reading": 2, "marker": "v3"}`)

	s.settle(2, 10*time.Second)
	rows := s.rows("")
	if len(rows) != 2 {
		t.Fatalf("%d rows landed, want only the 2 valid readings: %+v", len(rows), rows)
	}
	for _, r := range rows {
		if r.Device != "dev-a" || (r.Value != 1 && r.Value != 2) {
			t.Errorf("unexpected row %+v", r)
		}
	}
	if got, want := s.metric("firehose_mqtt_readings_refused_total", "reason", "invalid"), float64(5*2+1+2); got != want {
		t.Errorf("firehose_mqtt_readings_refused_total{reason=invalid} = %v, want %v", got, want)
	}
	if got, want := s.metric("firehose_mqtt_readings_refused_total", "reason", "not_authorized"), float64(2*2+1); got != want {
		t.Errorf("firehose_mqtt_readings_refused_total{reason=not_authorized} = %v, want %v", got, want)
	}
	if got := s.metric("firehose_mqtt_readings_accepted_total"); got != 2 {
		t.Errorf("firehose_mqtt_readings_accepted_total = %v, want 2", got)
	}
}

// TestIntegrationEmptyDeviceLevelRefused publishes to the readings topic
// with an empty device level (devices//readings, which devices/+/readings
// matches): a reading with an empty device id, refused like any invalid
// reading (0x99 to MQTT 5, dropped and counted for 3.1.1), not acknowledged
// as an ordinary publish and silently not stored.
func TestIntegrationEmptyDeviceLevelRefused(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{bridge: true})
	c := mustConnectV5(t, s.tcpAddr(), "empty-level-v5")
	if got := publishV5(t, c, "devices//readings", 1, `{"reading": 1}`); got != codePayloadFormatBad {
		t.Errorf("MQTT 5 publish to devices//readings: reason code %#x, want %#x", got, codePayloadFormatBad)
	}
	v3 := mustConnectV3(t, "tcp://"+s.tcpAddr(), "empty-level-v3")
	publishV3(t, v3, "devices//readings", 1, `2`)
	publishV3(t, v3, "devices/dev-ok/readings", 1, `3`)
	s.settle(1, 10*time.Second)
	if rows := s.rows(""); len(rows) != 1 || rows[0].Device != "dev-ok" {
		t.Errorf("rows %+v, want only dev-ok's reading", rows)
	}
	if got := s.metric("firehose_mqtt_readings_refused_total", "reason", "invalid"); got != 2 {
		t.Errorf("firehose_mqtt_readings_refused_total{reason=invalid} = %v, want 2", got)
	}
}

// TestIntegrationBacklogOverHighWaterRefusesUntilDrained fills the streams
// past the producer's high-water mark with no bridge running: MQTT 5 gets
// 0x97 at QoS 1 and 2, an MQTT 3.1.1 device gets no acknowledgement and is
// disconnected. Once a bridge drains the backlog, the 3.1.1 device's resent
// reading is acknowledged and lands once; the refused MQTT 5 readings never
// do.
func TestIntegrationBacklogOverHighWaterRefusesUntilDrained(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{producer: stream.ProducerConfig{HighWater: 5, BacklogInterval: 20 * time.Millisecond}})
	v5 := mustConnectV5(t, s.tcpAddr(), "hw-v5")
	var sniff ackSniffer
	var lost atomic.Int64
	v3 := mustConnectV3(t, "tcp://"+s.tcpAddr(), "hw-v3", resendingV3(&sniff, &lost))

	for i := range 6 {
		// Between two measurements the producer counts what it wrote on top
		// of the last one, erring on the safe side: an entry written while
		// the measurement was under way counts twice until the next one
		// (BacklogInterval later). So a reading under the mark may get a
		// transient 0x97; like a device, the test resends it.
		var got byte
		testenv.Await(t, func() bool { // resends every 50 ms until answered otherwise
			got = publishV5(t, v5, "devices/hw-1/readings", 1, fmt.Sprint(i))
			return got != codeQuotaExceeded
		}, "reading %d under the high-water mark: refused 0x97 again and again", i)
		if got != 0 {
			t.Fatalf("reading %d under the high-water mark: reason code %#x", i, got)
		}
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return errors.Is(s.producer.Ready(), ingest.ErrBacklogFull) },
		"the producer did not notice the backlog of %d over the high-water mark of 5 (Ready: %v)", s.streamLen(), s.producer.Ready())

	for _, qos := range []byte{1, 2} {
		if got := publishV5(t, v5, "devices/hw-1/readings", qos, "100"); got != codeQuotaExceeded {
			t.Errorf("QoS %d over the high-water mark: reason code %#x, want 0x97", qos, got)
		}
	}

	// paho.mqtt.golang's tokens say little here: a publish whose write meets
	// the closed connection completes with an error, and one resent after a
	// reconnect completes when the resend is queued. The wire says whether
	// the broker acknowledged, the table whether the reading landed.
	acks := sniff.count(typePuback)
	v3.Publish("devices/hw-2/readings", 1, false, "200")
	// Refused: disconnected, reconnected, resent, refused again.
	testenv.Eventually(t, 10*time.Second, func() bool { return lost.Load() >= 2 && sniff.connections() >= 3 },
		"the MQTT 3.1.1 device was not disconnected and reconnected: %d losses, %d connections", lost.Load(), sniff.connections())
	if got := sniff.count(typePuback); got != acks {
		t.Fatalf("the MQTT 3.1.1 device got %d PUBACKs while the backlog was over the high-water mark", got-acks)
	}
	if got := s.metric("firehose_mqtt_readings_refused_total", "reason", "backlog_full"); got < 4 {
		t.Errorf("firehose_mqtt_readings_refused_total{reason=backlog_full} = %v, want at least 4", got)
	}

	s.startBridge()
	testenv.Eventually(t, 15*time.Second, func() bool { return sniff.count(typePuback) > acks },
		"the MQTT 3.1.1 device's reading was not acknowledged after the backlog drained")
	s.settle(7, 15*time.Second)
	rows := s.rows("")
	got := map[float64]int{}
	for _, r := range rows {
		got[r.Value]++
	}
	for _, v := range []float64{0, 1, 2, 3, 4, 5, 200} {
		if got[v] != 1 {
			t.Errorf("reading %v landed %d times, want once", v, got[v])
		}
	}
	if len(rows) != 7 {
		t.Errorf("%d rows landed, want 7 (the refused MQTT 5 readings must not): %+v", len(rows), rows)
	}
}

// TestIntegrationRedisDownRefusesThenLandsAfterRestart kills the Redis the
// broker writes to: MQTT 5 QoS 1/2 readings get 0x97, an MQTT 3.1.1 device
// gets no acknowledgement and is disconnected, again on each resend. Redis
// restarts on the same port, with no restart of the broker: the 3.1.1
// device's resent readings are acknowledged and land exactly once, and the
// readings acknowledged before the outage are there too.
func TestIntegrationRedisDownRefusesThenLandsAfterRestart(t *testing.T) {
	t.Parallel()
	rs := startRedisServer(t)
	s := newStack(t, stackOptions{rdb: rs.client(), prefix: "fhtest-" + testenv.ID(), bridge: true,
		producer: stream.ProducerConfig{Timeout: 2 * time.Second}})
	v5 := mustConnectV5(t, s.tcpAddr(), "down-v5")
	var sniff ackSniffer
	var lost atomic.Int64
	v3 := mustConnectV3(t, "tcp://"+s.tcpAddr(), "down-v3", resendingV3(&sniff, &lost))

	if got := publishV5(t, v5, "devices/down-1/readings", 1, "1"); got != 0 {
		t.Fatalf("before the outage: reason code %#x", got)
	}
	publishV3(t, v3, "devices/down-2/readings", 1, "2")

	rs.kill()
	testenv.Eventually(t, 10*time.Second, func() bool { return errors.Is(s.producer.Ready(), ingest.ErrUnavailable) },
		"the producer did not notice that Redis is down (Ready: %v)", s.producer.Ready())
	for _, qos := range []byte{1, 2} {
		if got := publishV5(t, v5, "devices/down-1/readings", qos, fmt.Sprint(10+qos)); got != codeQuotaExceeded {
			t.Errorf("QoS %d with Redis down: reason code %#x, want 0x97", qos, got)
		}
	}

	acks, recs, losses := sniff.count(typePuback), sniff.count(typePubrec), lost.Load()
	// As above, the tokens say little; the sniffer and the table tell.
	v3.Publish("devices/down-2/readings", 1, false, "21")
	v3.Publish("devices/down-2/readings", 2, false, "22")
	testenv.Eventually(t, 10*time.Second, func() bool { return lost.Load() >= losses+2 },
		"the MQTT 3.1.1 device was not disconnected, reconnected and disconnected again (%d losses)", lost.Load()-losses)
	if got := sniff.count(typePuback) - acks; got != 0 {
		t.Fatalf("the MQTT 3.1.1 device got %d PUBACKs with Redis down", got)
	}
	if got := sniff.count(typePubrec) - recs; got != 0 {
		t.Fatalf("the MQTT 3.1.1 device got %d PUBRECs with Redis down", got)
	}
	if got := s.metric("firehose_mqtt_readings_refused_total", "reason", "redis_unavailable"); got < 4 {
		t.Errorf("firehose_mqtt_readings_refused_total{reason=redis_unavailable} = %v, want at least 4", got)
	}

	rs.start()
	testenv.Eventually(t, 20*time.Second, func() bool {
		return sniff.count(typePuback) > acks && sniff.count(typePubrec) > recs
	}, "after Redis returned the MQTT 3.1.1 device got %d PUBACKs and %d PUBRECs, want 1 each",
		sniff.count(typePuback)-acks, sniff.count(typePubrec)-recs)
	s.settle(4, 20*time.Second)
	rows := s.rows("")
	got := map[float64]int{}
	for _, r := range rows {
		got[r.Value]++
	}
	for _, v := range []float64{1, 2, 21, 22} {
		if got[v] != 1 {
			t.Errorf("reading %v landed %d times, want once", v, got[v])
		}
	}
	if len(rows) != 4 {
		t.Errorf("%d rows landed, want 4 (readings refused with 0x97 must not land): %+v", len(rows), rows)
	}
}
