package mqtttest

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	paholog "github.com/eclipse/paho.golang/paho/log"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// ConnectV3 connects an MQTT 3.1.1 client to url (tcp://, ssl://, ws://):
// clean session, no automatic reconnection, keep-alive 30s. mods adjust the
// options. The client disconnects when the test ends.
func ConnectV3(t testing.TB, url, clientID string, mods ...func(*mqtt.ClientOptions)) (mqtt.Client, error) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(clientID).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectTimeout(time.Minute).SetWriteTimeout(10 * time.Second).SetKeepAlive(30 * time.Second)
	for _, m := range mods {
		m(o)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	// Generous: a bcrypt check at full cost takes seconds under the race
	// detector on a loaded machine; tests assert the answer, not its speed.
	if !tok.WaitTimeout(75 * time.Second) {
		c.Disconnect(0)
		return nil, errors.New("connect: no answer within 75s")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

// NoPinger is a paho.golang Pinger that never pings; give it as
// ClientConfig.PingHandler. paho.golang's default pinger sends a PINGREQ
// from a goroutine of its own, at once after CONNECT, while a publish may be
// writing its parts: on a TLS or WebSocket connection (which writes each
// part separately) the two interleave and the broker reads a malformed
// packet. Test connections live well under their keep-alive.
type NoPinger struct{}

// Run waits for ctx to end.
func (NoPinger) Run(ctx context.Context, _ net.Conn, _ uint16) error {
	<-ctx.Done()
	return nil
}

func (NoPinger) PacketSent()             {}
func (NoPinger) PacketReceived()         {}
func (NoPinger) PingResp()               {}
func (NoPinger) SetDebug(paholog.Logger) {}
