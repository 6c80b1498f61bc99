package stream_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"firehose/internal/testenv"
	"firehose/stream"
)

// TestIntegrationDedupSettingsShared: the first edge records its mode and
// window; another window or mode is refused naming both values, the same
// settings pass.
func TestIntegrationDedupSettingsShared(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	s := stream.Streams{Prefix: prefix, Count: 2}
	if err := stream.CheckDedup(t.Context(), rdb, s, stream.DedupID, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := stream.CheckDedup(t.Context(), rdb, s, stream.DedupID, 5*time.Minute); err != nil {
		t.Errorf("the same settings again: %v", err)
	}
	for _, c := range []struct {
		mode   string
		window time.Duration
		want   []string
	}{
		{stream.DedupID, 7 * time.Minute, []string{"--dedup-window 7m0s", "records --dedup-window 5m0s"}},
		{stream.DedupNatural, 5 * time.Minute, []string{"--dedup natural", "records --dedup id"}},
		{"", 0, []string{"--dedup off", "records --dedup id"}},
	} {
		err := stream.CheckDedup(t.Context(), rdb, s, c.mode, c.window)
		if !errors.Is(err, stream.ErrSettingMismatch) {
			t.Errorf("%q %s: %v, want ErrSettingMismatch", c.mode, c.window, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q %s: %q does not say %q", c.mode, c.window, err, w)
			}
		}
	}
}

// TestIntegrationRetentionRecorded: the first process with a retention
// records it with its interval; one without the flag reads them, one with
// another retention is refused; MaxAge is the retention minus the interval.
func TestIntegrationRetentionRecorded(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	s := stream.Streams{Prefix: prefix, Count: 2}
	if rec, err := stream.ClaimRetention(t.Context(), rdb, s, 0, 0); err != nil || rec != (stream.RetentionSettings{}) || rec.MaxAge(24*time.Hour) != 0 {
		t.Fatalf("nothing recorded: %+v, %v; want none and no bound", rec, err)
	}
	if _, err := stream.ClaimRetention(t.Context(), rdb, s, 30*24*time.Hour, 6*time.Hour); err != nil {
		t.Fatal(err)
	}
	rec, err := stream.ClaimRetention(t.Context(), rdb, s, 0, 0)
	if err != nil || rec.Retention != 30*24*time.Hour || rec.Interval != 6*time.Hour || rec.MaxAge(24*time.Hour) != 30*24*time.Hour-6*time.Hour {
		t.Errorf("recorded: %+v, %v; want 720h, 6h, bound 714h", rec, err)
	}
	if _, err := stream.ClaimRetention(t.Context(), rdb, s, 7*24*time.Hour, 0); !errors.Is(err, stream.ErrSettingMismatch) || !strings.Contains(err.Error(), "--retention 168h0m0s") || !strings.Contains(err.Error(), "records 720h0m0s") {
		t.Errorf("another retention: %v, want ErrSettingMismatch naming both", err)
	}
	if got, err := stream.ReadRetention(t.Context(), rdb, s); err != nil || got != rec {
		t.Errorf("ReadRetention: %+v, %v; want %+v", got, err, rec)
	}
}
