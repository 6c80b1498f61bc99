package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"firehose/internal/cli"
	"firehose/internal/configcheck"
)

const configUsage = "usage: firehose config check FILE [--topic TOPIC --payload PAYLOAD | --endpoint PATH --body BODY] [--json]"

func runConfig(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "check" {
		return runConfigCheck(args[1:], stdout, stderr)
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(stdout, configUsage)
		return nil
	}
	return usageError{errors.New(configUsage)}
}

// checkArgs are config check's own flags: a sample to map, and the output.
type checkArgs struct {
	file        string
	topic       string
	payload     string
	endpoint    string
	body        string
	contentType string
	device      string
	asJSON      bool
}

func parseCheckArgs(args []string, stderr io.Writer) (checkArgs, error) {
	var ca checkArgs
	fs := cli.NewFlagSet("config check", "firehose config check FILE [flags]",
		"Reads the configuration file FILE (with the FIREHOSE_* environment) exactly as firehose serve --config FILE would,\n"+
			"connecting to nothing, and prints each effective setting and where it came from (secrets redacted). Given a\n"+
			"sample (--topic and --payload for MQTT, --endpoint and --body for HTTP), it also prints the rows that sample\n"+
			"would land in the readings table, or why it would be refused. Exits 1 if serve would refuse the file.\n"+
			"A PAYLOAD or BODY of @path is read from that file.")
	fs.SetOutput(stderr)
	fs.StringVar(&ca.topic, "topic", "", "MQTT sample: the topic it is published to, e.g. devices/pump-7/readings")
	fs.StringVar(&ca.payload, "payload", "", "MQTT sample: its payload, e.g. '{\"reading\": 21.5}'")
	fs.StringVar(&ca.endpoint, "endpoint", "", "HTTP sample: the path it is posted to, "+configcheck.EndpointV1+" or "+configcheck.EndpointFast)
	fs.StringVar(&ca.body, "body", "", "HTTP sample: the request body")
	fs.StringVar(&ca.contentType, "content-type", "application/json", "HTTP sample: its Content-Type (application/json or application/x-ndjson)")
	fs.StringVar(&ca.device, "device-id", "", "HTTP sample: its X-Device-ID header ("+configcheck.EndpointFast+"; default --default-device-id)")
	fs.BoolVar(&ca.asJSON, "json", false, "print one JSON object, for scripts")
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	fs.CommandLineOnly(names...) // a sample is one run's choice
	// FILE may stand before, between or after the flags.
	var files []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return ca, err
			}
			return ca, usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	switch {
	case len(files) != 1:
		return ca, usageError{errors.New(configUsage)}
	case ca.topic != "" && ca.endpoint != "":
		return ca, usageError{errors.New("give one sample: --topic (MQTT) or --endpoint (HTTP), not both")}
	case ca.payload != "" && ca.topic == "":
		return ca, usageError{errors.New("--payload needs --topic")}
	case ca.body != "" && ca.endpoint == "":
		return ca, usageError{errors.New("--body needs --endpoint")}
	case ca.endpoint != "" && !knownEndpoint(ca.endpoint):
		return ca, usageError{fmt.Errorf("--endpoint %q: want %s (with ?rule=NAME for a rule's endpoint) or %s", ca.endpoint, configcheck.EndpointV1, configcheck.EndpointFast)}
	}
	ca.file = files[0]
	for _, p := range []*string{&ca.payload, &ca.body} {
		if path, ok := strings.CutPrefix(*p, "@"); ok {
			b, err := os.ReadFile(path)
			if err != nil {
				return ca, usageError{fmt.Errorf("read sample: %w", err)}
			}
			*p = string(b)
		}
	}
	return ca, nil
}

func runConfigCheck(args []string, stdout, stderr io.Writer) error {
	ca, err := parseCheckArgs(args, stderr)
	if err != nil {
		return err
	}
	rep, err := checkConfig(ca, time.Now())
	if ca.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if e := enc.Encode(rep); e != nil {
			return fmt.Errorf("write report: %w", e)
		}
	} else if err == nil {
		rep.WriteText(stdout)
	}
	return err
}

// checkConfig validates ca.file as serve would, without connecting to
// anything, and maps the sample if one is given. The error is the file's
// refusal (not a usage error: exit 1), also in the report.
func checkConfig(ca checkArgs, now time.Time) (*configcheck.Report, error) {
	rep := &configcheck.Report{File: ca.file}
	fail := func(err error) (*configcheck.Report, error) {
		var ue usageError
		if errors.As(err, &ue) {
			err = ue.error
		}
		rep.Error = err.Error()
		if fe := (*cli.FileError)(nil); errors.As(err, &fe) {
			rep.Line = fe.Line
		}
		return rep, err
	}
	cfg, fs, err := loadServe([]string{"--" + cli.ConfigFlag, ca.file}, io.Discard)
	if err != nil {
		return fail(err)
	}
	roles, _ := cfg.roles()
	if err := configcheck.Roles(configcheck.Edges{MQTT: cfg.MQTT, HTTP: cfg.HTTP}, slices.Contains(roles, roleBroker), slices.Contains(roles, roleHTTP)); err != nil {
		return fail(err)
	}
	rep.Valid = true
	rep.Roles, _ = cfg.roles()
	rep.Settings = configcheck.Settings(fs)
	rep.Tables = configcheck.Tables(cfg.MQTT.Rules)
	edges := configcheck.Edges{MQTT: cfg.MQTT, HTTP: cfg.HTTP, Streams: cfg.Streams}
	edge := ""
	switch {
	case ca.topic != "":
		edge = roleBroker
		rep.Sample = configcheck.MQTT(edges, ca.topic, []byte(ca.payload), now)
	case ca.endpoint != "":
		edge = roleHTTP
		rep.Sample, err = configcheck.HTTP(edges, configcheck.HTTPRequest{Endpoint: ca.endpoint, Body: ca.body, ContentType: ca.contentType, DeviceID: ca.device})
		if err != nil {
			return fail(err)
		}
	}
	if edge != "" && !slices.Contains(rep.Roles, edge) {
		rep.Sample.Note = strings.TrimPrefix(rep.Sample.Note+"; ", "; ") +
			fmt.Sprintf("this file runs no %s role: the processes that do map it so, with these settings", edge)
	}
	return rep, nil
}

// knownEndpoint reports whether e is a gateway path a sample may be posted
// to: /v1/readings (its query, ?rule=NAME, goes to the gateway as it is) or
// /readings/fast.
func knownEndpoint(e string) bool {
	path, _, _ := strings.Cut(e, "?")
	return path == configcheck.EndpointV1 || e == configcheck.EndpointFast
}
