package sparkplug

import (
	"fmt"
	"strings"
)

// Namespace is the first topic level of every Sparkplug B message.
const Namespace = "spBv1.0"

// MessageType is the message_type level of a Sparkplug B topic.
type MessageType uint8

// The message types. STATE, NCMD and DCMD are recognised so a caller can
// tell them apart, but carry no metric values firehose lands.
const (
	NBIRTH MessageType = iota + 1
	NDEATH
	DBIRTH
	DDEATH
	NDATA
	DDATA
	NCMD
	DCMD
	STATE
)

var messageTypes = map[string]MessageType{
	"NBIRTH": NBIRTH, "NDEATH": NDEATH, "DBIRTH": DBIRTH, "DDEATH": DDEATH, "NDATA": NDATA,
	"DDATA": DDATA, "NCMD": NCMD, "DCMD": DCMD, "STATE": STATE,
}

// String returns the type as it appears in a topic.
func (t MessageType) String() string {
	for s, v := range messageTypes {
		if v == t {
			return s
		}
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Device reports whether the type is about a device (DBIRTH, DDEATH, DDATA,
// DCMD): its topic has a device_id level.
func (t MessageType) Device() bool { return t == DBIRTH || t == DDEATH || t == DDATA || t == DCMD }

// Topic is a parsed Sparkplug B topic:
// spBv1.0/{group_id}/{message_type}/{edge_node_id}[/{device_id}], or
// spBv1.0/STATE/{host_id} (Sparkplug 3.0) and STATE/{host_id} (2.x).
type Topic struct {
	Type     MessageType
	Group    string // group_id; empty for STATE
	EdgeNode string // edge_node_id; empty for STATE
	Device   string // device_id of DBIRTH, DDEATH, DDATA and DCMD
	HostID   string // host_id of STATE
}

// Node is the key of the edge node's state: "group/edge_node".
func (t Topic) Node() string { return t.Group + "/" + t.EdgeNode }

// DeviceID is the device firehose stores the metric values under:
// "group/edge_node" for node messages, "group/edge_node/device" for device ones.
func (t Topic) DeviceID() string {
	if t.Device != "" {
		return t.Group + "/" + t.EdgeNode + "/" + t.Device
	}
	return t.Node()
}

// String formats the topic back.
func (t Topic) String() string {
	switch {
	case t.Type == STATE:
		return Namespace + "/STATE/" + t.HostID
	case t.Type.Device():
		return Namespace + "/" + t.Group + "/" + t.Type.String() + "/" + t.EdgeNode + "/" + t.Device
	}
	return Namespace + "/" + t.Group + "/" + t.Type.String() + "/" + t.EdgeNode
}

// TopicError says why a topic is not a Sparkplug B topic. It matches
// ErrMalformed.
type TopicError struct {
	Topic  string
	Reason string
}

func (e *TopicError) Error() string {
	return fmt.Sprintf("sparkplug topic %q: %s", e.Topic, e.Reason)
}

// Is makes every TopicError match ErrMalformed.
func (e *TopicError) Is(target error) bool { return target == ErrMalformed }

// IsTopic reports whether topic is in the Sparkplug B namespace, so a broker
// can route it to ParseTopic (and refuse it if malformed) rather than
// treating it as a plain reading.
func IsTopic(topic string) bool {
	return strings.HasPrefix(topic, Namespace+"/") || strings.HasPrefix(topic, "STATE/")
}

// ParseTopic parses a Sparkplug B topic. Each ID level must be non-empty and
// hold no MQTT wildcard (+, #); node messages have four levels, device
// messages five.
func ParseTopic(topic string) (Topic, error) {
	bad := func(format string, args ...any) (Topic, error) {
		return Topic{}, &TopicError{Topic: topic, Reason: fmt.Sprintf(format, args...)}
	}
	levels := strings.Split(topic, "/")
	if levels[0] == "STATE" { // Sparkplug 2.x: STATE/{host_id}
		if len(levels) != 2 {
			return bad("STATE/{host_id} has 2 levels, not %d", len(levels))
		}
		if err := checkID("host_id", levels[1]); err != "" {
			return bad("%s", err)
		}
		return Topic{Type: STATE, HostID: levels[1]}, nil
	}
	if levels[0] != Namespace {
		return bad("namespace %q, want %s", levels[0], Namespace)
	}
	if len(levels) < 3 {
		return bad("%d levels, want %s/{group_id}/{message_type}/{edge_node_id}[/{device_id}]", len(levels), Namespace)
	}
	if levels[1] == "STATE" && len(levels) == 3 { // Sparkplug 3.0: spBv1.0/STATE/{host_id}
		if err := checkID("host_id", levels[2]); err != "" {
			return bad("%s", err)
		}
		return Topic{Type: STATE, HostID: levels[2]}, nil
	}
	typ, ok := messageTypes[levels[2]]
	if !ok || typ == STATE {
		return bad("message type %q is none of NBIRTH, NDEATH, DBIRTH, DDEATH, NDATA, DDATA, NCMD, DCMD", levels[2])
	}
	want := 4
	if typ.Device() {
		want = 5
	}
	if len(levels) != want {
		if typ.Device() {
			return bad("%s has %d levels, want %s/{group_id}/%s/{edge_node_id}/{device_id}", typ, len(levels), Namespace, typ)
		}
		return bad("%s has %d levels, want %s/{group_id}/%s/{edge_node_id}", typ, len(levels), Namespace, typ)
	}
	t := Topic{Type: typ, Group: levels[1], EdgeNode: levels[3]}
	if want == 5 {
		t.Device = levels[4]
	}
	for _, id := range []struct{ name, v string }{{"group_id", t.Group}, {"edge_node_id", t.EdgeNode}, {"device_id", t.Device}} {
		if id.name == "device_id" && want == 4 {
			continue
		}
		if err := checkID(id.name, id.v); err != "" {
			return bad("%s", err)
		}
	}
	return t, nil
}

// checkID returns why an ID level is invalid, or "".
func checkID(name, v string) string {
	switch {
	case v == "":
		return name + " is empty"
	case strings.ContainsAny(v, "+#"):
		return fmt.Sprintf("%s %q holds an MQTT wildcard", name, v)
	case strings.ContainsRune(v, 0):
		return fmt.Sprintf("%s %q holds a NUL", name, v)
	}
	return ""
}
