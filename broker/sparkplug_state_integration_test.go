package broker

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"google.golang.org/protobuf/encoding/protowire"

	"firehose/internal/testenv"
	"firehose/sparkplug"
	"firehose/stream"
)

// spbLong encodes a Sparkplug metric: name (if not ""), alias, Int64, value.
func spbLong(name string, alias uint64, v int64) []byte {
	var m []byte
	if name != "" {
		m = protowire.AppendString(protowire.AppendTag(m, 1, protowire.BytesType), name)
	}
	m = protowire.AppendVarint(protowire.AppendTag(m, 2, protowire.VarintType), alias)
	m = protowire.AppendVarint(protowire.AppendTag(m, 4, protowire.VarintType), uint64(sparkplug.Int64))
	return protowire.AppendVarint(protowire.AppendTag(m, 11, protowire.VarintType), uint64(v))
}

// spbMsg encodes a Sparkplug payload of now, seq (if >= 0) and metrics.
func spbMsg(seq int, metrics ...[]byte) []byte {
	p := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), uint64(time.Now().UnixMilli()))
	for _, m := range metrics {
		p = protowire.AppendBytes(protowire.AppendTag(p, 2, protowire.BytesType), m)
	}
	if seq >= 0 {
		p = protowire.AppendVarint(protowire.AppendTag(p, 3, protowire.VarintType), uint64(seq))
	}
	return p
}

// sparkplugStack is a stack with a bridge whose Sparkplug state is in Redis,
// as firehose serve has it.
func sparkplugStack(t *testing.T, cfg Config, pc stream.ProducerConfig) (*testStack, *stream.SparkplugStore) {
	rdb, prefix := testenv.Redis(t)
	store := stream.NewSparkplugStore(rdb, "{"+prefix+":spb}:")
	cfg.Sparkplug, cfg.SparkplugStore = true, store
	pc.StateBytesKey = store.BytesKey()
	return newStack(t, stackOptions{bridge: true, rdb: rdb, prefix: prefix, cfg: cfg, producer: pc}), store
}

// TestIntegrationSparkplugReconnectTakeover is issue 16's hole 1: an edge
// node reconnects many times with a clean session and its NDEATH (bdSeq i)
// as its will, taking over its previous connection, whose will (NDEATH
// bdSeq i-1) the broker publishes on another goroutine while the new
// connection publishes NBIRTH (bdSeq i) and NDATA at QoS 1. Every
// acknowledged NDATA value lands, and no Rebirth request goes out: a stale
// death never wipes the new birth.
func TestIntegrationSparkplugReconnectTakeover(t *testing.T) {
	t.Parallel()
	s, _ := sparkplugStack(t, Config{}, stream.ProducerConfig{})
	const rounds = 300
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	acked, start := 0, time.Now()
	for i := 1; i <= rounds; i++ {
		bd := int64(i % 256)
		conn, err := net.Dial("tcp", s.tcpAddr())
		if err != nil {
			t.Fatal(err)
		}
		edge, _, err := connectV5Conn(t, conn, &paho.Connect{ClientID: "edge-rc", CleanStart: true, KeepAlive: 30,
			WillMessage: &paho.WillMessage{Topic: "spBv1.0/rc/NDEATH/edge", QoS: 1, Payload: spbMsg(-1, spbLong(sparkplug.BdSeqMetric, 0, bd))}})
		if err != nil {
			t.Fatalf("round %d: connect: %v", i, err)
		}
		birth := spbMsg(0, spbLong(sparkplug.BdSeqMetric, 0, bd), spbLong("temp", 1, -1))
		if resp, err := edge.Publish(ctx, &paho.Publish{Topic: "spBv1.0/rc/NBIRTH/edge", QoS: 1, Payload: birth}); resp == nil || resp.ReasonCode != 0 {
			t.Fatalf("round %d: NBIRTH: %+v %v", i, resp, err)
		}
		data := spbMsg(1, spbLong("", 1, int64(i)))
		if resp, err := edge.Publish(ctx, &paho.Publish{Topic: "spBv1.0/rc/NDATA/edge", QoS: 1, Payload: data}); resp != nil && resp.ReasonCode == 0 {
			acked++
		} else {
			t.Logf("round %d: NDATA not acknowledged: %+v %v", i, resp, err)
		}
	}
	// The wills of the connections taken over land (mochi publishes most
	// of them: when the old connection's read loop ends without an error
	// it drops the will).
	deaths := func() int {
		return s.count("SELECT count(*) FROM readings WHERE device_id = 'rc/edge' AND metric = 'sparkplug/NDEATH'")
	}
	testenv.Eventually(t, time.Minute, func() bool { return deaths() >= rounds/2 }, "only %d wills landed", deaths())
	s.settle(0, time.Minute)
	landed := s.count("SELECT count(DISTINCT reading) FROM readings WHERE device_id = 'rc/edge' AND metric = 'temp' AND reading >= 1")
	stale := s.count("SELECT count(*) FROM readings WHERE device_id = 'rc/edge' AND metric = 'sparkplug/NDEATH' AND payload ? 'stale'")
	t.Logf("%d rounds in %v: %d NDATA acknowledged, %d landed; %d wills, %d of them stale; %.0f rebirth requests", rounds,
		time.Since(start).Round(time.Millisecond), acked, landed, deaths(), stale, s.metric("firehose_mqtt_sparkplug_rebirths_total"))
	if acked != rounds {
		t.Errorf("%d of %d NDATA acknowledged", acked, rounds)
	}
	if landed != acked {
		t.Errorf("%d of %d acknowledged NDATA values landed: a stale will wiped a new birth", landed, acked)
	}
	if n := s.metric("firehose_mqtt_sparkplug_rebirths_total"); n != 0 {
		t.Errorf("%v Rebirth requests, want none", n)
	}
	if stale == 0 {
		t.Error("no will came after its successor's birth: the race was not exercised")
	}
}

// bigBirth is an NBIRTH of bdSeq 0 and n metrics with 250-byte names
// (ingest.MaxMetric is 255).
func bigBirth(n int) []byte {
	ms := [][]byte{spbLong(sparkplug.BdSeqMetric, 0, 0)}
	for i := range n {
		name := fmt.Sprintf("%04d", i) + strings.Repeat("m", 246)
		ms = append(ms, spbLong(name, uint64(i+1), int64(i)))
	}
	return spbMsg(0, ms...)
}

// TestIntegrationSparkplugStateBounded is issue 16's hole 5: one client
// publishing NBIRTHs of about 50 KB under invented group names gets only
// --sparkplug-max-nodes of them stored, the others refused with 0x97; the
// state in Redis stays bounded and accounted (firehose_sparkplug_state_bytes);
// when the client's connection ends its nodes' state gets a TTL; a birth
// larger than --sparkplug-max-node-bytes is refused with 0x95.
func TestIntegrationSparkplugStateBounded(t *testing.T) {
	t.Parallel()
	s, store := sparkplugStack(t, Config{SparkplugMaxNodeBytes: 200 << 10}, stream.ProducerConfig{})
	ctx := t.Context()
	flood := mustConnectV5(t, s.tcpAddr(), "flood")
	birth := bigBirth(200)
	stored, refused := 0, 0
	const births = 40
	for i := range births {
		resp, err := flood.Publish(ctx, &paho.Publish{Topic: "spBv1.0/invented" + strconv.Itoa(i) + "/NBIRTH/e", QoS: 1, Payload: birth})
		switch {
		case resp != nil && resp.ReasonCode == 0:
			stored++
		case resp != nil && resp.ReasonCode == 0x97:
			refused++
		default:
			t.Fatalf("NBIRTH %d: %+v %v", i, resp, err)
		}
	}
	if stored != DefaultSparkplugMaxNodes || refused != births-DefaultSparkplugMaxNodes {
		t.Errorf("%d births stored, %d refused; want %d stored (--sparkplug-max-nodes), the rest refused", stored, refused, DefaultSparkplugMaxNodes)
	}
	// Another credential is not held back by this one's quota.
	other := mustConnectV5(t, s.tcpAddr(), "other")
	if resp, err := other.Publish(ctx, &paho.Publish{Topic: "spBv1.0/plant/NBIRTH/e", QoS: 1, Payload: spbMsg(0, spbLong("temp", 1, 1))}); resp == nil || resp.ReasonCode != 0 {
		t.Fatalf("another client's NBIRTH: %+v %v", resp, err)
	}
	// A birth past --sparkplug-max-node-bytes (a DBIRTH growing the node).
	if resp, err := other.Publish(ctx, &paho.Publish{Topic: "spBv1.0/plant/DBIRTH/e/d", QoS: 1, Payload: bigBirth(200)}); resp != nil && resp.ReasonCode != 0 {
		t.Fatalf("DBIRTH: %+v %v", resp, err)
	}
	if resp, err := other.Publish(ctx, &paho.Publish{Topic: "spBv1.0/plant/DBIRTH/e/d2", QoS: 1, Payload: bigBirth(200)}); resp == nil || resp.ReasonCode != 0x95 {
		t.Errorf("DBIRTH past --sparkplug-max-node-bytes: %+v %v, want 0x95", resp, err)
	}
	// Redis holds the state of the nodes stored, no more.
	rdb := s.rdb
	nodes, err := rdb.Keys(ctx, "{"+s.streams.Prefix+":spb}:invented*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != DefaultSparkplugMaxNodes {
		t.Errorf("%d node hashes in Redis, want %d", len(nodes), DefaultSparkplugMaxNodes)
	}
	total, err := rdb.Get(ctx, store.BytesKey()).Int64()
	if err != nil || total < int64(DefaultSparkplugMaxNodes)*50*1000 || total > int64(DefaultSparkplugMaxNodes+1)*(200<<10) {
		t.Errorf("state account %d bytes, %v", total, err)
	}
	testenv.Eventually(t, time.Minute, func() bool {
		return s.metric("firehose_sparkplug_state_bytes") == float64(total)
	}, "firehose_sparkplug_state_bytes = %v, want %d", s.metric("firehose_sparkplug_state_bytes"), total)
	// The flooding client goes: its nodes' state expires.
	if err := flood.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func() bool {
		for _, k := range nodes {
			if rdb.PTTL(ctx, k).Val() <= 0 {
				return false
			}
		}
		return true
	}, "the state of a disconnected client's nodes has no TTL")
	if ttl := rdb.PTTL(ctx, store.Key("plant/e")).Val(); ttl != -1 {
		t.Errorf("a connected node's state: TTL %v, want none", ttl)
	}
}

// TestIntegrationSparkplugStateCountsTowardHighWater: Sparkplug state is
// Redis memory the backlog would otherwise have: past --high-water (at 58
// bytes a reading) readings are refused with the streams empty, and taken
// again once the edge nodes die.
func TestIntegrationSparkplugStateCountsTowardHighWater(t *testing.T) {
	t.Parallel()
	s, _ := sparkplugStack(t, Config{}, stream.ProducerConfig{HighWater: 5000}) // 290 KB of state
	edge := mustConnectV5(t, s.tcpAddr(), "edge")
	// About 110 KB of state each: the third birth's own state takes the
	// account past the mark, so whether the third is taken depends on
	// whether a backlog measurement ran between its state write and its
	// rows (on a loaded machine it may): refused (0x97) is then the point
	// being made, not a failure. Two are taken in any case.
	births := 0
	for i := range 3 {
		code := publishV5(t, edge, "spBv1.0/hw/NBIRTH/e"+strconv.Itoa(i), 1, string(bigBirth(200)))
		if code == 0x97 && i == 2 {
			break
		}
		if code != 0 {
			t.Fatalf("NBIRTH %d: %#x", i, code)
		}
		births++
	}
	s.settle(births*202, time.Minute)
	testenv.Eventually(t, time.Minute, func() bool {
		return publishV5(t, edge, "devices/d1/readings", 1, `{"reading": 1}`) == 0x97
	}, "readings accepted with the Sparkplug state over the high-water mark")
	if n := s.streamLen(); n != 0 {
		t.Errorf("%d readings in the streams, want none: the state alone is over the mark", n)
	}
	for i := range 3 {
		if code := publishV5(t, edge, "spBv1.0/hw/NDEATH/e"+strconv.Itoa(i), 1, string(spbMsg(-1, spbLong(sparkplug.BdSeqMetric, 0, 0)))); code != 0 && code != 0x97 {
			t.Fatalf("NDEATH %d: %#x", i, code)
		}
	}
	testenv.Eventually(t, time.Minute, func() bool {
		return publishV5(t, edge, "devices/d1/readings", 1, `{"reading": 2}`) == 0
	}, "readings still refused after every edge node died")
}
