package subscriber_test

import (
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"firehose/internal/spbtest"
	"firehose/internal/testenv"
	"firehose/mqttmsg"
	"firehose/sparkplug"
	"firehose/stream"
	"firehose/subscriber"
)

// TestIntegrationSubscriberAsksForRebirth: a Sparkplug B NDATA that comes
// before its edge node's birth is kept whole as a dead letter, and the
// subscriber publishes a Rebirth request (NCMD Node Control/Rebirth) for
// that node to the broker, where the edge node, subscribed to its
// commands, receives it.
func TestIntegrationSubscriberAsksForRebirth(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	rd, err := mqttmsg.New(mqttmsg.Config{Sparkplug: sparkplug.NewTracker(stream.NewSparkplugStore(rdb, prefix))})
	if err != nil {
		t.Fatal(err)
	}
	cfg := subscriber.Config{ClientID: "sub-" + testenv.ID(), Topics: []string{"spBv1.0/#"}}
	h := newHarnessWith(t, cfg, stream.ProducerConfig{}, subscriber.NewDecoder(rd, cfg.ClientID))
	h.start()

	// The edge node listens for its commands.
	got := make(chan []byte, 4)
	opts := pahov3.NewClientOptions().AddBroker(h.broker.URL()).SetClientID("node-" + testenv.ID()).SetCleanSession(true).SetAutoReconnect(false)
	node := pahov3.NewClient(opts)
	if tok := node.Connect(); tok.Wait() && tok.Error() != nil {
		t.Fatalf("edge node connect: %v", tok.Error())
	}
	defer node.Disconnect(100)
	if tok := node.Subscribe("spBv1.0/g1/NCMD/n1", 0, func(_ pahov3.Client, m pahov3.Message) { got <- m.Payload() }); tok.Wait() && tok.Error() != nil {
		t.Fatalf("edge node subscribe: %v", tok.Error())
	}
	// Its DATA before any birth.
	if tok := node.Publish("spBv1.0/g1/NDATA/n1", 1, false, spbtest.Payload(time.Now(), 0, -1, spbtest.Alias(1, 21.5))); tok.Wait() && tok.Error() != nil {
		t.Fatalf("publish NDATA: %v", tok.Error())
	}
	payload := <-got // no time bound: the test's deadline is the bound
	if !rebirthMetric(payload) {
		t.Errorf("NCMD payload %x names no Node Control/Rebirth metric", payload)
	}
	testenv.Await(t, func() bool { return acks(t, h.reg, "dead_letter") == 1 }, "the NDATA before its birth was not acknowledged as a dead letter: %v", acks(t, h.reg, "dead_letter"))
	if n := counter(t, h.reg, "firehose_subscriber_sparkplug_rebirths_total"); n != 1 {
		t.Errorf("rebirth requests counted %v, want 1", n)
	}
}

// rebirthMetric says whether a Sparkplug B payload has a metric named
// "Node Control/Rebirth".
func rebirthMetric(b []byte) bool {
	p, err := sparkplug.DecodePayload(b)
	if err != nil {
		return false
	}
	for _, m := range p.Metrics {
		if m.Name == "Node Control/Rebirth" {
			return true
		}
	}
	return false
}

// counter is an unlabelled counter of reg, 0 before it counts.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
