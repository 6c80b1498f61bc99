package broker

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"firehose/ingest"
)

// Defaults of Config.
const (
	DefaultAddr         = ":1883"
	DefaultTopic        = "devices/{device_id}/readings"
	DefaultMaxClients   = 100_000
	DefaultMaxPacket    = 64 << 10
	DefaultMaxKeepAlive = 10 * time.Minute
	DefaultReceiveMax   = 256
	DefaultSessionTTL   = time.Hour
)

// Config is the broker's configuration. Zero fields take the defaults above
// where a default exists; an empty address turns its listener off.
type Config struct {
	// Addr is the plain TCP listener, e.g. ":1883" (--mqtt-addr). Empty: off.
	Addr string
	// TLSAddr is the TLS listener, e.g. ":8883" (--mqtt-tls-addr); it needs
	// TLSCert and TLSKey. Empty: off.
	TLSAddr string
	// TLSCert and TLSKey are PEM files (--mqtt-tls-cert, --mqtt-tls-key).
	TLSCert, TLSKey string
	// WSAddr is the WebSocket listener for browsers, e.g. ":8083"
	// (--mqtt-ws-addr); MQTT over ws:// at any path. Empty: off.
	WSAddr string
	// Topic is the readings topic template; "{device_id}" marks the level
	// that names the device (--mqtt-topic, default devices/{device_id}/readings).
	Topic string
	// AuthFile is the device credentials file (--mqtt-auth); empty means
	// anonymous access, the demo default. See ParseCredentials.
	AuthFile string
	// MaxClients bounds connected clients (--mqtt-max-clients, default 100,000).
	MaxClients int
	// MaxPacket bounds one MQTT packet in bytes (--mqtt-max-packet-bytes,
	// default 64 KiB); a larger one disconnects its client.
	MaxPacket int
	// MaxKeepAlive caps the keep-alive a client may ask for, and is imposed on
	// clients that ask for none (--mqtt-max-keepalive, default 10m): a dead
	// connection is noticed within 1.5 times it.
	MaxKeepAlive time.Duration
	// ReceiveMax is how many QoS 1/2 publishes of one client may await their
	// acknowledgement at once (--mqtt-receive-max, default 256).
	ReceiveMax int
	// SessionExpiry is how long the broker keeps the session of a
	// disconnected client that asked to keep it (MQTT 3.1.1 clean session
	// false; MQTT 5 asks for an interval, capped at this)
	// (--mqtt-session-expiry, default 1h).
	SessionExpiry time.Duration
	// ShutdownTimeout bounds the wait for in-flight publishes on shutdown;
	// set by the command.
	ShutdownTimeout time.Duration
	// Limits validate readings; set by the command.
	Limits ingest.Limits
}

// RegisterFlags registers the broker's flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "mqtt-addr", DefaultAddr, "MQTT listener address (plain TCP); empty turns it off")
	fs.StringVar(&c.TLSAddr, "mqtt-tls-addr", "", "MQTT over TLS listener address, e.g. :8883 (needs --mqtt-tls-cert and --mqtt-tls-key)")
	fs.StringVar(&c.TLSCert, "mqtt-tls-cert", "", "PEM certificate file of the MQTT TLS listener")
	fs.StringVar(&c.TLSKey, "mqtt-tls-key", "", "PEM private key file of the MQTT TLS listener")
	fs.StringVar(&c.WSAddr, "mqtt-ws-addr", "", "MQTT over WebSocket listener address, e.g. :8083 (for browser dashboards)")
	fs.StringVar(&c.Topic, "mqtt-topic", DefaultTopic, "readings topic; {device_id} marks the level naming the device")
	fs.StringVar(&c.AuthFile, "mqtt-auth", "", "device credentials file (lines: device-id bcrypt-hash; make them with firehose mqttpasswd);\nempty allows anonymous clients; with it a device may publish readings only under its own id")
	fs.IntVar(&c.MaxClients, "mqtt-max-clients", DefaultMaxClients, "most MQTT clients connected at once")
	fs.IntVar(&c.MaxPacket, "mqtt-max-packet-bytes", DefaultMaxPacket, "largest MQTT packet accepted, in bytes; a larger one disconnects the client")
	fs.DurationVar(&c.MaxKeepAlive, "mqtt-max-keepalive", DefaultMaxKeepAlive, "longest keep-alive a client may ask for, also imposed on clients asking for none")
	fs.DurationVar(&c.SessionExpiry, "mqtt-session-expiry", DefaultSessionTTL, "how long the session of a disconnected client that asked to keep it is kept")
	fs.IntVar(&c.ReceiveMax, "mqtt-receive-max", DefaultReceiveMax, "QoS 1/2 publishes of one client that may await their acknowledgement at once")
}

func (c Config) withDefaults() Config {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.MaxClients <= 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.MaxPacket <= 0 {
		c.MaxPacket = DefaultMaxPacket
	}
	if c.MaxKeepAlive <= 0 {
		c.MaxKeepAlive = DefaultMaxKeepAlive
	}
	if c.ReceiveMax <= 0 {
		c.ReceiveMax = DefaultReceiveMax
	}
	if c.SessionExpiry <= 0 {
		c.SessionExpiry = DefaultSessionTTL
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	return c
}

// Validate checks the configuration for values that cannot work.
func (c Config) Validate() error {
	if _, err := parseTopic(c.withDefaults().Topic); err != nil {
		return err
	}
	switch {
	case c.Addr == "" && c.TLSAddr == "" && c.WSAddr == "":
		return errors.New("the broker role has no listener: set --mqtt-addr, --mqtt-tls-addr or --mqtt-ws-addr")
	case c.TLSAddr != "" && (c.TLSCert == "" || c.TLSKey == ""):
		return errors.New("--mqtt-tls-addr needs --mqtt-tls-cert and --mqtt-tls-key")
	case c.TLSAddr == "" && (c.TLSCert != "" || c.TLSKey != ""):
		return errors.New("--mqtt-tls-cert and --mqtt-tls-key need --mqtt-tls-addr")
	case c.MaxPacket < 0 || c.MaxPacket > 256<<20:
		return fmt.Errorf("--mqtt-max-packet-bytes %d: want 1 to 268435456", c.MaxPacket)
	case c.ReceiveMax < 0 || c.ReceiveMax > 65535:
		return fmt.Errorf("--mqtt-receive-max %d: want 1 to 65535", c.ReceiveMax)
	case c.MaxKeepAlive < 0 || c.MaxKeepAlive > 65535*time.Second:
		return fmt.Errorf("--mqtt-max-keepalive %s: want at most 18h12m15s (65535s)", c.MaxKeepAlive)
	}
	return nil
}

// topic is a parsed readings topic template: prefix + device + suffix.
type topic struct {
	prefix, suffix string
}

// parseTopic parses a template such as "devices/{device_id}/readings": the
// placeholder must be one whole topic level and appear once, and the rest
// must be a valid topic name (no wildcards).
func parseTopic(tmpl string) (topic, error) {
	const ph = "{device_id}"
	bad := func(why string) (topic, error) {
		return topic{}, fmt.Errorf("--mqtt-topic %q: %s", tmpl, why)
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
	t := topic{prefix: tmpl[:i], suffix: tmpl[i+len(ph):]}
	if (t.prefix != "" && !strings.HasSuffix(t.prefix, "/")) || (t.suffix != "" && !strings.HasPrefix(t.suffix, "/")) {
		return bad("{device_id} must be a whole topic level")
	}
	return t, nil
}

// device returns the device id a topic name names, if it is a readings topic:
// one that the filter matches. An empty level ("devices//readings") is one
// (MQTT's + matches it), with an empty device id that validation refuses;
// taking it for an ordinary topic would acknowledge a reading that is never
// stored, and deliver it to subscribers of the readings.
func (t topic) device(name string) (string, bool) {
	if len(name) < len(t.prefix)+len(t.suffix) || !strings.HasPrefix(name, t.prefix) || !strings.HasSuffix(name, t.suffix) {
		return "", false
	}
	dev := name[len(t.prefix) : len(name)-len(t.suffix)]
	if strings.IndexByte(dev, '/') >= 0 {
		return "", false
	}
	return dev, true
}

// filter is the subscription filter matching every readings topic.
func (t topic) filter() string { return t.prefix + "+" + t.suffix }
