package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"firehose/internal/connect"
	"firehose/schema"
)

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseServe("migrate", "firehose migrate [flags]",
		"Applies firehose's schema (embedded, versioned migrations) to PostgreSQL and exits.\nfirehose serve also does this at start-up; running both at once is safe.",
		args, stderr, func(c *serveConfig, fs *flag.FlagSet) {
			fs.StringVar(&c.Postgres, "postgres", "postgres://localhost:5432/firehose", "PostgreSQL connection URL")
		})
	if err != nil {
		return err
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
		return nil
	}
	fmt.Fprintf(stdout, "applied %s\n", strings.Join(applied, ", "))
	return nil
}
