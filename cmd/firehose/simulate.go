package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"firehose/internal/cli"
	"firehose/simulator"
)

// runSimulate runs the fleet simulator (firehose simulate); see simulator/.
// It prints the summary table on stdout (and a progress line a second when
// stdout is a terminal) and fails when an acknowledged reading is missing or
// a once-acknowledged reading landed twice.
func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := simulator.DefaultConfig()
	var reportDir, logLevel, logFormat string
	fs := cli.NewFlagSet("simulate", "firehose simulate [flags]",
		"Drives a running firehose with a fleet of fake devices over HTTP and/or MQTT (devices sim-<run id>-<n>,\n"+
			"each numbering its readings from 1), then waits for what was acknowledged to land and checks PostgreSQL:\n"+
			"missing readings, duplicates, end-to-end latency. Ctrl-C stops sending and still reports.\n"+
			"--shape telemetry|samples|sparkplug|typed sends multi-metric JSON, sample uploads or Sparkplug B edge nodes instead,\n"+
			"or telemetry a rule routes to the typed table sim_telemetry (the target needs the rules of\n"+
			"deploy/simulate-rules.yaml) and checks every row per metric, or every typed row column by column.\n"+
			"Exits 1 when an acknowledged reading is missing or a reading acknowledged once landed twice.")
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs.FlagSet)
	fs.StringVar(&reportDir, "report", "", "directory to write report.json and report.html into (created if needed)")
	fs.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("simulate takes no arguments, got %q", fs.Args())}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	logger, err := cli.NewLogger(logLevel, logFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	var progress io.Writer
	if isTerminal(stdout) {
		progress = stdout
	}
	done := make(chan struct{})
	defer close(done)
	go secondInterrupt(ctx, done, stderr)
	rep, err := simulator.Run(ctx, cfg, logger, progress)
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	if progress != nil {
		fmt.Fprintln(stdout)
	}
	if err := rep.WriteSummary(stdout); err != nil {
		return fmt.Errorf("print summary: %w", err)
	}
	if reportDir != "" {
		if err := rep.WriteFiles(reportDir); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "report: %s/report.html, %s/report.json\n", reportDir, reportDir)
	}
	if !rep.OK {
		return fmt.Errorf("simulate: run %s failed verification", rep.RunID)
	}
	return nil
}

// isTerminal says whether w is a character device (a terminal), where the
// progress line is wanted.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// secondInterrupt runs until done. The first interrupt (ctx ending) stops
// sending, and the simulator still waits for landing and verifies; this says
// so, and quits at once on a second interrupt.
func secondInterrupt(ctx context.Context, done <-chan struct{}, stderr io.Writer) {
	select {
	case <-ctx.Done():
	case <-done:
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	fmt.Fprintln(stderr, "firehose simulate: interrupted: sending stopped; waiting for the readings to land, then verifying (interrupt again to quit now)")
	select {
	case <-sig:
		fmt.Fprintln(stderr, "firehose simulate: quit before verifying")
		os.Exit(130)
	case <-done:
	}
}
