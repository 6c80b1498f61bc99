package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"firehose/bridge"
	"firehose/stream"
)

// shardStatus is one shard as firehose status shows it.
type shardStatus struct {
	Shard  int    `json:"shard"`
	Stream string `json:"stream"`
	// Owner is the bridge session holding the shard's lock ("" when none):
	// its PostgreSQL backend pid, client address and when it connected.
	Owner string `json:"owner"`
	// Bridge is the bridge process (host:pid) of that session, from its
	// application_name ("" when none, or not a bridge's session).
	Bridge string `json:"bridge"`
	// Backlog is the readings in the stream not yet committed (the shard's
	// backlog counter, or the stream's length if larger).
	Backlog int64 `json:"backlog"`
	// Checkpoint is the last stream entry committed ("" before the first).
	Checkpoint string `json:"checkpoint"`
	// LagSeconds is the age of the oldest entry after the checkpoint (0 when
	// the bridge has committed everything).
	LagSeconds float64 `json:"lag_seconds"`
	// Committed is the rows committed through the shard; Rejected the
	// entries it sent to readings_rejected.
	Committed int64 `json:"rows_committed"`
	Rejected  int64 `json:"rejected_entries"`
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var asJSON bool
	cfg, err := parseServe("status", "firehose status [flags]",
		"Prints each shard of the deployment (--redis-prefix, --shards): the bridge session that owns it and its\n"+
			"bridge process (host:pid), its backlog in Redis, its checkpoint, how far behind the bridge is (the age of the\n"+
			"oldest uncommitted entry), the rows committed through it and the entries it rejected; then, without --json,\n"+
			"the deployment's live bridges (bridge_members) and the shards each owns. Exits 1 when PostgreSQL or Redis\n"+
			"cannot be read.",
		args, stderr, func(c *serveConfig, fs *flag.FlagSet) {
			c.registerCommon(fs)
			fs.BoolVar(&asJSON, "json", false, "print a JSON array, one object per shard, for scripts")
		})
	if err != nil {
		return err
	}
	if err := cfg.Streams.Validate(); err != nil {
		return usageError{err}
	}
	pg, err := connectPostgres(ctx, cfg.Postgres)
	if err != nil {
		return err
	}
	defer pg.Close()
	rdb, err := connectRedis(ctx, cfg.Redis, cfg.RedisSentinelMaster, cfg.RedisCluster, 2)
	if err != nil {
		return err
	}
	defer rdb.Close()
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cfg.Streams.Load(qctx, rdb); err != nil {
		return err
	}
	st, err := shardStatuses(qctx, pg, rdb, cfg.Streams, time.Now())
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	members, err := bridgeMembers(qctx, pg, cfg.Streams.Prefix)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tSTREAM\tOWNER\tBRIDGE\tBACKLOG\tCHECKPOINT\tLAG\tROWS COMMITTED\tREJECTED")
	for _, s := range st {
		owner, br, cp := s.Owner, s.Bridge, s.Checkpoint
		if owner == "" {
			owner = "(none)"
		}
		if br == "" {
			br = "-"
		}
		if cp == "" {
			cp = "(none)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d\n", s.Shard, s.Stream, owner, br, s.Backlog, cp,
			(time.Duration(s.LagSeconds * float64(time.Second))).Round(time.Millisecond), s.Committed, s.Rejected)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "BRIDGE\tMEMBER\tJOINED\tLAST SEEN\tSHARDS OWNED")
	if len(members) == 0 {
		fmt.Fprintln(tw, "(none)\t\t\t\t")
	}
	for _, m := range members {
		fmt.Fprintf(tw, "%s:%d\t%s\t%s\t%s ago\t%d\n", m.Host, m.PID, m.ID, m.Joined.UTC().Format(time.RFC3339),
			m.Seen.Round(time.Millisecond), m.Owned)
	}
	return tw.Flush()
}

// member is a live bridge of the deployment, as its row in bridge_members
// shows it.
type member struct {
	ID, Host string
	PID      int
	Joined   time.Time
	Seen     time.Duration // since its last heartbeat
	Owned    int           // shards it held then
}

// bridgeMembers reads the deployment's rows of bridge_members in join order
// (the order of their shares). A dead bridge's row stays until a live one
// deletes it (within one --lock-retry).
func bridgeMembers(ctx context.Context, pg *pgxpool.Pool, prefix string) ([]member, error) {
	rows, err := pg.Query(ctx, `SELECT id, host, pid, started_at, extract(epoch FROM now() - seen_at)::float8, shards_owned
		FROM bridge_members WHERE prefix = $1 ORDER BY started_at, id`, prefix)
	if err != nil {
		return nil, fmt.Errorf("read bridge_members: %w", err)
	}
	var out []member
	var m member
	var seen float64
	if _, err := pgx.ForEachRow(rows, []any{&m.ID, &m.Host, &m.PID, &m.Joined, &seen, &m.Owned}, func() error {
		m.Seen = time.Duration(seen * float64(time.Second))
		out = append(out, m)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read bridge_members: %w", err)
	}
	return out, nil
}

// shardStatuses reads every shard's state from PostgreSQL (lock holder,
// checkpoint, rows, rejected entries) and Redis (backlog, oldest entry after
// the checkpoint).
func shardStatuses(ctx context.Context, pg *pgxpool.Pool, rdb redis.UniversalClient, streams stream.Streams, now time.Time) ([]shardStatus, error) {
	var out []shardStatus
	for shard, key := range streams.Keys() {
		s := shardStatus{Shard: shard, Stream: key}
		// An advisory lock on a bigint key shows in pg_locks as classid
		// (high 32 bits), objid (low 32 bits) and objsubid 1.
		k := uint64(bridge.LockKey(key))
		var app string
		err := pg.QueryRow(ctx, `SELECT format('pid %s %s since %s', a.pid, coalesce(host(a.client_addr), 'local'),
			       to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')), coalesce(a.application_name, '')
			FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
			  AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1`, uint32(k>>32), uint32(k)).Scan(&s.Owner, &app)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("read the owner of %s: %w", key, err)
		}
		s.Bridge = bridge.BridgeOf(app)
		err = pg.QueryRow(ctx, `SELECT last_id, rows FROM bridge_checkpoints WHERE stream = $1`, key).Scan(&s.Checkpoint, &s.Committed)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("read the checkpoint of %s: %w", key, err)
		}
		if err := pg.QueryRow(ctx, `SELECT count(*) FROM readings_rejected WHERE stream = $1`, key).Scan(&s.Rejected); err != nil {
			return nil, fmt.Errorf("count the rejected entries of %s: %w", key, err)
		}
		counter, err := rdb.HGet(ctx, streams.ShardMetaKey(shard), stream.MetaBacklog).Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read the backlog of %s: %w", key, err)
		}
		n, err := rdb.XLen(ctx, key).Result()
		if err != nil {
			return nil, fmt.Errorf("read the length of %s: %w", key, err)
		}
		s.Backlog = max(counter, n)
		start := "-"
		if s.Checkpoint != "" {
			start = "(" + s.Checkpoint
		}
		next, err := rdb.XRangeN(ctx, key, start, "+", 1).Result()
		if err != nil {
			return nil, fmt.Errorf("read the oldest uncommitted entry of %s: %w", key, err)
		}
		if len(next) == 1 {
			if id, err := stream.ParseStreamID(next[0].ID); err == nil {
				s.LagSeconds = max(0, now.Sub(time.UnixMilli(int64(id.MS))).Seconds())
			}
		}
		out = append(out, s)
	}
	return out, nil
}
