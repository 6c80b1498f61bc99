// Package cli reads firehose's settings: standard library flags, each with an
// environment twin (--batch-size <-> FIREHOSE_BATCH_SIZE) that fills what the
// command line did not set, optionally a YAML configuration file below both
// (--config, keys are the flag names), and help that names them.
//
//	fs := cli.NewFlagSet("serve", "firehose serve [flags]", "Runs the roles.")
//	cfg.RegisterFlags(fs.FlagSet)
//	fs.ConfigFile() // --config FILE; optional
//	if err := fs.Parse(args); err != nil { ... } // flag.ErrHelp after --help
//	fs.Origin("batch-size") // where the value came from: command line, FIREHOSE_BATCH_SIZE, firehose.yaml:3, default
package cli
