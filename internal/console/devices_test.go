package console

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// fakeDevices knows pump-7 (registered, connected) and pump-8 (neither).
type fakeDevices struct{ limit int }

func (f *fakeDevices) Search(_ context.Context, prefix string, limit int) ([]string, error) {
	var out []string
	for _, id := range []string{"pump-7", "pump-70"} {
		if strings.HasPrefix(id, prefix) {
			out = append(out, id)
		}
	}
	return out, nil
}

func (f *fakeDevices) Device(_ context.Context, id string, limit int) *Device {
	f.limit = limit
	ts := time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC)
	d := &Device{ID: id}
	if id == "pump-7" {
		yes := true
		d.Connected = &yes
		d.Readings = []DeviceReading{{TS: ts, ReceivedAt: ts.Add(time.Second), Metric: "flow", Reading: 21.5, Payload: `{"unit": "l/s"}`}}
		d.LastReading = ts.Add(time.Second)
		d.Credentials = &Credentials{Registered: true, Enabled: false, Write: []string{"plant/+/cmd"}, Created: ts.Add(-time.Hour)}
	} else {
		no := false
		d.Connected = &no
		d.Credentials = &Credentials{}
		d.Errors = []string{"read the readings of \"pump-8\": boom"}
	}
	return d
}

func TestDevicePages(t *testing.T) {
	f := &fakeDevices{}
	srv := newPagesServer(t, Config{Devices: f})
	auth := []string{"Authorization", "Bearer s3cret"}
	for _, u := range []string{"/console/devices", "/console/devices/pump-7", "/console/devices?q=pump"} {
		if code, body := get(t, srv.URL+u); code != http.StatusUnauthorized || strings.Contains(body, "pump-7") {
			t.Errorf("%s without the token: %d, want 401 and no device", u, code)
		}
	}
	for _, tc := range []struct {
		name, url    string
		want, reject []string
	}{
		{name: "registered and connected", url: "/console/devices/pump-7", want: []string{
			`<code id="device-id">pump-7</code>`, `<dd id="last-reading">2026-12-01 13:00:01.000Z</dd>`,
			`<dd id="connected"><span class="ok">yes</span></dd>`, `<dd id="credentials"><span class="bad">disabled</span></dd>`,
			`<dd id="grant-write"><code>plant/&#43;/cmd</code></dd>`, `<dd id="created">2026-12-01 12:00:00Z</dd>`, `<dd id="last-seen">never</dd>`,
			"<td>2026-12-01 13:00:00.000Z</td><td>flow</td><td>21.5</td><td><code>{&#34;unit&#34;: &#34;l/s&#34;}</code></td>"}},
		{name: "unknown", url: "/console/devices/pump-8", want: []string{
			`<dd id="last-reading">none in readings</dd>`, `<dd id="connected">no</dd>`, "not in the registry", "boom",
			`<td colspan="5" class="muted">none</td>`}},
		{name: "search", url: "/console/devices?q=pump", want: []string{`<a href="/console/devices/pump-7">pump-7</a>`, `<a href="/console/devices/pump-70">pump-70</a>`}},
		{name: "the form", url: "/console/devices", want: []string{`<input id="q" name="q"`}, reject: []string{`<ul id="devices">`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, srv.URL+tc.url, auth...)
			if code != http.StatusOK {
				t.Errorf("answered %d, want 200", code)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("the page lacks %q:\n%s", w, body)
				}
			}
			for _, r := range tc.reject {
				if strings.Contains(body, r) {
					t.Errorf("the page shows %q", r)
				}
			}
		})
	}
	if f.limit != deviceReadings {
		t.Errorf("asked for %d readings, want %d", f.limit, deviceReadings)
	}
	// An exact match, or an id neither registered nor connected, opens its page.
	for q, want := range map[string]string{"pump-70": "pump-70", "valve-1": "valve-1"} {
		code, body := get(t, srv.URL+"/console/devices?q="+q, auth...)
		if code != http.StatusOK || !strings.Contains(body, `<code id="device-id">`+want+`</code>`) {
			t.Errorf("search %s: %d, want the page of %s:\n%s", q, code, want, body)
		}
	}
}

func TestDevicePagesWithoutASource(t *testing.T) {
	srv := newPagesServer(t, Config{})
	if code, body := get(t, srv.URL+"/console/devices", "Authorization", "Bearer s3cret"); code != http.StatusOK || !strings.Contains(body, "no device pages") {
		t.Errorf("the search: %d:\n%s", code, body)
	}
	if code, _ := get(t, srv.URL+"/console/devices/x", "Authorization", "Bearer s3cret"); code != http.StatusNotFound {
		t.Errorf("a device: %d, want 404", code)
	}
}
