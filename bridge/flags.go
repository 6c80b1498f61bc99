package bridge

import (
	"flag"
	"fmt"
	"time"
)

// RegisterFlags registers the bridge's batching flags on fs. Postgres and
// Streams are shared with other roles and registered by the command.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.BatchSize, "batch-size", 5000, "commit a shard's buffer when it holds this many readings")
	fs.DurationVar(&c.BatchAge, "batch-age", 200*time.Millisecond, "commit a shard's buffer when its oldest reading has waited this long (also when the stream is quiet)")
	fs.DurationVar(&c.LockRetry, "lock-retry", 2*time.Second,
		"L: the bridges of a deployment share its shards (K bridges on N shards: at most ceil(N/K) each); every L a bridge heartbeats its row in bridge_members "+
			"and rebalances: it takes the shards its share lacks and hands over, after committing the batch in hand, those above it. "+
			"A bridge that joins has its share within about 2L + 1s + a commit; the shards of one whose process died are taken within 2L; "+
			"of one gone silent (host down, network frozen) within --bridge-session-timeout + 2L")
	fs.DurationVar(&c.SessionTimeout, "bridge-session-timeout", 30*time.Second,
		"T: a bridge that goes silent (host down, network path frozen) loses its shards within T, and the other bridges take them within T + 2 × --lock-retry. "+
			"PostgreSQL ends a lock session idle for T (the bridge pings every T/3), waits at most T/2 for a statement or in a transaction, "+
			"and probes the socket with keepalives after T/3, every T/6, 4 times (T/3 + 4·T/6 = T); a bridge taking the shard ends a holder's session silent for T. "+
			"Every PostgreSQL call of the bridge has a deadline of T/2 (a batch's transaction T). Needs PostgreSQL 14 or later")
}

// Validate checks the configuration for values that cannot work.
func (c Config) Validate() error {
	switch {
	case c.BatchSize < 1 || c.BatchSize > 1_000_000:
		return fmt.Errorf("--batch-size %d: want 1 to 1,000,000", c.BatchSize)
	case c.BatchAge < time.Millisecond:
		return fmt.Errorf("--batch-age %s: want at least 1ms", c.BatchAge)
	case c.LockRetry < 10*time.Millisecond:
		return fmt.Errorf("--lock-retry %s: want at least 10ms", c.LockRetry)
	case c.SessionTimeout != 0 && (c.SessionTimeout < 3*time.Second || c.SessionTimeout > time.Hour):
		return fmt.Errorf("--bridge-session-timeout %s: want 3s to 1h", c.SessionTimeout)
	case c.SessionTimeout != 0 && c.LockRetry >= c.SessionTimeout/3:
		// The membership session heartbeats every --lock-retry; PostgreSQL
		// ends one idle for the timeout.
		return fmt.Errorf("--lock-retry %s: want less than a third of --bridge-session-timeout %s", c.LockRetry, c.SessionTimeout)
	}
	return nil
}
