package httpgw

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"firehose/internal/testenv"
)

func TestGenerateKey(t *testing.T) {
	a, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateKey()
	if a == b || !strings.HasPrefix(a, "fh_") || len(a) != 46 {
		t.Errorf("keys %q, %q: want distinct fh_ keys of 46 characters", a, b)
	}
	sum := sha256.Sum256([]byte(a))
	if HashKey(a) != hex.EncodeToString(sum[:]) {
		t.Errorf("HashKey(%q) = %s, want its hex SHA-256", a, HashKey(a))
	}
}

func TestParseKeysErrors(t *testing.T) {
	h1, h2 := HashKey("one"), HashKey("two")
	tests := []struct {
		name string
		file string
		want string // the error starts with keys.txt:LINE
	}{
		{name: "two fields", file: "# comment\n\nk1 " + h1 + "\n", want: "keys.txt:3: want 3 fields"},
		{name: "spaces in device list", file: "k1 " + h1 + " a, b\n", want: "keys.txt:1: want 3 fields"},
		{name: "not hex", file: "k1 " + strings.Repeat("z", 64) + " *\n", want: "keys.txt:1: second field of key \"k1\" is not a SHA-256"},
		{name: "raw key instead of hash", file: "k1 fh_abc *\n", want: "keys.txt:1: second field of key \"k1\" is not a SHA-256 in hex (64 hex digits) (this looks like a key itself"},
		{name: "duplicate name", file: "k1 " + h1 + " *\nk1 " + h2 + " *\n", want: "keys.txt:2: key name \"k1\" is also on line 1"},
		{name: "duplicate hash", file: "k1 " + h1 + " *\n  # x\nk2 " + strings.ToUpper(h1) + " *\n", want: "keys.txt:3: key \"k2\" has the same hash as the key on line 1"},
		{name: "bad device", file: "k1 " + h1 + " a,b/c\n", want: "keys.txt:1: key \"k1\": device \"b/c\""},
		{name: "empty device", file: "k1 " + h1 + " a,,b\n", want: "keys.txt:1: key \"k1\": device \"\""},
		{name: "star in list", file: "k1 " + h1 + " a,*\n", want: "keys.txt:1: key \"k1\": '*'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseKeys("keys.txt", []byte(tt.file), 0)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("parseKeys() = %v, want an error starting %q", err, tt.want)
			}
		})
	}
}

func TestParseKeys(t *testing.T) {
	file := "# name hash devices\n\n  gateway-a " + HashKey("ka") + " *  \r\npump-7\t" + HashKey("kp") + "\tpump-7,pump-8\n"
	keys, err := parseKeys("keys.txt", []byte(file), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("%d keys, want 2", len(keys))
	}
	a, p := keys.lookup("ka"), keys.lookup("kp")
	if a == nil || a.name != "gateway-a" || !a.allows("anything") {
		t.Errorf("gateway-a = %+v", a)
	}
	if p == nil || p.name != "pump-7" || !p.allows("pump-8") || p.allows("pump-9") {
		t.Errorf("pump-7 = %+v", p)
	}
	if keys.lookup("kx") != nil || keys.lookup("") != nil {
		t.Errorf("unknown key found")
	}
}

// writeKeys writes a key file line per key: name, key, devices.
func writeKeys(t *testing.T, path string, lines ...[3]string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# test keys\n")
	for _, l := range lines {
		b.WriteString(l[0] + " " + HashKey(l[1]) + " " + l[2] + "\n")
	}
	// Write and rename, as an operator's tooling should, so a reader never
	// sees half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestAuth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	writeKeys(t, path, [3]string{"gateway-a", "key-a", "*"}, [3]string{"pump-7", "key-p", "pump-7,pump-8"})
	tests := []struct {
		name     string
		path     string
		body     string
		header   []string
		wantCode int
		wantErr  string
	}{
		{name: "no key", path: "/readings/fast", body: `{"id":1,"reading":1}`, wantCode: 401, wantErr: "missing API key"},
		{name: "no key v1", path: "/v1/readings", body: `{"device_id":"a","reading":1}`, wantCode: 401, wantErr: "missing API key"},
		{name: "unknown key", path: "/v1/readings", body: `{"device_id":"a","reading":1}`, header: []string{"Authorization", "Bearer nope"}, wantCode: 401, wantErr: "unknown API key"},
		{name: "basic auth is not a key", path: "/v1/readings", body: `{"device_id":"a","reading":1}`, header: []string{"Authorization", "Basic a2V5LWE="}, wantCode: 401, wantErr: "missing API key"},
		{name: "bearer any device", path: "/v1/readings", body: `{"device_id":"x","reading":1}`, header: []string{"Authorization", "Bearer key-a"}, wantCode: 200},
		{name: "bearer scheme is case-insensitive", path: "/v1/readings", body: `{"device_id":"x","reading":1}`, header: []string{"Authorization", "bearer key-a"}, wantCode: 200},
		{name: "X-API-Key", path: "/v1/readings", body: `{"device_id":"pump-8","reading":1}`, header: []string{"X-API-Key", "key-p"}, wantCode: 200},
		{
			name: "one reading for another device", path: "/v1/readings", header: []string{"X-API-Key", "key-p"},
			body:     `[{"device_id":"pump-7","reading":1},{"device_id":"pump-9","reading":1}]`,
			wantCode: 403, wantErr: `API key "pump-7" may not post for device "pump-9"`,
		},
		{name: "fast with bound device", path: "/readings/fast", body: `{"id":1,"reading":1}`, header: []string{"X-API-Key", "key-p", "X-Device-ID", "pump-7"}, wantCode: 200},
		{name: "fast default device", path: "/readings/fast", body: `{"id":1,"reading":1}`, header: []string{"X-API-Key", "key-p"}, wantCode: 403, wantErr: `API key "pump-7" may not post for device "seed"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakeProducer{}
			s := newTestServer(t, Config{APIKeysFile: path}, p)
			rec := post(s.Handler(), tt.path, tt.body, tt.header...)
			if rec.Code != tt.wantCode {
				t.Fatalf("code = %d, want %d; body %s", rec.Code, tt.wantCode, rec.Body)
			}
			if tt.wantCode == 200 {
				return
			}
			if a := decodeJSON[errorAnswer](t, rec); a.Error != tt.wantErr {
				t.Errorf("error = %q, want %q", a.Error, tt.wantErr)
			}
			if tt.wantCode == 401 && rec.Header().Get("WWW-Authenticate") != "Bearer" {
				t.Errorf("WWW-Authenticate = %q, want Bearer", rec.Header().Get("WWW-Authenticate"))
			}
			if p.calls != 0 {
				t.Errorf("producer called for a refused request")
			}
		})
	}
	t.Run("health needs no key", func(t *testing.T) {
		s := newTestServer(t, Config{APIKeysFile: path}, &fakeProducer{})
		for _, p := range []string{"/health", "/livez", "/readyz", "/metrics"} {
			if rec := get(s.Handler(), p); rec.Code != 200 {
				t.Errorf("GET %s = %d without a key", p, rec.Code)
			}
		}
	})
}

func TestNewBadKeyFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "keys")
	if err := os.WriteFile(bad, []byte("k1 nothex *\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{bad, filepath.Join(dir, "missing")} {
		_, err := New(Config{APIKeysFile: path}, &fakeProducer{}, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("New with key file %s = %v, want an error naming it", path, err)
		}
	}
}

// TestKeyReload: Run notices a changed key file; a removed key stops working
// and a new one starts, without a restart.
func TestKeyReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	writeKeys(t, path, [3]string{"a", "key-a", "*"}, [3]string{"b", "key-b", "*"})
	s := newTestServer(t, Config{Addr: "127.0.0.1:0", APIKeysFile: path}, &fakeProducer{})
	s.keyCheckEvery = 10 * time.Millisecond
	runServer(t, s)

	code := func(key string) int {
		return post(s.Handler(), "/readings/fast", `{"id":1,"reading":1}`, "X-API-Key", key).Code
	}
	if code("key-a") != 200 || code("key-b") != 200 {
		t.Fatalf("keys do not work before the change")
	}
	writeKeys(t, path, [3]string{"b", "key-b", "*"}, [3]string{"c", "key-c", "*"})
	testenv.Eventually(t, 5*time.Second, func() bool { return code("key-a") == 401 }, "revoked key still accepted")
	if code("key-b") != 200 || code("key-c") != 200 {
		t.Errorf("kept or added key refused after reload")
	}

}
