package cli

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// testFlags is a small serve-like flag set with a configuration file.
type testFlags struct {
	fs       *FlagSet
	size     *int
	age      *time.Duration
	roles    *string
	redis    *string
	evict    *bool
	all      *bool
	sections map[string]int // section key -> line of its value
}

func newTestFlags(env map[string]string) *testFlags {
	tf := &testFlags{fs: NewFlagSet("serve", "serve [flags]", ""), sections: map[string]int{}}
	tf.size = tf.fs.Int("batch-size", 5000, "readings per commit")
	tf.age = tf.fs.Duration("batch-age", 200*time.Millisecond, "oldest reading's wait")
	tf.roles = tf.fs.String("roles", "broker,httpgw,bridge", "roles")
	tf.redis = tf.fs.String("redis", "redis://localhost:6379/0", "Redis URL")
	tf.evict = tf.fs.Bool("redis-allow-eviction", false, "start anyway")
	tf.all = tf.fs.Bool("all", false, "every row")
	tf.fs.CommandLineOnly("all")
	tf.fs.ConfigFile()
	tf.fs.Lists("roles")
	tf.fs.Section("rules", func(v *yaml.Node) error {
		if v.Kind != yaml.SequenceNode {
			return errors.New("want a list of rules")
		}
		tf.sections["rules"] = v.Line
		return nil
	})
	tf.fs.SetOutput(&bytes.Buffer{})
	tf.fs.LookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	return tf
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "firehose.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFilePrecedence(t *testing.T) {
	file := writeFile(t, "# settings\nbatch-size: 100\nbatch-age: 1s\nroles: [httpgw, bridge]\nredis: redis://file:6379/0\n")
	env := map[string]string{"FIREHOSE_BATCH_AGE": "2s", "FIREHOSE_REDIS_URL": "redis://env:6379/0"}
	tf := newTestFlags(env)
	if err := tf.fs.Parse([]string{"--config", file, "--redis", "redis://flag:6379/0"}); err != nil {
		t.Fatal(err)
	}
	if *tf.size != 100 || *tf.age != 2*time.Second || *tf.roles != "httpgw,bridge" || *tf.redis != "redis://flag:6379/0" || *tf.evict {
		t.Errorf("batch-size %d, batch-age %s, roles %q, redis %q, eviction %v", *tf.size, *tf.age, *tf.roles, *tf.redis, *tf.evict)
	}
	for name, want := range map[string]string{
		"batch-size":           file + ":2",
		"roles":                file + ":4",
		"batch-age":            "FIREHOSE_BATCH_AGE",
		"redis":                "command line",
		"redis-allow-eviction": "default",
		"config":               "command line",
	} {
		if got := tf.fs.Origin(name).String(); got != want {
			t.Errorf("origin of %s: %q, want %q", name, got, want)
		}
	}
}

func TestConfigFileFromEnvironment(t *testing.T) {
	file := writeFile(t, "batch-size: 7\n")
	tf := newTestFlags(map[string]string{"FIREHOSE_CONFIG": file})
	if err := tf.fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if *tf.size != 7 || tf.fs.ConfigPath() != file {
		t.Errorf("batch-size %d, config %q", *tf.size, tf.fs.ConfigPath())
	}
}

func TestConfigFileSection(t *testing.T) {
	file := writeFile(t, "batch-size: 7\nrules:\n  - topic: a\n")
	tf := newTestFlags(nil)
	if err := tf.fs.Parse([]string{"--config=" + file}); err != nil {
		t.Fatal(err)
	}
	if tf.sections["rules"] != 3 {
		t.Errorf("rules section decoded at line %d, want 3", tf.sections["rules"])
	}
}

func TestConfigFileEmptyIsNoSettings(t *testing.T) {
	for _, text := range []string{"", "# nothing yet\n", "---\n"} {
		tf := newTestFlags(nil)
		if err := tf.fs.Parse([]string{"--config", writeFile(t, text)}); err != nil {
			t.Errorf("%q: %v", text, err)
		}
	}
}

func TestConfigFileErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		text string
		env  map[string]string
		args []string
		want string // after "FILE:"
	}{
		{name: "unknown key suggests the flag", text: "batch-size: 1\nbatch-sise: 2\n", want: "2: unknown key batch-sise: did you mean batch-size?"},
		{name: "underscores", text: "batch_age: 1s\n", want: "1: unknown key batch_age: did you mean batch-age?"},
		{name: "environment variable as key", text: "FIREHOSE_REDIS_URL: redis://x\n", want: "1: unknown key FIREHOSE_REDIS_URL: did you mean redis?"},
		{name: "unknown key without a close flag", text: "colour: blue\n", want: "1: unknown key colour (keys are the flags"},
		{name: "nested keys", text: "batch:\n  size: 5\n", want: "1: unknown key batch: keys are flag names, not nested: write batch-size: ..."},
		{name: "bad integer", text: "\n\nbatch-size: lots\n", want: `3: batch-size: invalid value "lots": want a whole number`},
		{name: "bad duration", text: "batch-age: 15\n", want: `1: batch-age: invalid value "15": want a duration such as 200ms, 15s or 1h`},
		{name: "bad boolean", text: "redis-allow-eviction: maybe\n", want: `1: redis-allow-eviction: invalid value "maybe": want true or false`},
		{name: "duplicate key", text: "batch-size: 1\nredis: r\nbatch-size: 2\n", want: "3: batch-size is already set on line 1"},
		{name: "not a mapping", text: "- batch-size: 1\n", want: "1: want a mapping of flag names to values (batch-size: 5000), got a list"},
		{name: "a bare value", text: "batch-size\n", want: `1: want a mapping of flag names to values (batch-size: 5000), got the value "batch-size"`},
		{name: "no value", text: "redis:\n", want: `1: redis: no value: write "" for an empty one`},
		{name: "list for a single value", text: "redis: [a, b]\n", want: "1: redis: want a single value, got a list"},
		{name: "mapping for a value", text: "roles:\n  a: b\n", want: "2: roles: want a single value or a list, got a mapping"},
		{name: "list of lists", text: "roles:\n  - [a]\n", want: "2: roles: want a list of values, got a list on line 2"},
		{name: "command line only", text: "all: true\n", want: "1: all is a choice of one run: give it on the command line (--all)"},
		{name: "the file names itself", text: "config: other.yaml\n", want: "1: config names this file: give it with --config or FIREHOSE_CONFIG"},
		{name: "section refuses", text: "batch-size: 1\nrules: nope\n", want: "2: rules: want a list of rules"},
		{name: "YAML syntax", text: "batch-size: 1\nredis: [a\n", want: "1: not valid YAML: did not find expected ',' or ']'"},
		{name: "YAML indentation", text: "batch-size: 1\n redis: x\n", want: "2: not valid YAML: mapping values are not allowed in this context"},
		{name: "second document", text: "batch-size: 1\n---\nbatch-size: 2\n", want: "2: a second YAML document (---): put every setting in one"},
		{name: "merge key", text: "base: &b {batch-size: 1}\n<<: *b\n", want: "1: unknown key base"},
		{name: "overridden values are checked too", text: "batch-size: lots\n", env: map[string]string{"FIREHOSE_BATCH_SIZE": "3"}, args: []string{"--batch-size", "4"}, want: `1: batch-size: invalid value "lots"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := writeFile(t, tt.text)
			tf := newTestFlags(tt.env)
			err := tf.fs.Parse(append([]string{"--config", file}, tt.args...))
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v, want a *FileError", err)
			}
			if got := err.Error(); !strings.HasPrefix(got, file+":"+tt.want) {
				t.Errorf("error\n  %s\nwant it to start with\n  %s:%s", got, file, tt.want)
			}
		})
	}
}

func TestConfigFileMissing(t *testing.T) {
	tf := newTestFlags(nil)
	err := tf.fs.Parse([]string{"--config", filepath.Join(t.TempDir(), "absent.yaml")})
	if err == nil || !strings.Contains(err.Error(), "read configuration file") {
		t.Errorf("error %v", err)
	}
}

func TestHelpDespiteABadConfigFile(t *testing.T) {
	tf := newTestFlags(map[string]string{"FIREHOSE_CONFIG": writeFile(t, "bogus: 1\n")})
	if err := tf.fs.Parse([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("error %v, want flag.ErrHelp", err)
	}
	var help bytes.Buffer
	tf.fs.PrintHelp(&help)
	for _, want := range []string{"--config file", "[FIREHOSE_CONFIG]", "key of its name in the --config"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, help.String())
		}
	}
}

func TestScanArgs(t *testing.T) {
	tf := newTestFlags(nil)
	for _, tt := range []struct {
		args []string
		want map[string]string
	}{
		{[]string{"--config", "a.yaml", "-batch-size=3"}, map[string]string{"config": "a.yaml", "batch-size": "3"}},
		{[]string{"--redis-allow-eviction", "--config", "a"}, map[string]string{"redis-allow-eviction": "true", "config": "a"}},
		{[]string{"--redis", "--config"}, map[string]string{"redis": "--config"}},
		{[]string{"--", "--config", "a"}, map[string]string{}},
		{[]string{"arg", "--config", "a"}, map[string]string{}},
		{[]string{"--bogus", "--config", "a"}, map[string]string{}},
	} {
		got, _ := tf.fs.scanArgs(tt.args)
		if len(got) != len(tt.want) {
			t.Errorf("%q: %v, want %v", tt.args, got, tt.want)
			continue
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("%q: %v, want %v", tt.args, got, tt.want)
			}
		}
	}
}

// FuzzConfigFile feeds arbitrary text to the file reader: it must not
// panic, and every refusal of the text is a *FileError.
func FuzzConfigFile(f *testing.F) {
	for _, seed := range []string{
		"batch-size: 100\nroles: [httpgw, bridge]\n",
		"rules:\n  - topic: a\n",
		"a: &x 1\nb: *x\n",
		"<<: {batch-size: 1}\n",
		"batch-size: [1, [2]]\n",
		"--- 1\n--- 2\n",
		"? [a]\n: b\n",
		"\t- x",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tf := newTestFlags(nil)
		tf.fs.origins = map[string]Origin{}
		err := tf.fs.applyYAML("f.yaml", data)
		var fe *FileError
		if err != nil && !errors.As(err, &fe) {
			t.Errorf("%q: error %v is not a *FileError", data, err)
		}
	})
}
