package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"firehose/internal/mqtttest"
	"firehose/internal/testenv"
)

// devicesCmd runs firehose devices args against pgURL and returns its exit
// code and output.
func devicesCmd(t *testing.T, pgURL string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	full := append([]string{"devices"}, args...)
	full = append(full, "--postgres", pgURL)
	code := run(t.Context(), full, &out, &errOut)
	return code, out.String(), errOut.String()
}

// secretOf is the secret firehose devices add or rotate printed.
func secretOf(t *testing.T, out string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	secret := strings.TrimSpace(lines[len(lines)-1])
	if len(secret) < 22 || strings.ContainsAny(secret, " $") {
		t.Fatalf("no secret in %q", out)
	}
	return secret
}

// deviceClient is an MQTT 5 client of a device; gone closes when the
// broker disconnects it.
type deviceClient struct {
	*paho.Client
	gone chan struct{}
}

// connectDevice connects device with secret over MQTT 5; the CONNACK's
// reason code, and the client when it is 0.
func connectDevice(t *testing.T, addr, device, secret string) (byte, *deviceClient) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &deviceClient{gone: make(chan struct{})}
	var once sync.Once
	c.Client = paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: 15 * time.Second, PingHandler: mqtttest.NoPinger{},
		OnServerDisconnect: func(*paho.Disconnect) { once.Do(func() { close(c.gone) }) }})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: device, CleanStart: true, KeepAlive: 30,
		Username: device, UsernameFlag: true, Password: []byte(secret), PasswordFlag: true})
	if err != nil {
		if ca == nil {
			t.Fatalf("connect %s: %v", device, err)
		}
		return ca.ReasonCode, nil
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return 0, c
}

// TestIntegrationDevicesCommand provisions a device with firehose devices
// and runs serve --mqtt-auth postgres: the device connects with the secret
// add printed and its reading lands, a wrong secret is refused 0x86,
// disable disconnects it at once, rotate makes the old secret useless and
// the new one work; list shows the registry, never a hash.
func TestIntegrationDevicesCommand(t *testing.T) {
	t.Parallel()
	pgURL := testenv.Postgres(t)
	code, out, errOut := devicesCmd(t, pgURL, "add", "pump-7", "--read", "devices/+/status")
	if code != 0 {
		t.Fatalf("devices add: exit %d: %s", code, errOut)
	}
	secret := secretOf(t, out)
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"add twice", []string{"add", "pump-7"}, 1, "already in the registry"},
		{"grant nothing", []string{"grant", "pump-7"}, 2, "name at least one --read"},
		{"no id", []string{"rotate"}, 2, "ID"},
		{"bad filter", []string{"grant", "pump-7", "--write", "a/#/b"}, 1, "not a valid MQTT topic filter"},
		{"unknown device", []string{"disable", "ghost"}, 1, "no such device"},
		{"unknown subcommand", []string{"frobnicate"}, 2, "unknown subcommand"},
	} {
		code, _, errOut := devicesCmd(t, pgURL, tc.args...)
		if code != tc.wantCode || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, %q; want exit %d and %q", tc.name, code, errOut, tc.wantCode, tc.want)
		}
	}
	if code, _, errOut := devicesCmd(t, pgURL, "grant", "pump-7", "--write", "devices/+/commands", "--sparkplug", "plant1"); code != 0 {
		t.Fatalf("devices grant: exit %d: %s", code, errOut)
	}
	code, out, _ = devicesCmd(t, pgURL, "list")
	for _, want := range []string{"pump-7", "true", "devices/+/status", "devices/+/commands", "plant1", "never", "1 devices"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("devices list: exit %d, %q; want %q in it", code, out, want)
		}
	}
	if strings.Contains(out, "fh1$") || strings.Contains(out, secret) {
		t.Errorf("devices list shows a hash or the secret: %q", out)
	}

	_, prefix := testenv.Redis(t)
	httpAddr, mqttAddr := freeAddr(t), freeAddr(t)
	p := start(t, stackArgs(t, pgURL, prefix, httpAddr, "--mqtt-addr", mqttAddr, "--mqtt-auth", "postgres", "--batch-age", "50ms")...)
	waitReady(t, p, "http://"+httpAddr)

	if code, _ := connectDevice(t, mqttAddr, "pump-7", wrongSecret(secret)); code != 0x86 {
		t.Errorf("pump-7 with a wrong secret: CONNACK %#x, want 0x86", code)
	}
	c := publishAsPump7(t, mqttAddr, pgURL, secret)

	start := time.Now()
	if code, _, errOut := devicesCmd(t, pgURL, "disable", "pump-7"); code != 0 {
		t.Fatalf("devices disable: exit %d: %s", code, errOut)
	}
	testenv.Eventually(t, time.Second, func() bool {
		select {
		case <-c.gone:
			return true
		default:
			return false
		}
	}, "pump-7, disabled, still connected")
	t.Logf("pump-7 disconnected %s after devices disable", time.Since(start).Round(time.Millisecond))
	if code, _ := connectDevice(t, mqttAddr, "pump-7", secret); code != 0x86 {
		t.Errorf("pump-7 disabled: CONNACK %#x, want 0x86", code)
	}

	if code, _, errOut := devicesCmd(t, pgURL, "enable", "pump-7"); code != 0 {
		t.Fatalf("devices enable: exit %d: %s", code, errOut)
	}
	code, out, errOut = devicesCmd(t, pgURL, "rotate", "pump-7")
	if code != 0 {
		t.Fatalf("devices rotate: exit %d: %s", code, errOut)
	}
	rotated := secretOf(t, out)
	testenv.Eventually(t, time.Second, func() bool {
		code, c := connectDevice(t, mqttAddr, "pump-7", rotated)
		if c != nil {
			_ = c.Disconnect(&paho.Disconnect{})
		}
		return code == 0
	}, "pump-7 cannot connect with its rotated secret")
	if code, _ := connectDevice(t, mqttAddr, "pump-7", secret); code != 0x86 {
		t.Errorf("pump-7 with its secret before the rotation: CONNACK %#x, want 0x86", code)
	}
	if code, _, errOut := devicesCmd(t, pgURL, "remove", "pump-7"); code != 0 {
		t.Fatalf("devices remove: exit %d: %s", code, errOut)
	}
}

// publishAsPump7 connects pump-7 with its secret, publishes one reading and
// waits until it landed; the client stays connected.
func publishAsPump7(t *testing.T, mqttAddr, pgURL, secret string) *deviceClient {
	t.Helper()
	code, c := connectDevice(t, mqttAddr, "pump-7", secret)
	if code != 0 {
		t.Fatalf("pump-7 with its secret: CONNACK %#x", code)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if resp, err := c.Publish(ctx, &paho.Publish{Topic: "devices/pump-7/readings", QoS: 1, Payload: []byte("21.5")}); err != nil || resp.ReasonCode != 0 {
		t.Fatalf("pump-7 publishing its reading: %v, %v", resp, err)
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		return countRows(t, pgURL, "SELECT count(*) FROM readings WHERE device_id = 'pump-7'") == 1
	}, "pump-7's reading did not land")
	return c
}

// wrongSecret is secret with its last character changed (to another one:
// a random secret may end in any of them).
func wrongSecret(secret string) string {
	last := "x"
	if strings.HasSuffix(secret, last) {
		last = "y"
	}
	return secret[:len(secret)-1] + last
}
