package broker

import (
	"slices"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"firehose/ingest"
	"firehose/internal/clientcert"
	"firehose/mapping"
	"firehose/mqttmsg"
	"firehose/sparkplug"
)

// acl answers who may read and write what under --mqtt-auth, and for the
// clients of a certificate listener (--mqtt-tls-client-ca), from the
// credentials file and what the broker decodes. The auth hook asks it at
// CONNECT, SUBSCRIBE, each delivery and each will; the ingest hook for a
// publish through a topic alias and for the devices of the rows a publish
// makes. nil (neither): everyone may do everything.
type acl struct {
	auth   *authenticator       // nil: no --mqtt-auth, only certificate clients are checked
	certs  *clientcert.Verifier // nil: no --mqtt-tls-client-ca
	topic  mqttmsg.Template     // the readings topic template
	rules  *mapping.Mapper      // nil: none
	spb    bool                 // Sparkplug B decoded (--mqtt-sparkplug)
	limits ingest.Limits        // to map a will's rows
}

// mayPublish reports whether an authenticated client may publish readings
// of device dev: under its own id only, and only while its credentials
// stand.
func (a *acl) mayPublish(cl *mqtt.Client, dev string) bool {
	if a.open(cl) {
		return true
	}
	user := string(cl.Properties.Username)
	_, known := a.credential(cl, user)
	return dev == user && known
}

// open reports whether no one checks client cl: without --mqtt-auth, a
// client that did not come through the certificate listener is anonymous
// and may do everything.
func (a *acl) open(cl *mqtt.Client) bool { return a.auth == nil && !a.certified(cl) }

// certified reports whether cl came through the TLS listener that requires
// client certificates: its username is then the device its certificate
// names (admitCertificate).
func (a *acl) certified(cl *mqtt.Client) bool {
	return a.certs != nil && cl.Net.Listener == tlsListener
}

// credential returns the credentials of user, client cl's identity, and
// whether they stand: its line of the credentials file; a certificate
// identity stands without one, with no grants.
func (a *acl) credential(cl *mqtt.Client, user string) (Credential, bool) {
	if a.auth != nil {
		if c, ok := a.auth.creds()[user]; ok {
			return c, true
		}
	}
	return Credential{}, a.certified(cl)
}

// readsOthers reports whether user, client cl's identity, has read grants:
// a dashboard, which may connect with client ids user/anything.
func (a *acl) readsOthers(cl *mqtt.Client, user string) bool {
	c, _ := a.credential(cl, user)
	return len(c.Read) > 0
}

// Who may read and write what, under --mqtt-auth: everything is denied that
// the client's line of the credentials file does not allow.
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
func underDevice(t mqttmsg.Template, dev, f string) bool {
	prefix := t.Prefix()
	if dev == "" || !strings.HasPrefix(f, prefix) {
		return false
	}
	rest, ok := strings.CutPrefix(f[len(prefix):], dev)
	return ok && (rest == "" || rest[0] == '/')
}

// mayRead reports whether an authenticated client may subscribe to filter,
// or be delivered a message on topic filter. Its credentials must still
// stand.
func (a *acl) mayRead(cl *mqtt.Client, filter string) bool {
	if a.open(cl) {
		return true
	}
	f, ok := unshare(filter)
	if !ok {
		return false
	}
	user := string(cl.Properties.Username)
	cred, known := a.credential(cl, user)
	if !known {
		return false
	}
	if f == refusedWillTopic {
		return false
	}
	if underDevice(a.topic, user, f) || (a.spb && ownSparkplugRead(user, cred.Sparkplug, f)) {
		return true
	}
	for _, g := range cred.Read {
		if covers(g, f) {
			return true
		}
	}
	return false
}

// ownSparkplugRead reports whether filter f only matches topics an edge node
// (the username) edge reads without a grant: in each of its groups its
// commands (its NCMD, and the DCMDs of its devices) and the host
// applications' STATE, which it must watch (Sparkplug 3.0).
func ownSparkplugRead(edge string, groups []string, f string) bool {
	if len(groups) == 0 || strings.ContainsAny(edge, "+#") {
		return false
	}
	if covers(sparkplug.Namespace+"/STATE/+", f) {
		return true
	}
	for _, g := range groups {
		if covers(sparkplug.Namespace+"/"+g+"/NCMD/"+edge, f) || covers(sparkplug.Namespace+"/"+g+"/DCMD/"+edge+"/#", f) {
			return true
		}
	}
	return false
}

// Who may write what, under --mqtt-auth. A client publishes — and leaves as
// its will, retained or not — only:
//
//   - under its own device id: the readings topic template up to the device
//     level followed by anything (devices/pump-7/# for the default template);
//   - a topic some mapping rule matches: the rule's rows must then all be of
//     its own device, which publishMapped checks row by row (and admit for a
//     will, which mochi publishes past OnPublish);
//   - its own Sparkplug B edge node's messages (births, data, deaths; the
//     edge node id is its username) in the groups its sparkplug=GROUP
//     fields name;
//   - any topic a write=FILTER grant of its line covers: the only way to
//     send a Sparkplug B command (NCMD, DCMD), a host's STATE, or anything
//     on another device's topics.
//
// Readings stay the client's own with a grant too: a reading on another
// device's readings topic, or a mapped row of another device, is refused
// after the check (mayPublish). The broker's own client (Rebirth requests)
// may publish anything.

// mayWrite reports whether client cl may publish on topic, while its
// credentials stand.
func (a *acl) mayWrite(cl *mqtt.Client, topic string) bool {
	if cl.Net.Inline || a.open(cl) {
		return true
	}
	user := string(cl.Properties.Username)
	cred, known := a.credential(cl, user)
	return known && a.writeAllowed(user, cred, topic)
}

// writeAllowed reports whether user, of credentials cred, may publish on
// topic (see above).
func (a *acl) writeAllowed(user string, cred Credential, topic string) bool {
	for _, g := range cred.Write {
		if covers(g, topic) {
			return true
		}
	}
	if sparkplug.IsTopic(topic) {
		// The namespace is Sparkplug's whether or not the broker decodes
		// it (--mqtt-sparkplug): edge nodes act on STATE and commands.
		return ownEdgeNode(user, cred.Sparkplug, topic)
	}
	if a.rules.Len() > 0 {
		if _, ok := a.rules.MatchTopic(topic); ok {
			return true // every row must be user's: publishMapped decides
		}
	}
	return underDevice(a.topic, user, topic)
}

// ownEdgeNode reports whether topic is a message of user's own Sparkplug B
// edge node (edge node id = username) in one of its groups: a birth, data or
// death of the node or of one of its devices. Commands and STATE are never
// an edge node's own.
func ownEdgeNode(user string, groups []string, topic string) bool {
	tp, err := sparkplug.ParseTopic(topic)
	if err != nil || tp.Type == sparkplug.NCMD || tp.Type == sparkplug.DCMD || tp.Type == sparkplug.STATE {
		return false
	}
	return tp.EdgeNode == user && slices.Contains(groups, tp.Group)
}

// mayCommand reports whether client cl may publish the Sparkplug B command
// topic: only with a write=FILTER grant covering it (mayWrite), or as the
// broker's own client.
func (a *acl) mayCommand(cl *mqtt.Client, topic string) bool { return a.mayWrite(cl, topic) }

// mayWill reports whether user may leave payload on topic as its will:
// mochi publishes a will past OnACLCheck and OnPublish, so it must be a
// publish the user may make, and on the readings topic or a mapped topic the
// rows it makes must be the user's own. A will a rule cannot map is refused:
// whose rows it would make is unknown, and so is the will of a client whose
// certificate was revoked since it connected.
func (a *acl) mayWill(cl *mqtt.Client, user, topic string, payload []byte) bool {
	if a.open(cl) {
		return true
	}
	cred, known := a.credential(cl, user)
	if !known || !a.writeAllowed(user, cred, topic) || a.certRevoked(cl) {
		return false
	}
	if a.spb && sparkplug.IsTopic(topic) {
		return true // its own edge node's, or granted: not rows of a device
	}
	if a.rules.Len() > 0 {
		if mt, ok := a.rules.MatchTopic(topic); ok {
			rs, err := mt.Map(payload, time.Now(), a.limits)
			if err != nil {
				return false
			}
			for i := range rs {
				if rs[i].DeviceID != user {
					return false
				}
			}
			return true
		}
	}
	if dev, ok := a.topic.Device(topic); ok {
		return dev == user
	}
	return true
}

// refusedWillTopic replaces the topic of a will that is no longer allowed
// when its client goes (its credentials changed after CONNECT): mochi
// offers no way to drop a will at OnWill, so it is sent there, empty and not
// retained, where no one reads it (mochi matches no wildcard to $SYS at the
// first level, and under --mqtt-auth, the only case, mayRead refuses it to
// every subscriber at delivery).
const refusedWillTopic = "$SYS/firehose/refused-will"
