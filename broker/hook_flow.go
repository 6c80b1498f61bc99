package broker

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// flowHook keeps to the Receive Maximum of each MQTT 5 client (MQTT 5 4.9:
// at most that many QoS 1/2 PUBLISHes sent to it and not yet acknowledged
// by its PUBACK or PUBCOMP) in place of mochi's own send quota, which
// v2.7.9 gets wrong in three ways:
//
//   - after each packet a client sends, mochi looks for a message it held
//     back for want of quota (server.go processPacket, Inflight.NextImmediate)
//     while the client has messages in flight and quota left: NextImmediate
//     read-locks the session's in-flight map and calls GetAll, which
//     read-locks it again. A publisher's Inflight.Set asking for the write
//     lock in between holds the second read lock back, and the writer waits
//     for the first: both wait for ever. The subscriber's connection reads
//     nothing more, every device publishing to it hangs after its PUBACK
//     (the message acknowledged, never delivered), and so does mochi's
//     event loop (clearExpiredInflights). With 50 devices at QoS 1 and one
//     subscriber this took seconds to minutes;
//   - a held-back message it then sends is deleted from the in-flight map
//     (not resent after a reconnect), so its PUBACK, not found, gives no
//     quota back: each costs the client one unit of quota for good, and
//     past Receive Maximum of them mochi sends nothing more until the client
//     reconnects;
//   - publishToClient reads the quota and takes from it in two steps,
//     racing with the PUBACKs and the other publishers.
//
// So mochi's quota is set to none (Receive Maximum 0: mochi sends
// everything, bounded by --mqtt-max-inflight per session), and this hook
// counts the QoS 1/2 PUBLISHes written to the client by packet id. When
// Receive Maximum of them await their acknowledgement, the client's write
// loop waits, in OnPacketEncode, for a PUBACK, PUBCOMP or failed PUBREC to
// free a place. What it has not written waits in the client's outbound
// queue (--mqtt-max-writes-pending), in flight for mochi all the same
// (--mqtt-max-inflight; resent after a reconnect). mochi's writes are
// unbuffered for this (Options.ClientNetWriteBufferSize 1): a write loop
// waiting with bytes still in mochi's buffer would keep from the client the
// very messages whose acknowledgements it waits for.
//
// On a resumed session mochi resends everything the session holds at once,
// before it reads the client's first packet, so those resends cannot wait:
// past Receive Maximum if the session held more. MQTT 3.1.1 clients, and
// MQTT 5 clients that name no Receive Maximum (65,535), get what mochi sends
// them, up to --mqtt-max-inflight.
type flowHook struct {
	mqtt.HookBase
	maxInflight int
	wins        sync.Map // *mqtt.Client -> *window
}

func newFlowHook(maxInflight int) *flowHook { return &flowHook{maxInflight: maxInflight} }

func (h *flowHook) ID() string { return "firehose-flow" }

// Provides is a switch, not mochi's bytes.Contains: mochi asks every hook
// for every event, several times per publish.
func (h *flowHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnPacketEncode, mqtt.OnPacketRead, mqtt.OnDisconnect:
		return true
	}
	return false
}

// OnSessionEstablish turns mochi's send quota off for the client: mochi
// sets it from the client's Receive Maximum when it parses the CONNECT and
// again when it hands over a session, which comes after this hook.
func (h *flowHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	cl.Properties.Props.ReceiveMaximum = 0
	cl.State.Inflight.ResetSendQuota(0)
}

// OnSessionEstablished starts counting for an MQTT 5 client with a Receive
// Maximum, from what its session already has in flight: the messages
// resent on a resumed session and any sent since the client was added.
// The hook runs after those writes and before mochi reads the client's
// first packet, so no acknowledgement is missed; mochi calls OnDisconnect
// for every client that gets this far.
func (h *flowHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	rm := int(pk.Properties.ReceiveMaximum)
	if cl.Properties.ProtocolVersion < 5 || rm == 0 {
		return
	}
	w := newWindow(min(rm, h.maxInflight), cl)
	for _, m := range cl.State.Inflight.GetAll(false) {
		if outbound(m) {
			w.out[m.PacketID] = struct{}{}
		}
	}
	h.wins.Store(cl, w)
}

// outbound reports whether m, in a session's in-flight map, is a message
// to the client awaiting its acknowledgement (a PUBLISH, or the PUBREL of
// one at QoS 2), not the state of one of the client's own QoS 2 publishes.
func outbound(m packets.Packet) bool {
	return m.FixedHeader.Type == packets.Publish && m.FixedHeader.Qos > 0 || m.FixedHeader.Type == packets.Pubrel
}

// OnPacketEncode waits, in the client's write loop, until a QoS 1/2
// PUBLISH may be sent within the client's Receive Maximum. A resend (DUP:
// mochi resends a resumed session's messages before the client's packets
// are read) never waits.
func (h *flowHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos == 0 {
		return pk
	}
	if w := h.window(cl); w != nil {
		w.acquire(pk.PacketID, pk.FixedHeader.Dup)
	}
	return pk
}

// OnPacketRead frees the place of a message the client acknowledged: by
// PUBACK (QoS 1), PUBCOMP (QoS 2), or a PUBREC with a failure reason code
// (QoS 2 ends there).
func (h *flowHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubcomp:
	case packets.Pubrec:
		if pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			return pk, nil
		}
	default:
		return pk, nil
	}
	if w := h.window(cl); w != nil {
		w.release(pk.PacketID)
	}
	return pk, nil
}

// OnDisconnect ends the client's count and any wait of its write loop: a
// new connection starts with a full quota (MQTT 5 4.9), counted afresh.
func (h *flowHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if w, ok := h.wins.LoadAndDelete(cl); ok {
		w.(*window).close()
	}
}

func (h *flowHook) window(cl *mqtt.Client) *window {
	if w, ok := h.wins.Load(cl); ok {
		return w.(*window)
	}
	return nil
}

// windowCheck is how often a write loop waiting for a place looks again at
// what it counts: whether the client is still connected (mochi closes it
// before OnDisconnect, which ends the wait anyway), and whether mochi
// dropped a counted message (expired, or its session cleared), which no
// acknowledgement will free.
const windowCheck = time.Second

// window counts the QoS 1/2 messages written to one connection and not yet
// acknowledged. One goroutine waits in it, the connection's write loop.
type window struct {
	cl   *mqtt.Client
	max  int
	free chan struct{} // a place was freed; capacity 1
	done chan struct{} // closed when the connection ended

	mu     sync.Mutex
	out    map[uint16]struct{} // packet ids written, not acknowledged
	closed bool
}

func newWindow(max int, cl *mqtt.Client) *window {
	return &window{cl: cl, max: max, free: make(chan struct{}, 1), done: make(chan struct{}), out: map[uint16]struct{}{}}
}

// acquire counts the message id about to be written, waiting first, unless
// resend, while max messages are counted. A message counted already (a
// resend, or one counted from the session) takes no new place.
func (w *window) acquire(id uint16, resend bool) {
	var t *time.Timer
	for {
		w.mu.Lock()
		_, counted := w.out[id]
		if counted || resend || w.closed || len(w.out) < w.max {
			w.out[id] = struct{}{}
			w.mu.Unlock()
			if t != nil {
				t.Stop()
			}
			return
		}
		w.mu.Unlock()
		if t == nil {
			t = time.NewTimer(windowCheck)
		}
		select {
		case <-w.free:
		case <-w.done:
			t.Stop()
			return
		case <-t.C:
			if w.cl.Closed() {
				return
			}
			w.forgetDropped()
			t.Reset(windowCheck)
		}
	}
}

// release frees the place of id, if it was counted.
func (w *window) release(id uint16) {
	w.mu.Lock()
	_, ok := w.out[id]
	delete(w.out, id)
	w.mu.Unlock()
	if ok {
		select {
		case w.free <- struct{}{}:
		default:
		}
	}
}

// forgetDropped stops counting the messages mochi no longer has in flight
// for the client (expired, or cleared with the session): no acknowledgement
// will come to free their places. An acknowledged message was freed
// (OnPacketRead) before mochi deleted it, so it is not among them.
func (w *window) forgetDropped() {
	w.mu.Lock()
	ids := make([]uint16, 0, len(w.out))
	for id := range w.out {
		ids = append(ids, id)
	}
	w.mu.Unlock()
	for _, id := range ids {
		if m, ok := w.cl.State.Inflight.Get(id); !ok || !outbound(m) {
			w.release(id)
		}
	}
}

func (w *window) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.done)
	}
}
