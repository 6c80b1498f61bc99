package partition

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"firehose/typed"
)

// Config is the partition maintenance of one bridge.
type Config struct {
	// Interval is the span of ts one partition holds (--partition-interval).
	// 0, the default, uses the interval recorded in the database, or records
	// DefaultInterval (24h) when there is none. It must divide a day or be a
	// whole number of days. Set on a database that recorded another, the
	// maintainer refuses (ErrIntervalMismatch).
	Interval time.Duration
	// Retention drops the partitions whose whole range is older than this
	// (--retention); 0, the default, keeps everything.
	Retention time.Duration
	// Ahead is how many partitions past the current one are kept ready;
	// default 3 (not a flag).
	Ahead int
	// Every is how often a pass runs; default 1 minute (not a flag).
	Every time.Duration
	// Tables are the typed tables of the rules, whose partitions are kept
	// beside readings' with the same Interval, Ahead and Retention (not a
	// flag; firehose migrate creates the tables). Only Name and TimeColumn
	// are used; a partition is named TABLE_p20261201 (PartitionName).
	Tables []typed.Table
}

func (c *Config) defaults() {
	if c.Ahead <= 0 {
		c.Ahead = 3
	}
	if c.Every <= 0 {
		c.Every = time.Minute
	}
}

// RegisterFlags registers --partition-interval and --retention on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Var((*days)(&c.Interval), "partition-interval", "the `span` of ts each partition of readings holds, e.g. 1d, 6h, 7d (divides a day or is whole days, aligned on UTC midnight;\n"+
		"weeks start on Monday); empty: the interval recorded in the database, or 1d on a new one. Recorded by the first bridge;\n"+
		"a bridge given another refuses to start. Size it so one interval's indexes fit in about a quarter of memory (docs/partitions.md)")
	fs.Var((*days)(&c.Retention), "retention", "detach and drop partitions of readings whose whole range is older than this `span`, e.g. 30d or 2160h\n"+
		"(never the current one; late rows for a dropped range land in readings_default and are deleted by the same rule);\n"+
		"empty or 0: the deployment's recorded retention, or keep everything. Recorded in Redis by the first process given it\n"+
		"(another is refused at start); edges refuse readings older than the retention minus one partition interval")
}

// Validate checks the configuration for values that cannot work.
func (c Config) Validate() error {
	day := 24 * time.Hour
	switch {
	case c.Interval < 0 || (c.Interval != 0 && c.Interval < time.Minute):
		return fmt.Errorf("--partition-interval %s: want at least 1m", days(c.Interval))
	case c.Interval != 0 && c.Interval%time.Second != 0:
		return fmt.Errorf("--partition-interval %s: want whole seconds", days(c.Interval))
	case c.Interval != 0 && day%c.Interval != 0 && c.Interval%day != 0:
		return fmt.Errorf("--partition-interval %s: want a span that divides a day (1h, 6h, 12h, ...) or whole days (1d, 7d)", days(c.Interval))
	case c.Retention < 0:
		return fmt.Errorf("--retention %s: want 0 (keep everything) or a positive span", days(c.Retention))
	}
	return nil
}

// days is a time.Duration flag that also reads whole days ("30d", "1d12h").
type days time.Duration

func (d days) String() string {
	if d == 0 {
		return ""
	}
	v := time.Duration(d)
	day := 24 * time.Hour
	if v%day == 0 {
		return strconv.FormatInt(int64(v/day), 10) + "d"
	}
	return v.String()
}

func (d *days) Set(s string) error {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		*d = 0
		return nil
	}
	var whole time.Duration
	if n, rest, ok := strings.Cut(s, "d"); ok {
		k, err := strconv.Atoi(n)
		if err != nil || k < 0 {
			return fmt.Errorf("want a span such as 30d, 1d12h or 6h")
		}
		whole, s = time.Duration(k)*24*time.Hour, rest
	}
	var part time.Duration
	if s != "" {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("want a span such as 30d, 1d12h or 6h")
		}
		part = v
	}
	*d = days(whole + part)
	return nil
}
