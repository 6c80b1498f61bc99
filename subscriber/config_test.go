package subscriber

import (
	"flag"
	"slices"
	"strings"
	"testing"
	"time"

	"firehose/mapping"
)

// valid is a configuration Validate accepts, for the cases to break.
func valid() Config {
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"--subscribe-broker", "tcp://127.0.0.1:1883", "--subscribe-topics", "devices/+/readings", "--subscribe-client-id", "fh-1"}); err != nil {
		panic(err)
	}
	return c
}

func TestValidate(t *testing.T) {
	if err := valid().Validate(); err != nil {
		t.Fatalf("the defaults with a broker and a topic: %v", err)
	}
	for _, tt := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no broker", func(c *Config) { c.Brokers = nil }, "needs --subscribe-broker"},
		{"scheme", func(c *Config) { c.Brokers = []string{"http://h:1"} }, `scheme "http"`},
		{"no host", func(c *Config) { c.Brokers = []string{"tcp://"} }, "want a URL"},
		{"no topics", func(c *Config) { c.Topics = nil }, "no topic filter"},
		{"bad #", func(c *Config) { c.Topics = []string{"a/#/b"} }, "'#' must be the last level"},
		{"bad +", func(c *Config) { c.Topics = []string{"a/b+"} }, "whole level"},
		{"share in the filter", func(c *Config) { c.Topics = []string{"$share/g/a"} }, "--subscribe-group"},
		{"group with a slash", func(c *Config) { c.Group = "a/b" }, "share name"},
		{"QoS 0", func(c *Config) { c.QoS = 0 }, "want 1 or 2"},
		{"protocol", func(c *Config) { c.Protocol = "4" }, "want auto, 5 or 3.1.1"},
		{"receive maximum", func(c *Config) { c.ReceiveMaximum = 70000 }, "1 to 65535"},
		{"keep alive", func(c *Config) { c.KeepAlive = time.Millisecond }, "1s to 18h"},
		{"cert without key", func(c *Config) { c.CertFile = "c.pem" }, "go together"},
		{"no client id", func(c *Config) { c.ClientID = "" }, "--subscribe-client-id"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.change(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestQoSFlag(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if c.QoS != 1 {
		t.Fatalf("default QoS %d, want 1", c.QoS)
	}
	if err := fs.Parse([]string{"--subscribe-qos", "2"}); err != nil || c.QoS != 2 {
		t.Fatalf("--subscribe-qos 2: %d, %v", c.QoS, err)
	}
	if err := fs.Parse([]string{"--subscribe-qos", "0"}); err == nil {
		t.Fatal("--subscribe-qos 0 accepted")
	}
}

func TestFilters(t *testing.T) {
	c := valid()
	c.Topics = []string{"devices/+/readings", "plant/#"}
	if got := c.filters(); !slices.Equal(got, c.Topics) {
		t.Errorf("filters without a group = %v", got)
	}
	c.Group = "fh"
	if got := c.filters(); !slices.Equal(got, []string{"$share/fh/devices/+/readings", "$share/fh/plant/#"}) {
		t.Errorf("filters of group fh = %v", got)
	}
}

func TestDefaultTopics(t *testing.T) {
	rules, err := mapping.New([]mapping.Rule{
		{Name: "press", Topic: "plant/{site}/{device_id}/telemetry", Metrics: []string{"temp"}},
		{Name: "http", Endpoint: "/v1/readings", Device: "device_id", Metrics: []string{"v"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := DefaultTopics("devices/{device_id}/readings", rules, true)
	want := []string{"devices/+/readings", "plant/+/+/telemetry", "spBv1.0/#"}
	if !slices.Equal(got, want) {
		t.Errorf("DefaultTopics = %v, want %v", got, want)
	}
	if got := DefaultTopics("devices/{device_id}/readings", nil, false); !slices.Equal(got, want[:1]) {
		t.Errorf("DefaultTopics without rules or Sparkplug B = %v", got)
	}
}
