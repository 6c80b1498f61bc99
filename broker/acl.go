package broker

import (
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"

	"firehose/sparkplug"
)

// Who may read what, under --mqtt-auth.
//
// A client reads (subscribes to, and is delivered) only topics under its own
// device id — the readings topic template up to the device level followed by
// anything: devices/pump-7/# for the default template — and the filters its
// credentials line grants (read=devices/+/readings). A filter is allowed
// when every topic it can match is allowed, so devices/+/readings is refused
// to a device and # to everyone without a grant of #. mochi asks the same
// question (OnACLCheck, write false) with the filter at SUBSCRIBE and with
// the topic name at each delivery, so a grant revoked by a reload of the
// credentials file also stops deliveries on subscriptions made before it.

// sharePrefix opens a shared subscription filter: $share/{group}/{filter}.
const sharePrefix = "$share"

// unshare returns the filter of a shared subscription ($share/g/f -> f) and
// any other filter unchanged; ok is false for a malformed shared filter.
func unshare(filter string) (string, bool) {
	first, rest, found := strings.Cut(filter, "/")
	if !strings.EqualFold(first, sharePrefix) {
		return filter, true
	}
	if !found {
		return "", false
	}
	_, f, found := strings.Cut(rest, "/")
	if !found || f == "" {
		return "", false
	}
	return f, true
}

// covers reports whether every topic that filter f matches is also matched
// by grant g (both valid MQTT filters; a topic name is a filter without
// wildcards). Topics starting with $ are matched by a wildcard only at a
// level after the first (MQTT-4.7.2-1), so # does not cover $SYS/#.
func covers(g, f string) bool {
	if strings.HasPrefix(f, "$") && (strings.HasPrefix(g, "+") || strings.HasPrefix(g, "#")) {
		return false
	}
	for {
		gl, grest, gmore := strings.Cut(g, "/")
		fl, frest, fmore := strings.Cut(f, "/")
		switch {
		case gl == "#":
			return true
		case fl == "#":
			return false // f goes deeper than g's levels allow
		case gl == "+":
			// matches any single level of f, + included
		case gl != fl:
			return false
		}
		if gmore != fmore {
			// One ends here. devices/a/# also matches devices/a.
			return gmore && grest == "#"
		}
		if !gmore {
			return true
		}
		g, f = grest, frest
	}
}

// underDevice reports whether filter f only matches topics under device
// dev's own level of the readings topic template: prefix + dev, then the
// end or "/" and anything.
func (t topic) underDevice(dev, f string) bool {
	if dev == "" || !strings.HasPrefix(f, t.prefix) {
		return false
	}
	rest, ok := strings.CutPrefix(f[len(t.prefix):], dev)
	return ok && (rest == "" || rest[0] == '/')
}

// mayRead reports whether an authenticated client may subscribe to filter,
// or be delivered a message on topic filter. Its credentials must still
// stand.
func (h *hook) mayRead(cl *mqtt.Client, filter string) bool {
	f, ok := unshare(filter)
	if !ok {
		return false
	}
	user := string(cl.Properties.Username)
	cred, known := h.auth.file.Get()[user]
	if !known {
		return false
	}
	if h.topic.underDevice(user, f) || (h.spb != nil && ownCommands(user, f)) {
		return true
	}
	for _, g := range cred.Read {
		if covers(g, f) {
			return true
		}
	}
	return false
}

// ownCommands reports whether filter f only matches the Sparkplug B
// commands of edge node (the username) edge, in any group: its NCMD and the
// DCMDs of its devices, which an edge node subscribes to.
func ownCommands(edge, f string) bool {
	if strings.ContainsAny(edge, "+#") {
		return false
	}
	return covers("spBv1.0/+/NCMD/"+edge, f) || covers("spBv1.0/+/DCMD/"+edge+"/#", f)
}

// isCommand reports whether topic is a Sparkplug B command (NCMD or DCMD).
func isCommand(topic string) bool {
	tp, err := sparkplug.ParseTopic(topic)
	return err == nil && (tp.Type == sparkplug.NCMD || tp.Type == sparkplug.DCMD)
}

// mayCommand reports whether an authenticated client may publish the
// Sparkplug B command topic: one of its write=FILTER grants covers it, and
// its credentials still stand. The broker's own client (Rebirth requests)
// needs none.
func (h *hook) mayCommand(cl *mqtt.Client, topic string) bool {
	return cl.Net.Inline || h.commandGranted(string(cl.Properties.Username), topic)
}

// commandGranted reports whether one of user's write=FILTER grants covers
// topic.
func (h *hook) commandGranted(user, topic string) bool {
	cred, known := h.auth.file.Get()[user]
	if !known {
		return false
	}
	for _, g := range cred.Write {
		if covers(g, topic) {
			return true
		}
	}
	return false
}

// mayWillSparkplug reports whether user may leave a will on topic as far as
// Sparkplug B goes: any topic outside its namespace; a command it is granted;
// another message only of its own edge node (an NDEATH).
func (h *hook) mayWillSparkplug(user, topic string) bool {
	if !sparkplug.IsTopic(topic) {
		return true
	}
	tp, err := sparkplug.ParseTopic(topic)
	switch {
	case err != nil:
		return false
	case tp.Type == sparkplug.NCMD || tp.Type == sparkplug.DCMD:
		return h.commandGranted(user, topic)
	case tp.Type == sparkplug.STATE:
		return true
	}
	return tp.EdgeNode == user
}
