package broker

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{name: "tcp only", cfg: Config{Addr: ":1883"}},
		{name: "websocket only", cfg: Config{WSAddr: ":8083"}},
		{name: "tls with cert and key", cfg: Config{TLSAddr: ":8883", TLSCert: "c.pem", TLSKey: "k.pem"}},
		{name: "defaults filled", cfg: Config{Addr: ":1883", Topic: "", MaxPacket: 0, ReceiveMax: 0}},
		{name: "largest values", cfg: Config{Addr: ":1", MaxPacket: 256 << 20, ReceiveMax: 65535, MaxKeepAlive: 65535 * time.Second}},
		{name: "no listener", cfg: Config{}, wantErr: "has no listener"},
		{name: "tls without cert", cfg: Config{TLSAddr: ":8883", TLSKey: "k.pem"}, wantErr: "--mqtt-tls-addr needs --mqtt-tls-cert and --mqtt-tls-key"},
		{name: "tls without key", cfg: Config{TLSAddr: ":8883", TLSCert: "c.pem"}, wantErr: "needs --mqtt-tls-cert and --mqtt-tls-key"},
		{name: "cert without tls", cfg: Config{Addr: ":1883", TLSCert: "c.pem", TLSKey: "k.pem"}, wantErr: "need --mqtt-tls-addr"},
		{name: "negative packet size", cfg: Config{Addr: ":1883", MaxPacket: -1}, wantErr: "--mqtt-max-packet-bytes -1"},
		{name: "packet size over MQTT's limit", cfg: Config{Addr: ":1883", MaxPacket: 256<<20 + 1}, wantErr: "--mqtt-max-packet-bytes"},
		{name: "receive maximum too large", cfg: Config{Addr: ":1883", ReceiveMax: 65536}, wantErr: "--mqtt-receive-max 65536"},
		{name: "negative receive maximum", cfg: Config{Addr: ":1883", ReceiveMax: -1}, wantErr: "--mqtt-receive-max"},
		{name: "keep-alive too long", cfg: Config{Addr: ":1883", MaxKeepAlive: 65536 * time.Second}, wantErr: "--mqtt-max-keepalive"},
		{name: "negative keep-alive", cfg: Config{Addr: ":1883", MaxKeepAlive: -time.Second}, wantErr: "--mqtt-max-keepalive"},
		{name: "bad topic", cfg: Config{Addr: ":1883", Topic: "devices/#"}, wantErr: "--mqtt-topic"},
		{name: "client certificates", cfg: Config{TLSAddr: ":8883", TLSCert: "c.pem", TLSKey: "k.pem", TLSClientCA: "ca.pem", TLSCRL: "ca.crl", TLSIdentity: "san-uri"}},
		{name: "client CA without tls", cfg: Config{Addr: ":1883", TLSClientCA: "ca.pem"}, wantErr: "--mqtt-tls-client-ca needs --mqtt-tls-addr"},
		{name: "ticket keys", cfg: Config{TLSAddr: ":8883", TLSCert: "c.pem", TLSKey: "k.pem", TLSTicketKeys: "keys"}},
		{name: "ticket keys without TLS", cfg: Config{Addr: ":1883", TLSTicketKeys: "keys"}, wantErr: "--mqtt-tls-ticket-keys needs --mqtt-tls-addr"},
		{name: "CRL without client CA", cfg: Config{TLSAddr: ":8883", TLSCert: "c.pem", TLSKey: "k.pem", TLSCRL: "ca.crl"}, wantErr: "--mqtt-tls-crl needs --mqtt-tls-client-ca"},
		{name: "unknown identity", cfg: Config{TLSAddr: ":8883", TLSCert: "c.pem", TLSKey: "k.pem", TLSIdentity: "email"}, wantErr: "--mqtt-tls-identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Addr: ":1883"}.withDefaults()
	if c.Topic != DefaultTopic || c.MaxClients != DefaultMaxClients || c.MaxPacket != DefaultMaxPacket ||
		c.MaxKeepAlive != DefaultMaxKeepAlive || c.ReceiveMax != DefaultReceiveMax || c.SessionExpiry != DefaultSessionTTL ||
		c.ShutdownTimeout <= 0 {
		t.Errorf("withDefaults = %+v", c)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"invalid config", Config{}, "has no listener"},
		{"missing credentials file", Config{Addr: "127.0.0.1:0", AuthFile: "/nonexistent/creds"}, "--mqtt-auth"},
		{"missing client CA", Config{TLSAddr: "127.0.0.1:0", TLSCert: "c.pem", TLSKey: "k.pem", TLSClientCA: "/nonexistent/ca.pem"}, "--mqtt-tls-client-ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nopProducer{}, discard, newRegistry())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
