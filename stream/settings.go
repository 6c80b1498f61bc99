package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Fields of the deployment's metadata hash (Streams.MetaKey) that hold the
// settings every process of a deployment must share, beside its shard count
// and key layout. The first process that has a setting records it (HSETNX);
// a later one started with another value is refused at start.
const (
	// metaDedup is the --dedup mode of the deployment's edges.
	metaDedup = "dedup"
	// metaDedupWindow is their --dedup-window, in milliseconds: the
	// window numbers in each shard's metadata (dedup0, dedup1) count
	// windows of this length, so an edge of another length would take the
	// other's sets for stale and drop them.
	metaDedupWindow = "dedup_window_ms"
	// metaRetention is the deployment's --retention in seconds, recorded
	// by the first process started with one.
	metaRetention = "retention_s"
	// metaInterval is its --partition-interval in seconds, recorded by the
	// first process started with one explicitly (the edges' margin; the
	// database's record is the bridges' authority).
	metaInterval = "partition_interval_s"
)

// ErrSettingMismatch means a process was started with a setting that
// differs from the one its deployment recorded.
var ErrSettingMismatch = errors.New("setting differs from the deployment's")

// claimSettings records, in one round trip, each field of vals whose value
// is not "" where the hash has none, then returns what the hash holds for
// every field of fields ("" when absent).
func claimSettings(ctx context.Context, rdb redis.UniversalClient, key string, fields []string, vals []string) ([]string, error) {
	var get *redis.SliceCmd
	_, err := rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, f := range fields {
			if vals[i] != "" {
				pipe.HSetNX(ctx, key, f, vals[i])
			}
		}
		get = pipe.HMGet(ctx, key, fields...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	got := make([]string, len(fields))
	for i, v := range get.Val() {
		got[i], _ = v.(string) // nil when absent
	}
	return got, nil
}

// CheckDedup records an edge's --dedup mode and --dedup-window in the
// deployment's metadata if it has none, and refuses, with
// ErrSettingMismatch naming both values, an edge whose mode or window
// differs from the recorded ones: two windows erase each other's memory (a
// resend is stored twice), and two modes keep different keys or none. An
// empty mode is DedupOff and a zero window DefaultDedupWindow; the window is
// recorded and checked only when the mode deduplicates.
func CheckDedup(ctx context.Context, rdb redis.UniversalClient, s Streams, mode string, window time.Duration) error {
	if mode == "" {
		mode = DedupOff
	}
	if window <= 0 {
		window = DefaultDedupWindow
	}
	win := ""
	if mode != DedupOff {
		win = strconv.FormatInt(window.Milliseconds(), 10)
	}
	got, err := claimSettings(ctx, rdb, s.MetaKey(), []string{metaDedup, metaDedupWindow}, []string{mode, win})
	if err != nil {
		return fmt.Errorf("record --dedup in %s: %w", s.MetaKey(), err)
	}
	fix := fmt.Sprintf("start every edge of the deployment with the same settings; to change them, stop every edge and run redis-cli HDEL %s %s %s (the keys remembered so far are forgotten)",
		s.MetaKey(), metaDedup, metaDedupWindow)
	if got[0] != mode {
		return fmt.Errorf("%w: --dedup %s, but deployment %q records --dedup %s (another edge runs so): %s", ErrSettingMismatch, mode, s.prefix(), got[0], fix)
	}
	if win == "" {
		return nil
	}
	if got[1] != win {
		recorded := got[1]
		if ms, err := strconv.ParseInt(recorded, 10, 64); err == nil {
			recorded = (time.Duration(ms) * time.Millisecond).String()
		}
		return fmt.Errorf("%w: --dedup-window %s, but deployment %q records --dedup-window %s (another edge runs so); two windows erase each other's memory: %s",
			ErrSettingMismatch, window, s.prefix(), recorded, fix)
	}
	return nil
}

// RetentionSettings are a deployment's retention and partition interval
// as its metadata records them; 0 when not recorded.
type RetentionSettings struct {
	Retention time.Duration
	Interval  time.Duration
}

// MaxAge is the oldest a reading may be when an edge accepts it so that
// the retention does not delete it before the bridge commits it: the
// retention minus one partition interval (defaultInterval when none is
// recorded), a margin for the backlog. 0 without a retention; negative or
// 0 with a retention not longer than the interval, which leaves no age.
func (r RetentionSettings) MaxAge(defaultInterval time.Duration) time.Duration {
	if r.Retention <= 0 {
		return 0
	}
	iv := r.Interval
	if iv <= 0 {
		iv = defaultInterval
	}
	return r.Retention - iv
}

// ClaimRetention records retention and interval (each when not 0) in the
// deployment's metadata where it has none, and returns what it records,
// refusing with ErrSettingMismatch a retention that differs from the
// recorded one: every edge bounds the age of what it accepts by the same
// retention.
func ClaimRetention(ctx context.Context, rdb redis.UniversalClient, s Streams, retention, interval time.Duration) (RetentionSettings, error) {
	secs := func(d time.Duration) string {
		if d <= 0 {
			return ""
		}
		return strconv.FormatInt(int64(d/time.Second), 10)
	}
	got, err := claimSettings(ctx, rdb, s.MetaKey(), []string{metaRetention, metaInterval}, []string{secs(retention), secs(interval)})
	if err != nil {
		return RetentionSettings{}, fmt.Errorf("record --retention in %s: %w", s.MetaKey(), err)
	}
	rec, err := retentionOf(got)
	if err != nil {
		return RetentionSettings{}, fmt.Errorf("read %s: %w", s.MetaKey(), err)
	}
	mismatch := func(flag string, want, have time.Duration, field string) error {
		return fmt.Errorf("%w: --%s %s, but deployment %q records %s: leave the flag unset to use the recorded value; to change it, "+
			"run redis-cli HSET %s %s SECONDS (running edges take it within %s) and give the new value to every process that sets the flag",
			ErrSettingMismatch, flag, want, s.prefix(), have, s.MetaKey(), field, RetentionRefresh)
	}
	if retention > 0 && rec.Retention != retention.Truncate(time.Second) {
		return rec, mismatch("retention", retention, rec.Retention, metaRetention)
	}
	// An interval is not refused here: the database's record is the
	// authority, and a bridge of another interval refuses to start there
	// (partition.ErrIntervalMismatch). Edges take the first one recorded.
	return rec, nil
}

// RetentionRefresh is how often an edge reads its deployment's retention
// again (ReadRetention), so that one recorded or changed while it runs
// bounds what it accepts within that time.
const RetentionRefresh = 10 * time.Second

// ReadRetention reads the deployment's recorded retention and interval.
func ReadRetention(ctx context.Context, rdb redis.UniversalClient, s Streams) (RetentionSettings, error) {
	vals, err := rdb.HMGet(ctx, s.MetaKey(), metaRetention, metaInterval).Result()
	if err != nil {
		return RetentionSettings{}, fmt.Errorf("read %s: %w", s.MetaKey(), err)
	}
	got := make([]string, len(vals))
	for i, v := range vals {
		got[i], _ = v.(string)
	}
	rec, err := retentionOf(got)
	if err != nil {
		return RetentionSettings{}, fmt.Errorf("read %s: %w", s.MetaKey(), err)
	}
	return rec, nil
}

// retentionOf parses the recorded retention and interval, in seconds.
func retentionOf(got []string) (RetentionSettings, error) {
	var r RetentionSettings
	for i, d := range []*time.Duration{&r.Retention, &r.Interval} {
		if got[i] == "" {
			continue
		}
		n, err := strconv.ParseInt(got[i], 10, 64)
		if err != nil || n < 0 {
			return RetentionSettings{}, fmt.Errorf("field %s holds %q: want whole seconds", []string{metaRetention, metaInterval}[i], got[i])
		}
		*d = time.Duration(n) * time.Second
	}
	return r, nil
}
