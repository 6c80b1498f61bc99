package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"firehose/internal/cli"
	"firehose/internal/connect"
	"firehose/registry"
)

const devicesUsage = `Usage: firehose devices SUBCOMMAND [ID] [flags]

Manages the device registry in PostgreSQL (--postgres, or serve's --config FILE), which
firehose serve --mqtt-auth postgres reads: a change reaches every running broker within a
second, disconnecting the live clients it revokes. Run firehose migrate first.

  add ID [--read F] [--write F] [--sparkplug G]   add a device; prints its new secret, once
  list                                            every device: enabled, grants, last seen
  disable ID | enable ID                          refuse (and disconnect) a device, or admit it again
  grant ID [--read F] [--write F] [--sparkplug G]  grant more: topic filters to read, to write;
                                                  Sparkplug B groups it is an edge node in
  ungrant ID [--read F] [--write F] [--sparkplug G] take grants back (disconnects it)
  rotate ID                                       a new secret, printed once; the old one stops working
  remove ID                                       remove a device (disconnects it)

A device connects with its id as MQTT username and client id and its secret as password:
  mosquitto_pub -u ID -i ID -P SECRET -t devices/ID/readings -m 21.5
The secret is random (192 bits) and stored only as a salted HMAC-SHA256 hash, checked in
microseconds. Flags repeat (--read a/# --read b/#). "firehose devices SUBCOMMAND --help"
lists every flag.
`

// devicesNeedID are the subcommands that take a device id.
var devicesNeedID = map[string]bool{"add": true, "disable": true, "enable": true, "grant": true, "ungrant": true, "rotate": true, "remove": true}

// stringsFlag is a flag that may repeat, each value appended.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

func runDevices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, devicesUsage)
		return usageError{errors.New("devices: name a subcommand: add, list, disable, enable, grant, ungrant, rotate or remove")}
	}
	sub, rest := args[0], args[1:]
	switch {
	case sub == "help" || sub == "-h" || sub == "--help":
		fmt.Fprint(stdout, devicesUsage)
		return nil
	case sub != "list" && !devicesNeedID[sub]:
		return usageError{fmt.Errorf("devices: unknown subcommand %q: want add, list, disable, enable, grant, ungrant, rotate or remove", sub)}
	}
	var id string
	help := len(rest) > 0 && (rest[0] == "-h" || rest[0] == "--help")
	if devicesNeedID[sub] && !help {
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return usageError{fmt.Errorf("usage: firehose devices %s ID [flags] (the device id comes first)", sub)}
		}
		id, rest = rest[0], rest[1:]
	}
	var cfg serveConfig
	var g registry.Grants
	synopsis := "firehose devices " + sub + " [flags]"
	if devicesNeedID[sub] {
		synopsis = "firehose devices " + sub + " ID [flags]"
	}
	fs := newSettingsFlags("devices "+sub, synopsis, strings.SplitN(devicesUsage, "\n\n", 3)[1], &cfg, stderr, func(fs *cli.FlagSet) {
		if sub == "add" || sub == "grant" || sub == "ungrant" {
			fs.Var((*stringsFlag)(&g.Read), "read", "an MQTT topic filter the device may subscribe to beyond its own topics (repeat the flag)")
			fs.Var((*stringsFlag)(&g.Write), "write", "an MQTT topic filter the device may publish on beyond its own topics (repeat the flag)")
			fs.Var((*stringsFlag)(&g.Sparkplug), "sparkplug", "a Sparkplug B group in which the device is an edge node (repeat the flag)")
			fs.CommandLineOnly("read", "write", "sparkplug")
		}
	})
	if err := cfg.parse(fs, "devices "+sub, rest); err != nil {
		return err
	}
	if err := checkDevicesFlags(fs.FlagSet, sub); err != nil {
		return usageError{err}
	}
	pg, err := connect.Postgres(ctx, cfg.Postgres)
	if err != nil {
		return err
	}
	defer pg.Close()
	err = devicesDo(ctx, pg, sub, id, g, stdout)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" {
		return fmt.Errorf("%w (the registry's table firehose_devices is missing: run firehose migrate first)", err)
	}
	return err
}

// checkDevicesFlags refuses a grant or ungrant that names nothing.
func checkDevicesFlags(fs *flag.FlagSet, sub string) error {
	if sub != "grant" && sub != "ungrant" {
		return nil
	}
	named := false
	fs.Visit(func(f *flag.Flag) { named = named || f.Name == "read" || f.Name == "write" || f.Name == "sparkplug" })
	if !named {
		return fmt.Errorf("devices %s: name at least one --read, --write or --sparkplug", sub)
	}
	return nil
}

// devicesDo runs one subcommand against the registry.
func devicesDo(ctx context.Context, db registry.DB, sub, id string, g registry.Grants, stdout io.Writer) error {
	printSecret := func(secret string) {
		fmt.Fprintf(stdout, "device %s\nsecret (give it to the device; it is not stored and will not be shown again):\n  %s\n", id, secret)
	}
	switch sub {
	case "add":
		secret, err := registry.Add(ctx, db, id, g)
		if err != nil {
			return err
		}
		printSecret(secret)
	case "rotate":
		secret, err := registry.Rotate(ctx, db, id)
		if err != nil {
			return err
		}
		printSecret(secret)
	case "list":
		ds, err := registry.List(ctx, db)
		if err != nil {
			return err
		}
		printDevices(stdout, ds)
	case "disable", "enable":
		if err := registry.SetEnabled(ctx, db, id, sub == "enable"); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "device %s %sd\n", id, sub)
	case "grant":
		if err := registry.Grant(ctx, db, id, g); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "device %s granted\n", id)
	case "ungrant":
		if err := registry.Ungrant(ctx, db, id, g); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "device %s: grants taken back\n", id)
	case "remove":
		if err := registry.Remove(ctx, db, id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "device %s removed\n", id)
	}
	return nil
}

// printDevices prints the registry as a table, never a hash.
func printDevices(w io.Writer, ds []registry.Device) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tENABLED\tREAD\tWRITE\tSPARKPLUG\tLAST SEEN")
	list := func(s []string) string {
		if len(s) == 0 {
			return "-"
		}
		return strings.Join(s, ",")
	}
	for _, d := range ds {
		seen := "never"
		if !d.LastSeen.IsZero() {
			seen = d.LastSeen.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%t\t%s\t%s\t%s\t%s\n", d.ID, d.Enabled, list(d.Read), list(d.Write), list(d.Sparkplug), seen)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d devices\n", len(ds))
}
