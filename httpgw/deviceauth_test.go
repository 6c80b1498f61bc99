package httpgw

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"firehose/internal/devsecret"
)

// staticDevices are device credentials the test sets.
type staticDevices map[string]Device

func (d staticDevices) Device(id string) (Device, bool, error) {
	c, ok := d[id]
	return c, ok, nil
}

func TestDeviceAuthConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown value", Config{DeviceAuth: "ldap", Devices: staticDevices{}}, `--http-device-auth "ldap"`},
		{"no devices", Config{DeviceAuth: DeviceAuthMQTT}, "device credentials were not set up"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, &fakeProducer{}, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestDeviceAuthWithAPIKeys: with both, a request needs both, the API key
// in X-API-Key beside the device's Basic credentials.
func TestDeviceAuthWithAPIKeys(t *testing.T) {
	secret, hash, _ := devsecret.New()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte("gw "+HashKey(key)+" *\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &fakeProducer{}
	s := newTestServer(t, Config{APIKeysFile: keys, DeviceAuth: DeviceAuthMQTT, Devices: staticDevices{"pump-1": {Hash: []byte(hash)}}}, p)
	h := s.Handler()
	body := `{"device_id": "pump-1", "reading": 1}`
	for _, tc := range []struct {
		name      string
		key, user string
		want      int
		challenge string
	}{
		{"both", key, "pump-1", 200, ""},
		{"device only", "", "pump-1", 401, "Bearer"},
		{"key only", key, "", 401, `Basic realm="firehose"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := newRequest("POST", "/v1/readings", body, "Content-Type", "application/json")
			if tc.key != "" {
				req.Header.Set("X-API-Key", tc.key)
			}
			if tc.user != "" {
				req.SetBasicAuth(tc.user, secret)
			}
			rec := serve(h, req)
			if rec.Code != tc.want || rec.Header().Get("WWW-Authenticate") != tc.challenge {
				t.Errorf("%d, WWW-Authenticate %q; want %d, %q: %s", rec.Code, rec.Header().Get("WWW-Authenticate"), tc.want, tc.challenge, rec.Body)
			}
		})
	}
	if n := len(p.got()); n != 1 {
		t.Errorf("%d readings taken, want 1", n)
	}
}

// BenchmarkDeviceAuth is the per-request cost of --http-device-auth: the
// Basic header, the lookup and the secret's check.
func BenchmarkDeviceAuth(b *testing.B) {
	secret, hash, _ := devsecret.New()
	s := &Server{devices: staticDevices{"pump-1": {Hash: []byte(hash)}}, log: slog.New(slog.DiscardHandler)}
	req := newRequest("POST", "/v1/readings", "")
	req.SetBasicAuth("pump-1", secret)
	b.ReportAllocs()
	for b.Loop() {
		if id, err := s.authDevice(req); err != nil || id != "pump-1" {
			b.Fatalf("authDevice = %q, %v", id, err)
		}
	}
}
