package retention

import (
	"cmp"
	"context"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/partition"
	"firehose/stream"
)

// Claim is what a starting process says about the deployment's retention.
type Claim struct {
	Retention time.Duration // --retention; 0: none given (a bridge then applies the recorded one)
	Interval  time.Duration // --partition-interval
	MaxAge    time.Duration // --max-reading-age
	MaxAgeSet bool          // --max-reading-age was given: it must fit in the retention
	Edges     bool          // the process runs an edge: it needs an age bound
}

// Start records c's retention and interval in the deployment's metadata, or
// checks them against what is recorded (stream.ClaimRetention), and returns
// the recorded settings and, when c.Edges, the age bound the edges apply
// (Bound; Follow keeps it current); nil without edges.
func (c Claim) Start(ctx context.Context, rdb redis.UniversalClient, streams stream.Streams, log *slog.Logger) (stream.RetentionSettings, *ingest.AgeBound, error) {
	rec, err := stream.ClaimRetention(ctx, rdb, streams, c.Retention, c.Interval)
	if err != nil {
		return rec, nil, err
	}
	bound, err := Bound(rec, c.MaxAge, c.MaxAgeSet && c.Edges)
	if err != nil || !c.Edges {
		return rec, nil, err
	}
	b := &ingest.AgeBound{}
	b.Set(bound, rec.Retention)
	if bound > 0 && bound < c.MaxAge {
		log.Info("readings older than the retention allows are refused", "max_reading_age", bound,
			"retention", rec.Retention, "partition_interval", cmp.Or(rec.Interval, partition.DefaultInterval))
	}
	return rec, b, nil
}
