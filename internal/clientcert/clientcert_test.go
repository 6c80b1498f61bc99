package clientcert

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"firehose/internal/testcert"
	"firehose/internal/testenv"
)

// readCert parses the first PEM certificate of file.
func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", file)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func state(certs ...*x509.Certificate) tls.ConnectionState {
	return tls.ConnectionState{PeerCertificates: certs}
}

var discard = slog.New(slog.DiscardHandler)

func noSlash(id string) error {
	if strings.ContainsAny(id, "/+#") {
		return errors.New("holds a topic character")
	}
	return nil
}

func TestIdentify(t *testing.T) {
	pki := testcert.NewPKI(t)
	tests := []struct {
		name     string
		identity Identity
		opts     testcert.DeviceOptions
		want     string
		err      error
	}{
		{name: "cn", identity: CommonName, want: "pump-7"},
		{name: "default is cn", want: "pump-7"},
		{name: "san-uri spiffe", identity: SANURI, opts: testcert.DeviceOptions{URI: "spiffe://fleet.example/device/pump-8"}, want: "pump-8"},
		{name: "san-uri urn", identity: SANURI, opts: testcert.DeviceOptions{URI: "urn:device:pump-9"}, want: "pump-9"},
		{name: "san-uri missing", identity: SANURI, err: ErrNoIdentity},
		{name: "san-dns", identity: SANDNS, opts: testcert.DeviceOptions{DNS: "pump-7.fleet.example"}, want: "pump-7.fleet.example"},
		{name: "san-dns missing", identity: SANDNS, err: ErrNoIdentity},
		{name: "cn not a device id", opts: testcert.DeviceOptions{CN: "a#b"}, err: ErrNoIdentity},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, _ := pki.Device("dev"+string(rune('a'+i)), func() testcert.DeviceOptions {
				o := tt.opts
				if o.CN == "" {
					o.CN = "pump-7"
				}
				return o
			}())
			v, err := New(Config{CAFile: pki.CA, Identity: tt.identity, CheckID: noSlash, Flag: "--mqtt-tls"}, discard)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Identify(readCert(t, cert))
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Errorf("Identify = %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

// TestVerifyConnectionAndCRL checks the clientAuth usage, revocation by a
// PEM and by a DER CRL, and that Watch picks up a rewritten CRL.
func TestVerifyConnectionAndCRL(t *testing.T) {
	pki := testcert.NewPKI(t)
	good, _ := pki.Device("good", testcert.DeviceOptions{})
	noEKU, _ := pki.Device("no-eku", testcert.DeviceOptions{Usage: "none"})
	doomed, _ := pki.Device("doomed", testcert.DeviceOptions{})
	v, err := New(Config{CAFile: pki.CA, CRLFile: pki.CRL, Flag: "--mqtt-tls"}, discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.VerifyConnection(state(readCert(t, good))); err != nil {
		t.Errorf("good certificate: %v", err)
	}
	if err := v.VerifyConnection(state(readCert(t, noEKU))); !errors.Is(err, ErrNoClientAuth) {
		t.Errorf("certificate without extended key usage: %v, want ErrNoClientAuth", err)
	}
	if err := v.VerifyConnection(state()); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("no certificate: %v, want ErrNoCertificate", err)
	}
	dc := readCert(t, doomed)
	if id, err := v.Device(state(dc)); err != nil || id != "doomed" {
		t.Fatalf("Device before revocation = %q, %v", id, err)
	}

	changed := make(chan struct{}, 10)
	go v.Watch(t.Context(), 5*time.Millisecond, func() { changed <- struct{}{} })
	pki.Revoke(doomed)
	testenv.Eventually(t, 5*time.Second, func() bool { return v.Revoked(state(dc)) }, "the rewritten CRL was not picked up")
	<-changed
	if err := v.VerifyConnection(state(dc)); !errors.Is(err, ErrRevoked) {
		t.Errorf("revoked certificate: %v, want ErrRevoked", err)
	}
	if err := v.VerifyConnection(state(readCert(t, good))); err != nil {
		t.Errorf("good certificate after the revocation of another: %v", err)
	}

	der, err := New(Config{CAFile: pki.CA, CRLFile: pki.DER(), Flag: "--http-tls"}, discard)
	if err != nil {
		t.Fatal(err)
	}
	if !der.Revoked(state(dc)) || der.Revoked(state(readCert(t, good))) {
		t.Error("the DER CRL does not revoke exactly the revoked certificate")
	}
}

func TestNewRefuses(t *testing.T) {
	pki := testcert.NewPKI(t)
	other := testcert.NewPKI(t)
	garbage := filepath.Join(t.TempDir(), "garbage")
	if err := os.WriteFile(garbage, []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing CA", Config{CAFile: "/nonexistent/ca.pem"}, "--mqtt-tls-client-ca"},
		{"CA file without certificates", Config{CAFile: garbage}, "no PEM certificate"},
		{"CRL of another CA", Config{CAFile: pki.CA, CRLFile: other.CRL}, "not signed by a CA of --mqtt-tls-client-ca"},
		{"CRL unparsable", Config{CAFile: pki.CA, CRLFile: garbage}, "list 1"},
		{"unknown identity", Config{CAFile: pki.CA, Identity: "email"}, "--mqtt-tls-identity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Flag = "--mqtt-tls"
			if _, err := New(tt.cfg, discard); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
