package connect

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"firehose/internal/pgretry"
	"firehose/schema"
	"firehose/typed"
)

// Start-up checks: what the services reached promise, and the schema.

// CheckPostgres tries the database once at start and, when it answers,
// applies the schema there and then, so the process is ready with its tables
// in place (clients that read readings right away find them). A mistake the
// operator must fix (no such database, authentication refused, a failed
// migration) is an error; an unreachable server only a warning: the bridge
// waits for it and migrates then (ApplySchemaWaiting), and the edges do not need it.
// It reports whether the schema was applied.
func CheckPostgres(ctx context.Context, pool *pgxpool.Pool, rawURL string, log *slog.Logger) (bool, error) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := pool.Ping(pctx)
	switch {
	case err == nil:
		applied, err := schema.Apply(ctx, pool)
		if err != nil {
			return false, fmt.Errorf("apply schema: %w", err)
		}
		if len(applied) > 0 {
			log.Info("schema migrations applied", "migrations", strings.Join(applied, ","))
		}
		return true, nil
	case PermanentPostgresError(err):
		return false, PostgresError(err, rawURL)
	}
	log.Warn("PostgreSQL is not reachable at start: serving the edges; the bridge commits once it answers",
		"postgres", RedactURL(rawURL), "err", err)
	return false, nil
}

// ApplySchemaWaiting applies the schema, waiting until PostgreSQL answers
// (retrying with backoff, so a process whose database is down still serves
// its edges); it returns nil once applied or when ctx ends, and an error
// only for a refusal waiting will not change (PermanentPostgresError).
func ApplySchemaWaiting(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	wait := 250 * time.Millisecond
	for {
		applied, err := schema.Apply(ctx, pool)
		if err == nil {
			if len(applied) > 0 {
				log.Info("schema migrations applied", "migrations", strings.Join(applied, ","))
			}
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if PermanentPostgresError(err) {
			return fmt.Errorf("apply schema: %w", err)
		}
		log.Warn("PostgreSQL not reachable: the bridge waits for it (the edges keep taking readings into Redis)",
			"err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// EnsureTablesWaiting brings the rules' typed tables up to date
// (schema.EnsureTables), waiting out PostgreSQL going away or restarting
// meanwhile as ApplySchemaWaiting does: a transient error (pgretry) is
// tried again, with backoff; anything else, a table a rule contradicts
// among them, is returned. A ctx that ends returns no error.
func EnsureTablesWaiting(ctx context.Context, pool *pgxpool.Pool, tables []typed.Table, log *slog.Logger) (schema.Changes, error) {
	wait := 250 * time.Millisecond
	for {
		ch, err := schema.EnsureTables(ctx, pool, tables, log)
		switch {
		case err == nil:
			return ch, nil
		case ctx.Err() != nil:
			return schema.Changes{}, nil
		case !pgretry.Transient(err):
			return schema.Changes{}, fmt.Errorf("typed tables: %w", err)
		}
		log.Warn("PostgreSQL went away while the typed tables were brought up to date: the bridge tries again (the edges keep taking readings into Redis)",
			"err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return schema.Changes{}, nil
		case <-t.C:
		}
		wait = min(2*wait, 10*time.Second)
	}
}
