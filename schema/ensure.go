package schema

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"firehose/typed"
)

// How EnsureTables alters a table the bridges write into: each statement
// waits at most lockTimeout for its lock (a COPY holds ROW EXCLUSIVE for the
// length of a batch; while the ALTER waits, later COPYs queue behind it, so
// the wait is what a bridge may stall), then gives way and tries again after
// a pause doubling from firstBackoff to maxBackoff, lockAttempts times in
// all (about 25 s of trying before it reports the table busy).
var (
	lockTimeout  = 2 * time.Second
	lockAttempts = 6
	firstBackoff = 500 * time.Millisecond
	maxBackoff   = 4 * time.Second
)

// Changes is what EnsureTables did, each list in the order of the tables.
type Changes struct {
	// Created names the tables created (with their default partition and
	// indexes).
	Created []string
	// Added lists the columns added to existing tables, as "table.column type".
	Added []string
	// Indexed names the indexes built on existing tables.
	Indexed []string
	// Kept lists the columns of existing tables that no rule names, left
	// alone (nullable, or filled by PostgreSQL), as "table.column".
	Kept []string
}

// EnsureTables makes PostgreSQL hold the typed tables: it creates each
// missing one (DDL), and brings an existing one to its rule where that is
// safe: a column the rule adds is added, nullable; an index the rule asks
// for is built (on each partition with CREATE INDEX CONCURRENTLY, then
// attached, so writers are not blocked for the build). Each ALTER waits for
// its lock for at most 2 s at a time and is retried with backoff, so a
// bridge's COPY is never held up for longer than that.
//
// A table that differs from its rule in a way that is not safe to resolve
// (ErrUnsafeChange: a type change, a NOT NULL column the rule does not
// write, a time column that is nullable, a table not range-partitioned by
// its time column) is left as it is and reported as a *Mismatch naming what
// to do; the other tables are still brought up to date, and the returned
// error joins every Mismatch. Other errors stop at the table they met.
//
// Concurrent callers (and schema.Apply) wait for each other on the same
// advisory lock as Apply. The rules' tables should have passed CheckTable;
// one that does not is refused before anything changes.
func EnsureTables(ctx context.Context, db *pgxpool.Pool, tables []typed.Table, log *slog.Logger) (Changes, error) {
	var ch Changes
	tables, err := distinct(tables)
	if err != nil {
		return ch, err
	}
	if len(tables) == 0 {
		return ch, nil
	}
	pc, err := db.Acquire(ctx)
	if err != nil {
		return ch, fmt.Errorf("ensure typed tables: %w", err)
	}
	defer pc.Release()
	conn := pc.Conn()
	// A session lock, not a transaction's: CREATE INDEX CONCURRENTLY runs
	// outside any transaction.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(lockKey)); err != nil {
		return ch, fmt.Errorf("lock migrations: %w", err)
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(lockKey)); err != nil {
			conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing ends the lock; the pool drops the connection
		}
	}()
	var refused []error
	for _, t := range tables {
		c, err := readCatalog(ctx, conn, t.Name)
		if err != nil {
			return ch, err
		}
		if c == nil {
			if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				for _, stmt := range DDL(t) {
					if _, err := tx.Exec(ctx, stmt); err != nil {
						return fmt.Errorf("%s: %w", stmt, err)
					}
				}
				return nil
			}); err != nil {
				return ch, fmt.Errorf("create table %s (rule %s): %w", t.Name, t.Rule, err)
			}
			log.Debug("typed table created", "table", t.Name, "rule", t.Rule)
			ch.Created = append(ch.Created, t.Name)
			continue
		}
		d := compare(t, c)
		for _, k := range d.kept {
			ch.Kept = append(ch.Kept, t.Name+"."+k)
		}
		if len(d.refused) > 0 {
			for _, m := range d.refused {
				refused = append(refused, m)
			}
			continue
		}
		if len(d.add) > 0 {
			clauses := make([]string, len(d.add))
			for i, col := range d.add {
				clauses[i] = fmt.Sprintf("ADD COLUMN IF NOT EXISTS %s %s", ident(col.Name), col.Type)
			}
			stmt := fmt.Sprintf("ALTER TABLE %s %s", ident(t.Name), strings.Join(clauses, ", "))
			if err := retryLocked(ctx, conn, log, stmt); err != nil {
				return ch, fmt.Errorf("add columns to %s (rule %s): %w", t.Name, t.Rule, err)
			}
			for _, col := range d.add {
				log.Debug("column added", "table", t.Name, "column", col.Name, "type", col.Type.String())
				ch.Added = append(ch.Added, fmt.Sprintf("%s.%s %s", t.Name, col.Name, col.Type))
			}
		}
		for _, ix := range d.indexes {
			if err := buildIndex(ctx, conn, log, t.Name, ix); err != nil {
				return ch, fmt.Errorf("index %s of %s (rule %s): %w", ix.name, t.Name, t.Rule, err)
			}
			log.Debug("index built", "table", t.Name, "index", ix.name)
			ch.Indexed = append(ch.Indexed, ix.name)
		}
	}
	return ch, errors.Join(refused...)
}

// CheckTables compares the typed tables in PostgreSQL with the rules'
// without changing anything, as a bridge does at start. It returns nil when
// every table matches, else the *Mismatch of each difference joined: those
// EnsureTables applies (a missing table, column or index) wrap
// ErrNotMigrated and say to run firehose migrate --config FILE; those it
// refuses wrap ErrUnsafeChange and say what to do.
func CheckTables(ctx context.Context, db Querier, tables []typed.Table) error {
	tables, err := distinct(tables)
	if err != nil {
		return err
	}
	const migrate = "run firehose migrate --config FILE (the configuration file with these rules)"
	var errs []error
	for _, t := range tables {
		c, err := readCatalog(ctx, db, t.Name)
		if err != nil {
			return err
		}
		missing := func(column, problem, fix string) {
			errs = append(errs, &Mismatch{Table: t.Name, Rule: t.Rule, Column: column, Problem: problem, Fix: fix, Kind: ErrNotMigrated})
		}
		if c == nil {
			missing("", "the table does not exist", migrate+" to create it")
			continue
		}
		d := compare(t, c)
		for _, m := range d.refused {
			errs = append(errs, m)
		}
		for _, col := range d.add {
			missing(col.Name, "the table has no such column ("+col.Type.String()+")", migrate+" to add it")
		}
		for _, ix := range d.indexes {
			what := fmt.Sprintf("index (%s) is missing", strings.Join(ix.columns, ", "))
			if ix.exists {
				what = fmt.Sprintf("index %s is not valid (its build stopped half-way)", ix.name)
			}
			missing("", what, migrate+" to build it")
		}
	}
	return errors.Join(errs...)
}

// distinct checks each table (CheckTable) and keeps one of each name: rules
// naming one table must declare it alike.
func distinct(tables []typed.Table) ([]typed.Table, error) {
	var out []typed.Table
	seen := map[string]typed.Table{}
	for _, t := range tables {
		if err := CheckTable(t); err != nil {
			return nil, err
		}
		prev, ok := seen[t.Name]
		if !ok {
			seen[t.Name] = t
			out = append(out, t)
			continue
		}
		a, b := prev, t
		a.Rule, b.Rule = "", ""
		if !reflect.DeepEqual(a, b) {
			return nil, fmt.Errorf("table %s: rules %s and %s declare it differently (columns, time column or indexes)", t.Name, prev.Rule, t.Rule)
		}
	}
	return out, nil
}

// lockNotAvailable is PostgreSQL's SQLSTATE for a lock_timeout that expired.
const lockNotAvailable = "55P03"

// retryLocked runs stmt in a transaction of its own under lockTimeout,
// again after a backoff while the lock is not granted, up to lockAttempts
// times.
func retryLocked(ctx context.Context, conn *pgx.Conn, log *slog.Logger, stmt string) error {
	backoff := firstBackoff
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", lockTimeout.Milliseconds())); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, stmt)
			return err
		})
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) || pe.Code != lockNotAvailable {
			return err
		}
		if attempt == lockAttempts {
			return fmt.Errorf("lock not granted in %d attempts of %s each (a long transaction holds the table: see pg_locks; "+
				"run migrate again once it ended): %w", attempt, lockTimeout, err)
		}
		log.Info("lock not granted; retrying", "statement", stmt, "attempt", attempt, "lock_timeout", lockTimeout, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// buildIndex builds the index ix of the partitioned table without blocking
// its writers for the build: the parent's index alone (ON ONLY, not valid
// yet), then each partition's with CREATE INDEX CONCURRENTLY, attached to
// it; once every partition's is attached, the parent's is valid. A
// partition whose index an earlier run built is only attached.
func buildIndex(ctx context.Context, conn *pgx.Conn, log *slog.Logger, table string, ix indexToBuild) error {
	if !ix.exists {
		if err := retryLocked(ctx, conn, log, createIndex(table, ix.columns, ix.unique, "ONLY")); err != nil {
			return err
		}
	}
	rows, err := conn.Query(ctx, `
		SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = to_regclass($1)
		  AND NOT EXISTS (SELECT 1 FROM pg_inherits ii JOIN pg_index x ON x.indexrelid = ii.inhrelid
		                  WHERE ii.inhparent = to_regclass($2) AND x.indrelid = c.oid)
		ORDER BY 1`, ident(table), ident(ix.name))
	if err != nil {
		return fmt.Errorf("list partitions: %w", err)
	}
	parts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list partitions: %w", err)
	}
	for _, p := range parts {
		name := IndexName(p, ix.columns, ix.unique)
		var valid *bool
		err := conn.QueryRow(ctx, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", ident(name)).Scan(&valid)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("look up index %s: %w", name, err)
		}
		if valid != nil && !*valid {
			// A concurrent build that failed leaves its index behind, invalid.
			if _, err := conn.Exec(ctx, "DROP INDEX CONCURRENTLY "+ident(name)); err != nil {
				return fmt.Errorf("drop the invalid index %s: %w", name, err)
			}
		}
		if valid == nil || !*valid {
			if _, err := conn.Exec(ctx, createIndex(p, ix.columns, ix.unique, "CONCURRENTLY")); err != nil {
				conn.Exec(context.WithoutCancel(ctx), "DROP INDEX CONCURRENTLY IF EXISTS "+ident(name)) //nolint:errcheck // the build's error is the one to report
				return fmt.Errorf("build index %s on partition %s: %w", name, p, err)
			}
		}
		if err := retryLocked(ctx, conn, log, fmt.Sprintf("ALTER INDEX %s ATTACH PARTITION %s", ident(ix.name), ident(name))); err != nil {
			return fmt.Errorf("attach index %s of partition %s: %w", name, p, err)
		}
	}
	var valid bool
	if err := conn.QueryRow(ctx, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", ident(ix.name)).Scan(&valid); err != nil {
		return fmt.Errorf("look up index %s: %w", ix.name, err)
	}
	if !valid {
		return fmt.Errorf("index %s is not valid yet: a partition was added meanwhile; run migrate again", ix.name)
	}
	return nil
}
