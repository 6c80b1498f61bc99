// Package deadletters reads and plans replays of the bridge's dead letters,
// the rows of readings_rejected: it lists and inspects them, decides what
// readings replay a row (its entry decoded, its repair, or an edge dead
// letter resolved again), and writes the replay entries to the shard
// streams, where the bridge lands each row at most once.
//
//	rows, err := deadletters.List(ctx, pg, deadletters.Filter{Prefix: prefix})
//	rs, err := deadletters.Plan(ctx, &rows[0], nil, limits, resolver)
//	err = deadletters.Send(ctx, rdb, streams, []deadletters.Job{{Row: rows[0].ID, Readings: rs}}, tally)
package deadletters
