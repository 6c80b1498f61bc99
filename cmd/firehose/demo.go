package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"firehose/internal/cli"
	"firehose/internal/connect"
	"firehose/internal/demo"
	"firehose/simulator"
)

const demoAbout = "Starts the whole stack in this process (broker and HTTP gateway on free loopback ports, bridge), then\n" +
	"sends at once a fleet of MQTT devices publishing at QoS 1 (firehose simulate's devices) and a burst of HTTP\n" +
	"readings to both endpoints, waits for them to land in PostgreSQL, prints for each what was acknowledged,\n" +
	"landed, missing and duplicated, and stops cleanly. Exits 1 if any acknowledged reading is missing or doubled."

// demoStatusFlags are the flags of firehose status that say which deployment
// to look at: the demo prints the status command with those it was given.
var demoStatusFlags = []string{"postgres", "redis", "redis-cluster", "redis-sentinel-master", "redis-prefix", "shards"}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var dc demo.Config
	var fs *flag.FlagSet
	cfg, err := parseServe("demo", "firehose demo [flags]", demoAbout, args, stderr, func(c *serveConfig, f *flag.FlagSet) {
		fs = f
		c.registerFlags(f)
		cli.SetDefault(f, "http-addr", "127.0.0.1:0")
		cli.SetDefault(f, "mqtt-addr", "127.0.0.1:0")
		cli.SetDefault(f, "log-level", "warn")
		f.IntVar(&dc.Readings, "readings", 20000, "readings to send, half to /readings/fast, half to /v1/readings in arrays of 100")
		f.IntVar(&dc.Concurrency, "concurrency", 32, "concurrent HTTP clients")
		f.IntVar(&dc.MQTTDevices, "mqtt-devices", 200, "MQTT devices publishing at QoS 1 beside the HTTP clients, one connection each (0: none)")
		f.Float64Var(&dc.MQTTRate, "mqtt-rate", 2000, "readings/s of the whole MQTT fleet")
		f.DurationVar(&dc.MQTTDuration, "mqtt-duration", 5*time.Second, "how long the MQTT fleet publishes")
		f.DurationVar(&dc.LandTimeout, "land-timeout", 60*time.Second, "longest to wait for accepted readings to land in PostgreSQL")
	})
	if err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return usageError{err}
	}
	if dc.Readings < 2 || dc.Concurrency < 1 {
		return usageError{errors.New("--readings must be at least 2 and --concurrency at least 1")}
	}
	if dc.MQTTDevices < 0 || dc.MQTTRate <= 0 || dc.MQTTDuration <= 0 {
		return usageError{errors.New("--mqtt-devices must be 0 or more, --mqtt-rate and --mqtt-duration above 0")}
	}
	logger, err := cli.NewLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	st, err := startStack(ctx, cfg, logger)
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = st.stop(false)
		}
	}()
	run := demo.NewRunID()
	base := "http://" + st.http.Addr().String()
	var fleet *simulator.Config
	mqttURL := ""
	if st.mqtt != nil {
		if addr := st.mqtt.Addr("tcp"); addr != nil {
			mqttURL = "tcp://" + addr.String()
			fleet = demo.Fleet(dc, mqttURL, cfg.MQTT.Topic, cfg.Postgres, base, run)
		}
	}
	fmt.Fprintf(stdout, "firehose demo: stack up (HTTP %s, MQTT %s, PostgreSQL %s, Redis %s, prefix %q, %d shards)\n",
		base, cmp.Or(mqttURL, "off"), connect.RedactURL(cfg.Postgres), connect.RedactURL(cfg.Redis), cfg.Streams.Prefix, cfg.Streams.Count)
	if fleet != nil {
		fmt.Fprintf(stdout, "MQTT: %d devices sim-%s-* publish %.0f readings/s at QoS 1 for %s (firehose simulate's fleet)\n",
			fleet.Devices, fleet.RunID, fleet.Rate, fleet.Duration)
	}
	fmt.Fprintf(stdout, "HTTP: %d readings as devices demo-%s-*, %d clients, to /readings/fast and /v1/readings\n", dc.Readings, run, dc.Concurrency)

	// The fleet publishes while the HTTP burst runs; the simulator waits for
	// its acknowledged readings to land and checks them itself.
	type simResult struct {
		rep *simulator.Report
		err error
	}
	simDone := make(chan simResult, 1)
	if fleet != nil {
		go func() {
			rep, err := simulator.Run(ctx, *fleet, logger, nil)
			simDone <- simResult{rep, err}
		}()
	}

	start := time.Now()
	res := demo.Send(ctx, base, run, dc)
	sendDur := time.Since(start)
	fmt.Fprintf(stdout, "HTTP sent in %s: %d accepted (%.0f readings/s), %d refused, %d errors\n",
		sendDur.Round(time.Millisecond), res.Accepted.Load(), float64(res.Accepted.Load())/sendDur.Seconds(), res.Refused.Load(), res.Errors.Load())

	landStart := time.Now()
	rows, distinct, err := demo.WaitLanded(ctx, st.pg, run, res.Accepted.Load(), dc.LandTimeout)
	if err != nil {
		return err
	}
	landDur := time.Since(landStart)
	var sim simResult
	if fleet != nil {
		sim = <-simDone
		if sim.err != nil {
			return fmt.Errorf("mqtt fleet: %w", sim.err)
		}
	}
	stopStart := time.Now()
	stopped = true
	stopErr := st.stop(false)
	return demo.Summary{Accepted: res.Accepted.Load(), Rows: rows, Distinct: distinct, Fleet: sim.rep,
		Landed: landDur, Stopped: time.Since(stopStart), StopErr: stopErr,
		Next: []string{
			demoStatusCommand(fs), "each shard: its bridge, backlog, checkpoint, lag, rows committed",
			"docs/guarantees.md", "what acknowledged means, and where it ends; README.md links every topic under docs/",
		}}.Write(stdout)
}

// demoStatusCommand is the firehose status command line that shows the
// deployment the demo used: the binary as it was run, and the flags that say
// which deployment, where the demo's command line set them (status reads the
// same environment).
func demoStatusCommand(fs *flag.FlagSet) string {
	var defaults serveConfig
	sfs := flag.NewFlagSet("status", flag.ContinueOnError)
	defaults.registerCommon(sfs)
	cmd := []string{os.Args[0], "status"}
	for _, name := range demoStatusFlags {
		f, def := fs.Lookup(name), sfs.Lookup(name)
		if f == nil || def == nil {
			continue
		}
		v := f.Value.String()
		if env, ok := os.LookupEnv(cli.EnvName(name)); v == def.DefValue || ok && env == v {
			continue
		}
		if name == "postgres" || name == "redis" {
			v = connect.RedactURL(v)
		}
		cmd = append(cmd, "--"+name, cli.ShellQuote(v))
	}
	return strings.Join(cmd, " ")
}
