package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"firehose/stream"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// Querier is the part of a PostgreSQL pool or connection that the status
// reads use (*pgxpool.Pool and *pgx.Conn have it).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ShardStatus is one shard of a deployment as the bridges' tables and Redis
// show it (firehose status).
type ShardStatus struct {
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

// MemberStatus is a live bridge of a deployment, as its row in
// bridge_members shows it.
type MemberStatus struct {
	ID, Host string
	PID      int
	Joined   time.Time
	Seen     time.Duration // since its last heartbeat
	Owned    int           // shards it held then
}

// ownerQuery is the session holding the advisory lock $1 (a LockKey) in
// this database, and its application_name.
var ownerQuery = `SELECT format('pid %s %s since %s', a.pid, coalesce(host(a.client_addr), 'local'),
	       to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')), coalesce(a.application_name, '')
	FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
	WHERE ` + fmt.Sprintf(lockHeldSQL, "$1::bigint")

// Members reads the deployment's rows of bridge_members in join order (the
// order of their shares). A dead bridge's row stays until a live one
// deletes it (within one LockRetry).
func Members(ctx context.Context, pg Querier, prefix string) ([]MemberStatus, error) {
	rows, err := pg.Query(ctx, `SELECT id, host, pid, started_at, extract(epoch FROM now() - seen_at)::float8, shards_owned
		FROM bridge_members WHERE prefix = $1 ORDER BY started_at, id`, prefix)
	if err != nil {
		return nil, fmt.Errorf("read bridge_members: %w", err)
	}
	var out []MemberStatus
	var m MemberStatus
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

// Owners reads which bridge process (host:pid, as ShardStatus.Bridge) owns
// each shard of streams now, by shard number; a shard no bridge holds is
// left out. One query per shard, as Status makes.
func Owners(ctx context.Context, pg Querier, streams stream.Streams) (map[int]string, error) {
	out := map[int]string{}
	for shard, key := range streams.Keys() {
		var owner, app string
		err := pg.QueryRow(ctx, ownerQuery, LockKey(key)).Scan(&owner, &app)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			continue
		case err != nil:
			return nil, fmt.Errorf("read the owner of %s: %w", key, err)
		}
		out[shard] = cmp.Or(BridgeOf(app), owner)
	}
	return out, nil
}

// Status reads every shard's state from PostgreSQL (lock holder,
// checkpoint, rows, rejected entries) and Redis (backlog, oldest entry after
// the checkpoint); now dates the lag.
func Status(ctx context.Context, pg Querier, rdb redis.UniversalClient, streams stream.Streams, now time.Time) ([]ShardStatus, error) {
	var out []ShardStatus
	for shard, key := range streams.Keys() {
		s := ShardStatus{Shard: shard, Stream: key}
		var app string
		err := pg.QueryRow(ctx, ownerQuery, LockKey(key)).Scan(&s.Owner, &app)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("read the owner of %s: %w", key, err)
		}
		s.Bridge = BridgeOf(app)
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

// TableStatus is a table rows land in (readings or a typed table), as
// PostgreSQL's catalog shows it: cheap to read, an estimate.
type TableStatus struct {
	Table string `json:"table"`
	// Exists is false when the table is missing: its rows go to
	// readings_rejected (firehose_bridge_table_rows_missing_total).
	Exists bool `json:"exists"`
	// Rows is PostgreSQL's estimate of its rows (pg_class.reltuples over
	// its partitions, as of their last ANALYZE or VACUUM; 0 before one).
	Rows int64 `json:"rows_estimate"`
	// Bytes is its size on disk, partitions, indexes and TOAST included.
	Bytes int64 `json:"bytes"`
}

// tableQuery estimates the rows and size of table $1 and its partitions
// (the leaves: a partitioned table's own estimate counts them again).
const tableQuery = `SELECT to_regclass($1) IS NOT NULL,
	coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint, coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
	FROM pg_partition_tree(to_regclass($1)) t JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf`

// Tables reads the status of each table of tables (names as rules give
// them) from the catalog, without counting rows.
func Tables(ctx context.Context, pg Querier, tables []string) ([]TableStatus, error) {
	out := make([]TableStatus, 0, len(tables))
	for _, name := range tables {
		ts := TableStatus{Table: name}
		if err := pg.QueryRow(ctx, tableQuery, pgx.Identifier{name}.Sanitize()).Scan(&ts.Exists, &ts.Rows, &ts.Bytes); err != nil {
			return nil, fmt.Errorf("read the size of table %s: %w", name, err)
		}
		out = append(out, ts)
	}
	return out, nil
}
