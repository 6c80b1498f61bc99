package pahostore

import (
	"io"
	"sync"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// TestResumeWhileWriting does what paho does on a reconnect while the old
// connection's writer still writes a stored PUBLISH: under -race, any
// sharing of the packet between the two is reported.
func TestResumeWhileWriting(t *testing.T) {
	s := New()
	s.Open()
	defer s.Close()
	pub := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pub.Qos, pub.MessageID, pub.TopicName, pub.Payload = 1, 7, "devices/d1/readings", []byte(`{"reading":1}`)
	s.Put("o.7", pub)

	var wg sync.WaitGroup
	wg.Go(func() { // the old connection's writer
		for range 100 {
			if err := pub.Write(io.Discard); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Go(func() { // resume on the new connection
		for range 100 {
			p := s.Get("o.7").(*packets.PublishPacket)
			p.Dup = true
			if err := p.Write(io.Discard); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()

	got := s.Get("o.7").(*packets.PublishPacket)
	if got == pub || got.Dup || got.MessageID != 7 || string(got.Payload) != `{"reading":1}` {
		t.Fatalf("stored packet: %v (same as put: %t)", got, got == pub)
	}
	if s.Get("o.8") != nil {
		t.Fatal("Get of a missing key is not nil")
	}
}
