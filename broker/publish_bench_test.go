package broker

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

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
