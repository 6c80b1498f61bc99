package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"firehose/bridge"
	"firehose/internal/cli"
	"firehose/internal/connect"
	"firehose/stream"
	"firehose/subscriber"
)

const statusAbout = "Prints each shard of the deployment (--redis-prefix, --shards): the bridge session that owns it and its\n" +
	"bridge process (host:pid), its backlog in Redis, its checkpoint, how far behind the bridge is (the age of the\n" +
	"oldest uncommitted entry), the rows committed through it and the entries it rejected; then, without --json,\n" +
	"the deployment's live bridges (bridge_members) and the shards each owns, the typed tables the rules of\n" +
	"--config declare (their rows and size, estimated), and its subscribers to MQTT brokers (connected, session\n" +
	"kept, messages in flight, resent and recognised). It reads every setting serve reads. Exits 1 when\n" +
	"PostgreSQL or Redis cannot be read."

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		asJSON bool
		cfg    serveConfig
	)
	fs := newSettingsFlags("status", "firehose status [flags]", statusAbout, &cfg, stderr, func(fs *cli.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print a JSON array, one object per shard, for scripts")
	})
	if err := cfg.parse(fs, "status", args); err != nil {
		return err
	}
	if err := cfg.Streams.Validate(); err != nil {
		return usageError{err}
	}
	pg, err := connect.Postgres(ctx, cfg.Postgres)
	if err != nil {
		return err
	}
	defer pg.Close()
	rdb, err := connect.Redis(ctx, cfg.redisOptions(2))
	if err != nil {
		return err
	}
	defer rdb.Close()
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cfg.Streams.Load(qctx, rdb); err != nil {
		return err
	}
	st, err := bridge.Status(qctx, pg, rdb, cfg.Streams, time.Now())
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	members, err := bridge.Members(qctx, pg, cfg.Streams.Prefix)
	if err != nil {
		return err
	}
	subs, err := stream.NewSubscriberStates(rdb, cfg.Streams).All(qctx)
	if err != nil {
		return err
	}
	if err := bridge.WriteStatus(stdout, st, members); err != nil {
		return err
	}
	if tables := cfg.MQTT.Rules.Tables(); len(tables) > 0 {
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = t.Name
		}
		ts, err := bridge.Tables(qctx, pg, names)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout)
		if err := bridge.WriteTables(stdout, ts); err != nil {
			return err
		}
	}
	if len(subs) > 0 {
		fmt.Fprintln(stdout)
	}
	return subscriber.WriteStates(stdout, subs, time.Now())
}
