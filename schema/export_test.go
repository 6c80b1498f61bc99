package schema

import "time"

// ApplyUpTo applies the migrations up to version upTo, as an older release did.
var ApplyUpTo = apply

// SetLockRetry sets how EnsureTables waits for a lock (lockTimeout, then
// backoff from first), for a test; the returned func restores the defaults.
func SetLockRetry(timeout, first time.Duration) (restore func()) {
	t, f, m := lockTimeout, firstBackoff, maxBackoff
	lockTimeout, firstBackoff, maxBackoff = timeout, first, first
	return func() { lockTimeout, firstBackoff, maxBackoff = t, f, m }
}
