package broker

import (
	"slices"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// brokerHooks are the hooks New added to mochi, in their order.
func brokerHooks(b *Broker) []mqtt.Hook { return []mqtt.Hook{b.auth, b.ingest, b.bounds, b.flow} }

// TestHooksProvide pins which hook provides which mochi event, in the order
// mochi calls them. mochi asks OnACLCheck and OnConnectAuthenticate of each
// provider until one says yes, and passes the packet OnPublish returns to
// the next provider: these have one provider each, so a refusal stays final
// and a publish costs one hook call. Where two hooks share an event, the
// order is the one the single hook had before the split.
func TestHooksProvide(t *testing.T) {
	b, err := New(Config{Addr: "127.0.0.1:0"}, nopProducer{}, discard, newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		event byte
		want  []string // hook ids, in mochi's calling order
	}{
		{"OnConnect", mqtt.OnConnect, []string{"firehose-auth"}},
		{"OnConnectAuthenticate", mqtt.OnConnectAuthenticate, []string{"firehose-auth"}},
		{"OnACLCheck", mqtt.OnACLCheck, []string{"firehose-auth"}},
		{"OnSubscribed", mqtt.OnSubscribed, []string{"firehose-auth"}},
		{"OnWill", mqtt.OnWill, []string{"firehose-auth", "firehose-bounds"}},
		{"OnPublish", mqtt.OnPublish, []string{"firehose"}},
		{"OnWillSent", mqtt.OnWillSent, []string{"firehose"}},
		{"OnDisconnect", mqtt.OnDisconnect, []string{"firehose", "firehose-bounds", "firehose-flow"}},
		{"OnPacketEncode", mqtt.OnPacketEncode, []string{"firehose-bounds", "firehose-flow"}},
		{"OnSessionEstablish", mqtt.OnSessionEstablish, []string{"firehose-bounds", "firehose-flow"}},
		{"OnSessionEstablished", mqtt.OnSessionEstablished, []string{"firehose-auth", "firehose-flow"}},
		{"OnClientExpired", mqtt.OnClientExpired, []string{"firehose-bounds"}},
		{"OnRetainMessage", mqtt.OnRetainMessage, []string{"firehose-bounds"}},
		{"OnRetainedExpired", mqtt.OnRetainedExpired, []string{"firehose-bounds"}},
		{"OnPacketRead", mqtt.OnPacketRead, []string{"firehose-flow"}},
		{"OnPublished", mqtt.OnPublished, nil},
		{"OnQosPublish", mqtt.OnQosPublish, nil},
		{"OnSelectSubscribers", mqtt.OnSelectSubscribers, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, h := range brokerHooks(b) {
				if h.Provides(tc.event) {
					got = append(got, h.ID())
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("provided by %v, want %v", got, tc.want)
			}
		})
	}
}
