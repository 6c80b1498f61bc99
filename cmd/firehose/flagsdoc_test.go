package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// updateFlagsDoc rewrites docs/flags.md from the binary's flags:
//
//	go test ./cmd/firehose -run TestFlagsDoc -update
var updateFlagsDoc = flag.Bool("update", false, "rewrite docs/flags.md from the commands' --help")

const flagsDocPath = "../../docs/flags.md"

// flagsDocCommands are the commands with flags, in the order docs/flags.md
// lists them; serve first, since the others are written as their
// difference from it.
var flagsDocCommands = [][]string{
	{"serve"}, {"config", "check"}, {"migrate"}, {"status"}, {"rejected", "list"}, {"rejected", "replay"},
	{"demo"}, {"simulate"}, {"devices", "add"},
}

// flagsDocWithout are the commands of the usage text that take no flags.
var flagsDocWithout = []string{"apikey", "mqttpasswd", "version"}

// TestFlagsDocMatchesBinary checks that docs/flags.md is what the commands'
// --help say, as TestComposeMatchesBinary checks compose.yaml: a flag added,
// renamed or given another default or help text changes the help, and this
// test fails until the page is regenerated.
func TestFlagsDocMatchesBinary(t *testing.T) {
	for _, line := range strings.Split(usage, "\n") {
		m := regexp.MustCompile(`^  firehose (\S+)`).FindStringSubmatch(line)
		if m == nil || slices.Contains(flagsDocWithout, m[1]) || slices.ContainsFunc(flagsDocCommands, func(c []string) bool { return c[0] == m[1] }) {
			continue
		}
		t.Errorf("command %q of the usage text is neither in flagsDocCommands nor in flagsDocWithout", m[1])
	}
	want, err := flagsDoc()
	if err != nil {
		t.Fatal(err)
	}
	if *updateFlagsDoc {
		if err := os.WriteFile(flagsDocPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(flagsDocPath)
	if err != nil {
		t.Fatalf("%v; generate it with: go test ./cmd/firehose -run TestFlagsDoc -update", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		i := 0
		for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
			i++
		}
		t.Fatalf("docs/flags.md differs from the commands' --help from its line %d:\n  docs/flags.md: %q\n  --help:        %q\n"+
			"regenerate it with: go test ./cmd/firehose -run TestFlagsDoc -update", i+1, at(gl, i), at(wl, i))
	}
}

func at(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return "(end of text)"
}

// helpText is a command's --help split into its head (synopsis, about, the
// line introducing the flags) and one entry per flag, by name.
type helpText struct {
	head    []string
	names   []string
	entries map[string]string
}

func commandHelp(args []string) (helpText, error) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), append(slices.Clone(args), "--help"), &out, &errOut); code != 0 {
		return helpText{}, fmt.Errorf("firehose %s --help: exit %d: %s", strings.Join(args, " "), code, errOut.String())
	}
	h := helpText{entries: map[string]string{}}
	name := ""
	for _, line := range strings.Split(strings.TrimRight(out.String()+errOut.String(), "\n"), "\n") {
		if m := regexp.MustCompile(`^  --([a-z0-9-]+)`).FindStringSubmatch(line); m != nil {
			name = m[1]
			h.names = append(h.names, name)
			h.entries[name] = line
			continue
		}
		if name == "" {
			h.head = append(h.head, line)
			continue
		}
		h.entries[name] += "\n" + line
	}
	if len(h.names) == 0 {
		return helpText{}, fmt.Errorf("firehose %s --help lists no flags", strings.Join(args, " "))
	}
	return h, nil
}

// flagsDoc renders docs/flags.md: serve's --help whole, then each other
// command's head and the flags it does not share, word for word, with serve.
func flagsDoc() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Flags\n\n" +
		"<!-- Generated from the commands' --help by `go test ./cmd/firehose -run TestFlagsDoc -update`; do not edit.\n" +
		"     TestFlagsDocMatchesBinary fails when this page and the binary disagree. -->\n\n" +
		"Every flag of every command, as `firehose <command> --help` prints it: its help, its default, and the\n" +
		"environment variable that sets it when the command line does not. serve's flags are also keys of its\n" +
		"`--config` file ([configuration.md](configuration.md)). The other commands list the flags they do not\n" +
		"share with serve, then name those they do.\n")
	var serve helpText
	for i, args := range flagsDocCommands {
		h, err := commandHelp(args)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			serve = h
		}
		fmt.Fprintf(&b, "\n## firehose %s\n\n```text\n%s\n", strings.Join(args, " "), strings.Join(h.head, "\n"))
		var shared []string
		for _, n := range h.names {
			if i > 0 && serve.entries[n] == h.entries[n] {
				shared = append(shared, "--"+n)
				continue
			}
			b.WriteString(h.entries[n] + "\n")
		}
		b.WriteString("```\n")
		var missing []string
		for _, n := range serve.names {
			if !slices.Contains(h.names, n) {
				missing = append(missing, "--"+n)
			}
		}
		switch {
		case len(shared) > 0 && len(missing) == 0:
			b.WriteString("\nAnd every flag of [serve](#firehose-serve), the same.\n")
		case len(shared) > len(serve.names)/2:
			fmt.Fprintf(&b, "\nAnd every other flag of [serve](#firehose-serve), the same, but `%s`.\n", strings.Join(missing, "`, `"))
		case len(shared) > 0:
			fmt.Fprintf(&b, "\nAnd these of [serve](#firehose-serve), the same: `%s`.\n", strings.Join(shared, "`, `"))
		}
	}
	return b.Bytes(), nil
}
