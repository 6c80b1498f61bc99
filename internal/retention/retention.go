package retention

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/partition"
	"firehose/stream"
)

// Bound is the oldest age an edge accepts by the deployment's
// retention, rec: its retention minus one partition interval (1d when none
// is recorded), so that a reading acknowledged now stays at least that
// interval ahead of the retention while the bridge commits it; 0 without a
// retention. A retention not longer than the interval, or a --max-reading-age
// given explicitly (set) beyond the bound, is an error.
func Bound(rec stream.RetentionSettings, maxAge time.Duration, set bool) (time.Duration, error) {
	if rec.Retention <= 0 {
		return 0, nil
	}
	bound := rec.MaxAge(partition.DefaultInterval)
	iv := cmp.Or(rec.Interval, partition.DefaultInterval)
	if bound <= 0 {
		return 0, fmt.Errorf("--retention %s is not longer than the partition interval %s: edges accept readings up to the retention minus one interval old, "+
			"which leaves none; give a longer --retention or a shorter --partition-interval (docs/partitions.md)", rec.Retention, iv)
	}
	if set && maxAge > bound {
		return 0, fmt.Errorf("--max-reading-age %s exceeds what --retention %s keeps: a reading that old would be acknowledged and then deleted by the retention; "+
			"give at most %s (the retention minus the partition interval %s), or leave it unset", maxAge, rec.Retention, bound, iv)
	}
	return bound, nil
}

// Follow reads the deployment's retention every stream.RetentionRefresh
// until ctx ends and sets b to the Bound it allows, so that a retention
// recorded or changed while the edges run bounds what they accept. A failed
// read keeps the bound in force; a retention that leaves no age is logged
// and not applied. It returns nil when ctx ends.
func Follow(ctx context.Context, rdb redis.UniversalClient, streams stream.Streams, b *ingest.AgeBound, log *slog.Logger) error {
	t := time.NewTicker(stream.RetentionRefresh)
	defer t.Stop()
	var warned string // logged once, not every tick
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rec, err := stream.ReadRetention(ctx, rdb, streams)
		if err != nil {
			continue // Redis unreachable: the producer says so; keep the bound
		}
		bound, err := Bound(rec, 0, false)
		if err != nil {
			if err.Error() != warned {
				warned = err.Error()
				log.Warn("deployment retention not applied; the bound in force stays", "err", err)
			}
			continue
		}
		warned = ""
		if old, _ := b.Get(); old != bound {
			log.Info("deployment retention changed", "retention", rec.Retention, "max_reading_age", bound)
		}
		b.Set(bound, rec.Retention)
	}
}
