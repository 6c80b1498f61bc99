package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"

	"firehose/broker"
	"firehose/ingest"
	"firehose/internal/mqtttest"
	"firehose/internal/spbtest"
	"firehose/internal/testenv"
	"firehose/stream"
)

// startBroker runs, in process, the broker firehose serve runs for the
// deployment: a producer on its streams, Sparkplug B state beside them.
func (e *rejectedEnv) startBroker() string {
	e.t.Helper()
	log := slog.New(slog.DiscardHandler)
	p := stream.NewProducer(e.rdb, e.streams, stream.ProducerConfig{BacklogInterval: 20 * time.Millisecond}, log, prometheus.NewRegistry())
	pctx, stopProducer := context.WithCancel(context.Background())
	pdone := make(chan struct{})
	go func() { defer close(pdone); _ = p.Run(pctx) }()
	e.t.Cleanup(func() { stopProducer(); <-pdone })
	cfg := broker.Config{Addr: "127.0.0.1:0", Sparkplug: true, ShutdownTimeout: 5 * time.Second,
		SparkplugStore: stream.NewSparkplugStore(e.rdb, e.streams.SparkplugPrefix())}
	b, err := broker.New(cfg, p, log, prometheus.NewRegistry())
	if err != nil {
		e.t.Fatal(err)
	}
	if err := b.Listen(); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
	return b.Addr("tcp").String()
}

// deadLetterIDs waits for want edge dead letters and returns their row ids,
// oldest first.
func (e *rejectedEnv) deadLetterIDs(want int) []int64 {
	e.t.Helper()
	var ids []int64
	testenv.Eventually(e.t, 30*time.Second, func() bool {
		ids = ids[:0]
		rows, err := e.pg.Query(e.t.Context(), "SELECT id FROM readings_rejected WHERE source = 'edge' ORDER BY id")
		if err != nil {
			return false
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			if rows.Scan(&id) == nil {
				ids = append(ids, id)
			}
		}
		return len(ids) >= want
	}, "edge dead letters: %d, want %d", len(ids), want)
	return ids
}

// metricRows counts the rows of device with metric and value.
func (e *rejectedEnv) metricRows(device, metric string, value float64) int {
	e.t.Helper()
	var n int
	if err := e.pg.QueryRow(e.t.Context(), "SELECT count(*) FROM readings WHERE device_id = $1 AND metric = $2 AND reading = $3",
		device, metric, value).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// TestIntegrationRejectedReplaysEdgeDeadLetters: what an edge acknowledged
// without making rows of it is listed and replayed by firehose rejected. A
// Sparkplug B NDATA before its NBIRTH and an NDATA with a known and an
// unknown alias are dead letters; a replay before the birth is refused
// (still unresolved) and lands nothing; after the rebirth two replays sent
// before the bridge commits land every value of both, once, and a third is
// refused. An
// MQTT 3.1.1 device's invalid payload is a dead letter too; its replay
// reports that it is still invalid.
func TestIntegrationRejectedReplaysEdgeDeadLetters(t *testing.T) {
	t.Parallel()
	e := newRejectedEnv(t)
	e.startBridge()
	addr := e.startBroker()
	edge := connectV5(t, addr, "rp-edge")
	pub := func(topic string, payload []byte) {
		t.Helper()
		resp, err := edge.Publish(t.Context(), &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
		if err != nil || resp.ReasonCode != 0 {
			t.Fatalf("publish to %s: %+v %v", topic, resp, err)
		}
	}
	const dev = "rpg/rp-node"
	now := time.Now()
	pub("spBv1.0/rpg/NDATA/rp-node", spbtest.Payload(now, 0, -1, spbtest.Alias(1, 1.5), spbtest.Alias(2, 2.5)))
	early := e.deadLetterIDs(1)[0]

	// Before the birth the message still does not resolve: nothing is sent.
	code, _, errOut := e.cli("replay", "--id", fmt.Sprint(early), "--wait", "10s")
	if code == 0 || !strings.Contains(errOut, "still") {
		t.Errorf("replay before the birth: exit %d, stderr %q; want a refusal saying it is still unresolved", code, errOut)
	}

	pub("spBv1.0/rpg/NBIRTH/rp-node", spbtest.Payload(now, 0, 1, spbtest.Named("temp", 1, 20), spbtest.Named("pressure", 2, 1)))
	pub("spBv1.0/rpg/NDATA/rp-node", spbtest.Payload(now, 1, -1, spbtest.Alias(1, 3.5), spbtest.Alias(3, 4.5)))
	partial := e.deadLetterIDs(2)[1]
	// The edge node answers the Rebirth request with a birth that gives
	// alias 3.
	pub("spBv1.0/rpg/NBIRTH/rp-node", spbtest.Payload(now, 0, 2, spbtest.Named("temp", 1, 20), spbtest.Named("pressure", 2, 1), spbtest.Named("flow", 3, 0)))

	v3, err := mqtttest.ConnectV3(t, "tcp://"+addr, "rp-v3")
	if err != nil {
		t.Fatal(err)
	}
	if tok := v3.Publish("devices/rp-dev/readings", 1, false, "not a number"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT 3.1.1 publish: %v", tok.Error())
	}
	invalid := e.deadLetterIDs(3)[2]
	e.settle()
	if n := e.metricRows(dev, "temp", 1.5) + e.metricRows(dev, "temp", 3.5) + e.metricRows(dev, "flow", 4.5); n != 0 {
		t.Fatalf("%d values of dead-lettered messages landed before any replay", n)
	}

	code, out, errOut := e.cli("list", "--json")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errOut)
	}
	rows := listJSON(t, out)
	if r := rows[invalid]; r.Source != "edge" || r.Topic == nil || *r.Topic != "devices/rp-dev/readings" || r.ClientID == nil ||
		*r.ClientID != "rp-v3" || string(r.Raw) != "not a number" || r.Status != "pending" {
		t.Errorf("list --json of the invalid payload's dead letter: %+v", r)
	}
	if r := rows[early]; r.Source != "edge" || r.EdgeKind == nil || *r.EdgeKind != ingest.KindSparkplug || r.DeviceID == nil || *r.DeviceID != dev {
		t.Errorf("list --json of the early NDATA's dead letter: %+v", r)
	}

	// The invalid payload stays invalid: the replay says so, and sends nothing.
	code, _, errOut = e.cli("replay", "--id", fmt.Sprint(invalid))
	if code == 0 || !strings.Contains(errOut, fmt.Sprintf("row %d", invalid)) {
		t.Errorf("replay of an invalid payload: exit %d, stderr %q; want it refused", code, errOut)
	}

	// Two runs while no bridge commits (as after a crash of the first, or
	// two at once): both send, and the bridge lands each row's readings
	// once.
	e.stopBridge()
	ids := fmt.Sprintf("%d,%d", early, partial)
	for range 2 {
		if code, out, errOut := e.cli("replay", "--id", ids, "--wait", "0"); code != 0 {
			t.Fatalf("replay after the rebirth: exit %d\n%s%s", code, out, errOut)
		}
	}
	e.startBridge()
	e.settle()
	if code, _, errOut := e.cli("replay", "--id", ids); code == 0 || !strings.Contains(errOut, "replayed already") {
		t.Errorf("a third replay: exit %d, stderr %q; want refused as replayed already", code, errOut)
	}
	for _, c := range []struct {
		metric string
		value  float64
	}{{"temp", 1.5}, {"pressure", 2.5}, {"temp", 3.5}, {"flow", 4.5}} {
		if n := e.metricRows(dev, c.metric, c.value); n != 1 {
			t.Errorf("%s = %v landed %d times, want once", c.metric, c.value, n)
		}
	}
	code, out, _ = e.cli("list")
	if code != 0 || strings.Contains(out, fmt.Sprintf("\n%d ", early)) || strings.Contains(out, fmt.Sprintf("\n%d ", partial)) {
		t.Errorf("list after the replay still shows the replayed rows as pending (exit %d):\n%s", code, out)
	}
}
