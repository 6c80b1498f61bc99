package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
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

// TestConfigCheckTicketKeys: the session ticket key files load as serve
// loads them, from the configuration file or the environment twin, and a
// malformed one is refused naming the flag and the line.
func TestConfigCheckTicketKeys(t *testing.T) {
	pki := testcert.NewPKI(t)
	dir := t.TempDir()
	good, short := filepath.Join(dir, "good"), filepath.Join(dir, "short")
	for path, text := range map[string]string{good: strings.Repeat("ab", 32) + "\n", short: "# one\n" + strings.Repeat("ab", 16) + "\n"} {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := "roles: [broker, httpgw]\nredis: redis://127.0.0.1:1/0\npostgres: postgres://127.0.0.1:1/firehose\nmqtt-addr: \"\"\n" +
		"mqtt-tls-addr: \":0\"\nmqtt-tls-cert: " + pki.ServerCert + "\nmqtt-tls-key: " + pki.ServerKey + "\n" +
		"http-tls-cert: " + pki.ServerCert + "\nhttp-tls-key: " + pki.ServerKey + "\n"
	for _, tc := range []struct {
		name, extra string
		env         map[string]string
		want        string // in stderr; "": valid
		says        string // in stdout when valid
	}{
		{name: "both from the file", extra: "mqtt-tls-ticket-keys: " + good + "\nhttp-tls-ticket-keys: " + good + "\n", says: "mqtt-tls-ticket-keys"},
		{name: "MQTT from the environment", env: map[string]string{"FIREHOSE_MQTT_TLS_TICKET_KEYS": good}, says: "FIREHOSE_MQTT_TLS_TICKET_KEYS"},
		{name: "MQTT key too short", extra: "mqtt-tls-ticket-keys: " + short + "\n", want: short + ":2: key of 16 bytes, want 32"},
		{name: "HTTP key too short from the environment", env: map[string]string{"FIREHOSE_HTTP_TLS_TICKET_KEYS": short}, want: "--http-tls-ticket-keys"},
		{name: "missing file", extra: "mqtt-tls-ticket-keys: " + filepath.Join(dir, "none") + "\n", want: "read TLS session ticket key file (--mqtt-tls-ticket-keys)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearFirehoseEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out, errOut bytes.Buffer
			code := run(context.Background(), []string{"config", "check", writeConfig(t, base+tc.extra)}, &out, &errOut)
			switch {
			case tc.want == "" && (code != 0 || !strings.Contains(out.String(), tc.says)):
				t.Errorf("exit %d: %s\n%s; want valid, saying %q", code, errOut.String(), out.String(), tc.says)
			case tc.want != "" && (code != 1 || !strings.Contains(errOut.String(), tc.want)):
				t.Errorf("exit %d, stderr %q; want exit 1 saying %q", code, errOut.String(), tc.want)
			}
		})
	}
}
