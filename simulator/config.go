package simulator

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Protocols a fleet can speak.
const (
	ProtocolHTTP  = "http"
	ProtocolMQTT  = "mqtt"
	ProtocolMixed = "mixed" // even-numbered devices over MQTT, odd-numbered over HTTP
)

// TLS key exchanges the devices offer (--tls-key-exchange).
const (
	KeyExchangeHybrid  = "hybrid"  // Go's default: X25519MLKEM768 first
	KeyExchangeClassic = "classic" // X25519 and P-256 only
)

// HTTP endpoints the HTTP devices post to.
const (
	EndpointFast = "fast" // POST /readings/fast, the seed's shape, one reading a request
	EndpointV1   = "v1"   // POST /v1/readings, a JSON array of --batch readings
)

// Limits that keep a run bounded: load goes to the target's machine, and
// every device is a goroutine (and, over MQTT, a connection).
const (
	maxDevices     = 100_000
	maxBatch       = 10_000
	maxExtraFields = 32
	maxRunID       = 24
)

// Config is what a run does and where it sends. Zero values are not useful:
// start from DefaultConfig (or RegisterFlags, which applies the same
// defaults).
type Config struct {
	// HTTP is the gateway's base URL, http:// or https://. Default
	// http://127.0.0.1:8080. Used when Protocol is http or mixed.
	HTTP string
	// MQTT is the broker's URL: tcp:// (or mqtt://) or ssl:// (tls://,
	// mqtts://). Default tcp://127.0.0.1:1883. Used when Protocol is mqtt or
	// mixed.
	MQTT string
	// Postgres is the URL of the database the deployment writes to, for the
	// verification. Empty skips verification (the report then proves
	// nothing about landing). Default postgres://localhost:5432/firehose,
	// as firehose serve.
	Postgres string
	// Metrics is the URL of the target's Prometheus /metrics, scraped each
	// second for the stream backlog. Default <HTTP>/metrics when the fleet
	// uses HTTP, else none; "off" disables.
	Metrics string

	// CAFile is a PEM file of CA certificates trusted for https:// and
	// ssl:// targets, in addition to the system's. Default none.
	CAFile string
	// InsecureSkipVerify accepts any server certificate (self-signed test
	// deployments only). Default false.
	InsecureSkipVerify bool
	// KeyExchange is what TLS key exchange devices offer (--tls-key-exchange):
	// KeyExchangeHybrid, Go's default (the post-quantum hybrid
	// X25519MLKEM768 first, then X25519 and the NIST curves, as OpenSSL 3.5
	// does), or KeyExchangeClassic (X25519 and P-256 only, as OpenSSL 3.0
	// and mbedTLS, on most devices today, do). Default ("") hybrid.
	KeyExchange string
	// APIKey is sent as "Authorization: Bearer <key>" on every HTTP request.
	// Default none.
	APIKey string
	// MQTTPassword is every device's MQTT password (the username is the
	// device id). Default none.
	MQTTPassword string
	// MQTTPasswordFile holds "device password" lines; a line for device "*"
	// is the password of devices without a line of their own. Overrides
	// MQTTPassword for the devices it names.
	MQTTPasswordFile string
	// MQTTCert and MQTTKey are the PEM files of the client certificate and
	// its key each MQTT device presents over ssl:// (--mqtt-cert,
	// --mqtt-key); "{device_id}" in either is replaced by the device's id, so
	// that each device has a certificate of its own. Default none.
	MQTTCert, MQTTKey string
	// TLSResume gives each MQTT device over ssl:// a TLS session cache of
	// its own (one session), kept across its reconnects in this process, as
	// a device's TLS stack with session caching does: a reconnect resumes
	// its session, an abbreviated handshake, when the broker accepts the
	// ticket (after a restart of the broker only with shared ticket keys,
	// firehose serve --mqtt-tls-ticket-keys). False: every connection makes
	// a full handshake. Default (DefaultConfig, --tls-resume) true.
	TLSResume bool
	// MQTTTopic is the publish topic; {device_id} is replaced by the
	// device's id. Default devices/{device_id}/readings.
	MQTTTopic string

	// Devices is the fleet's size. Default 100.
	Devices int
	// Protocol is http, mqtt or mixed. Default http.
	Protocol string
	// Endpoint is the HTTP endpoint: fast (/readings/fast) or v1
	// (/v1/readings). Default v1.
	Endpoint string
	// Batch is the readings per /v1/readings request. A device's first
	// request carries 1 to Batch readings (by its index) so that the
	// fleet's uploads are spread evenly over time. Default 1.
	Batch int
	// QoS is the MQTT quality of service: 0, 1 or 2. Default 1.
	QoS int
	// Rate is the fleet's total target rate in readings per second (open
	// loop); 0 is closed loop: each device sends its next reading as soon as
	// the previous one was answered. Default 1000.
	Rate float64
	// Ramp is how long the open-loop rate takes to rise linearly from 0 to
	// Rate. Default 0 (full rate at once).
	Ramp time.Duration
	// Duration is how long the fleet sends. Default 10s.
	Duration time.Duration
	// Concurrency caps the HTTP requests in flight across the fleet. Default
	// 0: one per HTTP device, at most 256.
	Concurrency int
	// ExtraFields adds this many extra fields (rssi, temp_c, ...) to each
	// /v1/readings and MQTT reading. Default 0.
	ExtraFields int
	// MaxAttempts bounds the attempts to send one HTTP request or one MQTT
	// publish that got no acknowledgement. Default 5.
	MaxAttempts int
	// Timeout is the longest to wait for one answer (HTTP response,
	// PUBACK/PUBCOMP) and for an MQTT connection. Default 10s.
	Timeout time.Duration
	// LandTimeout bounds the wait, after sending, for the acknowledged
	// readings to land in PostgreSQL. Default 60s.
	LandTimeout time.Duration
	// RunID names the run; devices are sim-<RunID>-<n>. Lower-case letters
	// and digits, at most 24. Default: 8 random hex digits. A run refuses
	// to start when rows of its devices already exist.
	RunID string
	// ConnectParallel is how many MQTT devices connect at once before the
	// run starts. Default 64.
	ConnectParallel int
	// ClockSpread sets the devices' clocks apart: device i of n measures at
	// the time plus an offset from -ClockSpread (the first) to +ClockSpread
	// (the last), evenly spread, so the fleet's readings span that many days
	// either side of now (time partitions). Default 0: every clock is right.
	ClockSpread time.Duration

	// Shape is what each device sends: reading (default: one reading a
	// message, the readings topic and /v1/readings or /readings/fast),
	// telemetry (multi-metric JSON under a topic hierarchy), samples (an
	// upload of Batch buffered samples), sparkplug (Sparkplug B edge
	// nodes, MQTT only) or typed (the telemetry message, landing as one
	// row of the typed table sim_telemetry, verified column by column).
	// The shapes but reading need the target's mapping rules of
	// deploy/simulate-rules.yaml (sparkplug needs none; typed also its
	// table: firehose migrate --config deploy/simulate-rules.yaml).
	Shape string
	// MetricCount is the numeric metrics of each telemetry message (shapes
	// telemetry and typed) and of each Sparkplug node and device: temp,
	// pressure, rpm, then m3, m4, ...
	// Default 3. (Its flag is --metric-count: --metrics is the target's
	// Prometheus URL.)
	MetricCount int
	// SparkplugDevices is the devices under each Sparkplug edge node, each
	// with a DBIRTH and DDATA of its own. Default 0.
	SparkplugDevices int
	// SparkplugRebirthEvery makes every Nth NDATA of an edge node carry an
	// alias its NBIRTH never gave, so that the target asks for a rebirth
	// (NCMD Node Control/Rebirth), which the edge node answers; at QoS 1/2
	// the target stores that NDATA whole as an edge dead letter, none of
	// its rows (the verification expects so). Default 0:
	// never.
	SparkplugRebirthEvery int
	// Resend is the probability (0 to 1) that a device sends an
	// acknowledged message once more, identical, as if the acknowledgement
	// had been lost. Default 0.
	Resend float64
	// ExpectDedup makes any duplicate a failure, those of Resend too: the
	// target is expected to drop a message it already stored (by its
	// message id). Default false.
	ExpectDedup bool

	// BeforeVerify, when set, runs after landing and before verification.
	// Tests use it to make a target lossy; it has no flag.
	BeforeVerify func() error
}

// DefaultConfig is the configuration with every default applied.
func DefaultConfig() Config {
	var c Config
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	c.RegisterFlags(fs)
	return c
}

// RegisterFlags registers the run's flags on fs, with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTP, "http", "http://127.0.0.1:8080", "base URL of the HTTP gateway (http:// or https://)")
	fs.StringVar(&c.MQTT, "mqtt", "tcp://127.0.0.1:1883", "URL of the MQTT broker: tcp:// or ssl:// (also mqtt://, tls://, mqtts://)")
	fs.StringVar(&c.Postgres, "postgres", "postgres://localhost:5432/firehose", "PostgreSQL URL of the deployment's database, to verify what landed; empty skips verification")
	fs.StringVar(&c.Metrics, "metrics", "", "URL of the target's Prometheus metrics, scraped each second for the stream backlog (default <http>/metrics when the fleet uses HTTP; off to disable)")
	fs.StringVar(&c.CAFile, "ca-file", "", "PEM file of CA certificates to trust for https:// and ssl:// targets")
	fs.BoolVar(&c.InsecureSkipVerify, "insecure-skip-verify", false, "accept any TLS certificate (self-signed test deployments only)")
	fs.StringVar(&c.KeyExchange, "tls-key-exchange", KeyExchangeHybrid, "TLS key exchange the devices offer over https:// and ssl://: hybrid (Go's default: post-quantum X25519MLKEM768\n"+
		"first, as OpenSSL 3.5 clients) or classic (X25519 and P-256 only, as OpenSSL 3.0 and mbedTLS clients); the server chooses")
	fs.StringVar(&c.APIKey, "api-key", "", "API key sent as Authorization: Bearer on every HTTP request")
	fs.StringVar(&c.MQTTPassword, "mqtt-password", "", "MQTT password of every device (the username is the device id)")
	fs.StringVar(&c.MQTTPasswordFile, "mqtt-password-file", "", "file of 'device password' lines (device * for the rest); overrides --mqtt-password")
	fs.StringVar(&c.MQTTCert, "mqtt-cert", "", "PEM file of the client certificate each MQTT device presents over ssl:// ({device_id} is replaced by the device's id,\n"+
		"e.g. certs/{device_id}.pem: a certificate each)")
	fs.StringVar(&c.MQTTKey, "mqtt-key", "", "PEM file of the key of --mqtt-cert ({device_id} is replaced by the device's id)")
	fs.BoolVar(&c.TLSResume, "tls-resume", true, "each MQTT device over ssl:// keeps a TLS session cache of its own across its reconnects, as device TLS stacks with\n"+
		"session caching do: a reconnect resumes (an abbreviated handshake) when the broker takes the ticket, after a broker\n"+
		"restart only with serve --mqtt-tls-ticket-keys; --tls-resume=false makes every connection a full handshake")
	fs.StringVar(&c.MQTTTopic, "mqtt-topic", "devices/{device_id}/readings", "MQTT topic template; {device_id} is replaced by the device's id")
	fs.IntVar(&c.Devices, "devices", 100, "fake devices in the fleet, each sim-<run id>-<n>")
	fs.StringVar(&c.Protocol, "protocol", ProtocolHTTP, "http, mqtt, or mixed (even devices over MQTT, odd over HTTP)")
	fs.StringVar(&c.Endpoint, "endpoint", EndpointV1, "HTTP endpoint: fast (/readings/fast, the seed's shape) or v1 (/v1/readings)")
	fs.IntVar(&c.Batch, "batch", 1, "readings per /v1/readings request (a JSON array)")
	fs.IntVar(&c.QoS, "qos", 1, "MQTT quality of service: 0 (at most once), 1 or 2")
	fs.Float64Var(&c.Rate, "rate", 1000, "total target rate of the fleet, readings/s (open loop); 0 for closed loop (send on each ack)")
	fs.DurationVar(&c.Ramp, "ramp", 0, "time for the open-loop rate to rise linearly from 0 to --rate")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "how long the fleet sends")
	fs.IntVar(&c.Concurrency, "concurrency", 0, "most HTTP requests in flight across the fleet (0: one per HTTP device, at most 256)")
	fs.IntVar(&c.ExtraFields, "extra-fields", 0, "extra fields in each /v1/readings and MQTT reading (rssi, temp_c, humidity, ...)")
	fs.IntVar(&c.MaxAttempts, "max-attempts", 5, "attempts to send a reading that got no acknowledgement (503, transport error, no PUBACK)")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "longest wait for one HTTP answer, PUBACK/PUBCOMP or MQTT connection")
	fs.DurationVar(&c.LandTimeout, "land-timeout", 60*time.Second, "longest wait after sending for acknowledged readings to land in PostgreSQL")
	fs.StringVar(&c.RunID, "run-id", "", "name of the run, in every device id (default: random); lower-case letters and digits")
	fs.DurationVar(&c.ClockSpread, "clock-spread", 0, "set the devices' clocks from this much behind (the first) to this much ahead (the last), evenly; the edge refuses ts past --max-clock-skew ahead; the report's measurement-to-commit latency then means little")
	fs.IntVar(&c.ConnectParallel, "connect-parallel", 64, "MQTT devices connecting at once before the run starts")
	fs.StringVar(&c.Shape, "shape", ShapeReading, "what each device sends: reading, telemetry (multi-metric JSON, topic sim/{site}/{line}/{device_id}/telemetry),\n"+
		"samples (--batch buffered samples a message), sparkplug (Sparkplug B edge nodes, MQTT) or typed (the telemetry message as a row of the typed table sim_telemetry,\n"+
		"topic sim/{site}/{line}/{device_id}/typed, verified column by column); telemetry, samples and typed need the rules of deploy/simulate-rules.yaml")
	fs.IntVar(&c.MetricCount, "metric-count", 3, "numeric metrics of each telemetry message and of each Sparkplug node and device (temp, pressure, rpm, m3, ...)")
	fs.IntVar(&c.SparkplugDevices, "sparkplug-devices", 0, "devices under each Sparkplug edge node (a DBIRTH and DDATA each)")
	fs.IntVar(&c.SparkplugRebirthEvery, "sparkplug-rebirth-every", 0, "every Nth NDATA of an edge node carries an alias its NBIRTH never gave, so the target asks for a rebirth; at QoS 1/2 that NDATA is expected as an edge dead letter, no row (0: never)")
	fs.Float64Var(&c.Resend, "resend", 0, "probability (0 to 1) that a device sends an acknowledged message again, identical, as if the ack had been lost")
	fs.BoolVar(&c.ExpectDedup, "expect-dedup", false, "fail on any duplicate, those of --resend too (the target drops messages it already stored)")
}

// Validate checks c and fills what is derived from other settings (the run
// id, the metrics URL).
func (c *Config) Validate() error {
	switch c.Protocol {
	case ProtocolHTTP, ProtocolMQTT, ProtocolMixed:
	default:
		return fmt.Errorf("--protocol %q: want http, mqtt or mixed", c.Protocol)
	}
	if c.Devices < 1 || c.Devices > maxDevices {
		return fmt.Errorf("--devices %d: want 1 to %d", c.Devices, maxDevices)
	}
	if c.Protocol == ProtocolMixed && c.Devices < 2 {
		return errors.New("--protocol mixed needs at least 2 devices")
	}
	if c.usesHTTP() {
		if err := checkURL("--http", c.HTTP, "http", "https"); err != nil {
			return err
		}
		switch c.Endpoint {
		case EndpointFast:
			if c.Batch != 1 {
				return fmt.Errorf("--batch %d: /readings/fast takes one reading a request; use --endpoint v1", c.Batch)
			}
		case EndpointV1:
		default:
			return fmt.Errorf("--endpoint %q: want fast or v1", c.Endpoint)
		}
	}
	if c.usesMQTT() {
		if err := checkURL("--mqtt", c.MQTT, "tcp", "mqtt", "ssl", "tls", "mqtts"); err != nil {
			return err
		}
		if c.QoS < 0 || c.QoS > 2 {
			return fmt.Errorf("--qos %d: want 0, 1 or 2", c.QoS)
		}
		if !strings.Contains(c.MQTTTopic, "{device_id}") {
			return fmt.Errorf("--mqtt-topic %q: must contain {device_id} (firehose takes the device from the topic)", c.MQTTTopic)
		}
		if strings.ContainsAny(c.MQTTTopic, "+#") {
			return fmt.Errorf("--mqtt-topic %q: wildcards + and # are not allowed in a publish topic", c.MQTTTopic)
		}
		if (c.MQTTCert == "") != (c.MQTTKey == "") {
			return errors.New("--mqtt-cert and --mqtt-key go together: a client certificate needs its key")
		}
		if c.MQTTCert != "" && !isTLSURL(c.MQTT) {
			return fmt.Errorf("--mqtt-cert: a client certificate is presented over TLS; --mqtt %q is not an ssl:// URL", redact(c.MQTT))
		}
	}
	if c.KeyExchange != "" && c.KeyExchange != KeyExchangeHybrid && c.KeyExchange != KeyExchangeClassic {
		return fmt.Errorf("--tls-key-exchange %q: want %s or %s", c.KeyExchange, KeyExchangeHybrid, KeyExchangeClassic)
	}
	if c.Batch < 1 || c.Batch > maxBatch {
		return fmt.Errorf("--batch %d: want 1 to %d", c.Batch, maxBatch)
	}
	if c.Rate < 0 || c.Rate > 10_000_000 {
		return fmt.Errorf("--rate %g: want 0 (closed loop) to 10000000 readings/s", c.Rate)
	}
	if c.Ramp < 0 {
		return fmt.Errorf("--ramp %s: want 0 or more", c.Ramp)
	}
	if c.Duration <= 0 {
		return fmt.Errorf("--duration %s: want a positive duration", c.Duration)
	}
	if c.Concurrency < 0 {
		return fmt.Errorf("--concurrency %d: want 0 (automatic) or more", c.Concurrency)
	}
	if c.ExtraFields < 0 || c.ExtraFields > maxExtraFields {
		return fmt.Errorf("--extra-fields %d: want 0 to %d", c.ExtraFields, maxExtraFields)
	}
	if c.MaxAttempts < 1 || c.MaxAttempts > 100 {
		return fmt.Errorf("--max-attempts %d: want 1 to 100", c.MaxAttempts)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("--timeout %s: want a positive duration", c.Timeout)
	}
	if c.LandTimeout < 0 {
		return fmt.Errorf("--land-timeout %s: want 0 or more", c.LandTimeout)
	}
	if c.ConnectParallel < 1 {
		return fmt.Errorf("--connect-parallel %d: want 1 or more", c.ConnectParallel)
	}
	if err := c.validateShape(); err != nil {
		return err
	}
	if c.RunID == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		c.RunID = hex.EncodeToString(b)
	}
	if len(c.RunID) > maxRunID || strings.Trim(c.RunID, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return fmt.Errorf("--run-id %q: want 1 to %d lower-case letters and digits", c.RunID, maxRunID)
	}
	if c.Postgres != "" {
		if _, err := url.Parse(c.Postgres); err != nil {
			return fmt.Errorf("--postgres: %v", err)
		}
	}
	switch {
	case c.Metrics == "off":
	case c.Metrics == "" && c.usesHTTP():
		c.Metrics = strings.TrimSuffix(c.HTTP, "/") + "/metrics"
	case c.Metrics != "":
		if err := checkURL("--metrics", c.Metrics, "http", "https"); err != nil {
			return err
		}
	}
	if c.ClockSpread < 0 || c.ClockSpread > 100*365*24*time.Hour {
		return fmt.Errorf("--clock-spread %s: want 0 up to 100 years", c.ClockSpread)
	}
	return nil
}

func (c *Config) usesHTTP() bool { return c.Protocol == ProtocolHTTP || c.Protocol == ProtocolMixed }
func (c *Config) usesMQTT() bool { return c.Protocol == ProtocolMQTT || c.Protocol == ProtocolMixed }

// deviceUsesMQTT says which protocol device idx (0-based) speaks.
func (c *Config) deviceUsesMQTT(idx int) bool {
	switch c.Protocol {
	case ProtocolMQTT:
		return true
	case ProtocolMixed:
		return (idx+1)%2 == 0 // devices sim-<run>-2, -4, ...
	}
	return false
}

// DevicePrefix is what every device id of the run starts with.
func (c *Config) DevicePrefix() string { return "sim-" + c.RunID + "-" }

// isTLSURL reports whether an MQTT URL asks for TLS.
func isTLSURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "ssl" || u.Scheme == "tls" || u.Scheme == "mqtts")
}

func checkURL(flagName, raw string, schemes ...string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s %q: %v", flagName, raw, err)
	}
	for _, s := range schemes {
		if u.Scheme == s {
			if u.Host == "" {
				return fmt.Errorf("%s %q: no host", flagName, raw)
			}
			return nil
		}
	}
	return fmt.Errorf("%s %q: want a %s:// URL", flagName, raw, strings.Join(schemes, ":// or "))
}

// redact hides a password in a URL for the report.
func redact(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
