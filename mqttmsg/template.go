package mqttmsg

import (
	"fmt"
	"strings"
)

// DefaultTopic is the default readings topic template (--mqtt-topic).
const DefaultTopic = "devices/{device_id}/readings"

// Template is a parsed readings topic template such as
// "devices/{device_id}/readings": prefix + device + suffix.
type Template struct {
	prefix, suffix string
}

// ParseTemplate parses a template such as "devices/{device_id}/readings":
// the placeholder must be one whole topic level and appear once, and the
// rest must be a valid topic name (no wildcards). Its errors name the flag
// --mqtt-topic.
func ParseTemplate(tmpl string) (Template, error) {
	const ph = "{device_id}"
	bad := func(why string) (Template, error) {
		return Template{}, fmt.Errorf("--mqtt-topic %q: %s", tmpl, why)
	}
	i := strings.Index(tmpl, ph)
	switch {
	case i < 0:
		return bad("must contain {device_id}")
	case strings.Count(tmpl, ph) > 1:
		return bad("must contain {device_id} once")
	case strings.ContainsAny(tmpl, "+#\x00"):
		return bad("must not contain wildcards or NUL")
	case strings.HasPrefix(tmpl, "$"):
		return bad("must not start with $ (reserved for the broker)")
	}
	t := Template{prefix: tmpl[:i], suffix: tmpl[i+len(ph):]}
	if (t.prefix != "" && !strings.HasSuffix(t.prefix, "/")) || (t.suffix != "" && !strings.HasPrefix(t.suffix, "/")) {
		return bad("{device_id} must be a whole topic level")
	}
	return t, nil
}

// Device returns the device id a topic name names, if it is a readings
// topic: one that the filter matches. An empty level ("devices//readings")
// is one (MQTT's + matches it), with an empty device id that validation
// refuses; taking it for an ordinary topic would acknowledge a reading that
// is never stored, and deliver it to subscribers of the readings.
func (t Template) Device(name string) (string, bool) {
	if len(name) < len(t.prefix)+len(t.suffix) || !strings.HasPrefix(name, t.prefix) || !strings.HasSuffix(name, t.suffix) {
		return "", false
	}
	dev := name[len(t.prefix) : len(name)-len(t.suffix)]
	if strings.IndexByte(dev, '/') >= 0 {
		return "", false
	}
	return dev, true
}

// Prefix is what comes before the device level: "devices/" in
// "devices/{device_id}/readings"; "" when the device level is the first.
func (t Template) Prefix() string { return t.prefix }

// Filter is the subscription filter matching every readings topic:
// "devices/+/readings".
func (t Template) Filter() string { return t.prefix + "+" + t.suffix }

// ReadingsDevice is the device a topic name names under the readings topic
// template (--mqtt-topic), read as the broker reads it; false when the
// topic is not a readings topic or the template is not valid.
func ReadingsDevice(template, name string) (string, bool) {
	t, err := ParseTemplate(template)
	if err != nil {
		return "", false
	}
	return t.Device(name)
}
