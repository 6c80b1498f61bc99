package httpgw

import (
	"flag"
	"fmt"
	"net"
	"time"

	"firehose/ingest"
	"firehose/internal/clientcert"
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
	// TLSClientCA is a PEM file of the CAs that issue device certificates
	// (--http-tls-client-ca; needs TLSCert). Set, every connection must
	// present a client certificate of theirs with the clientAuth extended
	// key usage (the handshake fails otherwise, so no handler sees the
	// request), and the certificate identifies the device: a request to
	// /v1/readings or /readings/fast may carry only that device's readings
	// (403 otherwise). API keys, if set too, still apply. Empty: none.
	TLSClientCA string
	// TLSIdentity is the part of a client certificate that is the device
	// id (--http-tls-identity): cn (the default), san-uri or san-dns; see
	// clientcert.Identity.
	TLSIdentity string
	// TLSCRL is a file of certificate revocation lists signed by the
	// TLSClientCA CAs, PEM or DER (--http-tls-crl). A revoked certificate
	// fails the handshake; the file is re-read when it changes, and a
	// request on a connection whose certificate it now revokes is answered
	// 403 and the connection closed. Empty: no revocation.
	TLSCRL string
	// TLSTicketKeys is a file of TLS session ticket keys shared by the
	// edges of a deployment (--http-tls-ticket-keys; needs TLSCert): one
	// 32-byte key a line in hex or base64, the first encrypting, all
	// decrypting; see package ticketkeys. A client then resumes its TLS
	// session on any edge and after a restart. Re-read when it changes.
	// Empty: keys of this process's own.
	TLSTicketKeys string
	// DeviceAuth makes each device identify itself on /v1/readings and
	// /readings/fast (--http-device-auth): "" (the default) asks nothing;
	// DeviceAuthMQTT ("mqtt") takes HTTP Basic auth, the device id and its
	// device secret, checked against Devices, the credentials of
	// --mqtt-auth; a request may then carry only that device's readings
	// (403 otherwise, nothing stored). With APIKeysFile too, a request must
	// pass both (the key then goes in X-API-Key). Not with TLSClientCA: a
	// client certificate already identifies the device.
	DeviceAuth string
	// Devices are the device credentials DeviceAuth checks; New requires
	// them when DeviceAuth is set. Not a flag: set by the command.
	Devices Devices
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
	fs.StringVar(&c.TLSClientCA, "http-tls-client-ca", "", "PEM `file` of the CAs that issue device certificates: /v1/readings and /readings/fast then require a client\n"+
		"certificate of theirs with the clientAuth extended key usage (401 without one; with --http-device-auth, a device secret\n"+
		"does instead), and it identifies the device: they take only its readings (403 naming the other device); /readings/fast\n"+
		"without X-Device-ID is that device. A certificate presented is checked at the handshake; health, readiness and metrics need none")
	fs.StringVar(&c.TLSIdentity, "http-tls-identity", string(clientcert.CommonName), "where a client certificate names its device: cn (subject common name), san-uri (last segment of its URI SAN) or san-dns (its DNS SAN)")
	fs.StringVar(&c.TLSCRL, "http-tls-crl", "", "certificate revocation list `file` (PEM or DER, signed by a --http-tls-client-ca CA): a revoked certificate fails the handshake;\n"+
		"re-read when it changes, and the next request on a connection it now revokes is answered 403")
	fs.StringVar(&c.TLSTicketKeys, "http-tls-ticket-keys", "", "`file` of TLS session ticket keys shared by every edge, as --mqtt-tls-ticket-keys (may be the same file): clients resume\n"+
		"their TLS sessions on any edge and after a restart. Re-read when it changes. Default: per-process keys")
	fs.StringVar(&c.APIKeysFile, "http-api-keys", "", "API key `file`, lines of: name sha256-hex-of-key devices (comma-separated, or * for any);\nmake lines with: firehose apikey NAME [DEVICES]. Re-read when it changes. Empty: no authentication")
	fs.StringVar(&c.DeviceAuth, "http-device-auth", "", "\"mqtt\": each device identifies itself on /v1/readings and /readings/fast with HTTP Basic auth, its device id and\n"+
		"device secret, checked against the credentials of --mqtt-auth (file or postgres; device secrets only, not bcrypt), and\n"+
		"posts only its own readings (403 otherwise). With --http-api-keys a request needs both (the key in X-API-Key); with\n"+
		"--http-tls-client-ca a client certificate identifies its device without a secret. Default: off")
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
	case c.TLSClientCA != "" && c.TLSCert == "":
		return fmt.Errorf("--http-tls-client-ca %s needs --http-tls-cert and --http-tls-key: client certificates are asked for over HTTPS", c.TLSClientCA)
	case c.TLSCRL != "" && c.TLSClientCA == "":
		return fmt.Errorf("--http-tls-crl %s needs --http-tls-client-ca: it revokes client certificates of those CAs", c.TLSCRL)
	case c.TLSTicketKeys != "" && c.TLSCert == "":
		return fmt.Errorf("--http-tls-ticket-keys %s needs --http-tls-cert and --http-tls-key: session tickets are issued over HTTPS", c.TLSTicketKeys)
	case c.DeviceAuth != "" && c.DeviceAuth != DeviceAuthMQTT:
		return fmt.Errorf("--http-device-auth %q: want %q (the credentials of --mqtt-auth) or empty (off)", c.DeviceAuth, DeviceAuthMQTT)
	case c.MaxBody <= 0:
		return fmt.Errorf("--http-max-body %d: want a positive number of bytes", c.MaxBody)
	case c.MaxItems <= 0:
		return fmt.Errorf("--http-max-items %d: want a positive number", c.MaxItems)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("shutdown timeout %s: want a positive duration", c.ShutdownTimeout)
	}
	if err := clientcert.Identity(c.TLSIdentity).Validate(); err != nil {
		return fmt.Errorf("--http-tls-identity: %w", err)
	}
	if err := ingest.ValidateDeviceID(c.DefaultDevice, c.Limits.MaxDeviceID); err != nil {
		return fmt.Errorf("--default-device-id %q: %v", c.DefaultDevice, err)
	}
	return nil
}
