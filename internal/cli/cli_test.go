package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestEnvironmentFillsUnsetFlagsExceptCommandLineOnly(t *testing.T) {
	env := map[string]string{"FIREHOSE_BATCH_SIZE": "7", "FIREHOSE_ALL": "true", "FIREHOSE_NAME": "env"}
	for _, tt := range []struct {
		name     string
		args     []string
		wantSize int
		wantAll  bool
		wantName string
	}{
		{name: "environment fills unset flags", wantSize: 7, wantName: "env"},
		{name: "a flag wins", args: []string{"--batch-size", "3", "--name", "flag"}, wantSize: 3, wantName: "flag"},
		{name: "command line only flag set on the command line", args: []string{"--all"}, wantSize: 7, wantAll: true, wantName: "env"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := NewFlagSet("x", "x [flags]", "")
			size := fs.Int("batch-size", 1, "")
			all := fs.Bool("all", false, "")
			name := fs.String("name", "", "")
			fs.CommandLineOnly("all")
			fs.LookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if *size != tt.wantSize || *all != tt.wantAll || *name != tt.wantName {
				t.Errorf("batch-size %d, all %v, name %q; want %d, %v, %q", *size, *all, *name, tt.wantSize, tt.wantAll, tt.wantName)
			}
		})
	}
	fs := NewFlagSet("x", "x [flags]", "")
	fs.Bool("all", false, "every row")
	fs.CommandLineOnly("all")
	var help bytes.Buffer
	fs.PrintHelp(&help)
	if strings.Contains(help.String(), "FIREHOSE_ALL") || !strings.Contains(help.String(), "command line only") {
		t.Errorf("help of a command-line-only flag:\n%s", help.String())
	}
}
