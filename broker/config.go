package broker

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"firehose/ingest"
	"firehose/internal/clientcert"
	"firehose/mapping"
	"firehose/mqttmsg"
	"firehose/sparkplug"
)

// Defaults of Config.
const (
	DefaultAddr         = ":1883"
	DefaultTopic        = mqttmsg.DefaultTopic
	DefaultMaxClients   = 100_000
	DefaultMaxPacket    = 64 << 10
	DefaultMaxKeepAlive = 10 * time.Minute
	DefaultReceiveMax   = 256
	DefaultSessionTTL   = time.Hour

	DefaultMaxInflight        = 256
	DefaultMaxWritesPending   = 1024
	DefaultMaxOfflineSessions = 10_000
	DefaultMaxOfflineMessages = 100_000
	DefaultMaxRetained        = 10_000
	DefaultMaxRetainedBytes   = 16 << 20
	DefaultAuthFailBurst      = 10
	DefaultAuthFailInterval   = time.Second
	DefaultAuthFailAddresses  = 10_000
	// DefaultSparkplugMaxNodes and DefaultSparkplugMaxNodeBytes bound the
	// Sparkplug state of one credential: 16 x 1 MiB = 16 MiB of Redis at
	// most (an edge node is usually one MQTT connection; a 64 KiB NBIRTH
	// makes about 100 KiB of state).
	DefaultSparkplugMaxNodes     = 16
	DefaultSparkplugMaxNodeBytes = 1 << 20
	DefaultSparkplugStateTTL     = sparkplug.DefaultStateTTL
)

// AuthRegistry as --mqtt-auth reads the device credentials from the device
// registry in PostgreSQL (package registry) instead of a file; a file of that
// name is ./postgres.
const AuthRegistry = "postgres"

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
	// TLSClientCA is a PEM file of the CAs that issue device certificates
	// (--mqtt-tls-client-ca). Set, the TLS listener requires a client
	// certificate issued by one of them, with the clientAuth extended key
	// usage, and the certificate is the client's credential: it is the
	// device TLSIdentity names, needs no password, and reads and writes
	// as that device under the ACL whether or not AuthFile is set (grants
	// from AuthFile's line of that id, if any). Empty: any client may
	// connect over TLS, as over plain TCP.
	TLSClientCA string
	// TLSIdentity is the part of a client certificate that is the device
	// id (--mqtt-tls-identity): cn (the subject's common name, the
	// default), san-uri (the last segment of its one URI SAN) or san-dns
	// (its one DNS SAN). See clientcert.Identity.
	TLSIdentity string
	// TLSCRL is a file of certificate revocation lists signed by the
	// TLSClientCA CAs, PEM or DER (--mqtt-tls-crl). A revoked certificate
	// fails the handshake; the file is re-read when it changes, and the
	// clients connected with a certificate it now revokes are
	// disconnected. Empty: no revocation.
	TLSCRL string
	// TLSTicketKeys is a file of TLS session ticket keys, one 32-byte key a
	// line in hex or base64, the first encrypting, all decrypting
	// (--mqtt-tls-ticket-keys; see package ticketkeys). Shared by the edges
	// of a deployment, it lets a device resume its TLS session (an
	// abbreviated handshake) on any of them and after a restart. Re-read
	// when it changes. Empty: keys of this process's own, so no resumption
	// across edges or restarts.
	TLSTicketKeys string
	// WSAddr is the WebSocket listener for browsers, e.g. ":8083"
	// (--mqtt-ws-addr); MQTT over ws:// at any path. Empty: off.
	WSAddr string
	// Topic is the readings topic template; "{device_id}" marks the level
	// that names the device (--mqtt-topic, default devices/{device_id}/readings).
	Topic string
	// Rules map the messages of other topics (and shapes) to readings; a
	// publish is matched against them, in order, before Topic. Nil: none.
	Rules *mapping.Mapper
	// Sparkplug turns on Sparkplug B (spBv1.0/...) ingest (--mqtt-sparkplug,
	// default on in firehose serve).
	Sparkplug bool
	// SparkplugStore keeps the edge nodes' aliases and sequence numbers;
	// nil: in this process's memory (lost on restart, not shared).
	SparkplugStore sparkplug.Store
	// SparkplugMaxNodes bounds the edge nodes with state (live, or of an
	// ended session not yet expired) of one credential: the MQTT username
	// under AuthFile or a client certificate's device, else the client id (--sparkplug-max-nodes, default
	// 16). A birth of one more is refused (MQTT 5 0x97 quota exceeded).
	SparkplugMaxNodes int
	// SparkplugMaxNodeBytes bounds one edge node's state, its devices'
	// births included (--sparkplug-max-node-bytes, default 1 MiB); a birth
	// past it is refused (MQTT 5 0x95 packet too large).
	SparkplugMaxNodeBytes int64
	// SparkplugStateTTL is how long the state of an edge node is kept
	// after the connection that published its NBIRTH ended without its
	// NDEATH (--sparkplug-state-ttl, default 24h); an NDEATH removes it at
	// once.
	SparkplugStateTTL time.Duration
	// AuthFile is the device credentials file (--mqtt-auth); empty means
	// anonymous access, the demo default. See ParseCredentials. AuthRegistry
	// ("postgres") names the device registry instead, which the command
	// sets up as Credentials.
	AuthFile string
	// Credentials, when not nil, are the device credentials (the device
	// registry, for --mqtt-auth postgres), in place of AuthFile's file.
	Credentials CredentialSource
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
	// MaxInflight bounds the QoS 1/2 messages one session holds for its
	// client: sent and not yet acknowledged, or queued while the client is
	// away (--mqtt-max-inflight, default 256). A message past it is not
	// delivered to that session.
	MaxInflight int
	// MaxWritesPending bounds the packets queued for writing to one
	// connected client (--mqtt-max-writes-pending, default 1,024); each
	// connection reserves 8 bytes a slot up front. Past it a message is not
	// delivered to that client. The messages an MQTT 5 client's Receive
	// Maximum holds back wait here (flowHook): at least MaxInflight, or a
	// subscriber that falls behind misses messages its session would hold.
	MaxWritesPending int
	// MaxOfflineSessions bounds the sessions of disconnected clients kept
	// (--mqtt-max-offline-sessions, default 10,000); past it the one
	// disconnected longest is dropped.
	MaxOfflineSessions int
	// MaxOfflineMessages bounds the QoS 1/2 messages queued for all
	// disconnected sessions together (--mqtt-max-offline-messages, default
	// 100,000); past it new messages are not queued for them.
	MaxOfflineMessages int
	// MaxRetained and MaxRetainedBytes bound the retained messages, by
	// count and by topic plus payload bytes (--mqtt-max-retained, default
	// 10,000; --mqtt-max-retained-bytes, default 16 MiB); past them a
	// publish is delivered, and a reading stored, without being retained.
	MaxRetained      int
	MaxRetainedBytes int64
	// AuthFailBurst, AuthFailInterval and AuthFailAddresses throttle failed
	// logins under AuthFile: each source address (IPv6: its /64) may fail
	// AuthFailBurst times, then once per AuthFailInterval; further attempts
	// are refused before bcrypt runs. At most AuthFailAddresses addresses
	// are tracked; past it the others share one allowance
	// (--mqtt-auth-fail-burst 10, --mqtt-auth-fail-interval 1s,
	// --mqtt-auth-fail-addresses 10,000).
	AuthFailBurst     int
	AuthFailInterval  time.Duration
	AuthFailAddresses int
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
	fs.StringVar(&c.TLSClientCA, "mqtt-tls-client-ca", "", "PEM `file` of the CAs that issue device certificates: the --mqtt-tls-addr listener then requires a client certificate\n"+
		"of theirs with the clientAuth extended key usage, and it is the device's credential: no password, the device id from the\n"+
		"certificate (--mqtt-tls-identity); a CONNECT naming another device as client id (0x85) or username (0x87) is refused, and the\n"+
		"device reads and writes only its own topics, plus the grants of its --mqtt-auth line if it has one, with or without --mqtt-auth")
	fs.StringVar(&c.TLSIdentity, "mqtt-tls-identity", string(clientcert.CommonName), "where a client certificate names its device: cn (subject common name), san-uri (last segment of its URI SAN,\n"+
		"spiffe://fleet/device/pump-7 -> pump-7) or san-dns (its DNS SAN)")
	fs.StringVar(&c.TLSCRL, "mqtt-tls-crl", "", "certificate revocation list `file` (PEM or DER, signed by a --mqtt-tls-client-ca CA): a revoked certificate fails the\n"+
		"handshake; re-read when it changes, and clients connected with a certificate it now revokes are disconnected (MQTT 5: 0x87)")
	fs.StringVar(&c.TLSTicketKeys, "mqtt-tls-ticket-keys", "", "`file` of TLS session ticket keys shared by every edge: one 32-byte key a line in hex or base64 (openssl rand -hex 32);\n"+
		"the first encrypts, all decrypt (rotate by adding a new first line). A device then resumes its TLS session, an abbreviated\n"+
		"handshake, on any edge and after a restart. Re-read when it changes. Default: per-process keys, no resumption across restarts")
	fs.StringVar(&c.WSAddr, "mqtt-ws-addr", "", "MQTT over WebSocket listener address, e.g. :8083 (for browser dashboards)")
	fs.StringVar(&c.Topic, "mqtt-topic", DefaultTopic, "readings topic; {device_id} marks the level naming the device")
	fs.BoolVar(&c.Sparkplug, "mqtt-sparkplug", true, "store Sparkplug B messages (spBv1.0/GROUP/NBIRTH|DBIRTH|NDATA|DDATA|NDEATH|DDEATH/EDGE[/DEVICE]): a row per metric,\n"+
		"device GROUP/EDGE[/DEVICE]; aliases and seq kept in Redis per edge node; a Rebirth request for an unknown alias or a seq gap")
	fs.IntVar(&c.SparkplugMaxNodes, "sparkplug-max-nodes", DefaultSparkplugMaxNodes, "Sparkplug B edge nodes with state in Redis (live, or of an ended session not yet expired) per credential\n"+
		"(MQTT username under --mqtt-auth, else client id); a birth of one more is refused (MQTT 5 0x97 quota exceeded)")
	fs.Int64Var(&c.SparkplugMaxNodeBytes, "sparkplug-max-node-bytes", DefaultSparkplugMaxNodeBytes, "size of one Sparkplug B edge node's state (its NBIRTH and DBIRTHs: metric names, aliases, datatypes);\n"+
		"a birth past it is refused (MQTT 5 0x95 packet too large). Per credential at most --sparkplug-max-nodes x this")
	fs.DurationVar(&c.SparkplugStateTTL, "sparkplug-state-ttl", DefaultSparkplugStateTTL, "how long a Sparkplug B edge node's state is kept after the connection that published its NBIRTH ended\n"+
		"without an NDEATH (an NDEATH removes it at once)")
	fs.StringVar(&c.AuthFile, "mqtt-auth", "", "device credentials: \"postgres\" for the device registry in --postgres (firehose devices; changes reach live clients within\n"+
		"a second; loaded at start and kept while PostgreSQL is down), or a file (lines: device-id hash [read=FILTER ...] [write=FILTER ...]\n"+
		"[sparkplug=GROUP ...]; hash: bcrypt from firehose mqttpasswd, or a device secret's fh1$ hash); empty allows anonymous clients.\n"+
		"With it everything a device's credentials do not allow is denied: a client\n"+
		"connects with its device id as username and client id; publishes (retained messages and wills too) only its own topics (devices/ID/#,\n"+
		"mapped rows of its own device, its own Sparkplug B edge node in each sparkplug=GROUP) and what its write=FILTER fields grant (the\n"+
		"only way to send Sparkplug commands or STATE: write=spBv1.0/STATE/HOST); subscribes only to topics under its id, plus its read=FILTER\n"+
		"grants (e.g. read=devices/+/readings for a dashboard, which may then also use client ids ID/anything)")
	fs.IntVar(&c.MaxClients, "mqtt-max-clients", DefaultMaxClients, "most MQTT clients connected at once")
	fs.IntVar(&c.MaxPacket, "mqtt-max-packet-bytes", DefaultMaxPacket, "largest MQTT packet accepted, in bytes; a larger one disconnects the client")
	fs.DurationVar(&c.MaxKeepAlive, "mqtt-max-keepalive", DefaultMaxKeepAlive, "longest keep-alive a client may ask for, also imposed on clients asking for none")
	fs.DurationVar(&c.SessionExpiry, "mqtt-session-expiry", DefaultSessionTTL, "how long the session of a disconnected client that asked to keep it is kept")
	fs.IntVar(&c.ReceiveMax, "mqtt-receive-max", DefaultReceiveMax, "QoS 1/2 publishes of one client that may await their acknowledgement at once")
	fs.IntVar(&c.MaxInflight, "mqtt-max-inflight", DefaultMaxInflight, "QoS 1/2 messages one session holds for its subscriber (sent and unacknowledged, or queued while it is away);\n"+
		"past it a message is not delivered to that session. Each holds its payload + about 1 KiB live (mochi keeps an\n"+
		"800-byte packets.Packet per message); count about 4 KiB of RSS for a 230-byte reading under Go's GC:\n"+
		"256 x 4 KiB = 1 MiB per subscribing session; 256 x (1 KiB + 64 KiB max packet) = 16.3 MiB live at worst")
	fs.IntVar(&c.MaxWritesPending, "mqtt-max-writes-pending", DefaultMaxWritesPending, "packets queued for writing to one connected client; past it a message is not delivered to it.\n"+
		"The messages an MQTT 5 client's Receive Maximum holds back wait here: keep it at least --mqtt-max-inflight.\n"+
		"Each connection reserves 8 bytes a slot up front (1,024 x 8 B = 8 KiB; 100,000 clients = 800 MiB) and a full queue holds\n"+
		"1,024 x (1 KiB + payload) = 1.2 MiB for 230-byte readings")
	fs.IntVar(&c.MaxOfflineSessions, "mqtt-max-offline-sessions", DefaultMaxOfflineSessions, "sessions of disconnected clients kept (clean session off / MQTT 5 session expiry);\n"+
		"past it the one disconnected longest is dropped. An empty session costs about 12 KiB: 10,000 x 12 KiB = 120 MiB")
	fs.IntVar(&c.MaxOfflineMessages, "mqtt-max-offline-messages", DefaultMaxOfflineMessages, "QoS 1/2 messages queued for all disconnected sessions together; past it new messages are not queued for them\n"+
		"(readings stay stored); a full session stops receiving until its client comes back. 100,000 x (1 KiB + 230 B reading)\n"+
		"= 120 MiB live, about 400 MiB of RSS; 100,000 x (1 KiB + 64 KiB max packet) = 6.3 GiB live at worst.\n"+
		"A session's own queue is at most --mqtt-max-inflight")
	fs.IntVar(&c.MaxRetained, "mqtt-max-retained", DefaultMaxRetained, "retained messages kept; past it a publish is delivered (a reading stored) but not retained.\n"+
		"Each costs about 1 KiB besides its topic and payload: 10,000 x 1 KiB = 10 MiB on top of --mqtt-max-retained-bytes")
	fs.Int64Var(&c.MaxRetainedBytes, "mqtt-max-retained-bytes", DefaultMaxRetainedBytes, "topic + payload bytes of all retained messages; past it a publish is delivered but not retained")
	fs.IntVar(&c.AuthFailBurst, "mqtt-auth-fail-burst", DefaultAuthFailBurst, "with --mqtt-auth: failed logins a source address (IPv6: its /64) may make at once, before --mqtt-auth-fail-interval applies;\n"+
		"a throttled CONNECT is refused (MQTT 5 0x9F connection rate exceeded, 3.1.1 code 3 server unavailable) before bcrypt runs")
	fs.DurationVar(&c.AuthFailInterval, "mqtt-auth-fail-interval", DefaultAuthFailInterval, "with --mqtt-auth: a throttled source address gets one more login attempt per interval")
	fs.IntVar(&c.AuthFailAddresses, "mqtt-auth-fail-addresses", DefaultAuthFailAddresses, "with --mqtt-auth: source addresses with recent failed logins tracked (about 100 B each);\n"+
		"past it the untracked addresses share one allowance")
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
	if c.MaxInflight <= 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.MaxWritesPending <= 0 {
		c.MaxWritesPending = DefaultMaxWritesPending
	}
	if c.MaxOfflineSessions <= 0 {
		c.MaxOfflineSessions = DefaultMaxOfflineSessions
	}
	if c.MaxOfflineMessages <= 0 {
		c.MaxOfflineMessages = DefaultMaxOfflineMessages
	}
	if c.MaxRetained <= 0 {
		c.MaxRetained = DefaultMaxRetained
	}
	if c.MaxRetainedBytes <= 0 {
		c.MaxRetainedBytes = DefaultMaxRetainedBytes
	}
	if c.AuthFailBurst <= 0 {
		c.AuthFailBurst = DefaultAuthFailBurst
	}
	if c.AuthFailInterval <= 0 {
		c.AuthFailInterval = DefaultAuthFailInterval
	}
	if c.AuthFailAddresses <= 0 {
		c.AuthFailAddresses = DefaultAuthFailAddresses
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	if c.SparkplugMaxNodes <= 0 {
		c.SparkplugMaxNodes = DefaultSparkplugMaxNodes
	}
	if c.SparkplugMaxNodeBytes <= 0 {
		c.SparkplugMaxNodeBytes = DefaultSparkplugMaxNodeBytes
	}
	if c.SparkplugStateTTL <= 0 {
		c.SparkplugStateTTL = DefaultSparkplugStateTTL
	}
	return c
}

// Validate checks the configuration for values that cannot work.
func (c Config) Validate() error {
	if _, err := mqttmsg.ParseTemplate(c.withDefaults().Topic); err != nil {
		return err
	}
	switch {
	case c.Addr == "" && c.TLSAddr == "" && c.WSAddr == "":
		return errors.New("the broker role has no listener: set --mqtt-addr, --mqtt-tls-addr or --mqtt-ws-addr")
	case c.TLSAddr != "" && (c.TLSCert == "" || c.TLSKey == ""):
		return errors.New("--mqtt-tls-addr needs --mqtt-tls-cert and --mqtt-tls-key")
	case c.TLSAddr == "" && (c.TLSCert != "" || c.TLSKey != ""):
		return errors.New("--mqtt-tls-cert and --mqtt-tls-key need --mqtt-tls-addr")
	case c.TLSClientCA != "" && c.TLSAddr == "":
		return errors.New("--mqtt-tls-client-ca needs --mqtt-tls-addr: client certificates are asked for on the TLS listener")
	case c.TLSTicketKeys != "" && c.TLSAddr == "":
		return errors.New("--mqtt-tls-ticket-keys needs --mqtt-tls-addr: session tickets are issued on the TLS listener")
	case c.TLSCRL != "" && c.TLSClientCA == "":
		return errors.New("--mqtt-tls-crl needs --mqtt-tls-client-ca: it revokes client certificates of those CAs")
	case c.MaxPacket < 0 || c.MaxPacket > 256<<20:
		return fmt.Errorf("--mqtt-max-packet-bytes %d: want 1 to 268435456", c.MaxPacket)
	case c.ReceiveMax < 0 || c.ReceiveMax > 65535:
		return fmt.Errorf("--mqtt-receive-max %d: want 1 to 65535", c.ReceiveMax)
	case c.MaxInflight < 0 || c.MaxInflight > 65535:
		return fmt.Errorf("--mqtt-max-inflight %d: want 1 to 65535", c.MaxInflight)
	case c.MaxWritesPending < 0 || c.MaxWritesPending > 1<<20:
		return fmt.Errorf("--mqtt-max-writes-pending %d: want 1 to 1048576", c.MaxWritesPending)
	case c.MaxOfflineSessions < 0 || c.MaxOfflineMessages < 0 || c.MaxRetained < 0 || c.MaxRetainedBytes < 0:
		return errors.New("--mqtt-max-offline-sessions, --mqtt-max-offline-messages, --mqtt-max-retained and --mqtt-max-retained-bytes must not be negative")
	case c.AuthFailBurst < 0 || c.AuthFailInterval < 0 || c.AuthFailAddresses < 0:
		return errors.New("--mqtt-auth-fail-burst, --mqtt-auth-fail-interval and --mqtt-auth-fail-addresses must not be negative")
	case c.SparkplugMaxNodes < 0 || c.SparkplugMaxNodeBytes < 0 || c.SparkplugStateTTL < 0:
		return errors.New("--sparkplug-max-nodes, --sparkplug-max-node-bytes and --sparkplug-state-ttl must not be negative")
	case c.MaxKeepAlive < 0 || c.MaxKeepAlive > 65535*time.Second:
		return fmt.Errorf("--mqtt-max-keepalive %s: want at most 18h12m15s (65535s)", c.MaxKeepAlive)
	}
	if err := clientcert.Identity(c.TLSIdentity).Validate(); err != nil {
		return fmt.Errorf("--mqtt-tls-identity: %w", err)
	}
	return nil
}
