// Package retention keeps the age of readings the edges accept within what
// the deployment's retention keeps: it derives the bound from the retention
// and partition interval recorded in the deployment's metadata, and follows
// them while the edges run.
//
//	bound, err := retention.Bound(rec, maxAge, maxAgeSet)
//	ageBound.Set(bound, rec.Retention)
//	go retention.Follow(ctx, rdb, streams, ageBound, logger)
package retention
