package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"firehose/broker"
	"firehose/httpgw"
	"firehose/ingest"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `firehose: IoT readings from MQTT and HTTP into PostgreSQL, exactly once, through Redis Streams.

Usage:
  firehose serve   [flags]          run the roles: broker (MQTT), httpgw (HTTP gateway), bridge (Redis -> PostgreSQL)
  firehose config check FILE        validate serve's --config FILE, print each setting and its source; with
                                    --topic/--payload or --endpoint/--body, the rows that sample would land
  firehose migrate [flags]          apply the schema to PostgreSQL and exit
  firehose demo    [flags]          start the stack, send a burst of readings, report what landed, stop
  firehose simulate [flags]         drive a running firehose with a fleet of fake devices, verify what landed
  firehose rejected list|replay     list the entries the bridge rejected; replay them, repaired, each at most once
  firehose status  [flags]          each shard: the bridge that owns it, backlog, checkpoint, lag, rows, rejected (--json)
  firehose apikey  NAME [DEVICES]   make a new API key and the line to add to the --http-api-keys file
  firehose mqttpasswd DEVICE        read a device's password on stdin, print its line for the --mqtt-auth file
  firehose devices add|list|...     the device registry in PostgreSQL (serve --mqtt-auth postgres): add a device
                                    and print its secret; disable, enable, grant, ungrant, rotate, remove
  firehose version                  print the version

Run "firehose <command> --help" for a command's flags; every flag also reads an
environment variable (--batch-size <-> FIREHOSE_BATCH_SIZE), and serve's a key of
its --config file (batch-size: 5000).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns the process exit code: 0 success, 1
// failure, 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = runServe(ctx, rest, stderr)
	case "config":
		err = runConfig(rest, stdout, stderr)
	case "migrate":
		err = runMigrate(ctx, rest, stdout, stderr)
	case "demo":
		err = runDemo(ctx, rest, stdout, stderr)
	case "simulate":
		err = runSimulate(ctx, rest, stdout, stderr)
	case "rejected":
		err = runRejected(ctx, rest, stdout, stderr)
	case "status":
		err = runStatus(ctx, rest, stdout, stderr)
	case "apikey":
		err = runAPIKey(rest, stdout)
	case "mqttpasswd":
		err = runMQTTPasswd(rest, os.Stdin, stdout)
	case "devices":
		err = runDevices(ctx, rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "firehose %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "firehose: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "firehose: %s\n", oneLine(err.Error()))
		return 2
	default:
		fmt.Fprintf(stderr, "firehose: %s\n", oneLine(err.Error()))
		return 1
	}
}

// oneLine folds a multi-line error (pgx lists every address it tried on a
// line of its own) into one line.
func oneLine(s string) string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, " ")
}

// usageError is a mistake on the command line: exit code 2.
type usageError struct{ error }

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

func runAPIKey(args []string, stdout io.Writer) error {
	if len(args) < 1 || len(args) > 2 || strings.HasPrefix(args[0], "-") {
		return usageError{errors.New("usage: firehose apikey NAME [DEVICES]  (DEVICES: comma-separated device ids, default * for any)")}
	}
	name, devices := args[0], "*"
	if len(args) == 2 {
		devices = args[1]
	}
	if strings.ContainsAny(name, " \t\n#") {
		return usageError{fmt.Errorf("key name %q: use letters, digits, '-' or '_'", name)}
	}
	key, err := httpgw.GenerateKey()
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	fmt.Fprintf(stdout, "key (give it to the client; it is not stored anywhere):\n  %s\n", key)
	fmt.Fprintf(stdout, "line for the --http-api-keys file:\n  %s %s %s\n", name, httpgw.HashKey(key), devices)
	return nil
}

func runMQTTPasswd(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		return usageError{errors.New("usage: firehose mqttpasswd DEVICE  (the password is read from the first line of stdin; under --mqtt-auth the line it prints " +
			"lets DEVICE publish only its own topics: append read=FILTER, write=FILTER or sparkplug=GROUP fields to grant more, see docs/mqtt.md)")}
	}
	if err := ingest.ValidateDeviceID(args[0], 0); err != nil {
		return usageError{fmt.Errorf("device id %q: %v", args[0], err)}
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read password: %w", err)
	}
	hash, err := broker.HashPassword(strings.TrimRight(line, "\r\n"))
	if err != nil {
		return usageError{err}
	}
	fmt.Fprintf(stdout, "%s %s\n", args[0], hash)
	return nil
}
