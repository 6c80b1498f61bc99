package partition_test

import (
	"flag"
	"io"
	"testing"
	"time"

	"firehose/partition"
)

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		interval  time.Duration
		retention time.Duration
		bad       bool
	}{
		{name: "defaults"},
		{name: "days", args: []string{"--partition-interval", "7d", "--retention", "30d"}, interval: 7 * 24 * time.Hour, retention: 30 * 24 * time.Hour},
		{name: "hours", args: []string{"--partition-interval", "6h", "--retention", "1d12h"}, interval: 6 * time.Hour, retention: 36 * time.Hour},
		{name: "zero keeps everything", args: []string{"--retention", "0"}},
		{name: "does not divide a day", args: []string{"--partition-interval", "5h"}, bad: true},
		{name: "not whole days", args: []string{"--partition-interval", "36h"}, bad: true},
		{name: "too short", args: []string{"--partition-interval", "30s"}, bad: true},
		{name: "negative", args: []string{"--retention", "-1h"}, bad: true},
		{name: "not a span", args: []string{"--retention", "forever"}, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c partition.Config
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			c.RegisterFlags(fs)
			err := fs.Parse(tc.args)
			if err == nil {
				err = c.Validate()
			}
			if (err != nil) != tc.bad {
				t.Fatalf("%v: error %v, want error %v", tc.args, err, tc.bad)
			}
			if !tc.bad && (c.Interval != tc.interval || c.Retention != tc.retention) {
				t.Errorf("interval %s retention %s, want %s and %s", c.Interval, c.Retention, tc.interval, tc.retention)
			}
		})
	}
}
