package mqttmsg

import (
	"strings"
	"testing"
)

func TestParseTemplate(t *testing.T) {
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
			got, err := ParseTemplate(tc.tmpl)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseTemplate(%q) = %+v, %v; want an error containing %q", tc.tmpl, got, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), "--mqtt-topic") {
					t.Errorf("error %q does not name the flag --mqtt-topic", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseTemplate(%q): %v", tc.tmpl, err)
			}
			if got.Prefix() != tc.wantPrefix || got.suffix != tc.wantSuff {
				t.Errorf("ParseTemplate(%q) = prefix %q suffix %q; want %q %q", tc.tmpl, got.Prefix(), got.suffix, tc.wantPrefix, tc.wantSuff)
			}
			if f := got.Filter(); f != tc.wantFilter {
				t.Errorf("Filter() = %q, want %q", f, tc.wantFilter)
			}
		})
	}
}

func TestTemplateDevice(t *testing.T) {
	def, _ := ParseTemplate(DefaultTopic)
	alone, _ := ParseTemplate("{device_id}")
	same, _ := ParseTemplate("r/{device_id}/r")
	for _, tc := range []struct {
		name   string
		topic  Template
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
			got, ok := tc.topic.Device(tc.in)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("Device(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}
