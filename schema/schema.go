package schema

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var files embed.FS

// Migration is one numbered SQL file.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations lists the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(files, "migrations")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration %q is not named NNN_name.sql", e.Name())
		}
		sql, err := fs.ReadFile(files, "migrations/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, Migration{Version: v, Name: strings.TrimSuffix(e.Name(), ".sql"), SQL: string(sql)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", ms[i-1].Name, ms[i].Name, ms[i].Version)
		}
	}
	return ms, nil
}

// Beginner is what Apply needs: *pgx.Conn, *pgxpool.Pool and pgx.Tx have it.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// lockKey is the advisory lock that serialises migrations (any fixed number
// that nothing else uses; this one spells "firehose" in hex-ish).
const lockKey = 0x0f19e5058e

// Apply applies every embedded migration not yet recorded in
// firehose_schema_migrations, in one transaction, and returns the names of
// those it applied (none when the schema is current). Concurrent callers wait
// for each other on an advisory lock; the later ones find nothing to do.
//
// Before the transaction, on a database whose readings is not partitioned
// yet, Apply builds the index migration 005 needs with CREATE INDEX
// CONCURRENTLY (see prepare), so that the migration's lock does not last
// an index build. db given as a pgx.Tx, that step is left to the migration.
func Apply(ctx context.Context, db Beginner) ([]string, error) {
	if err := prepare(ctx, db); err != nil {
		return nil, err
	}
	return apply(ctx, db, math.MaxInt)
}

// prepareKey serialises prepare's index builds across processes (a session
// lock: CREATE INDEX CONCURRENTLY cannot run in a transaction).
const prepareKey = lockKey + 1

// preparedIndex is the unique (id, ts) index that migration 005 adopts as
// the old table's primary key when it is valid.
const preparedIndex = "readings_id_ts_key"

// prepare builds preparedIndex without blocking writers while readings is
// an ordinary table (schema before 005). A build that failed half-way
// leaves an invalid index: it is dropped and built again.
func prepare(ctx context.Context, db Beginner) error {
	var conn *pgx.Conn
	switch c := db.(type) {
	case pgx.Tx:
		return nil
	case *pgx.Conn:
		conn = c
	case *pgxpool.Pool:
		pc, err := c.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("prepare migrations: %w", err)
		}
		defer pc.Release()
		conn = pc.Conn()
	default:
		return nil
	}
	unpartitioned := func() (bool, error) {
		var kind *string
		err := conn.QueryRow(ctx, "SELECT relkind::text FROM pg_class WHERE oid = to_regclass('readings')").Scan(&kind)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		return kind != nil && *kind == "r", err
	}
	if ok, err := unpartitioned(); err != nil || !ok {
		if err != nil {
			return fmt.Errorf("inspect readings: %w", err)
		}
		return nil
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(prepareKey)); err != nil {
		return fmt.Errorf("lock the index build: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(prepareKey)) //nolint:errcheck // the session ends the lock anyway
	if ok, err := unpartitioned(); err != nil || !ok {
		if err != nil {
			return fmt.Errorf("inspect readings: %w", err)
		}
		return nil // another process migrated meanwhile
	}
	var valid *bool
	err := conn.QueryRow(ctx, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", preparedIndex).Scan(&valid)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("inspect index %s: %w", preparedIndex, err)
	}
	if valid != nil && *valid {
		return nil
	}
	if valid != nil {
		if _, err := conn.Exec(ctx, "DROP INDEX CONCURRENTLY "+preparedIndex); err != nil {
			return fmt.Errorf("drop the invalid index %s: %w", preparedIndex, err)
		}
	}
	if _, err := conn.Exec(ctx, "CREATE UNIQUE INDEX CONCURRENTLY "+preparedIndex+" ON readings (id, ts)"); err != nil {
		return fmt.Errorf("build index %s for migration 005: %w", preparedIndex, err)
	}
	return nil
}

// apply is Apply of the migrations up to version upTo (tests build a
// database as an older release left it).
func apply(ctx context.Context, db Beginner, upTo int) ([]string, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(lockKey)); err != nil {
		return nil, fmt.Errorf("lock migrations: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS firehose_schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("create firehose_schema_migrations: %w", err)
	}
	rows, err := tx.Query(ctx, "SELECT version FROM firehose_schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read applied migrations: %w", err)
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, fmt.Errorf("read applied migrations: %w", err)
	}
	have := make(map[int]bool, len(done))
	for _, v := range done {
		have[int(v)] = true
	}
	var applied []string
	for _, m := range ms {
		if have[m.Version] || m.Version > upTo {
			continue
		}
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return nil, fmt.Errorf("apply migration %s: %w", m.Name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO firehose_schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
			return nil, fmt.Errorf("record migration %s: %w", m.Name, err)
		}
		applied = append(applied, m.Name)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit migrations: %w", err)
	}
	return applied, nil
}
