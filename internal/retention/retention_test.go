package retention

import (
	"strings"
	"testing"
	"time"

	"firehose/stream"
)

func TestBound(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		name    string
		rec     stream.RetentionSettings
		maxAge  time.Duration
		set     bool
		want    time.Duration
		wantErr string
	}{
		{name: "no retention", rec: stream.RetentionSettings{}, want: 0},
		{name: "retention minus the default interval", rec: stream.RetentionSettings{Retention: 30 * day}, want: 29 * day},
		{name: "retention minus the recorded interval", rec: stream.RetentionSettings{Retention: 30 * day, Interval: time.Hour}, want: 30*day - time.Hour},
		{name: "retention not longer than the interval", rec: stream.RetentionSettings{Retention: day}, wantErr: "is not longer than the partition interval"},
		{name: "max age unset is bounded", rec: stream.RetentionSettings{Retention: 7 * day}, maxAge: 365 * day, want: 6 * day},
		{name: "max age set within", rec: stream.RetentionSettings{Retention: 7 * day}, maxAge: 2 * day, set: true, want: 6 * day},
		{name: "max age set beyond", rec: stream.RetentionSettings{Retention: 7 * day}, maxAge: 7 * day, set: true, wantErr: "--max-reading-age"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Bound(tc.rec, tc.maxAge, tc.set)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Bound = %s, %v; want %s", got, err, tc.want)
			}
		})
	}
}
