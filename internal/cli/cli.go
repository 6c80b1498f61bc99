package cli

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// EnvPrefix starts every environment variable firehose reads.
const EnvPrefix = "FIREHOSE_"

// envOverrides names the environment twins that are not simply the flag's
// name in upper snake case: connection settings are URLs.
var envOverrides = map[string]string{
	"postgres": "FIREHOSE_POSTGRES_URL",
	"redis":    "FIREHOSE_REDIS_URL",
}

// EnvName is the environment variable that backs the flag name.
func EnvName(flagName string) string {
	if e, ok := envOverrides[flagName]; ok {
		return e
	}
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// FlagSet is a flag.FlagSet whose Parse also reads the environment.
type FlagSet struct {
	*flag.FlagSet
	usage, about string
	// LookupEnv reads the environment; tests replace it. Default os.LookupEnv.
	LookupEnv func(string) (string, bool)
	noEnv     map[string]bool

	configPath *string            // --config, with ConfigFile
	lists      map[string]bool    // flags a file may give as YAML lists
	sections   map[string]Section // top-level file keys that are not flags
	origins    map[string]Origin  // set by Parse; absent: default
}

// CommandLineOnly marks flags that have no environment twin: one-off choices
// of a single run (which rows to replay, "all of them") that a variable left
// in an environment must never make for a later run.
func (f *FlagSet) CommandLineOnly(names ...string) {
	if f.noEnv == nil {
		f.noEnv = map[string]bool{}
	}
	for _, n := range names {
		f.noEnv[n] = true
	}
}

// NewFlagSet makes a FlagSet that returns errors rather than exiting. usage is
// the synopsis line, about a paragraph printed under it in --help.
func NewFlagSet(name, usage, about string) *FlagSet {
	f := &FlagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), usage: usage, about: about, LookupEnv: os.LookupEnv}
	f.FlagSet.Usage = func() { f.PrintHelp(f.Output()) }
	return f
}

// Parse sets the flags from, strongest first, the command line args, their
// environment twins, and the configuration file (with ConfigFile: --config,
// else FIREHOSE_CONFIG); the rest keep their defaults. Every value a file
// gives goes through its flag's Set, also where the environment or the
// command line then overrides it, so a file is valid on its own; a bad value
// names where it came from (a file's errors are *FileError, FILE:LINE).
// A flag set by more than one source must replace its value on Set;
// accumulating flags are CommandLineOnly.
func (f *FlagSet) Parse(args []string) error {
	f.origins = map[string]Origin{}
	named, help := f.scanArgs(args)
	if !help {
		if err := f.applySources(named); err != nil {
			return err
		}
	}
	if err := f.FlagSet.Parse(args); err != nil {
		return err
	}
	f.Visit(func(fl *flag.Flag) {
		if _, ok := named[fl.Name]; ok {
			f.origins[fl.Name] = Origin{Source: FromCommandLine}
		}
	})
	return nil
}

// applySources sets the flags the file and the environment give, the
// environment only where the command line does not name the flag.
func (f *FlagSet) applySources(named map[string]string) error {
	if f.configPath != nil {
		path, ok := named[ConfigFlag]
		if !ok {
			path, _ = f.LookupEnv(EnvName(ConfigFlag))
		}
		if path != "" {
			if err := f.applyFile(path); err != nil {
				return err
			}
		}
	}
	var err error
	f.VisitAll(func(fl *flag.Flag) {
		_, onCommandLine := named[fl.Name]
		if onCommandLine || f.noEnv[fl.Name] || err != nil {
			return
		}
		env := EnvName(fl.Name)
		if v, ok := f.LookupEnv(env); ok {
			if e := f.Set(fl.Name, v); e != nil {
				err = fmt.Errorf("invalid value %q for %s (the --%s flag): %v", v, env, fl.Name, e)
				return
			}
			f.origins[fl.Name] = Origin{Source: FromEnvironment, Env: env}
		}
	})
	return err
}

// PrintHelp writes the synopsis and every flag with its default and its
// environment twin.
func (f *FlagSet) PrintHelp(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n\n", f.usage)
	if f.about != "" {
		fmt.Fprintf(w, "%s\n\n", f.about)
	}
	if f.configPath != nil {
		fmt.Fprintf(w, "Flags (each may also be set by the environment variable shown, or by the key of its name in the --config\nfile, unless marked command line only; the command line wins, then the environment, then the file):\n")
	} else {
		fmt.Fprintf(w, "Flags (each may also be set by the environment variable shown, unless marked command line only; a flag wins):\n")
	}
	f.VisitAll(func(fl *flag.Flag) {
		name, usage := flag.UnquoteUsage(fl)
		line := "  --" + fl.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if fl.DefValue != "" && fl.DefValue != "0" && fl.DefValue != "false" {
			fmt.Fprintf(w, " (default %s)", fl.DefValue)
		}
		if f.noEnv[fl.Name] {
			fmt.Fprintf(w, "\n    \t[command line only]\n")
		} else {
			fmt.Fprintf(w, "\n    \t[%s]\n", EnvName(fl.Name))
		}
	})
}
