package clientcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"slices"
	"strings"
	"time"

	"firehose/internal/reload"
)

// Identity says which part of a client certificate names its device.
type Identity string

// The identities a certificate can carry (--mqtt-tls-identity,
// --http-tls-identity).
const (
	// CommonName takes the subject's CN as it is: CN=pump-7 is device
	// pump-7. The default.
	CommonName Identity = "cn"
	// SANURI takes the last segment of the certificate's one URI subject
	// alternative name: after the last '/' or ':', so
	// spiffe://fleet.example/device/pump-7 and urn:device:pump-7 are both
	// device pump-7. A certificate with no URI SAN, or with several, names no
	// device.
	SANURI Identity = "san-uri"
	// SANDNS takes the certificate's one DNS subject alternative name as it
	// is: DNS:pump-7.fleet.example is device pump-7.fleet.example. A
	// certificate with no DNS SAN, or with several, names no device.
	SANDNS Identity = "san-dns"
)

// Identities lists the valid values of Identity, for help texts.
var Identities = []Identity{CommonName, SANURI, SANDNS}

// Validate reports whether id is a known identity ("" is CommonName).
func (id Identity) Validate() error {
	if id == "" || slices.Contains(Identities, id) {
		return nil
	}
	return fmt.Errorf("unknown certificate identity %q: want cn, san-uri or san-dns", string(id))
}

// Errors of a client certificate, returned (wrapped, with details) by
// VerifyConnection, which fails the handshake with them, and by Device.
var (
	// ErrNoCertificate: the client sent no certificate. Apply makes the
	// handshake require one, so it is only seen where Apply was not used.
	ErrNoCertificate = errors.New("no client certificate")
	// ErrNoClientAuth: the certificate does not list the clientAuth
	// extended key usage (a server certificate, or one without any
	// extended key usage, which Go would otherwise accept for any use).
	ErrNoClientAuth = errors.New("client certificate lacks the clientAuth extended key usage")
	// ErrNoIdentity: the certificate names no device by the configured
	// identity (no CN, no or several SANs of the kind), or a name that is
	// not a valid device id.
	ErrNoIdentity = errors.New("client certificate names no device")
	// ErrRevoked: the certificate, or a CA certificate the client sent with
	// it, is on the certificate revocation list.
	ErrRevoked = errors.New("client certificate revoked")
)

// Config says how client certificates are verified.
type Config struct {
	// CAFile is a PEM file of the CA certificates that issue device
	// certificates (--mqtt-tls-client-ca, --http-tls-client-ca). Required.
	CAFile string
	// CRLFile holds certificate revocation lists, PEM ("X509 CRL" blocks,
	// one per CA) or one DER list, each signed by a CA of CAFile
	// (--mqtt-tls-crl, --http-tls-crl). Empty: no revocation.
	CRLFile string
	// Identity names the part of a certificate that is the device id.
	// Empty: CommonName.
	Identity Identity
	// CheckID validates a device id a certificate names (e.g. as a device
	// id of readings); a certificate whose id fails it names no device.
	// Nil: any non-empty id.
	CheckID func(id string) error
	// Flag is the flags' common prefix, e.g. "--mqtt-tls", for errors and
	// logs: "--mqtt-tls-client-ca".
	Flag string
}

// Verifier checks client certificates against the CA and the current
// revocation list, and names their devices. It is safe for concurrent use.
type Verifier struct {
	cfg   Config
	pool  *x509.CertPool
	cas   []*x509.Certificate
	crl   *reload.File[*revocations] // nil: no CRL
	log   *slog.Logger
	clock func() time.Time
}

// serialKey identifies a certificate: its issuer's subject and its serial
// number, unique per issuer.
type serialKey struct {
	issuer string // DER of the issuer's name
	serial string // the serial number in hex
}

func keyOf(rawIssuer []byte, serial *big.Int) serialKey {
	return serialKey{issuer: string(rawIssuer), serial: serial.Text(16)}
}

// revocations is one loaded version of the CRL file.
type revocations struct {
	serials map[serialKey]struct{}
	next    time.Time // the earliest NextUpdate of its lists; zero: none
}

// New loads the CA file and, when configured, the CRL file; an unreadable or
// invalid file, or a CRL no CA of the CA file signed, is an error naming the
// flag.
func New(cfg Config, log *slog.Logger) (*Verifier, error) {
	if err := cfg.Identity.Validate(); err != nil {
		return nil, fmt.Errorf("%s-identity: %w", cfg.Flag, err)
	}
	if cfg.Identity == "" {
		cfg.Identity = CommonName
	}
	v := &Verifier{cfg: cfg, log: log, clock: time.Now}
	if err := v.loadCAs(); err != nil {
		return nil, err
	}
	if cfg.CRLFile != "" {
		f, err := reload.Load(cfg.CRLFile, "certificate revocation list ("+cfg.Flag+"-crl)", v.parseCRL, log)
		if err != nil {
			return nil, err
		}
		v.crl = f
		v.loaded(f.Get())
	}
	return v, nil
}

// loadCAs reads the PEM certificates of the CA file.
func (v *Verifier) loadCAs() error {
	flag := v.cfg.Flag + "-client-ca"
	data, err := os.ReadFile(v.cfg.CAFile)
	if err != nil {
		return fmt.Errorf("read %s: %w", flag, err)
	}
	v.pool = x509.NewCertPool()
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		ca, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("%s %s: certificate %d: %w", flag, v.cfg.CAFile, len(v.cas)+1, err)
		}
		v.pool.AddCert(ca)
		v.cas = append(v.cas, ca)
	}
	if len(v.cas) == 0 {
		return fmt.Errorf("%s %s: no PEM certificate in the file", flag, v.cfg.CAFile)
	}
	return nil
}

// parseCRL parses the CRL file: PEM "X509 CRL" blocks, or one DER list. Each
// list must be signed by a CA of the CA file.
func (v *Verifier) parseCRL(path string, data []byte) (*revocations, error) {
	var ders [][]byte
	if bytes.Contains(data, []byte("-----BEGIN")) {
		for rest := data; ; {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if b.Type != "X509 CRL" {
				return nil, fmt.Errorf("%s: PEM block %q: want X509 CRL", path, b.Type)
			}
			ders = append(ders, b.Bytes)
		}
	} else if len(data) > 0 {
		ders = [][]byte{data}
	}
	if len(ders) == 0 {
		return nil, fmt.Errorf("%s: no certificate revocation list in the file (PEM X509 CRL or DER)", path)
	}
	r := &revocations{serials: map[serialKey]struct{}{}}
	for i, der := range ders {
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("%s: list %d: %w", path, i+1, err)
		}
		if !v.signedByCA(rl) {
			return nil, fmt.Errorf("%s: list %d (issuer %s) is not signed by a CA of %s-client-ca %s", path, i+1, rl.Issuer, v.cfg.Flag, v.cfg.CAFile)
		}
		for _, e := range rl.RevokedCertificateEntries {
			r.serials[keyOf(rl.RawIssuer, e.SerialNumber)] = struct{}{}
		}
		if !rl.NextUpdate.IsZero() && (r.next.IsZero() || rl.NextUpdate.Before(r.next)) {
			r.next = rl.NextUpdate
		}
	}
	return r, nil
}

// signedByCA reports whether a CA of the CA file issued and signed rl.
func (v *Verifier) signedByCA(rl *x509.RevocationList) bool {
	for _, ca := range v.cas {
		if bytes.Equal(ca.RawSubject, rl.RawIssuer) && rl.CheckSignatureFrom(ca) == nil {
			return true
		}
	}
	return false
}

// loaded logs a CRL version that came into use.
func (v *Verifier) loaded(r *revocations) {
	v.log.Info("certificate revocation list loaded", "file", v.crl.Path(), "revoked", len(r.serials))
	if !r.next.IsZero() && v.clock().After(r.next) {
		// A stale list still names what it revoked: applying it is safer
		// than refusing every device. Its issuer owes a new one.
		v.log.Warn("certificate revocation list is past its next update: still applied; publish a new one", "file", v.crl.Path(), "next_update", r.next)
	}
}

// Apply makes tc require a client certificate issued by the CA and check it
// with VerifyConnection at every handshake, resumed ones included.
func (v *Verifier) Apply(tc *tls.Config) {
	tc.ClientAuth = tls.RequireAndVerifyClientCert
	tc.ClientCAs = v.pool
	tc.VerifyConnection = v.VerifyConnection
}

// ApplyOptional makes tc ask for a client certificate without requiring
// one: a certificate presented must pass as under Apply; a client without
// one completes the handshake, and its requests are for the server to
// refuse (an HTTP gateway's readings endpoints) or serve (its probes).
func (v *Verifier) ApplyOptional(tc *tls.Config) {
	tc.ClientAuth = tls.VerifyClientCertIfGiven
	tc.ClientCAs = v.pool
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		return v.VerifyConnection(cs)
	}
}

// VerifyConnection checks what crypto/tls does not: the certificate lists
// the clientAuth extended key usage, neither it nor a CA certificate sent
// with it is revoked, and it names a device. crypto/tls has already checked
// the chain to the CA, the validity dates and, where a usage is listed,
// clientAuth along the chain.
func (v *Verifier) VerifyConnection(cs tls.ConnectionState) error {
	id, err := v.Device(cs)
	if err != nil {
		v.log.Debug("client certificate refused", "err", err)
		return err
	}
	if !slices.Contains(cs.PeerCertificates[0].ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		err := fmt.Errorf("%w (device %q, serial %s)", ErrNoClientAuth, id, cs.PeerCertificates[0].SerialNumber.Text(16))
		v.log.Debug("client certificate refused", "err", err)
		return err
	}
	return nil
}

// Device returns the device a verified connection's client certificate
// names, or why it names none: ErrNoCertificate, ErrRevoked (by the CRL in
// use now, so a long-lived connection can be checked again), ErrNoIdentity.
func (v *Verifier) Device(cs tls.ConnectionState) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", ErrNoCertificate
	}
	leaf := cs.PeerCertificates[0]
	if v.revoked(cs.PeerCertificates) {
		return "", fmt.Errorf("%w (subject %s, serial %s)", ErrRevoked, leaf.Subject, leaf.SerialNumber.Text(16))
	}
	return v.Identify(leaf)
}

// Revoked reports whether the CRL in use now lists the client certificate
// of cs, or a CA certificate the client sent with it.
func (v *Verifier) Revoked(cs tls.ConnectionState) bool { return v.revoked(cs.PeerCertificates) }

func (v *Verifier) revoked(chain []*x509.Certificate) bool {
	if v.crl == nil {
		return false
	}
	r := v.crl.Get()
	if len(r.serials) == 0 {
		return false
	}
	for _, c := range chain {
		if _, ok := r.serials[keyOf(c.RawIssuer, c.SerialNumber)]; ok {
			return true
		}
	}
	return false
}

// Identify returns the device id cert names by the configured identity, or
// an error wrapping ErrNoIdentity.
func (v *Verifier) Identify(cert *x509.Certificate) (string, error) {
	var id string
	switch v.cfg.Identity {
	case SANURI:
		if len(cert.URIs) != 1 {
			return "", fmt.Errorf("%w: want one URI subject alternative name, found %d (subject %s)", ErrNoIdentity, len(cert.URIs), cert.Subject)
		}
		u := cert.URIs[0]
		if u.RawQuery != "" || u.Fragment != "" {
			return "", fmt.Errorf("%w: URI %s has a query or fragment", ErrNoIdentity, u)
		}
		s := strings.TrimRight(u.String(), "/")
		id = s[strings.LastIndexAny(s, "/:")+1:]
	case SANDNS:
		if len(cert.DNSNames) != 1 {
			return "", fmt.Errorf("%w: want one DNS subject alternative name, found %d (subject %s)", ErrNoIdentity, len(cert.DNSNames), cert.Subject)
		}
		id = cert.DNSNames[0]
	default:
		id = cert.Subject.CommonName
	}
	if id == "" {
		return "", fmt.Errorf("%w: empty %s (subject %s)", ErrNoIdentity, v.cfg.Identity, cert.Subject)
	}
	if v.cfg.CheckID != nil {
		if err := v.cfg.CheckID(id); err != nil {
			return "", fmt.Errorf("%w: %q is not a device id: %v", ErrNoIdentity, id, err)
		}
	}
	return id, nil
}

// HasCRL reports whether a revocation list is configured.
func (v *Verifier) HasCRL() bool { return v.crl != nil }

// Watch re-reads the CRL file every interval until ctx ends, and calls
// onChange (if not nil) after each new version came into use: connections
// verified before it may now be revoked (check them with Revoked). A file
// that became unreadable or invalid keeps the previous version; the error is
// logged once. Without a CRL file Watch returns at once.
func (v *Verifier) Watch(ctx context.Context, every time.Duration, onChange func()) {
	if v.crl == nil {
		return
	}
	v.crl.Watch(ctx, every, func(r *revocations) {
		v.loaded(r)
		if onChange != nil {
			onChange()
		}
	})
}
