package mapping

import (
	"errors"
	"fmt"
	"strings"
)

// Rule says how the messages of one shape become readings. The YAML keys
// are those of the configuration file's rules (see docs/mapping.md).
type Rule struct {
	// Name names the rule in errors and metrics.
	Name string `yaml:"name"`
	// Topic is the MQTT topic the rule matches, level by level: a literal
	// level, "+" (any one level), "{name}" (any one level, captured as
	// name), or a last "#" (any rest). "{device_id}" captures the device;
	// other captures become tags.
	Topic string `yaml:"topic"`
	// Endpoint is the HTTP path the rule applies to ("/v1/readings"): a
	// request names it with ?rule=NAME.
	Endpoint string `yaml:"endpoint"`
	// Device is the GJSON path of the device id in the payload, for rules
	// whose topic has no {device_id} (or HTTP). In a rule with Samples it is
	// read from the message, not from each sample.
	Device string `yaml:"device"`
	// Samples is the GJSON path of an array of samples: each one is mapped
	// like a message of its own (Time and Metrics are paths within it), and
	// the rows of all of them are acknowledged together.
	Samples string `yaml:"samples"`
	// Time is the GJSON path of the measured time; "" takes the time of
	// receipt.
	Time string `yaml:"time"`
	// TimeFormat is how Time is written: rfc3339, unix_s, unix_ms, unix_us
	// or unix_ns. Default rfc3339 for a string, unix_ms for a number.
	TimeFormat string `yaml:"time_format"`
	// Metrics lists the metrics: "name" (the field of that name) or
	// "name=path" (the value at a GJSON path); ["*"] takes every numeric
	// field of the message (or sample), Exclude aside.
	Metrics []string `yaml:"metrics"`
	// Exclude lists fields "*" does not take as metrics.
	Exclude []string `yaml:"exclude"`
	// Payload says what goes to the rows' payload: "rest" (default: the
	// tags and every top-level field that is not a metric, the time or the
	// device; with Samples, the fields of each sample, not of the message
	// around them), "tags" (the tags only) or "none".
	Payload string `yaml:"payload"`
	// ID is the GJSON path of the message's id (a string or a number), for
	// --dedup id: each row is named by it and its position in the message,
	// so a resent message is stored once. Read from the message, not from
	// each sample; it is neither a metric nor payload.
	ID string `yaml:"id"`

	// Table, when set, makes each message (each sample, with Samples) one
	// row of this typed table instead of rows of readings: a PostgreSQL
	// identifier ([a-z_][a-z0-9_]*, at most 63 bytes). Metrics, Exclude and
	// Payload do not apply; Columns is required.
	Table string `yaml:"table"`
	// Columns are the table's columns, in table order (see ColumnRule).
	// Exactly one has Source "time", of type timestamptz.
	Columns []ColumnRule `yaml:"columns"`
	// Unknown is the drift policy for the top-level fields of the message
	// (of the sample, with Samples) that no column's path starts at and that
	// are not the time, id, device or samples: "keep" (default: a jsonb
	// column Extra holds them as an object, NULL when there are none),
	// "ignore" (dropped) or "refuse" (the message is refused, naming the
	// field).
	Unknown string `yaml:"unknown"`
	// Extra names the jsonb column kept unknown fields go to, with Unknown
	// "keep". Default "extra".
	Extra string `yaml:"extra"`
	// Identity lists the columns that, beside the device, name a row's
	// series for --dedup: rows whose values there differ are never
	// duplicates of each other.
	Identity []string `yaml:"identity"`
	// Indexes are the table's indexes beside its partitioning.
	Indexes []IndexRule `yaml:"indexes"`
}

// ColumnRule is one column of a rule's table: its name, its PostgreSQL type
// and exactly one of Source, Capture or Path saying where its value is.
type ColumnRule struct {
	// Name is a PostgreSQL identifier ([a-z_][a-z0-9_]*, at most 63 bytes).
	Name string `yaml:"name"`
	// Type is the column's type as typed.ParseType reads it: text, boolean,
	// smallint, integer, bigint, real, double precision, numeric,
	// timestamptz, jsonb, double precision[] or text[].
	Type string `yaml:"type"`
	// Source takes a value the message has whatever its shape: "device"
	// (the device id, text), "time" (the measured time, else the time of
	// receipt, timestamptz: the table's partition key), "received" (the
	// time of receipt, timestamptz) or "id" (the message's id, text: the
	// rule's ID path).
	Source string `yaml:"source"`
	// Capture takes a topic capture ({site} is "site"), text; the device is
	// Source "device".
	Capture string `yaml:"capture"`
	// Path is the GJSON path of the value in the message (in the sample,
	// with Samples).
	Path string `yaml:"path"`
	// Required makes the column NOT NULL: a message without a value there
	// (missing or JSON null) is refused.
	Required bool `yaml:"required"`
}

// IndexRule is an index of a rule's table.
type IndexRule struct {
	// Columns are the indexed columns, in order.
	Columns []string `yaml:"columns"`
	// Unique makes the index unique. PostgreSQL requires a unique index of
	// a partitioned table to hold the partition key: the time column is
	// added to one that does not name it.
	Unique bool `yaml:"unique"`
}

// Time formats.
const (
	FormatRFC3339 = "rfc3339"
	FormatUnixS   = "unix_s"
	FormatUnixMS  = "unix_ms"
	FormatUnixUS  = "unix_us"
	FormatUnixNS  = "unix_ns"
)

// Payload choices.
const (
	PayloadRest = "rest"
	PayloadTags = "tags"
	PayloadNone = "none"
)

// Column sources.
const (
	SourceDevice   = "device"
	SourceTime     = "time"
	SourceReceived = "received"
	SourceID       = "id"
)

// Drift policies (Rule.Unknown).
const (
	UnknownKeep   = "keep"
	UnknownIgnore = "ignore"
	UnknownRefuse = "refuse"
)

// DefaultExtra is the column kept unknown fields go to by default.
const DefaultExtra = "extra"

// deviceCapture is the topic capture that names the device.
const deviceCapture = "device_id"

// metricSpec is one metric of a rule: the row's metric name and where its
// value is.
type metricSpec struct {
	name, path string
}

// level is one level of a compiled topic pattern.
type level struct {
	literal string // a literal level
	capture string // "{name}": captured
	any     bool   // "+"
	rest    bool   // "#": any rest, the last level
}

// compiled is a checked rule, ready to match and map.
type compiled struct {
	Rule
	levels  []level
	metrics []metricSpec // nil with all
	all     bool         // Metrics ["*"]
	exclude map[string]bool
	table   *table // with Rule.Table
}

// compile checks r and prepares it.
func compile(r Rule) (*compiled, error) {
	c := &compiled{Rule: r, exclude: map[string]bool{}}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("rule %q: %s", r.Name, fmt.Sprintf(format, args...))
	}
	if r.Name == "" {
		return nil, errors.New("a rule has no name")
	}
	switch {
	case r.Topic == "" && r.Endpoint == "":
		return nil, bad("give a topic (MQTT) or an endpoint (HTTP)")
	case r.Topic != "" && r.Endpoint != "":
		return nil, bad("give a topic or an endpoint, not both: write two rules")
	case r.Endpoint != "" && r.Endpoint != "/v1/readings":
		return nil, bad("endpoint %q: rules apply to /v1/readings", r.Endpoint)
	}
	hasDevice := r.Device != ""
	if r.Topic != "" {
		seen := map[string]bool{}
		parts := strings.Split(r.Topic, "/")
		for i, p := range parts {
			switch {
			case p == "+":
				c.levels = append(c.levels, level{any: true})
			case p == "#":
				if i != len(parts)-1 {
					return nil, bad("topic %q: # must be the last level", r.Topic)
				}
				c.levels = append(c.levels, level{rest: true})
			case strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}"):
				name := p[1 : len(p)-1]
				if name == "" || strings.ContainsAny(name, "{}+#") {
					return nil, bad("topic %q: level %q is not a capture {name}", r.Topic, p)
				}
				if seen[name] {
					return nil, bad("topic %q: {%s} captured twice", r.Topic, name)
				}
				seen[name] = true
				c.levels = append(c.levels, level{capture: name})
			case strings.ContainsAny(p, "{}+#"):
				return nil, bad("topic %q: level %q mixes a wildcard or capture with text", r.Topic, p)
			default:
				c.levels = append(c.levels, level{literal: p})
			}
		}
		if seen[deviceCapture] && hasDevice {
			return nil, bad("the device comes from the topic ({device_id}) and from device %q: give one", r.Device)
		}
		hasDevice = hasDevice || seen[deviceCapture]
	}
	if !hasDevice {
		return nil, bad("no device: capture {device_id} in the topic or give device, the payload's path of the id")
	}
	switch r.TimeFormat {
	case "", FormatRFC3339, FormatUnixS, FormatUnixMS, FormatUnixUS, FormatUnixNS:
	default:
		return nil, bad("time_format %q: want rfc3339, unix_s, unix_ms, unix_us or unix_ns", r.TimeFormat)
	}
	if r.TimeFormat != "" && r.Time == "" {
		return nil, bad("time_format without time: give the path of the time")
	}
	if r.Table != "" {
		t, err := compileTable(r, c.levels)
		if err != nil {
			return nil, err
		}
		c.table = t
		return c, nil
	}
	switch {
	case len(r.Columns) > 0:
		return nil, bad("columns need a table: give table, the table the rows go to")
	case r.Unknown != "" || r.Extra != "" || len(r.Identity) > 0 || len(r.Indexes) > 0:
		return nil, bad("unknown, extra, identity and indexes apply to a rule with a table")
	}
	switch r.Payload {
	case "":
		c.Payload = PayloadRest
	case PayloadRest, PayloadTags, PayloadNone:
	default:
		return nil, bad("payload %q: want rest, tags or none", r.Payload)
	}
	if len(r.Metrics) == 0 {
		return nil, bad("no metrics: list them (name, or name=path) or give [\"*\"] for every numeric field")
	}
	names := map[string]bool{}
	for _, m := range r.Metrics {
		if m == "*" {
			if len(r.Metrics) > 1 {
				return nil, bad("metrics: \"*\" takes every numeric field; list no others beside it")
			}
			c.all = true
			continue
		}
		name, path, found := strings.Cut(m, "=")
		name, path = strings.TrimSpace(name), strings.TrimSpace(path)
		if !found {
			path = escapePath(name)
		}
		if name == "" || path == "" {
			return nil, bad("metric %q: want name or name=path", m)
		}
		if names[name] {
			return nil, bad("metric %q listed twice", name)
		}
		names[name] = true
		c.metrics = append(c.metrics, metricSpec{name: name, path: path})
	}
	if len(r.Exclude) > 0 && !c.all {
		return nil, bad("exclude applies to metrics [\"*\"] only")
	}
	for _, x := range r.Exclude {
		c.exclude[x] = true
	}
	return c, nil
}

// escapePath makes a field name a GJSON path of that one field.
func escapePath(name string) string {
	var sb strings.Builder
	for _, r := range name {
		if strings.ContainsRune(`.*?|#@!\`, r) {
			sb.WriteByte('\\')
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// match reports whether topic matches the rule's pattern and returns its
// captures.
func (c *compiled) match(topic string) (map[string]string, bool) {
	if len(c.levels) == 0 {
		return nil, false
	}
	var caps map[string]string
	rest := topic
	for i, l := range c.levels {
		if l.rest {
			return caps, true
		}
		part, tail, more := strings.Cut(rest, "/")
		switch {
		case l.literal != "":
			if part != l.literal {
				return nil, false
			}
		case l.capture != "":
			if part == "" {
				return nil, false
			}
			if caps == nil {
				caps = map[string]string{}
			}
			caps[l.capture] = part
		}
		if i == len(c.levels)-1 {
			return caps, !more
		}
		if !more {
			// "a/#" matches "a" too, as in MQTT.
			return caps, i == len(c.levels)-2 && c.levels[i+1].rest
		}
		rest = tail
	}
	return caps, false
}
