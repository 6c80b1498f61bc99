package main

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"firehose/deadletters"
	"firehose/ingest"
	"firehose/internal/console"
	"firehose/stream"
)

// consoleReplayWait is how long the console's replay waits for the bridge
// to commit the replays before it shows how they ended (firehose rejected
// replay waits --wait, a minute); those not committed by then are shown as
// not yet committed, and land once later.
const consoleReplayWait = 15 * time.Second

// consoleLetters is the console's console.DeadLetters: the dead letters of
// serve's deployment, read and replayed with package deadletters over the
// process's PostgreSQL pool and Redis client exactly as firehose rejected
// list and replay do (replayRejected).
type consoleLetters struct {
	pg       *pgxpool.Pool
	rdb      redis.UniversalClient
	streams  stream.Streams
	limits   ingest.Limits
	resolver deadletters.Resolver
	wait     time.Duration
}

func (d *consoleLetters) prefix() string { return deadletters.StreamPrefix(d.streams) }

func (d *consoleLetters) List(ctx context.Context, q console.DeadLetterQuery) ([]deadletters.Row, error) {
	return deadletters.List(ctx, d.pg, deadletters.Filter{Prefix: d.prefix(), Replayed: !q.Pending, Limit: q.Limit, Newest: true, Before: q.Before})
}

func (d *consoleLetters) Get(ctx context.Context, id int64) (*deadletters.Row, error) {
	rows, err := deadletters.ByID(ctx, d.pg, []int64{id})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 || !strings.HasPrefix(rows[0].Stream, d.prefix()) {
		return nil, nil // none, or another deployment's
	}
	return &rows[0], nil
}

func (d *consoleLetters) Replay(ctx context.Context, ids []int64) (console.ReplayResult, error) {
	var res console.ReplayResult
	streams := d.streams
	if err := streams.Load(ctx, d.rdb); err != nil {
		return res, err
	}
	if err := deadletters.CheckDeployment(ctx, d.pg, d.rdb, streams); err != nil {
		return res, err
	}
	t := deadletters.NewTally()
	rp := &deadletters.Replayer{PG: d.pg, Redis: d.rdb, Streams: streams, Limits: d.limits, Resolver: d.resolver,
		Skipped: func(err error) { res.Skipped = append(res.Skipped, err.Error()) }}
	var err error
	if ids == nil {
		err = rp.ReplayPending(ctx, time.Time{}, t)
	} else {
		var jobs []deadletters.Job
		jobs, err = deadletters.PlanIDs(ctx, d.pg, ids, d.prefix(), streams.Prefix, nil, d.limits, d.resolver)
		if err == nil {
			err = deadletters.Send(ctx, d.rdb, streams, jobs, t)
		}
	}
	res.Sent = len(t.Sent)
	if err != nil || len(t.Sent) == 0 {
		return res, err
	}
	res.Outcome, err = rp.WaitReplayed(ctx, t, d.wait, nil)
	return res, err
}
