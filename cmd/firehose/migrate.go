package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"firehose/internal/cli"
	"firehose/internal/connect"
	"firehose/schema"
	"firehose/typed"
)

const migrateAbout = "Applies firehose's schema (embedded, versioned migrations) to PostgreSQL and exits.\n" +
	"firehose serve also does this at start-up; running both at once is safe. With --config FILE (serve's\n" +
	"configuration file), it then creates the typed tables its rules name (table:), range-partitioned by their\n" +
	"time column, and applies safe changes to existing ones (a column added, nullable; an index built without\n" +
	"blocking writers); it refuses unsafe ones (a type change, a NOT NULL column no rule writes, a table not\n" +
	"partitioned by its time column), saying what to do, and exits 1. It reads every setting serve reads;\n" +
	"only --postgres and the rules matter here."

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg serveConfig
	if err := cfg.parse(newSettingsFlags("migrate", "firehose migrate [flags]", migrateAbout, &cfg, stderr, nil), "migrate", args); err != nil {
		return err
	}
	var tables []typed.Table
	if cfg.MQTT.Rules != nil {
		tables = cfg.MQTT.Rules.Tables()
	}
	for _, t := range tables {
		if err := schema.CheckTable(t); err != nil {
			return usageError{err}
		}
	}
	pg, err := connect.Postgres(ctx, cfg.Postgres)
	if err != nil {
		return err
	}
	defer pg.Close()
	applied, err := schema.Apply(ctx, pg)
	if err != nil {
		return fmt.Errorf("apply schema: %w", err)
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "schema is current")
	} else {
		fmt.Fprintf(stdout, "applied %s\n", strings.Join(applied, ", "))
	}
	if len(tables) == 0 {
		return nil
	}
	logger, err := cli.NewLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	ch, err := schema.EnsureTables(ctx, pg, tables, logger.With("component", "migrate"))
	printChanges(stdout, ch, len(tables), err == nil)
	if refused := mismatches(err); len(refused) > 0 {
		for _, m := range refused {
			fmt.Fprintf(stderr, "refused: %s\n", m)
		}
		return fmt.Errorf("%d unsafe change(s) refused (listed above); those tables were left as they are", len(refused))
	}
	if err != nil {
		return fmt.Errorf("typed tables: %w", err)
	}
	return nil
}

// printChanges prints what EnsureTables did, a line each; ok when it
// refused nothing.
func printChanges(w io.Writer, ch schema.Changes, tables int, ok bool) {
	for _, t := range ch.Created {
		fmt.Fprintf(w, "created table %s\n", t)
	}
	for _, c := range ch.Added {
		fmt.Fprintf(w, "added column %s\n", c)
	}
	for _, ix := range ch.Indexed {
		fmt.Fprintf(w, "built index %s\n", ix)
	}
	for _, c := range ch.Kept {
		fmt.Fprintf(w, "kept column %s: no rule writes it any more; firehose never drops a column (new rows get NULL there): drop it by hand if you mean to\n", c)
	}
	if ok && len(ch.Created)+len(ch.Added)+len(ch.Indexed) == 0 {
		fmt.Fprintf(w, "typed tables: nothing to change (%d checked)\n", tables)
	}
}

// mismatches are the *schema.Mismatch errors err joins.
func mismatches(err error) []*schema.Mismatch {
	var out []*schema.Mismatch
	var m *schema.Mismatch
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			if errors.As(e, &m) {
				out = append(out, m)
			}
		}
	} else if errors.As(err, &m) {
		out = append(out, m)
	}
	return out
}
