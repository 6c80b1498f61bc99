package subscriber_test

import (
	"net"
	"testing"
	"time"

	"firehose/subscriber"
)

// TestIntegrationSubscriberQoS2PublishResentAfterPubrel: a broker resends,
// on the next connection, the PUBLISH of a QoS 2 message whose PUBREL the
// subscriber had answered (Mosquitto 2.0 does so after a restart from its
// persistence file when the PUBCOMP came too late to be saved; MQTT forbids
// it). The resend must be recognised, not stored again; a new message with
// the released packet id is still stored, whether its first sending was
// lost (DUP set, other content) or not (DUP unset, even with equal content).
func TestIntegrationSubscriberQoS2PublishResentAfterPubrel(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h := newHarness(t, subscriber.Config{Brokers: []string{"tcp://" + ln.Addr().String()}, QoS: 2, Protocol: subscriber.Protocol311})

	script, hold := make(chan error, 1), make(chan struct{})
	defer close(hold)
	go func() {
		// The first connection: a message is published, released and
		// completed; then the connection breaks.
		b, err := acceptSession(ln, false)
		if err != nil {
			script <- err
			return
		}
		if err := b.exchange(2, 7, false, "1"); err != nil {
			script <- err
			return
		}
		b.conn.Close()
		// The second: the broker resends the completed message (the
		// violation), then sends two new messages with the same packet
		// id: one resent after a lost first sending, one sent first.
		if b, err = acceptSession(ln, true); err != nil {
			script <- err
			return
		}
		defer b.conn.Close()
		for _, m := range []struct {
			dup     bool
			payload string
		}{{true, "1"}, {true, "2"}, {false, "1"}} {
			if err := b.exchange(2, 7, m.dup, m.payload); err != nil {
				script <- err
				return
			}
		}
		script <- nil
		<-hold // the connection stays up until the test ends
	}()
	h.start()
	select {
	case err := <-script:
		if err != nil {
			t.Fatalf("fake broker: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("fake broker: the script did not finish in 30s")
	}
	if got := h.stored(); got != 3 {
		t.Errorf("stored %d readings, want 3: the message resent after its PUBREL was stored again", got)
	}
	if got := acks(t, h.reg, "redelivered"); got != 1 {
		t.Errorf("%v messages acknowledged as redelivered, want 1 (the resend after PUBREL)", got)
	}
}
