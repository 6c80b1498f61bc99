package reload

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// racyWindow: a file modified this shortly before it was read may be
// modified again within the same modification-time tick; such a load is
// re-read on the next check even if the stamp did not change.
const racyWindow = time.Second

// stamp identifies a version of a file well enough to notice a change.
type stamp struct {
	mod  time.Time
	size int64
}

// File is a parsed file kept current by Watch.
type File[T any] struct {
	path  string
	what  string
	parse func(path string, data []byte) (T, error)
	log   *slog.Logger
	cur   atomic.Pointer[T]

	// Only the loader (Load, then the Watch goroutine) touches these.
	stamp   stamp
	sum     [sha256.Size]byte // of the content in use
	racy    bool              // stamp too recent to trust alone
	lastErr string
}

// Load reads and parses path; an unreadable or invalid file is an error.
// what names the file in errors and logs ("API key file").
func Load[T any](path, what string, parse func(path string, data []byte) (T, error), log *slog.Logger) (*File[T], error) {
	f := &File[T]{path: path, what: what, parse: parse, log: log}
	if _, err := f.reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path is the file's path.
func (f *File[T]) Path() string { return f.path }

// Get returns the version in use.
func (f *File[T]) Get() T { return *f.cur.Load() }

// reload reads the file if its modification time or size changed since the
// last load (or the last load was racy), and reports whether a new version is
// in use. On error the previous version stays in use.
func (f *File[T]) reload() (bool, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", f.what, err)
	}
	st := stamp{mod: fi.ModTime(), size: fi.Size()}
	loaded := f.cur.Load() != nil
	if loaded && st == f.stamp && !f.racy {
		return false, nil
	}
	readAt := time.Now()
	data, err := os.ReadFile(f.path)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", f.what, err)
	}
	sum := sha256.Sum256(data)
	racy := readAt.Sub(st.mod) < racyWindow
	if loaded && sum == f.sum {
		f.stamp, f.racy = st, racy
		return false, nil
	}
	v, err := f.parse(f.path, data)
	if err != nil {
		return false, err
	}
	f.stamp, f.sum, f.racy = st, sum, racy
	f.cur.Store(&v)
	return true, nil
}

// Watch checks the file every interval until ctx ends. A file that became
// unreadable or invalid keeps the previous version; the error is logged once.
// onChange, if not nil, runs after each new version is in use.
func (f *File[T]) Watch(ctx context.Context, every time.Duration, onChange func(T)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := f.reload()
		switch {
		case err != nil:
			if msg := err.Error(); msg != f.lastErr {
				f.lastErr = msg
				f.log.Error(f.what+" not reloaded: keeping the previous version", "file", f.path, "err", err)
			}
		case changed:
			f.lastErr = ""
			if onChange != nil {
				onChange(f.Get())
			}
		}
	}
}
