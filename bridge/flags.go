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
	fs.DurationVar(&c.LockRetry, "lock-retry", 2*time.Second, "how often to try to take shards another bridge holds (takeover after a bridge dies)")
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
	}
	return nil
}
