package broker

import (
	"context"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"firehose/ingest"
	"firehose/internal/spbtest"
	"firehose/internal/testenv"
	"firehose/mqttmsg"
	"firehose/sparkplug"
	"firehose/stream"
)

// deadLetter is a row of readings_rejected that an edge wrote.
type deadLetter struct {
	Kind, Topic, ClientID, Username, Device, Error string
	Raw                                            []byte
	ReceivedAt                                     time.Time
}

// deadLetters waits until the stack's database holds want edge dead letters
// and returns them, oldest first.
func (s *testStack) deadLetters(want int) []deadLetter {
	s.t.Helper()
	const q = "SELECT count(*) FROM readings_rejected WHERE source = 'edge'"
	testenv.Eventually(s.t, 30*time.Second, func() bool { return s.count(q) >= want },
		"edge dead letters: %d, want %d", s.count(q), want)
	rows, err := s.pg.Query(context.Background(), `SELECT edge_kind, topic, client_id, username, device_id, error, raw, received_at
		FROM readings_rejected WHERE source = 'edge' ORDER BY id`)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	var out []deadLetter
	for rows.Next() {
		var d deadLetter
		if err := rows.Scan(&d.Kind, &d.Topic, &d.ClientID, &d.Username, &d.Device, &d.Error, &d.Raw, &d.ReceivedAt); err != nil {
			s.t.Fatal(err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// TestIntegrationDeadLetterInvalidV3Payload: an MQTT 3.1.1 device's invalid
// payload at QoS 1 and 2 cannot be refused (3.1.1 has no way to say why); it
// is acknowledged only once it is stored whole as an edge dead letter, with
// its topic, client, username, device, reason and time of receipt, and no
// reading lands. (Before: acknowledged and dropped, stored nowhere.)
func TestIntegrationDeadLetterInvalidV3Payload(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{bridge: true})
	before := time.Now()
	v3 := mustConnectV3(t, "tcp://"+s.tcpAddr(), "dl-v3", func(o *mqtt.ClientOptions) { o.SetUsername("dl-user") })
	publishV3(t, v3, "devices/dl-a/readings", 1, "twenty-one")
	publishV3(t, v3, "devices/dl-a/readings", 2, `{"reading": []}`)
	publishV3(t, v3, "devices/dl-a/readings", 0, "dropped at QoS 0")
	publishV3(t, v3, "devices/dl-a/readings", 1, `{"reading": 2}`)

	dls := s.deadLetters(2)
	s.settle(1, 30*time.Second)
	if len(dls) != 2 {
		t.Fatalf("%d dead letters, want 2 (QoS 1 and 2; QoS 0 is at most once): %+v", len(dls), dls)
	}
	for i, want := range []string{"twenty-one", `{"reading": []}`} {
		d := dls[i]
		if string(d.Raw) != want || d.Kind != ingest.KindTopic || d.Topic != "devices/dl-a/readings" || d.ClientID != "dl-v3" ||
			d.Username != "dl-user" || d.Device != "dl-a" || d.Error == "" || d.ReceivedAt.Before(before.Add(-time.Second)) {
			t.Errorf("dead letter %d = %+v, want payload %q of dl-a from dl-v3/dl-user with a reason", i, d, want)
		}
	}
	if rows := s.rows(""); len(rows) != 1 || rows[0].Value != 2 {
		t.Errorf("rows %+v, want only the valid reading", rows)
	}
	if got := s.metric("firehose_mqtt_dead_letters_total", "kind", "topic"); got != 2 {
		t.Errorf("firehose_mqtt_dead_letters_total{kind=topic} = %v, want 2", got)
	}
	if got := s.metric("firehose_producer_dead_letters_total"); got != 2 {
		t.Errorf("firehose_producer_dead_letters_total = %v, want 2", got)
	}
}

// TestIntegrationSparkplugDeadLetters: a Sparkplug B NDATA before its
// NBIRTH, and an NDATA with a known alias and an unknown one, are each
// acknowledged (PUBACK 0) only once stored whole as an edge dead letter;
// none of their values lands as a row (nothing partial), the edge node is
// asked for a rebirth, and once the births are known the broker's decode
// path (mqttmsg.Resolver, as firehose rejected replay uses it) resolves every value
// of both. (Before: the first was stored nowhere, the second only in part.)
func TestIntegrationSparkplugDeadLetters(t *testing.T) {
	t.Parallel()
	store := sparkplug.NewMemoryStore()
	s := newStack(t, stackOptions{bridge: true, cfg: Config{Sparkplug: true, SparkplugStore: store}})
	edge := mustConnectV5(t, s.tcpAddr(), "dl-edge")
	now := time.Now()
	const node = "spBv1.0/dlg/NDATA/dl-node"
	early := spbtest.Payload(now, 0, -1, spbtest.Alias(1, 1.5), spbtest.Alias(2, 2.5))
	if code := publishV5(t, edge, node, 1, string(early)); code != 0 {
		t.Fatalf("NDATA before NBIRTH: reason code %#x, want 0", code)
	}
	birth := spbtest.Payload(now, 0, 7, spbtest.Named("temp", 1, 20), spbtest.Named("pressure", 2, 1))
	if code := publishV5(t, edge, "spBv1.0/dlg/NBIRTH/dl-node", 1, string(birth)); code != 0 {
		t.Fatalf("NBIRTH: reason code %#x", code)
	}
	partial := spbtest.Payload(now, 1, -1, spbtest.Alias(1, 3.5), spbtest.Alias(3, 4.5))
	if code := publishV5(t, edge, node, 1, string(partial)); code != 0 {
		t.Fatalf("NDATA with an unknown alias: reason code %#x, want 0", code)
	}
	whole := spbtest.Payload(now, 2, -1, spbtest.Alias(1, 5.5))
	if code := publishV5(t, edge, node, 1, string(whole)); code != 0 {
		t.Fatalf("NDATA: reason code %#x, want 0", code)
	}

	dls := s.deadLetters(2)
	// The birth's 2 metrics and its event row, and the last NDATA's value.
	s.settle(4, 30*time.Second)
	if len(dls) != 2 {
		t.Fatalf("%d dead letters, want 2: %+v", len(dls), dls)
	}
	for i, want := range [][]byte{early, partial} {
		d := dls[i]
		if string(d.Raw) != string(want) || d.Kind != ingest.KindSparkplug || d.Topic != node || d.Device != "dlg/dl-node" || d.ClientID != "dl-edge" {
			t.Errorf("dead letter %d = %+v", i, d)
		}
	}
	if n := s.count("SELECT count(*) FROM readings WHERE metric = 'temp' AND reading IN (1.5, 3.5)"); n != 0 {
		t.Errorf("%d values of the dead-lettered messages landed as rows, want none (nothing partial)", n)
	}
	if n := s.count("SELECT count(*) FROM readings WHERE metric = 'temp' AND reading = 5.5"); n != 1 {
		t.Errorf("the resolvable NDATA landed %d times, want once", n)
	}
	if got := s.metric("firehose_mqtt_dead_letters_total", "kind", "sparkplug"); got != 2 {
		t.Errorf("firehose_mqtt_dead_letters_total{kind=sparkplug} = %v, want 2", got)
	}

	// A rebirth that gives alias 3 resolves both.
	rebirth := spbtest.Payload(now, 0, 8, spbtest.Named("temp", 1, 20), spbtest.Named("pressure", 2, 1), spbtest.Named("flow", 3, 0))
	if code := publishV5(t, edge, "spBv1.0/dlg/NBIRTH/dl-node", 1, string(rebirth)); code != 0 {
		t.Fatalf("NBIRTH: reason code %#x", code)
	}
	res := mqttmsg.NewResolver(store, nil, ingest.Limits{})
	for i, want := range []map[string]float64{{"temp": 1.5, "pressure": 2.5}, {"temp": 3.5, "flow": 4.5}} {
		d := ingest.DeadLetter{Kind: dls[i].Kind, Topic: dls[i].Topic, Device: dls[i].Device, Payload: dls[i].Raw, ReceivedAt: dls[i].ReceivedAt}
		rs, err := res.Resolve(t.Context(), d)
		if err != nil {
			t.Fatalf("resolve dead letter %d after the rebirth: %v", i, err)
		}
		got := map[string]float64{}
		for _, r := range rs {
			got[r.Metric] = r.Value
			if r.DeviceID != "dlg/dl-node" || !r.ReceivedAt.Equal(dls[i].ReceivedAt) {
				t.Errorf("dead letter %d: reading %+v", i, r)
			}
		}
		if len(got) != len(want) || got["temp"] != want["temp"] {
			t.Errorf("dead letter %d resolved to %v, want %v", i, got, want)
		}
	}
}

// TestIntegrationDeadLettersCountTowardHighWater: dead letters are stream
// entries like readings, so they count in the backlog: with no bridge and a
// high-water mark of 3, a few acknowledged invalid payloads of an MQTT 3.1.1
// device push the backlog over it, and the next reading is refused (0x97).
// (Before: they were dropped and counted nowhere, so the reading was taken.)
func TestIntegrationDeadLettersCountTowardHighWater(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{producer: stream.ProducerConfig{HighWater: 3, BacklogInterval: 20 * time.Millisecond}})
	v3 := mustConnectV3(t, "tcp://"+s.tcpAddr(), "hw-dl-v3")
	for range 4 {
		// Between measurements the producer may count an entry twice (see
		// TestIntegrationBacklogOverHighWaterRefusesUntilDrained): publish
		// each while it takes readings, and again, on a new connection, if
		// it was refused all the same (a 3.1.1 client is disconnected).
		testenv.Eventually(t, 30*time.Second, func() bool {
			if s.producer.Ready() != nil {
				return false
			}
			if !v3.IsConnectionOpen() {
				v3 = mustConnectV3(t, "tcp://"+s.tcpAddr(), "hw-dl-v3")
			}
			return waitToken(v3.Publish("devices/hw-dl/readings", 1, false, "not a reading"), 10*time.Second) == nil
		}, "dead letter not taken: producer %v", s.producer.Ready())
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return s.producer.Backlog() >= 4 },
		"backlog %d after 4 dead letters, want 4", s.producer.Backlog())
	v5 := mustConnectV5(t, s.tcpAddr(), "hw-dl-v5")
	if code := publishV5(t, v5, "devices/hw-dl-2/readings", 1, "1"); code != codeQuotaExceeded {
		t.Errorf("reading over the high-water mark: reason code %#x, want %#x", code, codeQuotaExceeded)
	}
}
