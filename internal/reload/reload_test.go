package reload

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func parseLines(path string, data []byte) ([]string, error) {
	if strings.Contains(string(data), "broken") {
		return nil, errors.New(path + ":1: broken")
	}
	return strings.Fields(string(data)), nil
}

// TestReload checks the reload step itself, without timing.
func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a")
	f, err := Load(path, "test file", parseLines, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Get(); len(got) != 1 || got[0] != "a" {
		t.Fatalf("loaded %v", got)
	}
	if changed, err := f.reload(); changed || err != nil {
		t.Errorf("reload of an unchanged file = %v, %v", changed, err)
	}
	write("b c")
	if changed, err := f.reload(); !changed || err != nil || len(f.Get()) != 2 {
		t.Errorf("reload after a change = %v, %v, %v", changed, err, f.Get())
	}
	write("broken")
	if _, err := f.reload(); err == nil || !strings.Contains(err.Error(), path+":1:") || len(f.Get()) != 2 {
		t.Errorf("invalid file: err %v; the previous version must stay (have %v)", err, f.Get())
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reload(); err == nil || len(f.Get()) != 2 {
		t.Errorf("removed file: err %v; the previous version must stay", err)
	}
	if _, err := Load(path, "test file", parseLines, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "read test file") {
		t.Errorf("Load of a missing file: %v", err)
	}
}

func TestWatchSeesChangesAndStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path, "test file", parseLines, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	changed := make(chan []string, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Watch(ctx, 5*time.Millisecond, func(v []string) { changed <- v })
	}()
	if err := os.WriteFile(path, []byte("x y z"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-changed:
		if len(v) != 3 {
			t.Errorf("onChange got %v", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not see the change")
	}
	cancel()
	<-done
}
