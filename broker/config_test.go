package broker

import (
	"strings"
	"testing"
	"time"
)

func TestParseTopic(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		tmpl                 string
		wantPrefix, wantSuff string
		wantFilter           string
		wantErr              string // substring; "" means valid
	}{
		{name: "default", tmpl: DefaultTopic, wantPrefix: "devices/", wantSuff: "/readings", wantFilter: "devices/+/readings"},
		{name: "placeholder alone", tmpl: "{device_id}", wantFilter: "+"},
		{name: "placeholder first", tmpl: "{device_id}/up", wantSuff: "/up", wantFilter: "+/up"},
		{name: "placeholder last", tmpl: "site/a/{device_id}", wantPrefix: "site/a/", wantFilter: "site/a/+"},
		{name: "deep", tmpl: "a/b/{device_id}/c/d", wantPrefix: "a/b/", wantSuff: "/c/d", wantFilter: "a/b/+/c/d"},
		{name: "missing", tmpl: "devices/readings", wantErr: "must contain {device_id}"},
		{name: "empty", tmpl: "", wantErr: "must contain {device_id}"},
		{name: "twice", tmpl: "devices/{device_id}/{device_id}", wantErr: "once"},
		{name: "part of a level before", tmpl: "devices/x{device_id}/readings", wantErr: "whole topic level"},
		{name: "part of a level after", tmpl: "devices/{device_id}x/readings", wantErr: "whole topic level"},
		{name: "single-level wildcard", tmpl: "devices/+/{device_id}", wantErr: "wildcards"},
		{name: "multi-level wildcard", tmpl: "devices/{device_id}/#", wantErr: "wildcards"},
		{name: "NUL", tmpl: "devices/{device_id}/\x00", wantErr: "NUL"},
		{name: "dollar prefix", tmpl: "$SYS/{device_id}", wantErr: "must not start with $"},
		{name: "misspelt placeholder", tmpl: "devices/{device}/readings", wantErr: "must contain {device_id}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTopic(tc.tmpl)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseTopic(%q) = %+v, %v; want an error containing %q", tc.tmpl, got, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), "--mqtt-topic") {
					t.Errorf("error %q does not name the flag --mqtt-topic", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseTopic(%q): %v", tc.tmpl, err)
			}
			if got.prefix != tc.wantPrefix || got.suffix != tc.wantSuff {
				t.Errorf("parseTopic(%q) = prefix %q suffix %q; want %q %q", tc.tmpl, got.prefix, got.suffix, tc.wantPrefix, tc.wantSuff)
			}
			if f := got.filter(); f != tc.wantFilter {
				t.Errorf("filter() = %q, want %q", f, tc.wantFilter)
			}
		})
	}
}

func TestTopicDevice(t *testing.T) {
	def, _ := parseTopic(DefaultTopic)
	alone, _ := parseTopic("{device_id}")
	same, _ := parseTopic("r/{device_id}/r")
	for _, tc := range []struct {
		name   string
		topic  topic
		in     string
		want   string
		wantOK bool
	}{
		{"readings topic", def, "devices/pump-7/readings", "pump-7", true},
		{"unicode id", def, "devices/température-1/readings", "température-1", true},
		{"empty id", def, "devices//readings", "", true},
		{"two levels", def, "devices/a/b/readings", "", false},
		{"extra level after", def, "devices/pump-7/readings/x", "", false},
		{"status topic", def, "devices/pump-7/status", "", false},
		{"other prefix", def, "things/pump-7/readings", "", false},
		{"prefix only", def, "devices/", "", false},
		{"suffix missing", def, "devices/pump-7", "", false},
		{"case matters", def, "Devices/pump-7/readings", "", false},
		{"leading slash", def, "/devices/pump-7/readings", "", false},
		{"placeholder alone", alone, "pump-7", "pump-7", true},
		{"placeholder alone, two levels", alone, "a/b", "", false},
		{"placeholder alone, empty", alone, "", "", true},
		{"prefix and suffix overlap", same, "r/r", "", false},
		{"prefix equals suffix", same, "r/x/r", "x", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.topic.device(tc.in)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("device(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

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
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nopProducer{}, discard, newRegistry())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
