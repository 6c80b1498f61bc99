package broker

import (
	"fmt"
	"testing"
	"time"
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
	def, _ := parseTopic(DefaultTopic)
	first, _ := parseTopic("{device_id}/up")
	for _, tc := range []struct {
		t      topic
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
		if got := tc.t.underDevice(tc.dev, tc.f); got != tc.want {
			t.Errorf("%+v.underDevice(%q, %q) = %v, want %v", tc.t, tc.dev, tc.f, got, tc.want)
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
