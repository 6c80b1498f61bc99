package partition

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Table names: the partitioned parent and its default partition (schema 005).
const (
	Parent  = "readings"
	Default = "readings_default"
)

// DefaultInterval is the partition interval of a database that has none
// recorded when Config.Interval is 0.
const DefaultInterval = 24 * time.Hour

// ErrIntervalMismatch is returned by Maintain when
// Config.Interval is set and differs from the interval recorded in the
// database: two bridges must not make partitions of different spans.
var ErrIntervalMismatch = errors.New("partition interval differs from the one recorded in the database")

// lockKey is the advisory lock that serialises maintenance passes: one per
// database, since deployments sharing a database share readings.
var lockKey = func() int64 {
	h := fnv.New64a()
	h.Write([]byte("firehose partition " + Parent))
	return int64(h.Sum64())
}()

// lockTimeout bounds how long a pass waits for a table lock (the bridges'
// COPYs hold the ones DETACH and ATTACH need for the length of a batch);
// past it the pass gives up and the next one tries again.
const lockTimeout = 2 * time.Second

// Maintainer keeps readings' partitions: see the package comment.
type Maintainer struct {
	cfg Config
	db  *pgxpool.Pool
	log *slog.Logger
	m   metrics
}

type metrics struct {
	created, dropped, moved, deleted, failed prometheus.Counter
}

// New returns a Maintainer of the readings table in db. It registers its
// metrics (firehose_partition_*) on reg.
func New(cfg Config, db *pgxpool.Pool, logger *slog.Logger, reg prometheus.Registerer) *Maintainer {
	cfg.defaults()
	f := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "firehose", Subsystem: "partition", Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	return &Maintainer{cfg: cfg, db: db, log: logger.With("component", "partition"), m: metrics{
		created: f("created_total", "Partitions of readings created ahead of time."),
		dropped: f("dropped_total", "Partitions of readings detached and dropped past --retention."),
		moved:   f("moved_rows_total", "Rows moved out of readings_default into a partition created for their range."),
		deleted: f("default_deleted_rows_total", "Rows of readings_default deleted past --retention."),
		failed:  f("maintenance_errors_total", "Maintenance passes that failed (retried at the next pass)."),
	}}
}

// Run runs a pass every Config.Every until ctx ends, then returns. A failed
// pass is logged and counted, and the next one tries again.
func (m *Maintainer) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := m.Maintain(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("partition maintenance failed; retrying at the next pass", "err", err, "retry_in", m.cfg.Every)
		}
	}
}

// Maintain runs one pass: it records the interval if the database has none,
// creates the partitions of the current interval and the next Config.Ahead,
// and applies the retention. It does nothing (and returns nil) when another
// process holds the maintenance lock: that one does the work.
func (m *Maintainer) Maintain(ctx context.Context) error {
	err := m.pass(ctx)
	if err != nil && !errors.Is(err, ErrIntervalMismatch) {
		m.m.failed.Inc()
	}
	return err
}

// partition is one range partition of readings; a nil bound is MINVALUE or
// MAXVALUE.
type partition struct {
	name   string
	lo, hi *time.Time
}

func (m *Maintainer) pass(ctx context.Context) error {
	tx, locked, err := m.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	iv, err := m.interval(ctx, tx, locked)
	if err != nil || !locked {
		return err
	}
	var now time.Time
	if err := tx.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		return fmt.Errorf("read the database clock: %w", err)
	}
	now = now.UTC()
	parts, err := list(ctx, tx)
	if err != nil {
		return err
	}
	created, moved, err := m.create(ctx, tx, parts, iv, now)
	if err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit new partitions: %w", err)
	}
	m.m.created.Add(float64(len(created)))
	m.m.moved.Add(float64(moved))
	if len(created) > 0 {
		m.log.Info("partitions created", "partitions", strings.Join(created, ","), "moved_from_default", moved)
	}
	if m.cfg.Retention > 0 {
		// Its own transaction: DETACH waits for the COPYs writing into the
		// partition it detaches, and new partitions should not wait for that.
		return m.retain(ctx, iv)
	}
	return nil
}

// begin starts a maintenance transaction with lockTimeout and tries the
// maintenance lock; locked is false when another process holds it. The
// caller rolls tx back (a no-op after Commit).
func (m *Maintainer) begin(ctx context.Context) (tx pgx.Tx, locked bool, err error) {
	if tx, err = m.db.Begin(ctx); err != nil {
		return nil, false, fmt.Errorf("begin partition maintenance: %w", err)
	}
	if _, err = tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", lockTimeout.Milliseconds())); err == nil {
		err = tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", lockKey).Scan(&locked)
	}
	if err != nil {
		tx.Rollback(ctx) //nolint:errcheck // the error that matters is err
		return nil, false, fmt.Errorf("lock partition maintenance: %w", err)
	}
	return tx, locked, nil
}

// interval reads the recorded interval; when none is recorded and the pass
// holds the lock, it records Config.Interval (or DefaultInterval).
func (m *Maintainer) interval(ctx context.Context, tx pgx.Tx, locked bool) (time.Duration, error) {
	var secs *int64
	if err := tx.QueryRow(ctx, "SELECT interval_seconds FROM firehose_partitioning").Scan(&secs); err != nil {
		return 0, fmt.Errorf("read the partition interval (is the schema at 005?): %w", err)
	}
	if secs == nil {
		iv := m.cfg.Interval
		if iv == 0 {
			iv = DefaultInterval
		}
		if !locked {
			return iv, nil
		}
		if _, err := tx.Exec(ctx, "UPDATE firehose_partitioning SET interval_seconds = $1, updated_at = now()", int64(iv/time.Second)); err != nil {
			return 0, fmt.Errorf("record the partition interval: %w", err)
		}
		m.log.Info("partition interval recorded", "interval", iv)
		return iv, nil
	}
	iv := time.Duration(*secs) * time.Second
	if m.cfg.Interval != 0 && m.cfg.Interval != iv {
		return 0, fmt.Errorf("--partition-interval %s, but readings is partitioned by %s (firehose_partitioning): %w; "+
			"leave the flag unset to use the recorded one, or change the record (docs/partitions.md)", days(m.cfg.Interval), days(iv), ErrIntervalMismatch)
	}
	return iv, nil
}

// list reads readings' range partitions from the catalog (the default one
// left out). Bounds are read as timestamptz, so the session's TimeZone does
// not matter.
func list(ctx context.Context, q pgx.Tx) ([]partition, error) {
	rows, err := q.Query(ctx, `
		SELECT c.relname,
		       (regexp_match(b, 'FROM \(''([^'']*)''\)'))[1]::timestamptz,
		       (regexp_match(b, 'TO \(''([^'']*)''\)'))[1]::timestamptz
		FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		CROSS JOIN LATERAL pg_get_expr(c.relpartbound, c.oid) AS b
		WHERE i.inhparent = $1::regclass AND b <> 'DEFAULT'
		ORDER BY 3 NULLS LAST`, Parent)
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", Parent, err)
	}
	parts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (partition, error) {
		var p partition
		err := r.Scan(&p.name, &p.lo, &p.hi)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", Parent, err)
	}
	return parts, nil
}

// Floor is the start of the interval holding t: intervals are aligned on UTC
// midnight (those that divide a day) or on whole days counted from Monday,
// 1 January of year 1 (a week starts on a Monday).
func Floor(t time.Time, iv time.Duration) time.Time { return t.UTC().Truncate(iv) }

// Name is the name of the partition starting at lo: readings_p20261201, or
// readings_p20261201_1300 when lo is not a UTC midnight.
func Name(lo time.Time) string {
	lo = lo.UTC()
	if lo.Equal(Floor(lo, 24*time.Hour)) {
		return Parent + "_p" + lo.Format("20060102")
	}
	return Parent + "_p" + lo.Format("20060102_1504")
}

// create makes the partitions from the end of the last one (or the start of
// the current interval, when that is later) through the interval Ahead past
// now, moving into each the rows of its range that wait in the default
// partition. It returns the names created and the rows moved.
func (m *Maintainer) create(ctx context.Context, tx pgx.Tx, parts []partition, iv time.Duration, now time.Time) ([]string, int64, error) {
	lo := Floor(now, iv)
	if n := len(parts); n > 0 {
		last := parts[n-1].hi
		if last == nil {
			return nil, 0, nil // a partition reaches MAXVALUE: nothing can follow it
		}
		if last.After(lo) {
			lo = last.UTC()
		}
	}
	end := Floor(now, iv).Add(time.Duration(m.cfg.Ahead+1) * iv)
	var (
		created []string
		moved   int64
	)
	lockedDefault := false
	for lo.Before(end) {
		hi := Floor(lo, iv).Add(iv)
		name := Name(lo)
		var waiting bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+Default+` WHERE ts >= $1 AND ts < $2)`, lo, hi).Scan(&waiting); err != nil {
			return nil, 0, fmt.Errorf("look for rows of %s in %s: %w", name, Default, err)
		}
		if waiting && !lockedDefault {
			// ATTACH would take this lock to check the default partition; taken
			// first, no COPY adds a row of the range between the move and it.
			if _, err := tx.Exec(ctx, "LOCK TABLE "+Default+" IN ACCESS EXCLUSIVE MODE"); err != nil {
				return nil, 0, fmt.Errorf("lock %s: %w", Default, err)
			}
			lockedDefault = true
		}
		// A table of its own, attached after: ATTACH takes SHARE UPDATE
		// EXCLUSIVE on readings, which the bridges' COPYs (ROW EXCLUSIVE) do
		// not wait for, where CREATE TABLE ... PARTITION OF takes ACCESS
		// EXCLUSIVE. INCLUDING CONSTRAINTS: ATTACH wants every CHECK of the
		// parent on the new table.
		ident := pgx.Identifier{name}.Sanitize()
		if _, err := tx.Exec(ctx, "CREATE TABLE "+ident+" (LIKE "+Parent+" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"); err != nil {
			return nil, 0, fmt.Errorf("create partition %s: %w", name, err)
		}
		if waiting {
			tag, err := tx.Exec(ctx, `WITH moved AS (
				DELETE FROM `+Default+` WHERE ts >= $1 AND ts < $2
				RETURNING id, device_id, metric, ts, received_at, reading, payload, committed_at)
			INSERT INTO `+ident+` (id, device_id, metric, ts, received_at, reading, payload, committed_at)
			SELECT id, device_id, metric, ts, received_at, reading, payload, committed_at FROM moved`, lo, hi)
			if err != nil {
				return nil, 0, fmt.Errorf("move rows of %s out of %s: %w", name, Default, err)
			}
			moved += tag.RowsAffected()
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM ('%s') TO ('%s')",
			Parent, ident, lo.Format(time.RFC3339Nano), hi.Format(time.RFC3339Nano))); err != nil {
			return nil, 0, fmt.Errorf("attach partition %s: %w", name, err)
		}
		created = append(created, name)
		lo = hi
	}
	return created, moved, nil
}

// retain detaches and drops each partition whose whole range is older than
// now - Retention and than the current interval, and deletes the default
// partition's rows older than that. A partition still written to is never
// dropped under a commit: DETACH waits for (up to lockTimeout) every
// transaction writing into it; a reading that arrives later for a dropped
// range lands in the default partition, where the same rule deletes it.
func (m *Maintainer) retain(ctx context.Context, iv time.Duration) error {
	tx, locked, err := m.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	if !locked {
		return nil
	}
	var now time.Time
	if err := tx.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		return fmt.Errorf("read the database clock: %w", err)
	}
	cutoff := now.UTC().Add(-m.cfg.Retention)
	if cur := Floor(now, iv); cur.Before(cutoff) {
		cutoff = cur
	}
	parts, err := list(ctx, tx)
	if err != nil {
		return err
	}
	var dropped []string
	for _, p := range parts {
		if p.hi == nil || p.hi.After(cutoff) {
			continue
		}
		ident := pgx.Identifier{p.name}.Sanitize()
		if _, err := tx.Exec(ctx, "ALTER TABLE "+Parent+" DETACH PARTITION "+ident); err != nil {
			return fmt.Errorf("detach partition %s: %w", p.name, err)
		}
		if _, err := tx.Exec(ctx, "DROP TABLE "+ident); err != nil {
			return fmt.Errorf("drop partition %s: %w", p.name, err)
		}
		dropped = append(dropped, p.name)
	}
	tag, err := tx.Exec(ctx, "DELETE FROM "+Default+" WHERE ts < $1", cutoff)
	if err != nil {
		return fmt.Errorf("delete rows of %s past retention: %w", Default, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit retention: %w", err)
	}
	m.m.dropped.Add(float64(len(dropped)))
	m.m.deleted.Add(float64(tag.RowsAffected()))
	if len(dropped) > 0 || tag.RowsAffected() > 0 {
		m.log.Info("partitions dropped past retention", "partitions", strings.Join(dropped, ","),
			"default_rows_deleted", tag.RowsAffected(), "retention", m.cfg.Retention, "before", cutoff)
	}
	return nil
}
