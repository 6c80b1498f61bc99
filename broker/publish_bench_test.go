package broker

import (
	"context"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"firehose/ingest"
	"firehose/internal/mqtttest"
)

// countingProducer stores nothing and counts the readings it was given.
type countingProducer struct{ n atomic.Int64 }

func (p *countingProducer) Add(_ context.Context, rs []ingest.Reading) error {
	p.n.Add(int64(len(rs)))
	return nil
}

func (p *countingProducer) Enqueue(ingest.Reading) error { p.n.Add(1); return nil }

func (p *countingProducer) AddDeadLetter(context.Context, ingest.DeadLetter) error { return nil }

// BenchmarkPublish measures the broker's cost per publish on the readings
// topic, through mochi's hooks to a producer that stores nothing: MQTT 5
// QoS 1 one at a time (each waits for its PUBACK), and QoS 0 sent back to
// back (the broker's CPU per publish).
func BenchmarkPublish(b *testing.B) {
	p := &countingProducer{}
	brk, err := New(Config{Addr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second}, p, discard, newRegistry())
	if err != nil {
		b.Fatal(err)
	}
	if err := brk.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = brk.Run(ctx) }()
	defer func() { cancel(); <-done }()

	conn, err := net.DialTimeout("tcp", brk.Addr("tcp").String(), 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: 15 * time.Second, PingHandler: mqtttest.NoPinger{}})
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	if _, err := c.Connect(cctx, &paho.Connect{ClientID: "bench-1", CleanStart: true, KeepAlive: 30}); err != nil {
		b.Fatal(err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	payload := []byte(`{"reading": 21.5, "ts": "2026-11-28T08:00:00.123Z"}`)

	b.Run("qos1-sequential", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			resp, err := c.Publish(context.Background(), &paho.Publish{Topic: "devices/bench-1/readings", QoS: 1, Payload: payload})
			if err != nil || resp.ReasonCode != 0 {
				b.Fatalf("publish: %v %v", resp, err)
			}
		}
	})
	b.Run("qos0-pipelined", func(b *testing.B) {
		b.ReportAllocs()
		start := p.n.Load()
		n := int64(b.N)
		// b.N, not b.Loop: the wait for the broker to take the last
		// publishes must be timed too.
		for range b.N {
			if _, err := c.Publish(context.Background(), &paho.Publish{Topic: "devices/bench-1/readings", QoS: 0, Payload: payload}); err != nil {
				b.Fatal(err)
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for p.n.Load()-start < n {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d readings arrived", p.n.Load()-start, n)
			}
			time.Sleep(100 * time.Microsecond)
		}
	})
}

// BenchmarkHookDispatch calls the broker's hooks, through mochi's own
// dispatch (mqtt.Hooks), with the events mochi raises for one MQTT 5 QoS 1
// publish without subscribers: read, ACL check, OnPublish, the PUBACK's
// inflight, encoding and sending, completion. On the readings topic the
// reading is decoded and handed to a producer that stores nothing; on
// another topic OnPublish passes it, so what is left is mochi asking each
// hook what it provides.
func BenchmarkHookDispatch(b *testing.B) {
	p := &countingProducer{}
	brk, err := New(Config{Addr: "127.0.0.1:0"}, p, discard, newRegistry())
	if err != nil {
		b.Fatal(err)
	}
	hs := &mqtt.Hooks{Log: discard}
	for _, h := range brokerHooks(brk) {
		if err := hs.Add(h, nil); err != nil {
			b.Fatal(err)
		}
	}
	cl := brk.srv.NewClient(nil, "bench", "bench-1", false)
	cl.Properties.ProtocolVersion = 5
	for _, bc := range []struct{ name, topic string }{
		{"readings", "devices/bench-1/readings"},
		{"other-topic", "chat/bench-1"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			pk := packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
				TopicName:   bc.topic,
				PacketID:    7,
				Payload:     []byte(`{"reading": 21.5, "ts": "2026-11-28T08:00:00.123Z"}`),
			}
			ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 7}
			b.ReportAllocs()
			// CPU time of this thread, beside the wall time: on a machine
			// shared with other work, it is the steadier of the two.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0, n := threadCPU(), 0
			for b.Loop() {
				n++
				in, _ := hs.OnPacketRead(cl, pk)
				if !hs.OnACLCheck(cl, in.TopicName, true) {
					b.Fatal("ACL check refused")
				}
				out, err := hs.OnPublish(cl, in)
				if err != nil {
					b.Fatal(err)
				}
				hs.OnQosPublish(cl, ack, 0, 0)
				hs.OnPacketSent(cl, hs.OnPacketEncode(cl, ack), nil)
				hs.OnQosComplete(cl, ack)
				hs.OnPublished(cl, out)
				hs.OnPacketProcessed(cl, in, nil)
			}
			if cpu1 := threadCPU(); cpu0 > 0 && cpu1 > 0 {
				b.ReportMetric(float64(cpu1-cpu0)/float64(n), "cpu-ns/op")
			}
		})
	}
}

// threadCPU is the CPU time the calling thread used, in nanoseconds (Linux
// RUSAGE_THREAD), or 0 where that is not available.
func threadCPU() int64 {
	const rusageThread = 1
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
