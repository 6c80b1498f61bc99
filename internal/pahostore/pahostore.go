package pahostore

import (
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Store is a paho memory store that copies PUBLISH and PUBREL packets in and
// out.
type Store struct {
	*mqtt.MemoryStore
}

// New returns an empty Store.
func New() *Store { return &Store{MemoryStore: mqtt.NewMemoryStore()} }

// Put keeps a copy of p under key.
func (s *Store) Put(key string, p packets.ControlPacket) {
	s.MemoryStore.Put(key, copyPacket(p))
}

// Get returns a copy of the packet kept under key, or nil.
func (s *Store) Get(key string) packets.ControlPacket {
	return copyPacket(s.MemoryStore.Get(key))
}

// copyPacket returns a shallow copy of a PUBLISH or PUBREL (a payload is
// never written after Publish) and any other packet as it is.
func copyPacket(p packets.ControlPacket) packets.ControlPacket {
	switch p := p.(type) {
	case *packets.PublishPacket:
		cp := *p
		return &cp
	case *packets.PubrelPacket:
		cp := *p
		return &cp
	}
	return p
}
