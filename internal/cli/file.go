package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ConfigFlag is the flag that names a configuration file (FIREHOSE_CONFIG).
const ConfigFlag = "config"

// FileError is a configuration file refused: where, and why.
type FileError struct {
	File string // the path as given
	Line int    // 1-based; 0 when the error is not on one line
	Msg  string // the reason, naming the key
}

func (e *FileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// Section decodes a top-level key of a configuration file that is not a
// flag (such as rules:). value is the key's YAML node, with its lines; an
// error that is not a *FileError is reported at the key's line, and a
// *FileError without a File gets the file's path.
type Section func(value *yaml.Node) error

// Source says where a flag's value came from.
type Source int

// Sources, from the weakest: a later one wins.
const (
	FromDefault Source = iota
	FromFile
	FromEnvironment
	FromCommandLine
)

// Origin is where a flag's effective value came from.
type Origin struct {
	Source Source
	// Env is the environment variable, when Source is FromEnvironment.
	Env string
	// File and Line locate the key, when Source is FromFile.
	File string
	Line int
}

func (o Origin) String() string {
	switch o.Source {
	case FromFile:
		return fmt.Sprintf("%s:%d", o.File, o.Line)
	case FromEnvironment:
		return o.Env
	case FromCommandLine:
		return "command line"
	}
	return "default"
}

// ConfigFile registers --config (FIREHOSE_CONFIG): a YAML file whose keys
// are the flag names, read below the environment and the command line. The
// flag itself is never a key of the file.
func (f *FlagSet) ConfigFile() {
	f.configPath = f.String(ConfigFlag, "", "YAML `file` of settings: each key a flag's name (batch-size: 5000, roles: [httpgw, bridge]);\n"+
		"the environment and the command line win over it; an unknown key or a bad value is refused naming its line.\n"+
		"Check a file with: firehose config check FILE")
}

// Lists marks flags that take comma-separated lists; a file may also give
// them as YAML sequences.
func (f *FlagSet) Lists(names ...string) {
	if f.lists == nil {
		f.lists = map[string]bool{}
	}
	for _, n := range names {
		f.lists[n] = true
	}
}

// Section reserves the top-level key of the configuration file for decode.
func (f *FlagSet) Section(key string, decode Section) {
	if f.sections == nil {
		f.sections = map[string]Section{}
	}
	f.sections[key] = decode
}

// Origin says where the named flag's value came from; valid after Parse.
func (f *FlagSet) Origin(name string) Origin {
	return f.origins[name]
}

// ConfigPath is the configuration file Parse read, or "".
func (f *FlagSet) ConfigPath() string {
	if f.configPath == nil {
		return ""
	}
	return *f.configPath
}

// scanArgs finds the flags args names, with the last value given to each,
// by flag's own rules (one or two dashes, -name=value or -name value, a
// boolean needs no value, "--" or the first non-flag ends them). It stops at
// what flag.Parse will refuse, which Parse then reports; help says -h or
// -help was asked for.
func (f *FlagSet) scanArgs(args []string) (named map[string]string, help bool) {
	named = map[string]string{}
	for len(args) > 0 {
		a := args[0]
		if len(a) < 2 || a[0] != '-' || a == "--" {
			break
		}
		args = args[1:]
		name := strings.TrimPrefix(a[1:], "-")
		name, value, hasValue := strings.Cut(name, "=")
		fl := f.Lookup(name)
		if fl == nil {
			return named, name == "h" || name == "help"
		}
		if b, ok := fl.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			if !hasValue {
				value = "true"
			}
		} else if !hasValue {
			if len(args) == 0 {
				break
			}
			value, args = args[0], args[1:]
		}
		named[name] = value
	}
	return named, false
}

// applyFile reads the configuration file path and sets every flag it names.
func (f *FlagSet) applyFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read configuration file: %w", err)
	}
	return f.applyYAML(path, data)
}

// applyYAML sets every flag the configuration file's text data names.
func (f *FlagSet) applyYAML(path string, data []byte) error {
	root, err := parseYAML(path, data)
	if err != nil || root == nil {
		return err
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		fail := func(line int, format string, args ...any) error {
			return &FileError{File: path, Line: line, Msg: fmt.Sprintf(format, args...)}
		}
		if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
			return fail(k.Line, "a key must be a flag's name, such as batch-size")
		}
		key := k.Value
		if prev, dup := seen[key]; dup {
			return fail(k.Line, "%s is already set on line %d", key, prev)
		}
		seen[key] = k.Line
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if decode, ok := f.sections[key]; ok {
			if err := decode(v); err != nil {
				var fe *FileError
				if errors.As(err, &fe) {
					if fe.File == "" {
						fe.File = path
					}
					return err
				}
				return fail(k.Line, "%s: %v", key, err)
			}
			continue
		}
		fl := f.Lookup(key)
		switch {
		case fl == nil:
			return fail(k.Line, "unknown key %s%s", key, f.suggest(key, v))
		case key == ConfigFlag:
			return fail(k.Line, "config names this file: give it with --config or %s, not inside it", EnvName(ConfigFlag))
		case f.noEnv[key]:
			return fail(k.Line, "%s is a choice of one run: give it on the command line (--%s)", key, key)
		}
		s, err := f.scalar(key, v)
		if err != nil {
			return fail(v.Line, "%s: %v", key, err)
		}
		if err := f.Set(key, s); err != nil {
			return fail(v.Line, "%s: invalid value %q: %s", key, s, valueHint(fl, err))
		}
		f.origins[key] = Origin{Source: FromFile, File: path, Line: k.Line}
	}
	return nil
}

// yamlLine finds the line in yaml.v3's error messages.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// parseYAML parses a file of one YAML document whose top level is a
// mapping; an empty file (or one of comments only) is nil.
func parseYAML(path string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = err.Error()[len(m[0]):]
		}
		return nil, &FileError{File: path, Line: line, Msg: "not valid YAML: " + msg}
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, &FileError{File: path, Line: next.Line, Msg: "a second YAML document (---): put every setting in one"}
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, &FileError{File: path, Line: root.Line, Msg: fmt.Sprintf("want a mapping of flag names to values (batch-size: 5000), got %s", kindName(root))}
	}
	return root, nil
}

// scalar is the text a flag's Set gets for the YAML value v: a scalar as
// written, or, for a list flag, a sequence of scalars joined by commas.
func (f *FlagSet) scalar(key string, v *yaml.Node) (string, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return "", fmt.Errorf(`no value: write "" for an empty one`)
		}
		return v.Value, nil
	case yaml.SequenceNode:
		if !f.lists[key] {
			return "", fmt.Errorf("want a single value, got a list")
		}
		items := make([]string, 0, len(v.Content))
		for _, it := range v.Content {
			if it.Kind == yaml.AliasNode {
				it = it.Alias
			}
			if it.Kind != yaml.ScalarNode || it.Tag == "!!null" {
				return "", fmt.Errorf("want a list of values, got %s on line %d", kindName(it), it.Line)
			}
			items = append(items, it.Value)
		}
		return strings.Join(items, ","), nil
	}
	want := "a single value"
	if f.lists[key] {
		want += " or a list"
	}
	return "", fmt.Errorf("want %s, got %s", want, kindName(v))
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "no value"
		}
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "an alias"
}

// valueHint says what a flag wants, in place of flag's "parse error".
func valueHint(fl *flag.Flag, err error) string {
	g, ok := fl.Value.(flag.Getter)
	if !ok || !strings.Contains(err.Error(), "parse error") {
		return err.Error()
	}
	switch g.Get().(type) {
	case bool:
		return "want true or false"
	case time.Duration:
		return "want a duration such as 200ms, 15s or 1h"
	case int, int64, uint, uint64:
		return "want a whole number"
	case float64:
		return "want a number"
	}
	return err.Error()
}

// suggest names the flag an unknown key probably meant, as ": did you mean
// ...?", or "".
func (f *FlagSet) suggest(key string, v *yaml.Node) string {
	var names []string
	f.VisitAll(func(fl *flag.Flag) {
		if fl.Name != ConfigFlag && !f.noEnv[fl.Name] {
			names = append(names, fl.Name)
		}
	})
	for k := range f.sections {
		names = append(names, k)
	}
	// A nested mapping (mqtt: {addr: ...}) where the file is flat.
	if v.Kind == yaml.MappingNode && len(v.Content) > 0 {
		if sub := key + "-" + v.Content[0].Value; slices.Contains(names, sub) {
			return fmt.Sprintf(": keys are flag names, not nested: write %s: ...", sub)
		}
	}
	norm := strings.ToLower(strings.ReplaceAll(strings.TrimLeft(key, "-"), "_", "-"))
	best, bestD, ties := "", 0, 0
	for _, n := range names {
		if n == norm || EnvName(n) == key {
			return fmt.Sprintf(": did you mean %s?", n)
		}
		d := distance(norm, n)
		switch {
		case best == "" || d < bestD:
			best, bestD, ties = n, d, 0
		case d == bestD:
			ties++
		}
	}
	if best != "" && ties == 0 && bestD <= max(1, len(norm)/4) {
		return fmt.Sprintf(": did you mean %s?", best)
	}
	return " (keys are the flags of firehose serve --help, without the dashes)"
}

// distance is the Levenshtein distance of a and b, in bytes.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
