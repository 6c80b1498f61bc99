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

// table is a partitioned table the Maintainer keeps: readings, or a typed
// table of the rules.
type table struct {
	name    string // the partitioned parent
	timeCol string // its range partition key
}

// readings is readings, partitioned by ts.
var readings = table{name: Parent, timeCol: "ts"}

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

// Maintainer keeps the partitions of readings and of Config.Tables: see
// the package comment.
type Maintainer struct {
	cfg    Config
	db     *pgxpool.Pool
	log    *slog.Logger
	tables []table // readings first, then Config.Tables
	m      metrics
}

type metrics struct {
	// By table (label table: readings or a typed table's name).
	created, dropped, moved, deleted *prometheus.CounterVec
	failed                           prometheus.Counter
}

// New returns a Maintainer of the readings table and of cfg.Tables in db.
// It registers its metrics (firehose_partition_*, by table) on reg.
func New(cfg Config, db *pgxpool.Pool, logger *slog.Logger, reg prometheus.Registerer) *Maintainer {
	cfg.defaults()
	opts := func(name, help string) prometheus.CounterOpts {
		return prometheus.CounterOpts{Namespace: "firehose", Subsystem: "partition", Name: name, Help: help}
	}
	vec := func(name, help string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(opts(name, help), []string{"table"})
		reg.MustRegister(c)
		return c
	}
	failed := prometheus.NewCounter(opts("maintenance_errors_total", "Maintenance passes that failed (retried at the next pass)."))
	reg.MustRegister(failed)
	m := &Maintainer{cfg: cfg, db: db, log: logger.With("component", "partition"), tables: []table{readings}, m: metrics{
		created: vec("created_total", "Partitions created ahead of time, by table (readings or a typed table)."),
		dropped: vec("dropped_total", "Partitions detached and dropped past --retention, by table."),
		moved:   vec("moved_rows_total", "Rows moved out of a table's default partition (readings_default) into a partition created for their range, by table."),
		deleted: vec("default_deleted_rows_total", "Rows of a table's default partition deleted past --retention, by table."),
		failed:  failed,
	}}
	seen := map[string]bool{Parent: true}
	for _, t := range cfg.Tables {
		if !seen[t.Name] {
			seen[t.Name] = true
			m.tables = append(m.tables, table{name: t.Name, timeCol: t.TimeColumn})
		}
	}
	for _, t := range m.tables {
		// Each table's series from 0, as before the first partition.
		for _, c := range []*prometheus.CounterVec{m.m.created, m.m.dropped, m.m.moved, m.m.deleted} {
			c.WithLabelValues(t.name)
		}
	}
	return m
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
// and applies the retention, to readings and then to each of Config.Tables
// (a transaction each: a typed table that fails, dropped by hand, say, does
// not hold up the others; the errors are joined). It does nothing (and
// returns nil) when another process holds the maintenance lock: that one
// does the work.
func (m *Maintainer) Maintain(ctx context.Context) error {
	err := m.pass(ctx)
	if err != nil && !errors.Is(err, ErrIntervalMismatch) {
		m.m.failed.Inc()
	}
	return err
}

// partition is one range partition of a table; a nil bound is MINVALUE or
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
	if err := m.createIn(ctx, tx, readings, iv); err != nil {
		return err
	}
	var errs []error
	ok := []table{readings}
	for _, t := range m.tables[1:] {
		if err := m.createTyped(ctx, t, iv); err != nil {
			errs = append(errs, err)
			continue
		}
		ok = append(ok, t)
	}
	if m.cfg.Retention > 0 {
		// Their own transactions: DETACH waits for the COPYs writing into
		// the partition it detaches, and new partitions should not wait for
		// that.
		for _, t := range ok {
			if err := m.retain(ctx, t, iv); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// createTyped runs createIn for the typed table t in a transaction of its
// own.
func (m *Maintainer) createTyped(ctx context.Context, t table, iv time.Duration) error {
	tx, locked, err := m.begin(ctx)
	if err != nil || !locked {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", pgx.Identifier{t.name}.Sanitize()).Scan(&exists); err != nil {
		return fmt.Errorf("look up table %s: %w", t.name, err)
	}
	if !exists {
		return fmt.Errorf("partitions of %s: the table does not exist (firehose migrate --config FILE creates it)", t.name)
	}
	return m.createIn(ctx, tx, t, iv)
}

// createIn creates t's partitions due now (create) in tx, which holds the
// maintenance lock, and commits it.
func (m *Maintainer) createIn(ctx context.Context, tx pgx.Tx, t table, iv time.Duration) error {
	var now time.Time
	if err := tx.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		return fmt.Errorf("read the database clock: %w", err)
	}
	now = now.UTC()
	parts, err := list(ctx, tx, t)
	if err != nil {
		return err
	}
	created, moved, err := m.create(ctx, tx, t, parts, iv, now)
	if err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit new partitions of %s: %w", t.name, err)
	}
	m.m.created.WithLabelValues(t.name).Add(float64(len(created)))
	m.m.moved.WithLabelValues(t.name).Add(float64(moved))
	if len(created) > 0 {
		m.log.Info("partitions created", "table", t.name, "partitions", strings.Join(created, ","), "moved_from_default", moved)
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

// list reads t's range partitions from the catalog (the default one left
// out). Bounds are read as timestamptz, so the session's TimeZone does not
// matter.
func list(ctx context.Context, q pgx.Tx, t table) ([]partition, error) {
	rows, err := q.Query(ctx, `
		SELECT c.relname,
		       (regexp_match(b, 'FROM \(''([^'']*)''\)'))[1]::timestamptz,
		       (regexp_match(b, 'TO \(''([^'']*)''\)'))[1]::timestamptz
		FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		CROSS JOIN LATERAL pg_get_expr(c.relpartbound, c.oid) AS b
		WHERE i.inhparent = $1::regclass AND b <> 'DEFAULT'
		ORDER BY 3 NULLS LAST`, pgx.Identifier{t.name}.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", t.name, err)
	}
	parts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (partition, error) {
		var p partition
		err := r.Scan(&p.name, &p.lo, &p.hi)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", t.name, err)
	}
	return parts, nil
}

// Floor is the start of the interval holding t: intervals are aligned on UTC
// midnight (those that divide a day) or on whole days counted from Monday,
// 1 January of year 1 (a week starts on a Monday).
func Floor(t time.Time, iv time.Duration) time.Time { return t.UTC().Truncate(iv) }

// Name is the name of readings' partition starting at lo: readings_p20261201,
// or readings_p20261201_1300 when lo is not a UTC midnight.
func Name(lo time.Time) string { return PartitionName(Parent, lo) }

// PartitionName is the name of table's partition starting at lo:
// TABLE_p20261201, or TABLE_p20261201_1300 when lo is not a UTC midnight.
func PartitionName(table string, lo time.Time) string {
	lo = lo.UTC()
	if lo.Equal(Floor(lo, 24*time.Hour)) {
		return table + "_p" + lo.Format("20060102")
	}
	return table + "_p" + lo.Format("20060102_1504")
}

// defaultPartition is t's default partition ("" when it has none) and the
// columns of t a row moved out of it carries (not the generated ones),
// quoted and comma-separated.
func defaultPartition(ctx context.Context, tx pgx.Tx, t table) (name, columns string, err error) {
	err = tx.QueryRow(ctx, `
		SELECT coalesce((SELECT relname::text FROM pg_class WHERE oid = p.partdefid), ''),
		       (SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
		        WHERE attrelid = p.partrelid AND attnum > 0 AND NOT attisdropped AND attgenerated = '')
		FROM pg_partitioned_table p WHERE p.partrelid = to_regclass($1)`, pgx.Identifier{t.name}.Sanitize()).Scan(&name, &columns)
	if err != nil {
		return "", "", fmt.Errorf("find the default partition of %s (is it partitioned?): %w", t.name, err)
	}
	return name, columns, nil
}

// create makes t's partitions from the end of the last one (or the start
// of the current interval, when that is later) through the interval Ahead
// past now, moving into each the rows of its range that wait in the default
// partition. It returns the names created and the rows moved.
func (m *Maintainer) create(ctx context.Context, tx pgx.Tx, t table, parts []partition, iv time.Duration, now time.Time) ([]string, int64, error) {
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
	if !lo.Before(end) {
		return nil, 0, nil
	}
	def, columns, err := defaultPartition(ctx, tx, t)
	if err != nil {
		return nil, 0, err
	}
	var (
		created []string
		moved   int64
	)
	parent, defIdent, timeCol := pgx.Identifier{t.name}.Sanitize(), pgx.Identifier{def}.Sanitize(), pgx.Identifier{t.timeCol}.Sanitize()
	lockedDefault := false
	for lo.Before(end) {
		hi := Floor(lo, iv).Add(iv)
		name := PartitionName(t.name, lo)
		var waiting bool
		if def != "" {
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+defIdent+` WHERE `+timeCol+` >= $1 AND `+timeCol+` < $2)`, lo, hi).Scan(&waiting); err != nil {
				return nil, 0, fmt.Errorf("look for rows of %s in %s: %w", name, def, err)
			}
		}
		if waiting && !lockedDefault {
			// ATTACH would take this lock to check the default partition; taken
			// first, no COPY adds a row of the range between the move and it.
			if _, err := tx.Exec(ctx, "LOCK TABLE "+defIdent+" IN ACCESS EXCLUSIVE MODE"); err != nil {
				return nil, 0, fmt.Errorf("lock %s: %w", def, err)
			}
			lockedDefault = true
		}
		// A table of its own, attached after: ATTACH takes SHARE UPDATE
		// EXCLUSIVE on readings, which the bridges' COPYs (ROW EXCLUSIVE) do
		// not wait for, where CREATE TABLE ... PARTITION OF takes ACCESS
		// EXCLUSIVE. INCLUDING CONSTRAINTS: ATTACH wants every CHECK of the
		// parent on the new table.
		ident := pgx.Identifier{name}.Sanitize()
		if _, err := tx.Exec(ctx, "CREATE TABLE "+ident+" (LIKE "+parent+" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"); err != nil {
			return nil, 0, fmt.Errorf("create partition %s: %w", name, err)
		}
		if waiting {
			tag, err := tx.Exec(ctx, `WITH moved AS (
				DELETE FROM `+defIdent+` WHERE `+timeCol+` >= $1 AND `+timeCol+` < $2
				RETURNING `+columns+`)
			INSERT INTO `+ident+` (`+columns+`)
			SELECT `+columns+` FROM moved`, lo, hi)
			if err != nil {
				return nil, 0, fmt.Errorf("move rows of %s out of %s: %w", name, def, err)
			}
			moved += tag.RowsAffected()
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM ('%s') TO ('%s')",
			parent, ident, lo.Format(time.RFC3339Nano), hi.Format(time.RFC3339Nano))); err != nil {
			return nil, 0, fmt.Errorf("attach partition %s: %w", name, err)
		}
		created = append(created, name)
		lo = hi
	}
	return created, moved, nil
}

// retain detaches and drops each partition of t whose whole range is older
// than now - Retention and than the current interval, and deletes the
// default partition's rows older than that. A partition still written to is never
// dropped under a commit: DETACH waits for (up to lockTimeout) every
// transaction writing into it; a reading that arrives later for a dropped
// range lands in the default partition, where the same rule deletes it.
func (m *Maintainer) retain(ctx context.Context, t table, iv time.Duration) error {
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
	parts, err := list(ctx, tx, t)
	if err != nil {
		return err
	}
	def, _, err := defaultPartition(ctx, tx, t)
	if err != nil {
		return err
	}
	parent := pgx.Identifier{t.name}.Sanitize()
	var dropped []string
	for _, p := range parts {
		if p.hi == nil || p.hi.After(cutoff) {
			continue
		}
		ident := pgx.Identifier{p.name}.Sanitize()
		if _, err := tx.Exec(ctx, "ALTER TABLE "+parent+" DETACH PARTITION "+ident); err != nil {
			return fmt.Errorf("detach partition %s: %w", p.name, err)
		}
		if _, err := tx.Exec(ctx, "DROP TABLE "+ident); err != nil {
			return fmt.Errorf("drop partition %s: %w", p.name, err)
		}
		dropped = append(dropped, p.name)
	}
	var deleted int64
	if def != "" {
		tag, err := tx.Exec(ctx, "DELETE FROM "+pgx.Identifier{def}.Sanitize()+" WHERE "+pgx.Identifier{t.timeCol}.Sanitize()+" < $1", cutoff)
		if err != nil {
			return fmt.Errorf("delete rows of %s past retention: %w", def, err)
		}
		deleted = tag.RowsAffected()
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit retention of %s: %w", t.name, err)
	}
	m.m.dropped.WithLabelValues(t.name).Add(float64(len(dropped)))
	m.m.deleted.WithLabelValues(t.name).Add(float64(deleted))
	if len(dropped) > 0 || deleted > 0 {
		m.log.Info("partitions dropped past retention", "table", t.name, "partitions", strings.Join(dropped, ","),
			"default_rows_deleted", deleted, "retention", m.cfg.Retention, "before", cutoff)
	}
	return nil
}
