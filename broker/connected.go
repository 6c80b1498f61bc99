package broker

import (
	"slices"
	"strings"
)

// Connected says whether a client of device id is connected to this broker
// now: one whose username (under --mqtt-auth, its device) or, without a
// username, whose client identifier is id.
func (b *Broker) Connected(id string) bool {
	for _, cl := range b.srv.Clients.GetAll() {
		if !cl.Net.Inline && !cl.Closed() && clientDevice(string(cl.Properties.Username), cl.ID) == id {
			return true
		}
	}
	return false
}

// ConnectedDevices is up to limit devices, sorted, of the clients connected
// now whose device (as Connected reads it) starts with prefix.
func (b *Broker) ConnectedDevices(prefix string, limit int) []string {
	var ids []string
	for _, cl := range b.srv.Clients.GetAll() {
		if dev := clientDevice(string(cl.Properties.Username), cl.ID); !cl.Net.Inline && !cl.Closed() && strings.HasPrefix(dev, prefix) {
			ids = append(ids, dev)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	return ids[:min(len(ids), limit)]
}

// clientDevice is the device a client stands for: its username, or its
// client identifier when it gave none.
func clientDevice(username, clientID string) string {
	if username != "" {
		return username
	}
	return clientID
}
