package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"firehose/internal/testcert"
)

// TestConfigCheckClientCertificates: config check loads the client CA and
// the CRL of both edges as serve does, and names the setting at fault.
func TestConfigCheckClientCertificates(t *testing.T) {
	clearFirehoseEnv(t)
	pki := testcert.NewPKI(t)
	other := testcert.NewPKI(t)
	base := "roles: [broker, httpgw]\nredis: redis://127.0.0.1:1/0\npostgres: postgres://127.0.0.1:1/firehose\nmqtt-addr: \"\"\n" +
		"mqtt-tls-addr: \":0\"\nmqtt-tls-cert: " + pki.ServerCert + "\nmqtt-tls-key: " + pki.ServerKey + "\nmqtt-tls-client-ca: " + pki.CA + "\n" +
		"http-tls-cert: " + pki.ServerCert + "\nhttp-tls-key: " + pki.ServerKey + "\nhttp-tls-client-ca: " + pki.CA + "\n"
	for _, tc := range []struct {
		name, extra string
		want        string // in stderr; "": valid
	}{
		{"with CRLs", "mqtt-tls-crl: " + pki.CRL + "\nhttp-tls-crl: " + pki.DER() + "\nmqtt-tls-identity: san-uri\n", ""},
		{"MQTT CRL of another CA", "mqtt-tls-crl: " + other.CRL + "\n", "not signed by a CA of --mqtt-tls-client-ca"},
		{"HTTP CRL of another CA", "http-tls-crl: " + other.CRL + "\n", "not signed by a CA of --http-tls-client-ca"},
		{"unknown identity", "http-tls-identity: email\n", "--http-tls-identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), []string{"config", "check", writeConfig(t, base+tc.extra)}, &out, &errOut)
			switch {
			case tc.want == "" && code != 0:
				t.Errorf("exit %d: %s", code, errOut.String())
			case tc.want != "" && (code != 1 || !strings.Contains(errOut.String(), tc.want)):
				t.Errorf("exit %d, stderr %q; want exit 1 saying %q", code, errOut.String(), tc.want)
			}
		})
	}
}
