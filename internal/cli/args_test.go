package cli

import (
	"testing"
	"time"
)

func TestIDs(t *testing.T) {
	var ids IDs
	if err := ids.Set("4, 7"); err != nil {
		t.Fatal(err)
	}
	if err := ids.Set("9"); err != nil {
		t.Fatal(err)
	}
	if got := ids.String(); got != "4,7,9" {
		t.Errorf("IDs = %s, want 4,7,9", got)
	}
	for _, bad := range []string{"0", "-3", "x", "4,,5"} {
		if err := new(IDs).Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	if got, err := ParseSince("90m", now); err != nil || !got.Equal(now.Add(-90*time.Minute)) {
		t.Errorf("ParseSince(90m) = %v, %v", got, err)
	}
	if got, err := ParseSince("2026-11-28T08:00:00Z", now); err != nil || !got.Equal(time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("ParseSince(RFC 3339) = %v, %v", got, err)
	}
	for _, bad := range []string{"-1h", "0s", "yesterday"} {
		if _, err := ParseSince(bad, now); err == nil {
			t.Errorf("ParseSince(%q) accepted", bad)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"redis://h:6379/0": "redis://h:6379/0",
		"":                 "''",
		"a b":              "'a b'",
		"it's":             `'it'\''s'`,
	} {
		if got := ShellQuote(in); got != want {
			t.Errorf("ShellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
