package main

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"firehose/internal/mqtttest"
	"firehose/internal/testenv"
)

// TestIntegrationServeDedupID runs firehose serve with --dedup id and sends
// every kind of message id twice, as a device does after a lost
// acknowledgement: an HTTP request's Idempotency-Key (a batch of three), a
// msg_id field per reading of /v1/readings, the seed's /readings/fast with
// Idempotency-Key, an MQTT 5 user property msg_id, a msg_id in an MQTT
// 3.1.1 payload, and a rule's id path over MQTT. Each resend is answered
// success, and each reading lands once; a message of a new id lands again.
func TestIntegrationServeDedupID(t *testing.T) {
	t.Parallel()
	file := writeConfig(t, `dedup: id
rules:
  - name: press
    topic: plant/{device_id}/telemetry
    id: msg
    metrics: ["*"]
`)
	mqttAddr := freeAddr(t)
	p, base, pgURL := startServe(t, "--config", file, "--mqtt-addr", mqttAddr, "--batch-age", "50ms")
	ts := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339Nano)

	postKey := func(path, key, device, body string) {
		t.Helper()
		if code, b := postKeyed(t, base+path, "application/json", device, key, body); code != http.StatusOK {
			t.Fatalf("POST %s (Idempotency-Key %q): %d %s", path, key, code, b)
		}
	}
	batch := `[{"device_id": "dd-http", "reading": 1, "ts": "` + ts + `"}, {"device_id": "dd-http", "reading": 2}, {"device_id": "dd-http2", "reading": 3}]`
	perReading := `[{"device_id": "dd-field", "reading": 4, "msg_id": "a"}, {"device_id": "dd-field", "reading": 5, "msg_id": 7}]`
	for range 2 {
		postKey("/v1/readings", "req-1", "", batch)
		postKey("/v1/readings", "", "", perReading)
		postKey("/readings/fast", "fast-1", "dd-fast", `{"id": 1, "reading": 6, "timestamp": "`+ts+`"}`)
	}
	postKey("/v1/readings", "req-2", "", batch) // a new request id: lands again

	c5 := connectV5(t, mqttAddr, "dd-mqtt5")
	v3, err := mqtttest.ConnectV3(t, "tcp://"+mqttAddr, "dd-mqtt3")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		pub5(t, c5, "devices/dd-mqtt5/readings", `{"reading": 7}`, "m-1")
		pub3(t, v3, "devices/dd-mqtt3/readings", `{"reading": 8, "msg_id": "m-1"}`)
		pub3(t, v3, "plant/dd-press/telemetry", `{"msg": 42, "temp": 71.2, "rpm": 1200}`)
	}
	pub5(t, c5, "devices/dd-mqtt5/readings", `{"reading": 7}`, "m-2") // a new id

	const want = 3 + 3 + 2 + 1 + 2 + 1 + 2
	testenv.Eventually(t, 10*time.Second, func() bool { return countRows(t, pgURL, "SELECT count(*) FROM readings") >= want },
		"rows did not land: %d of %d", countRows(t, pgURL, "SELECT count(*) FROM readings"), want)
	waitDrained(t, p, pgURL) // every entry written is committed: a duplicate would be counted below
	for _, q := range []struct {
		sql  string
		want int
	}{
		{"SELECT count(*) FROM readings", want},
		{"SELECT count(*) FROM readings WHERE device_id = 'dd-http'", 4},
		{"SELECT count(*) FROM readings WHERE device_id = 'dd-field'", 2},
		{"SELECT count(*) FROM readings WHERE device_id = 'dd-fast'", 1},
		{"SELECT count(*) FROM readings WHERE device_id = 'dd-mqtt5'", 2},
		{"SELECT count(*) FROM readings WHERE device_id = 'dd-mqtt3'", 1},
		{"SELECT count(*) FROM readings WHERE device_id = 'dd-press' AND metric IN ('temp', 'rpm')", 2},
	} {
		if got := countRows(t, pgURL, q.sql); got != q.want {
			t.Errorf("%s = %d, want %d", q.sql, got, q.want)
		}
	}
	if n, _ := metric(t, base+"/metrics", "firehose_producer_duplicates_total"); n != 3+2+1+1+1+2 {
		t.Errorf("firehose_producer_duplicates_total = %g, want 10", n)
	}
}

// connectV5 connects an MQTT 5 client to addr, disconnected when the test
// ends.
func connectV5(t *testing.T, addr, clientID string) *paho.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: 10 * time.Second, PingHandler: mqtttest.NoPinger{}})
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30}); err != nil {
		conn.Close()
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

// pub3 publishes at QoS 1 over MQTT 3.1.1 and fails t unless the PUBACK
// comes.
func pub3(t *testing.T, c mqtt.Client, topic, payload string) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// pub5 publishes at QoS 1 with the user property msg_id and fails t unless
// the PUBACK is a success.
func pub5(t *testing.T, c *paho.Client, topic, payload, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload),
		Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "msg_id", Value: id}}}})
	if err != nil || resp == nil || resp.ReasonCode != 0 {
		var reason string
		if resp != nil && resp.Properties != nil {
			reason = resp.Properties.ReasonString
		}
		t.Fatalf("publish %s (msg_id %s): %+v (%s), %v", topic, id, resp, reason, err)
	}
}
