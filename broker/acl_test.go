package broker

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"firehose/mapping"
	"firehose/mqttmsg"
)

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		grant, filter string
		want          bool
	}{
		{"devices/+/readings", "devices/a/readings", true},
		{"devices/+/readings", "devices/+/readings", true},
		{"devices/+/readings", "devices/#", false},
		{"devices/+/readings", "devices/a/status", false},
		{"devices/+/readings", "devices/a/readings/x", false},
		{"devices/+/readings", "devices/a", false},
		{"devices/a/readings", "devices/+/readings", false},
		{"devices/#", "devices", true},
		{"devices/#", "devices/a/b/c", true},
		{"devices/#", "devices/#", true},
		{"devices/#", "devicesx/a", false},
		{"devices/+", "devices/#", false},
		{"devices/+", "devices/+", true},
		{"#", "a/b", true},
		{"#", "#", true},
		{"#", "$SYS/broker/uptime", false},
		{"+/broker/uptime", "$SYS/broker/uptime", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
	} {
		if got := covers(tc.grant, tc.filter); got != tc.want {
			t.Errorf("covers(%q, %q) = %v, want %v", tc.grant, tc.filter, got, tc.want)
		}
	}
}

func TestUnshareAndUnderDevice(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"devices/a/#", "devices/a/#"},
		{"$share/g/devices/a/#", "devices/a/#"},
		{"$SHARE/g/#", "#"},
		{"$share/g", ""},
		{"$share/g/", ""},
	} {
		got, ok := unshare(tc.in)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("unshare(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
	def, _ := mqttmsg.ParseTemplate(DefaultTopic)
	first, _ := mqttmsg.ParseTemplate("{device_id}/up")
	for _, tc := range []struct {
		t      mqttmsg.Template
		dev, f string
		want   bool
	}{
		{def, "a", "devices/a/readings", true},
		{def, "a", "devices/a/#", true},
		{def, "a", "devices/a", true},
		{def, "a", "devices/a/+/x", true},
		{def, "a", "devices/ab/readings", false},
		{def, "a", "devices/+/readings", false},
		{def, "a", "devices/#", false},
		{def, "a", "#", false},
		{def, "", "devices//readings", false},
		{first, "a", "a/up", true},
		{first, "a", "a/#", true},
		{first, "a", "+/up", false},
	} {
		if got := underDevice(tc.t, tc.dev, tc.f); got != tc.want {
			t.Errorf("underDevice(%+v, %q, %q) = %v, want %v", tc.t, tc.dev, tc.f, got, tc.want)
		}
	}
}

func TestLoginThrottle(t *testing.T) {
	now := time.Unix(1000, 0)
	th := newLoginThrottle(2, time.Second, 3)
	th.now = func() time.Time { return now }
	th.overflow.at = now
	for i := range 2 {
		if !th.allow("1.1.1.1") {
			t.Fatalf("attempt %d refused within the burst", i+1)
		}
		th.failed("1.1.1.1")
	}
	if th.allow("1.1.1.1") {
		t.Error("allowed past the burst")
	}
	if !th.allow("2.2.2.2") {
		t.Error("another address is throttled too")
	}
	now = now.Add(time.Second)
	if !th.allow("1.1.1.1") {
		t.Error("not allowed again after one interval")
	}
	th.failed("1.1.1.1")
	if th.allow("1.1.1.1") {
		t.Error("allowed twice after one interval")
	}
	// Fill the table; the next addresses share the overflow bucket.
	th.failed("2.2.2.2")
	th.failed("3.3.3.3")
	if got := th.tracked(); got != 3 {
		t.Fatalf("tracked %d addresses, want 3", got)
	}
	for i := range 2 {
		th.failed(fmt.Sprintf("9.9.9.%d", i))
	}
	if th.allow("9.9.9.200") {
		t.Error("an untracked address is allowed with the table full and the shared bucket empty")
	}
	if got := th.tracked(); got != 3 {
		t.Errorf("tracked %d addresses, want at most 3", got)
	}
	// Entries whose bucket refilled are dropped when room is needed.
	now = now.Add(time.Minute)
	th.failed("4.4.4.4")
	if got := th.tracked(); got != 1 {
		t.Errorf("tracked %d addresses after a minute, want only the new one", got)
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:5000":             "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ff::1]:443":   "2001:db8:1:2::/64",
		"[::ffff:192.0.2.7]:1":       "192.0.2.7",
		"pipe":                       "pipe",
	} {
		if got := sourceKey(in); got != want {
			t.Errorf("sourceKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWriteAllowed is the table of who may publish what under --mqtt-auth:
// a device its own topics, a topic a mapping rule matches (the rows decide
// later), its own Sparkplug B edge node in its groups; everything else,
// commands and STATE among it, only with a write=FILTER grant.
func TestWriteAllowed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds")
	h1 := cheapHash(t, "pw")
	lines := []string{
		"dev-a " + h1,
		"edge1 " + h1 + " sparkplug=plant1 sparkplug=plant2",
		"scada " + h1 + " write=spBv1.0/+/NCMD/# write=spBv1.0/STATE/scada",
		"ops " + h1 + " write=devices/+/commands",
		"gw " + h1 + " write=spBv1.0/plant1/+/edge9/#",
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := newAuthenticator(path, discard)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := mapping.New([]mapping.Rule{{Name: "press", Topic: "factory/{site}/{device_id}/telemetry", Metrics: []string{"temp"}}})
	if err != nil {
		t.Fatal(err)
	}
	def, _ := mqttmsg.ParseTemplate(DefaultTopic)
	h := &acl{topic: def, rules: rules, auth: a, spb: true}
	creds := a.creds()
	for _, tc := range []struct {
		user, topic string
		want        bool
	}{
		{"dev-a", "devices/dev-a/readings", true},
		{"dev-a", "devices/dev-a/commands", true},
		{"dev-a", "devices/dev-a", true},
		{"dev-a", "devices/dev-b/commands", false},
		{"dev-a", "devices/dev-b/readings", false},
		{"dev-a", "devices/dev-ab/status", false},
		{"dev-a", "elsewhere/dev-a", false},
		{"dev-a", "factory/berlin/dev-b/telemetry", true}, // rows decide
		{"dev-a", "spBv1.0/STATE/scada", false},
		{"dev-a", "STATE/scada", false},
		{"dev-a", "spBv1.0/plant1/NBIRTH/dev-a", false}, // no group named
		{"edge1", "spBv1.0/plant1/NBIRTH/edge1", true},
		{"edge1", "spBv1.0/plant2/NDATA/edge1", true},
		{"edge1", "spBv1.0/plant1/DDATA/edge1/pump", true},
		{"edge1", "spBv1.0/plant1/NDEATH/edge1", true},
		{"edge1", "spBv1.0/plant3/NBIRTH/edge1", false},
		{"edge1", "spBv1.0/plant1/NBIRTH/edge2", false},
		{"edge1", "spBv1.0/plant1/NCMD/edge1", false},
		{"edge1", "spBv1.0/plant1/DCMD/edge1/pump", false},
		{"edge1", "spBv1.0/STATE/edge1", false},
		{"edge1", "spBv1.0/plant1", false},
		{"scada", "spBv1.0/plant1/NCMD/edge1", true},
		{"scada", "spBv1.0/plant1/DCMD/edge1/pump", false},
		{"scada", "spBv1.0/STATE/scada", true},
		{"scada", "spBv1.0/STATE/other", false},
		{"ops", "devices/dev-a/commands", true},
		{"ops", "devices/dev-a/status", false},
		{"gw", "spBv1.0/plant1/NBIRTH/edge9", true},
		{"gw", "spBv1.0/plant2/NBIRTH/edge9", false},
	} {
		if got := h.writeAllowed(tc.user, creds[tc.user], tc.topic); got != tc.want {
			t.Errorf("writeAllowed(%s, %s) = %v, want %v", tc.user, tc.topic, got, tc.want)
		}
	}
	for _, tc := range []struct {
		user, topic, payload string
		want                 bool
	}{
		{"dev-a", "devices/dev-a/status", "offline", true},
		{"dev-a", "devices/dev-a/readings", "1", true},
		{"dev-a", "devices/dev-b/commands", "x", false},
		{"ops", "devices/dev-b/commands", "x", true},
		{"ops", "devices/dev-b/readings", "1", false}, // a grant makes no readings of others
		{"dev-a", "factory/berlin/dev-a/telemetry", `{"temp": 1}`, true},
		{"dev-a", "factory/berlin/dev-b/telemetry", `{"temp": 1}`, false},
		{"dev-a", "factory/berlin/dev-a/telemetry", `offline`, false}, // unmappable: whose rows?
		{"dev-a", "spBv1.0/STATE/scada", `{"online":false}`, false},
		{"scada", "spBv1.0/STATE/scada", `{"online":false}`, true},
		{"edge1", "spBv1.0/plant1/NDEATH/edge1", "x", true},
		{"edge1", "spBv1.0/plant1/NDEATH/edge2", "x", false},
		{"nobody", "devices/nobody/status", "x", false},
	} {
		if got := h.mayWill(&mqtt.Client{}, tc.user, tc.topic, []byte(tc.payload)); got != tc.want {
			t.Errorf("mayWill(%s, %s, %q) = %v, want %v", tc.user, tc.topic, tc.payload, got, tc.want)
		}
	}
}

func TestOwnSparkplugRead(t *testing.T) {
	groups := []string{"plant1"}
	for _, tc := range []struct {
		f    string
		want bool
	}{
		{"spBv1.0/plant1/NCMD/edge1", true},
		{"spBv1.0/plant1/DCMD/edge1/#", true},
		{"spBv1.0/plant1/DCMD/edge1/pump", true},
		{"spBv1.0/STATE/scada", true},
		{"spBv1.0/STATE/+", true},
		{"spBv1.0/plant2/NCMD/edge1", false},
		{"spBv1.0/+/NCMD/edge1", false},
		{"spBv1.0/plant1/NCMD/edge2", false},
		{"spBv1.0/plant1/NDATA/edge2", false},
		{"spBv1.0/#", false},
	} {
		if got := ownSparkplugRead("edge1", groups, tc.f); got != tc.want {
			t.Errorf("ownSparkplugRead(edge1, %v, %s) = %v, want %v", groups, tc.f, got, tc.want)
		}
	}
	if ownSparkplugRead("dev-a", nil, "spBv1.0/STATE/scada") {
		t.Error("a user with no Sparkplug B group reads STATE without a grant")
	}
}
