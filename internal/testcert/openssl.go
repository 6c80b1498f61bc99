package testcert

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// PKI is a certificate authority made with the openssl command line, as an
// operator would make one, in a directory of the test's own: a CA (ECDSA
// P-256), a server certificate for 127.0.0.1 and localhost, device
// certificates, and a certificate revocation list kept current by Revoke.
type PKI struct {
	t   testing.TB
	Dir string
	// CA is the CA certificate (PEM) that devices' certificates chain to,
	// and that clients trust the server certificate by.
	CA string
	// ServerCert and ServerKey are a server certificate for 127.0.0.1, ::1
	// and localhost, signed by the CA, and its key (PEM).
	ServerCert, ServerKey string
	// CRL is the CA's certificate revocation list (PEM); Revoke rewrites it.
	CRL  string
	conf string
}

// DeviceOptions describe a device certificate.
type DeviceOptions struct {
	// CN is the subject's common name; empty: the name given to Device.
	CN string
	// URI and DNS add a subject alternative name each, when not empty.
	URI, DNS string
	// Usage is the extended key usage: "" is clientAuth; "none" lists
	// none; else openssl's names (serverAuth, ...).
	Usage string
	// Expired makes a certificate whose validity ended yesterday.
	Expired bool
}

// openssl runs the openssl command line in the PKI's directory and fails the
// test with its output on error.
func (p *PKI) openssl(args ...string) {
	p.t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = p.Dir
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// NewPKI makes a CA, its server certificate and an empty CRL with openssl;
// the test is skipped when openssl is not installed.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skipf("openssl not installed (%v): these tests make their certificates with it", err)
	}
	dir := t.TempDir()
	p := &PKI{t: t, Dir: dir, CA: filepath.Join(dir, "ca.pem"), CRL: filepath.Join(dir, "crl.pem"), conf: filepath.Join(dir, "ca.cnf")}
	conf := `[ ca ]
default_ca = firehose_ca
[ firehose_ca ]
dir              = ` + dir + `
database         = $dir/index.txt
new_certs_dir    = $dir/issued
serial           = $dir/serial
crlnumber        = $dir/crlnumber
certificate      = $dir/ca.pem
private_key      = $dir/ca.key
default_md       = sha256
default_days     = 1
default_crl_days = 1
unique_subject   = no
policy           = any_name
[ any_name ]
commonName = supplied
`
	for name, content := range map[string]string{"ca.cnf": conf, "index.txt": "", "serial": "1000\n", "crlnumber": "1000\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "issued"), 0o700); err != nil {
		t.Fatal(err)
	}
	p.openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=firehose test device CA",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	p.ServerCert, p.ServerKey = p.issue("server", "localhost", "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost\n", false)
	p.writeCRL()
	return p
}

// Device makes a certificate and key (PEM files) for device name, signed by
// the CA.
func (p *PKI) Device(name string, o DeviceOptions) (cert, key string) {
	p.t.Helper()
	cn := o.CN
	if cn == "" {
		cn = name
	}
	ext := ""
	switch o.Usage {
	case "":
		ext = "extendedKeyUsage = clientAuth\n"
	case "none":
	default:
		ext = "extendedKeyUsage = " + o.Usage + "\n"
	}
	var sans []string
	if o.URI != "" {
		sans = append(sans, "URI:"+o.URI)
	}
	if o.DNS != "" {
		sans = append(sans, "DNS:"+o.DNS)
	}
	if len(sans) > 0 {
		ext += "subjectAltName = " + strings.Join(sans, ",") + "\n"
	}
	return p.issue(name, cn, ext, o.Expired)
}

// issue makes a key and a certificate signed by the CA (openssl ca, which
// records it in the CA's database so that it can be revoked).
func (p *PKI) issue(name, cn, ext string, expired bool) (cert, key string) {
	p.t.Helper()
	extFile := name + ".ext"
	ext = "[ x ]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n" + ext
	if err := os.WriteFile(filepath.Join(p.Dir, extFile), []byte(ext), 0o600); err != nil {
		p.t.Fatal(err)
	}
	p.openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", name+".key", "-out", name+".csr", "-subj", "/CN="+cn)
	args := []string{"ca", "-batch", "-notext", "-config", p.conf, "-in", name + ".csr", "-out", name + ".pem",
		"-extfile", extFile, "-extensions", "x"}
	if expired {
		const layout = "20060102150405Z"
		now := time.Now().UTC()
		args = append(args, "-startdate", now.Add(-48*time.Hour).Format(layout), "-enddate", now.Add(-24*time.Hour).Format(layout))
	}
	p.openssl(args...)
	return filepath.Join(p.Dir, name+".pem"), filepath.Join(p.Dir, name+".key")
}

// Revoke revokes cert (a file Device made) and rewrites the CRL.
func (p *PKI) Revoke(cert string) {
	p.t.Helper()
	p.openssl("ca", "-config", p.conf, "-revoke", cert)
	p.writeCRL()
}

// writeCRL generates the CRL and moves it into place in one rename, so that
// a reader never sees half a file.
func (p *PKI) writeCRL() {
	p.t.Helper()
	p.openssl("ca", "-config", p.conf, "-gencrl", "-out", "crl.tmp")
	if err := os.Rename(filepath.Join(p.Dir, "crl.tmp"), p.CRL); err != nil {
		p.t.Fatal(err)
	}
}

// DER writes the CRL in DER form and returns its path.
func (p *PKI) DER() string {
	p.t.Helper()
	p.openssl("crl", "-in", p.CRL, "-outform", "DER", "-out", "crl.der")
	return filepath.Join(p.Dir, "crl.der")
}

// String names the PKI's directory, for failure messages.
func (p *PKI) String() string { return fmt.Sprintf("test PKI in %s", p.Dir) }
