package httpgw

import (
	"flag"
	"fmt"
	"net"
	"time"

	"firehose/ingest"
	"firehose/mapping"
)

// Defaults of Config. New applies them to zero fields.
const (
	DefaultAddr            = ":8080"
	DefaultMaxBody         = 1 << 20 // 1 MiB: 10,000 small readings of ~100 bytes
	DefaultMaxItems        = 10000
	DefaultDevice          = "seed"
	DefaultShutdownTimeout = 15 * time.Second
)

// Config tunes the HTTP gateway. New gives zero fields their defaults; a
// negative or inconsistent value is an error from Validate.
type Config struct {
	// Addr is the TCP address to listen on, host:port (--http-addr). Default
	// ":8080"; ":0" picks a free port (see Server.Addr).
	Addr string
	// TLSCert is a PEM certificate (chain) file (--http-tls-cert). With TLSKey
	// it turns on TLS 1.2+; empty (the default) serves plain HTTP.
	TLSCert string
	// TLSKey is the PEM private key file of TLSCert (--http-tls-key).
	TLSKey string
	// APIKeysFile is the API key file (--http-api-keys); see the package
	// comment for its format. Empty (the default) means no authentication.
	// The file is re-read when it changes, so revoking a key needs no restart.
	APIKeysFile string
	// MaxBody is the largest request body in bytes (--http-max-body); larger
	// bodies are answered 413. Default 1 MiB (1048576).
	MaxBody int64
	// Rules are the mapping rules a request to /v1/readings may name with
	// ?rule=NAME (rules with endpoint /v1/readings). Nil: none.
	Rules *mapping.Mapper
	// MaxItems is the most readings in one request to /v1/readings
	// (--http-max-items); more are answered 413. Default 10000.
	MaxItems int
	// DefaultDevice is the device of a /readings/fast request without an
	// X-Device-ID header (--default-device-id). Default "seed".
	DefaultDevice string
	// ShutdownTimeout bounds how long Run waits for in-flight requests when
	// its context ends. Not a flag of its own: set by the command. Default 15s.
	ShutdownTimeout time.Duration
	// Limits bound a valid reading. Not registered here: set by the command.
	// Zero fields take ingest.DefaultLimits.
	Limits ingest.Limits
}

// RegisterFlags registers the gateway's flags on fs, with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "http-addr", DefaultAddr, "host:port the HTTP gateway listens on (port 0 picks a free one)")
	fs.StringVar(&c.TLSCert, "http-tls-cert", "", "PEM certificate `file`; with --http-tls-key serves HTTPS (TLS 1.2+); default plain HTTP")
	fs.StringVar(&c.TLSKey, "http-tls-key", "", "PEM private key `file` of --http-tls-cert")
	fs.StringVar(&c.APIKeysFile, "http-api-keys", "", "API key `file`, lines of: name sha256-hex-of-key devices (comma-separated, or * for any);\nmake lines with: firehose apikey NAME [DEVICES]. Re-read when it changes. Empty: no authentication")
	fs.Int64Var(&c.MaxBody, "http-max-body", DefaultMaxBody, "largest request body in `bytes` (1 MiB = 1048576); larger ones are answered 413")
	fs.IntVar(&c.MaxItems, "http-max-items", DefaultMaxItems, "most readings in one /v1/readings request; more are answered 413")
	fs.StringVar(&c.DefaultDevice, "default-device-id", DefaultDevice, "device `id` of /readings/fast requests without an X-Device-ID header")
}

// withDefaults gives zero fields their defaults.
func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.MaxItems == 0 {
		c.MaxItems = DefaultMaxItems
	}
	if c.DefaultDevice == "" {
		c.DefaultDevice = DefaultDevice
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	return c
}

// Validate checks the configuration for values that cannot work; each error
// is one line naming the flag.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("--http-addr %q: want host:port, e.g. :8080 or 127.0.0.1:8080", c.Addr)
	}
	switch {
	case c.TLSCert != "" && c.TLSKey == "":
		return fmt.Errorf("--http-tls-cert %s is set but --http-tls-key is not: give both to serve HTTPS", c.TLSCert)
	case c.TLSKey != "" && c.TLSCert == "":
		return fmt.Errorf("--http-tls-key %s is set but --http-tls-cert is not: give both to serve HTTPS", c.TLSKey)
	case c.MaxBody <= 0:
		return fmt.Errorf("--http-max-body %d: want a positive number of bytes", c.MaxBody)
	case c.MaxItems <= 0:
		return fmt.Errorf("--http-max-items %d: want a positive number", c.MaxItems)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("shutdown timeout %s: want a positive duration", c.ShutdownTimeout)
	}
	if err := ingest.ValidateDeviceID(c.DefaultDevice, c.Limits.MaxDeviceID); err != nil {
		return fmt.Errorf("--default-device-id %q: %v", c.DefaultDevice, err)
	}
	return nil
}
