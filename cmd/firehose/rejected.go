package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"firehose/deadletters"
	"firehose/ingest"
	"firehose/internal/cli"
	"firehose/internal/connect"
	"firehose/mqttmsg"
	"firehose/stream"
)

// firehose rejected: the dead letters of readings_rejected, listed and
// replayed (package deadletters reads, plans and sends them; this file
// parses the flags and prints).

const rejectedUsage = `Usage:
  firehose rejected list   [flags]   show the entries the bridge rejected (readings_rejected)
  firehose rejected replay [flags]   send rejected entries through the pipeline again, each at most once

Run "firehose rejected list --help" or "firehose rejected replay --help" for the flags.
`

// rejectedConfig is what firehose rejected reads from flags and environment.
type rejectedConfig struct {
	conn     serveConfig // --postgres, --redis, --redis-prefix, --shards, --log-*
	Limits   ingest.Limits
	Since    string
	Limit    int
	JSON     bool
	Replayed bool
	IDs      cli.IDs
	All      bool
	Reading  string
	Wait     time.Duration

	since time.Time // parsed Since; zero without
}

func runRejected(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, rejectedUsage)
		return usageError{errors.New("rejected: name a subcommand, list or replay")}
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, rejectedUsage)
		return nil
	case "list", "replay":
	default:
		return usageError{fmt.Errorf("rejected: unknown subcommand %q: want list or replay", sub)}
	}
	cfg, err := parseRejected(sub, rest, stderr)
	if err != nil {
		return err
	}
	logger, err := cli.NewLogger(cfg.conn.LogLevel, cfg.conn.LogFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	redis.SetLogger(connect.RedisLogger{Log: logger})
	pg, err := connect.Postgres(ctx, cfg.conn.Postgres)
	if err != nil {
		return err
	}
	defer pg.Close()
	if sub == "list" {
		return listRejected(ctx, pg, cfg, stdout)
	}
	rdb, err := connect.Redis(ctx, cfg.conn.redisOptions(4))
	if err != nil {
		return err
	}
	defer rdb.Close()
	return replayRejected(ctx, pg, rdb, cfg, stdout, stderr)
}

// parseRejected parses the flags of `firehose rejected sub` into a checked
// config.
func parseRejected(sub string, args []string, stderr io.Writer) (*rejectedConfig, error) {
	var cfg rejectedConfig
	var fs *cli.FlagSet
	if sub == "list" {
		fs = cli.NewFlagSet("rejected list", "firehose rejected list [flags]",
			"Lists the rows of readings_rejected of this deployment (--redis-prefix), oldest first: stream entries the\n"+
				"bridge could not decode or PostgreSQL refused, with the error and what the entry holds. Rows already\n"+
				"replayed are left out unless --replayed is given.")
		fs.IntVar(&cfg.Limit, "limit", 50, "show at most this many rows (0: all)")
		fs.BoolVar(&cfg.JSON, "json", false, "print one JSON object per row and line, for scripts, instead of a table")
		fs.BoolVar(&cfg.Replayed, "replayed", false, "also list rows already replayed")
	} else {
		fs = cli.NewFlagSet("rejected replay", "firehose rejected replay (--id N[,N...] | --all) [flags]",
			"Sends rejected entries through the pipeline again: each is decoded, validated as the edges validate,\n"+
				"and written to its device's shard stream as a replay entry naming its row; the bridge writes it and marks\n"+
				"the row replayed in one transaction. A row is replayed at most once: running this again, after a crash or\n"+
				"beside another run, does not land a reading twice; a row already replayed is refused. An entry that does\n"+
				"not decode is replayed with its repair: --id N --reading '{\"device_id\":\"...\",\"reading\":1.5,\"ts\":\"...\"}'.\n"+
				"A replay the bridge refuses again becomes a new row (its replay_of names the old one).")
		fs.Var(&cfg.IDs, "id", "replay the row with this id (repeat the flag, or separate ids with commas)")
		fs.BoolVar(&cfg.All, "all", false, "replay every row not yet replayed (with --since: rejected since then); rows that need a repair are skipped")
		fs.StringVar(&cfg.Reading, "reading", "", "with one --id: the repaired reading as a JSON object, as POST /v1/readings takes it\n(device_id and reading required, ts optional: RFC 3339; other fields are extra fields)")
		fs.CommandLineOnly("id", "all", "reading")
		fs.DurationVar(&cfg.Wait, "wait", time.Minute, "wait this long for the bridge to commit the replays and report how each ended (0: do not wait)")
		cfg.Limits.RegisterFlags(fs.FlagSet)
	}
	fs.StringVar(&cfg.Since, "since", "", "only rows rejected since then: a duration back from now (24h, 90m) or an RFC 3339 time")
	cfg.conn.registerCommon(fs.FlagSet)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("rejected %s takes no arguments, got %q (row ids go in --id)", sub, fs.Args())}
	}
	if err := cfg.validate(sub); err != nil {
		return nil, usageError{err}
	}
	return &cfg, nil
}

func (c *rejectedConfig) validate(sub string) error {
	if err := c.conn.Streams.Validate(); err != nil {
		return err
	}
	if c.Since != "" {
		t, err := cli.ParseSince(c.Since, time.Now())
		if err != nil {
			return fmt.Errorf("--since %q: %v", c.Since, err)
		}
		c.since = t
	}
	if sub == "list" {
		if c.Limit < 0 {
			return fmt.Errorf("--limit %d: want 0 (all) or more", c.Limit)
		}
		return nil
	}
	switch {
	case len(c.IDs) == 0 && !c.All:
		return errors.New("say which rows to replay: --id N (see firehose rejected list) or --all")
	case len(c.IDs) > 0 && c.All:
		return errors.New("--id and --all exclude each other")
	case c.Since != "" && !c.All:
		return errors.New("--since applies to --all; with --id the ids say which rows")
	case c.Reading != "" && len(c.IDs) != 1:
		return errors.New("--reading repairs one row: give exactly one --id with it")
	case c.Wait < 0:
		return fmt.Errorf("--wait %s: want 0 (do not wait) or more", c.Wait)
	}
	return nil
}

// streamPrefix is how the stream keys of the deployment begin.
func (c *rejectedConfig) streamPrefix() string { return deadletters.StreamPrefix(c.conn.Streams) }

func listRejected(ctx context.Context, pg *pgxpool.Pool, cfg *rejectedConfig, stdout io.Writer) error {
	rows, err := deadletters.List(ctx, pg, deadletters.Filter{Prefix: cfg.streamPrefix(), Since: cfg.since, Replayed: cfg.Replayed, Limit: cfg.Limit})
	if err != nil {
		return err
	}
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		for i := range rows {
			if err := enc.Encode(rows[i].JSON()); err != nil {
				return fmt.Errorf("write row %d: %w", rows[i].ID, err)
			}
		}
		return nil
	}
	if len(rows) == 0 {
		what := "no rejected entries waiting"
		if cfg.Replayed {
			what = "no rejected entries"
		}
		others, err := deadletters.CountOthers(ctx, pg, cfg.streamPrefix())
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s in deployment %q\n", what, cfg.conn.Streams.Prefix)
		if others > 0 {
			fmt.Fprintf(stdout, "(%d rows belong to streams of other prefixes: give their --redis-prefix to see them)\n", others)
		}
		return nil
	}
	if err := deadletters.WriteTable(stdout, rows); err != nil {
		return err
	}
	if cfg.Limit > 0 && len(rows) == cfg.Limit {
		fmt.Fprintf(stdout, "(the first %d rows; more with --limit 0, or narrow with --since)\n", cfg.Limit)
	}
	return nil
}

func replayRejected(ctx context.Context, pg *pgxpool.Pool, rdb redis.UniversalClient, cfg *rejectedConfig, stdout, stderr io.Writer) error {
	if err := cfg.conn.Streams.Load(ctx, rdb); err != nil {
		return err
	}
	if err := deadletters.CheckDeployment(ctx, pg, rdb, cfg.conn.Streams); err != nil {
		return err
	}
	t := deadletters.NewTally()
	rp := &deadletters.Replayer{PG: pg, Redis: rdb, Streams: cfg.conn.Streams, Limits: cfg.Limits,
		// Edge dead letters resolve as the broker would now: Sparkplug B
		// against the edge nodes' state the brokers keep beside the streams.
		Resolver: mqttmsg.NewResolver(stream.NewSparkplugStore(rdb, cfg.conn.Streams.SparkplugPrefix()), cfg.conn.MQTT.Rules, cfg.Limits),
		Skipped:  func(err error) { fmt.Fprintf(stderr, "skipped %s\n", err) },
		Progress: func(done, total int64) {
			if total > deadletters.Batch {
				fmt.Fprintf(stderr, "replay: %d of %d rows done (%d sent, %d skipped)\n", done, total, len(t.Sent), t.Skipped)
			}
		}}
	var err error
	if cfg.All {
		err = rp.ReplayPending(ctx, cfg.since, t)
	} else {
		var repair []byte
		if cfg.Reading != "" {
			repair = []byte(cfg.Reading)
		}
		var jobs []deadletters.Job
		jobs, err = deadletters.PlanIDs(ctx, pg, cfg.IDs, cfg.streamPrefix(), cfg.conn.Streams.Prefix, repair, cfg.Limits, rp.Resolver)
		if err == nil {
			err = deadletters.Send(ctx, rdb, cfg.conn.Streams, jobs, t)
		}
	}
	if err != nil {
		return err
	}
	if len(t.Sent) == 0 {
		fmt.Fprintf(stdout, "nothing to replay")
		if t.Skipped > 0 {
			fmt.Fprintf(stdout, ": %d rows need a repair (above)", t.Skipped)
		}
		fmt.Fprintln(stdout)
		if t.Skipped > 0 {
			return fmt.Errorf("%d rows not replayed", t.Skipped)
		}
		return nil
	}
	fmt.Fprintf(stdout, "sent %d replays\n", len(t.Sent))
	if cfg.Wait == 0 {
		fmt.Fprintln(stdout, "not waiting (--wait 0): `firehose rejected list --replayed` shows how they end")
		if t.Skipped > 0 {
			return fmt.Errorf("%d rows not replayed: they need a repair (above)", t.Skipped)
		}
		return nil
	}
	var lastSay time.Time
	o, err := rp.WaitReplayed(ctx, t, cfg.Wait, func(n int) {
		if len(t.Sent) > deadletters.Batch && time.Since(lastSay) > 2*time.Second {
			fmt.Fprintf(stderr, "replay: %d of %d committed by the bridge\n", n, len(t.Sent))
			lastSay = time.Now()
		}
	})
	if err != nil {
		return err
	}
	return o.Write(stdout, t.Skipped, cfg.Wait)
}
