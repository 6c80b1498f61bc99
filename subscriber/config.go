package subscriber

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"firehose/mapping"
)

// Defaults of Config.
const (
	DefaultQoS            = 1
	DefaultSessionExpiry  = 24 * time.Hour
	DefaultReceiveMaximum = 1000
	DefaultKeepAlive      = 30 * time.Second
	DefaultRetryTimeout   = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
)

// Protocol versions (--subscribe-protocol).
const (
	ProtocolAuto = "auto" // MQTT 5, and 3.1.1 if the broker refuses 5
	Protocol5    = "5"
	Protocol311  = "3.1.1"
)

// Config is the subscriber's configuration.
type Config struct {
	// Brokers are the URLs of one broker (several: addresses of one
	// clustered broker, tried in turn): tcp:// (or mqtt://), ssl:// (tls://,
	// mqtts://), ws://, wss://.
	Brokers []string
	// Topics are the topic filters subscribed to.
	Topics []string
	// Group, when set, subscribes to $share/Group/filter: the subscribers
	// of one group split the messages.
	Group string
	// ClientID names the persistent session: stable across restarts, and
	// unique per subscriber.
	ClientID string
	QoS      byte // maximum QoS of the subscriptions: 1 or 2
	Username string
	Password string
	// CAFile, CertFile and KeyFile are PEM files: the CA that signed the
	// broker's certificate (empty: the system's), and a client certificate.
	CAFile, CertFile, KeyFile string
	Protocol                  string // ProtocolAuto, Protocol5 or Protocol311
	// SessionExpiry is how long the broker keeps the session (its
	// subscriptions and the messages queued for it) after a disconnect
	// (MQTT 5; a 3.1.1 session lasts as long as the broker keeps it).
	SessionExpiry time.Duration
	// ReceiveMaximum bounds the QoS 1 and 2 messages the broker sends
	// before their acknowledgement (MQTT 5), and the messages this
	// subscriber holds unacknowledged in any protocol version.
	ReceiveMaximum int
	KeepAlive      time.Duration
	// RetryTimeout bounds how long a message that cannot be stored now is
	// retried before the connection is closed, for the broker to resend.
	RetryTimeout   time.Duration
	ConnectTimeout time.Duration
	// ShutdownTimeout bounds the wait for messages being stored at
	// shutdown.
	ShutdownTimeout time.Duration
}

// RegisterFlags registers the --subscribe-* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Func("subscribe-broker", "the broker the subscriber role connects to: tcp://host:1883, ssl://host:8883, ws://host/mqtt or\nwss://...; several, comma-separated, only as addresses of one clustered broker (a session does not move\nbetween independent brokers)", func(v string) error {
		c.Brokers = splitList(v)
		return nil
	})
	fs.Func("subscribe-topics", "comma-separated topic filters the subscriber role subscribes to (default: the readings topic, each\nmapping rule's topic and, with --mqtt-sparkplug, spBv1.0/#)", func(v string) error {
		c.Topics = splitList(v)
		return nil
	})
	fs.StringVar(&c.Group, "subscribe-group", "", "a shared subscription group: subscribe to $share/GROUP/filter so that the subscribers of the group split\nthe messages (empty: a plain subscription, every subscriber gets every message)")
	fs.StringVar(&c.ClientID, "subscribe-client-id", "", "the subscriber's MQTT client id: its persistent session hangs on it, so keep it stable across restarts\nand unique per subscriber (default: firehose-HOSTNAME)")
	c.QoS = DefaultQoS
	fs.Func("subscribe-qos", "maximum QoS of the subscriptions: 1 (at least once: a crash may store the messages in flight again)\nor 2 (exactly once with publishers at QoS 2) (default 1)", func(v string) error {
		switch v {
		case "1", "2":
			c.QoS = v[0] - '0'
			return nil
		}
		return fmt.Errorf("want 1 or 2 (QoS 0 would lose what a crash catches in flight)")
	})
	fs.StringVar(&c.Username, "subscribe-username", "", "username for the broker")
	fs.StringVar(&c.Password, "subscribe-password", "", "password for the broker (better in FIREHOSE_SUBSCRIBE_PASSWORD or the configuration file)")
	fs.StringVar(&c.CAFile, "subscribe-ca", "", "PEM file of the CA that signed the broker's certificate (ssl://, wss://; default: the system's)")
	fs.StringVar(&c.CertFile, "subscribe-cert", "", "PEM client certificate for the broker (with --subscribe-key)")
	fs.StringVar(&c.KeyFile, "subscribe-key", "", "PEM private key of --subscribe-cert")
	fs.StringVar(&c.Protocol, "subscribe-protocol", ProtocolAuto, "MQTT version: auto (5, and 3.1.1 when the broker refuses 5), 5 or 3.1.1")
	fs.DurationVar(&c.SessionExpiry, "subscribe-session-expiry", DefaultSessionExpiry, "how long the broker keeps the subscriber's session, and the messages queued for it, while it is away\n(MQTT 5); a member of a share group killed for longer loses its in-flight messages to the expiry")
	fs.IntVar(&c.ReceiveMaximum, "subscribe-receive-maximum", DefaultReceiveMaximum, "QoS 1 and 2 messages the broker may send before their acknowledgement; at QoS 1 also the bound of\nthe messages a crash can store twice, with a broker that keeps to it (Mosquitto 2.0 sends past it)")
	fs.DurationVar(&c.KeepAlive, "subscribe-keepalive", DefaultKeepAlive, "MQTT keep alive of the subscriber's connection")
	fs.DurationVar(&c.RetryTimeout, "subscribe-retry-timeout", DefaultRetryTimeout, "how long a message that cannot be stored now (backlog over --high-water, Redis down) is retried\nbefore the subscriber reconnects for the broker to resend it")
	fs.DurationVar(&c.ConnectTimeout, "subscribe-connect-timeout", DefaultConnectTimeout, "longest wait for the broker's answer to a connection or subscription")
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// DefaultClientID is the client id of a subscriber not given one:
// firehose-HOSTNAME, stable across restarts on one host.
func DefaultClientID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return "firehose-" + host
}

// Validate checks c as serve does before starting the role.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("the subscriber role needs --subscribe-broker: the URL of the broker to subscribe to")
	}
	for _, b := range c.Brokers {
		u, err := url.Parse(b)
		if err != nil || u.Host == "" {
			return fmt.Errorf("--subscribe-broker %q: want a URL such as tcp://host:1883", b)
		}
		if _, ok := schemes[u.Scheme]; !ok {
			return fmt.Errorf("--subscribe-broker %q: scheme %q: want tcp, mqtt, ssl, tls, mqtts, ws or wss", b, u.Scheme)
		}
	}
	if len(c.Topics) == 0 {
		return errors.New("--subscribe-topics: no topic filter to subscribe to")
	}
	for _, t := range c.Topics {
		if err := validFilter(t); err != nil {
			return fmt.Errorf("--subscribe-topics %q: %v", t, err)
		}
	}
	if strings.ContainsAny(c.Group, "/+#") {
		return fmt.Errorf("--subscribe-group %q: a share name holds no '/', '+' or '#'", c.Group)
	}
	switch {
	case c.ClientID == "" || len(c.ClientID) > 65535:
		return errors.New("--subscribe-client-id is empty: name the subscriber's session (firehose serve gives firehose-HOSTNAME)")
	case c.QoS != 1 && c.QoS != 2:
		return fmt.Errorf("--subscribe-qos %d: want 1 or 2 (QoS 0 would lose what a crash catches in flight)", c.QoS)
	case c.Protocol != ProtocolAuto && c.Protocol != Protocol5 && c.Protocol != Protocol311:
		return fmt.Errorf("--subscribe-protocol %q: want auto, 5 or 3.1.1", c.Protocol)
	case c.SessionExpiry <= 0 || c.SessionExpiry > time.Duration(1<<32-1)*time.Second:
		return fmt.Errorf("--subscribe-session-expiry %s: want a positive duration up to 136 years", c.SessionExpiry)
	case c.ReceiveMaximum < 1 || c.ReceiveMaximum > 65535:
		return fmt.Errorf("--subscribe-receive-maximum %d: want 1 to 65535", c.ReceiveMaximum)
	case c.KeepAlive < time.Second || c.KeepAlive > 65535*time.Second:
		return fmt.Errorf("--subscribe-keepalive %s: want 1s to 18h", c.KeepAlive)
	case c.RetryTimeout <= 0:
		return fmt.Errorf("--subscribe-retry-timeout %s: want a positive duration", c.RetryTimeout)
	case c.ConnectTimeout <= 0:
		return fmt.Errorf("--subscribe-connect-timeout %s: want a positive duration", c.ConnectTimeout)
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errors.New("--subscribe-cert and --subscribe-key go together")
	}
	return nil
}

// validFilter checks an MQTT topic filter: '#' only as the last level, '+'
// only as a whole level.
func validFilter(f string) error {
	if f == "" {
		return errors.New("empty filter")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return errors.New("'#' must be the last level")
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return errors.New("'+' and '#' must each be a whole level")
		}
	}
	if strings.HasPrefix(f, "$share/") {
		return errors.New("give the share group in --subscribe-group, not in the filter")
	}
	return nil
}

// filters are the filters to subscribe to, with the share group.
func (c Config) filters() []string {
	out := make([]string, len(c.Topics))
	for i, t := range c.Topics {
		out[i] = t
		if c.Group != "" {
			out[i] = "$share/" + c.Group + "/" + t
		}
	}
	return out
}

// DefaultTopics are the filters of what firehose's broker would store: the
// readings topic template (each {device_id} a '+'), the rules' topics and,
// with Sparkplug B, its namespace.
func DefaultTopics(readings string, rules *mapping.Mapper, sparkplug bool) []string {
	out := []string{strings.ReplaceAll(readings, "{device_id}", "+")}
	for _, f := range rules.TopicFilters() {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if sparkplug {
		out = append(out, "spBv1.0/#")
	}
	return out
}
