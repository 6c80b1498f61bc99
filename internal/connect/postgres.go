package connect

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// OpenPostgres builds the process's small pool (migrations, /health/db)
// without connecting: pgxpool connects on first use, so the edges start while
// PostgreSQL is down.
func OpenPostgres(rawURL string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--postgres %q is not a PostgreSQL URL: %v", RedactURL(rawURL), err)
	}
	pc.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("postgres pool for %s: %w", RedactURL(rawURL), err)
	}
	return pool, nil
}

// Postgres opens the pool and checks that the database answers.
func Postgres(ctx context.Context, rawURL string) (*pgxpool.Pool, error) {
	pool, err := OpenPostgres(rawURL)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, PostgresError(err, rawURL)
	}
	return pool, nil
}

// PermanentPostgresError reports whether err is PostgreSQL refusing us for a
// reason waiting will not change: an unknown database (3D000), failed
// authentication or authorization (class 28), or a missing privilege (42501).
func PermanentPostgresError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return pe.Code == "3D000" || pe.Code == "42501" || strings.HasPrefix(pe.Code, "28")
}

// PostgresError says what to do about a failed first contact.
func PostgresError(err error, rawURL string) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "3D000" {
		pc, _ := pgconn.ParseConfig(rawURL)
		if pc != nil {
			return fmt.Errorf("database %q does not exist on %s: create it with `createdb -h %s -p %d %s` (make demo does), or point --postgres / FIREHOSE_POSTGRES_URL at another",
				pc.Database, RedactURL(rawURL), pc.Host, pc.Port, pc.Database)
		}
	}
	return fmt.Errorf("cannot reach PostgreSQL at %s: %v; start it (scripts/services.sh ensure) or point --postgres / FIREHOSE_POSTGRES_URL at it", RedactURL(rawURL), err)
}
