package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"firehose/internal/testenv"
)

// consoleGet is the console page at url, read with the bearer token.
func consoleGet(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return send(t, req)
}

// TestIntegrationConsoleDevicePageWithRegistry runs serve --mqtt-auth
// postgres with the console: a registered device connected to the broker
// shows enabled, its grants, connected and its reading; one registered but
// never connected shows so; the search lists both; a disconnected device
// is no longer connected.
func TestIntegrationConsoleDevicePageWithRegistry(t *testing.T) {
	t.Parallel()
	const token = "console-devices-token"
	pgURL := testenv.Postgres(t)
	code, out, errOut := devicesCmd(t, pgURL, "add", "pump-7", "--read", "devices/+/status")
	if code != 0 {
		t.Fatalf("devices add: exit %d: %s", code, errOut)
	}
	secret := secretOf(t, out)
	if code, _, errOut := devicesCmd(t, pgURL, "add", "pump-8"); code != 0 {
		t.Fatalf("devices add: exit %d: %s", code, errOut)
	}
	_, prefix := testenv.Redis(t)
	httpAddr, mqttAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	p := start(t, stackArgs(t, pgURL, prefix, httpAddr, "--mqtt-addr", mqttAddr, "--mqtt-auth", "postgres", "--batch-age", "50ms",
		"--admin-addr", adminAddr, "--admin-token", token)...)
	waitReady(t, p, "http://"+httpAddr)
	console := "http://" + adminAddr + "/console/"

	c := publishAsPump7(t, mqttAddr, pgURL, secret)

	code, body := consoleGet(t, console+"devices/pump-7", token)
	for _, want := range []string{`<dd id="connected"><span class="ok">yes</span></dd>`, `<dd id="credentials"><span class="ok">enabled</span></dd>`,
		`<dd id="grant-read"><code>devices/&#43;/status</code></dd>`, "<td>reading</td><td>21.5</td>"} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("pump-7's page (%d) lacks %q:\n%s", code, want, body)
		}
	}
	code, body = consoleGet(t, console+"devices/pump-8", token)
	for _, want := range []string{`<dd id="connected">no</dd>`, `<dd id="last-seen">never</dd>`, `<dd id="last-reading">none in readings</dd>`} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("pump-8's page (%d) lacks %q:\n%s", code, want, body)
		}
	}
	code, body = consoleGet(t, console+"devices?q=pump", token)
	if code != http.StatusOK || !strings.Contains(body, `href="/console/devices/pump-7"`) || !strings.Contains(body, `href="/console/devices/pump-8"`) {
		t.Errorf("the search for pump (%d) does not list both devices:\n%s", code, body)
	}

	if err := c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		_, body := consoleGet(t, console+"devices/pump-7", token)
		return strings.Contains(body, `<dd id="connected">no</dd>`)
	}, "pump-7, disconnected, still shows connected")
}
