package httpgw

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/bcrypt"

	"firehose/broker"
	"firehose/internal/devsecret"
	"firehose/internal/testenv"
	"firehose/registry"
)

// The tests take the broker's real credential sources (the file and the
// registry), as serve hands them over: only the tests import broker.

// sourceDevices is serve's adapter (cmd/firehose credentialDevices): a
// broker.CredentialSource as the gateway's Devices.
type sourceDevices struct{ src broker.CredentialSource }

func (d sourceDevices) Device(id string) (Device, bool, error) {
	creds := d.src.Credentials()
	if creds == nil {
		return Device{}, false, ErrDevicesNotLoaded
	}
	c, ok := creds[id]
	return Device{Hash: c.Hash}, ok, nil
}

// watch runs src's Watch until the test ends.
func watch(t *testing.T, src broker.CredentialSource) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Watch(ctx, func(_, _ broker.Credentials) {}) }()
	t.Cleanup(func() { cancel(); <-done })
}

// baseURL runs s until the test ends and returns its base URL.
func baseURL(t *testing.T, s *Server) string {
	t.Helper()
	runServer(t, s)
	return "http://" + s.Addr().String()
}

// curlBasic posts body to url with curl -u user:password ("" sends no
// credentials) and returns the status code, the answer and its headers.
func curlBasic(t *testing.T, url, userPass, body string, header ...string) (code, answer string) {
	t.Helper()
	args := []string{"-sS", "-i", "-H", "Content-Type: application/json", "--data-binary", body}
	if userPass != "" {
		args = append(args, "-u", userPass)
	}
	for _, h := range header {
		args = append(args, "-H", h)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", append(args, url)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v: %s", url, err, out)
	}
	status, _, _ := strings.Cut(string(out), "\r\n")
	f := strings.Fields(status)
	if len(f) < 2 {
		t.Fatalf("curl %s: no status line in %q", url, out)
	}
	return f[1], string(out)
}

// countReadings is the number of rows of device in readings.
func countReadings(t *testing.T, pool *pgxpool.Pool, device string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM readings WHERE device_id = $1", device).Scan(&n); err != nil {
		t.Fatalf("count readings of %s: %v", device, err)
	}
	return n
}

// TestIntegrationDeviceAuthFileCurl posts with curl -u against the
// credentials file: a device's own readings land in PostgreSQL, another
// device's are refused 403 naming it and nothing of the request is stored,
// a wrong or missing secret is 401 with a Basic challenge, a bcrypt line is
// 401 saying why, and a device removed from the file is refused from its
// next request on.
func TestIntegrationDeviceAuthFileCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skipf("curl not installed: %v", err)
	}
	s1, h1, _ := devsecret.New()
	s2, h2, _ := devsecret.New()
	bc, err := bcrypt.GenerateFromPassword([]byte("a person's password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "mqtt-auth")
	write := func(lines ...string) {
		t.Helper()
		// Through a rename, so the watcher never reads half a file.
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	write("pump-1 "+h1, "pump-2 "+h2+" write=devices/+/readings", "human "+string(bc))
	src, err := broker.OpenCredentialsFile(file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	watch(t, src)

	p, rdb, streams := startProducer(t)
	pool := startBridge(t, rdb, streams)
	s := newTestServer(t, Config{Addr: "127.0.0.1:0", DeviceAuth: DeviceAuthMQTT, Devices: sourceDevices{src}}, p)
	base := baseURL(t, s)

	accepted := map[string]int{} // 200s per device
	for _, c := range []struct {
		name, path, user, body string
		header                 []string
		want                   string // status code
		says                   string // in the answer (headers included)
	}{
		{"own reading", "/v1/readings", "pump-1:" + s1, `{"device_id": "pump-1", "reading": 1}`, nil, "200", `"accepted":1`},
		{"fast, device from the credentials", "/readings/fast", "pump-1:" + s1, `{"id": 1, "reading": 2}`, nil, "200", "buffered"},
		{"another device's own", "/v1/readings", "pump-2:" + s2, `[{"device_id": "pump-2", "reading": 3}]`, nil, "200", `"accepted":1`},
		{"another device's reading", "/v1/readings", "pump-1:" + s1, `[{"device_id": "pump-1", "reading": 4}, {"device_id": "pump-9", "reading": 5}]`, nil, "403", `"device_id":"pump-9"`},
		{"a write grant makes no readings of another", "/v1/readings", "pump-2:" + s2, `{"device_id": "pump-9", "reading": 6}`, nil, "403", "only its own readings"},
		{"fast for another device", "/readings/fast", "pump-1:" + s1, `{"id": 2, "reading": 7}`, []string{"X-Device-ID: pump-9"}, "403", "pump-9"},
		{"wrong secret", "/v1/readings", "pump-1:" + s2, `{"device_id": "pump-1", "reading": 8}`, nil, "401", `Www-Authenticate: Basic realm="firehose"`},
		{"unknown device", "/v1/readings", "pump-9:" + s1, `{"device_id": "pump-9", "reading": 9}`, nil, "401", "unknown device or wrong device secret"},
		{"no credentials", "/v1/readings", "", `{"device_id": "pump-1", "reading": 10}`, nil, "401", `Www-Authenticate: Basic realm="firehose"`},
		{"bcrypt password", "/v1/readings", "human:a person's password", `{"device_id": "human", "reading": 11}`, nil, "401", "has a bcrypt password"},
	} {
		code, out := curlBasic(t, base+c.path, c.user, c.body, c.header...)
		if code != c.want || !strings.Contains(out, c.says) {
			t.Errorf("%s: curl answered %s: %s; want %s saying %s", c.name, code, out, c.want, c.says)
		}
		if code == "200" {
			accepted[strings.Split(c.user, ":")[0]]++
		}
	}

	// pump-1 leaves the file: its next request is refused (the file is
	// re-read every 2 s).
	write("pump-2 " + h2)
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, _ := curlBasic(t, base+"/v1/readings", "pump-1:"+s1, `{"device_id": "pump-1", "reading": 12}`)
		if code == "200" {
			accepted["pump-1"]++
		}
		return code == "401"
	}, "pump-1 still admitted after leaving the credentials file")

	// Exactly the accepted readings land: nothing of a refused request.
	testenv.Eventually(t, 15*time.Second, func() bool {
		return countReadings(t, pool, "pump-1") == accepted["pump-1"] && countReadings(t, pool, "pump-2") == accepted["pump-2"]
	}, "the accepted readings did not land: want %v", accepted)
	for _, d := range []string{"pump-9", "human"} {
		if n := countReadings(t, pool, d); n != 0 {
			t.Errorf("%d readings of %s landed: they were refused", n, d)
		}
	}
}

// TestIntegrationDeviceAuthRegistry checks devices against the registry in
// PostgreSQL: 503 before it is loaded, a device admitted once it is, refused
// from its next request on once disabled, and its old secret refused after
// a rotation while the new one is taken.
func TestIntegrationDeviceAuthRegistry(t *testing.T) {
	p, rdb, streams := startProducer(t)
	pool := startBridge(t, rdb, streams)
	ctx := t.Context()
	secret, err := registry.Add(ctx, pool, "meter-1", registry.Grants{})
	if err != nil {
		t.Fatal(err)
	}
	src, err := registry.Open(pool.Config().ConnString(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, Config{Addr: "127.0.0.1:0", DeviceAuth: DeviceAuthMQTT, Devices: sourceDevices{src}}, p)
	base := baseURL(t, s)
	post := func(user, pass string) (int, http.Header) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/readings", strings.NewReader(`{"device_id": "meter-1", "reading": 1}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth(user, pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("post: %v", err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header
	}

	if code, h := post("meter-1", secret); code != 503 || h.Get("Retry-After") != "1" {
		t.Errorf("before the registry loaded: %d, Retry-After %q; want 503, 1", code, h.Get("Retry-After"))
	}
	watch(t, src)
	accepted := 0
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, _ := post("meter-1", secret)
		if code == 200 {
			accepted++
		}
		return code == 200
	}, "meter-1 not admitted once the registry loaded")

	if err := registry.SetEnabled(ctx, pool, "meter-1", false); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, _ := post("meter-1", secret)
		if code == 200 {
			accepted++
		}
		return code == 401
	}, "meter-1 still admitted once disabled")

	if err := registry.SetEnabled(ctx, pool, "meter-1", true); err != nil {
		t.Fatal(err)
	}
	rotated, err := registry.Rotate(ctx, pool, "meter-1")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, _ := post("meter-1", rotated)
		if code == 200 {
			accepted++
		}
		return code == 200
	}, "meter-1 not admitted with its rotated secret")
	if code, _ := post("meter-1", secret); code != 401 {
		t.Errorf("the secret before the rotation: %d, want 401", code)
	}
	testenv.Eventually(t, 15*time.Second, func() bool { return countReadings(t, pool, "meter-1") == accepted },
		"want the %d accepted readings of meter-1 in PostgreSQL", accepted)
}
