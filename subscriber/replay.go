package subscriber

import (
	"crypto/sha256"
	"sync"

	"github.com/mochi-mqtt/server/v2/packets"
)

// replays remembers, per QoS 2 packet id, the last message the subscriber
// took with it, so that a broker that resends a PUBLISH after its PUBREL
// does not have the message stored twice.
//
// MQTT forbids that resend (3.1.1 and 5, 4.3.3: after PUBREL the sender
// resends only PUBREL), and the subscriber moves a packet id to a new epoch
// at PUBREL, so that the next message with it is new. Mosquitto 2.0 breaks
// the rule after a restart from its persistence file: it restores a
// client's messages in flight as queued past its max_inflight_messages (all
// of them with 0, unlimited), and sends a queued message again as PUBLISH
// (DUP set) whatever its state was, a message whose PUBREL it had sent and
// whose PUBCOMP it had not read included (paho.mqtt.golang replays PUBLISH
// after PUBREL on reconnect too). Such a resend carries the
// DUP flag and the released message's content: it is taken for that message,
// with the epoch it was stored under, and recognised (PUBREC without
// storing), and the broker's next PUBREL releases the packet id again.
//
// A new message with a released packet id is told from the resend by its
// content, or by DUP unset on its first sending. What stays possible: a new
// message byte for byte equal to the released one (same topic, payload and
// msg_id) whose first sending was lost with the connection and that the
// broker resent with DUP (it is taken for the old one and not stored), and
// the broker's resend after the subscriber itself restarted (the memory is
// the process's: the resend is stored again).
type replays struct {
	mu    sync.Mutex
	taken map[uint16]taken
}

// taken is the last message taken with a packet id: its fingerprint and
// the epoch it was stored under, and whether a PUBREL released the packet id
// since.
type taken struct {
	sum      [16]byte
	epoch    uint64
	released bool
}

// epoch returns the epoch to store pk under: the packet id's epoch now
// (current), or, for a resend of the message a PUBREL released, the epoch
// that message was stored under (replay true).
func (r *replays) epoch(pk packets.Packet, current uint64) (epoch uint64, replay bool) {
	sum := fingerprint(pk)
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.taken[pk.PacketID]; ok && t.released && pk.FixedHeader.Dup && t.sum == sum {
		return t.epoch, true
	}
	if r.taken == nil {
		r.taken = make(map[uint16]taken)
	}
	r.taken[pk.PacketID] = taken{sum: sum, epoch: current}
	return current, false
}

// release notes that a PUBREL released packet id pid.
func (r *replays) release(pid uint16) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.taken[pid]; ok {
		t.released = true
		r.taken[pid] = t
	}
}

// reset forgets every packet id: the broker kept no session, so it resends
// nothing of the last one.
func (r *replays) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.taken = nil
}

// fingerprint identifies a message's content: topic, payload and the MQTT 5
// user property msg_id.
func fingerprint(pk packets.Packet) [16]byte {
	h := sha256.New()
	h.Write([]byte(pk.TopicName))
	h.Write([]byte{0})
	h.Write([]byte(messageID(pk)))
	h.Write([]byte{0})
	h.Write(pk.Payload)
	var out [16]byte
	copy(out[:], h.Sum(nil))
	return out
}
