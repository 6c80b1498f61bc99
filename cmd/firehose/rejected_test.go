package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRejectedUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"rejected"}, "name a subcommand"},
		{"unknown subcommand", []string{"rejected", "purge"}, `unknown subcommand "purge"`},
		{"replay of nothing", []string{"rejected", "replay"}, "--id N"},
		{"id and all", []string{"rejected", "replay", "--id", "1", "--all"}, "exclude each other"},
		{"bad id", []string{"rejected", "replay", "--id", "7,x"}, `"x" is not a row id`},
		{"zero id", []string{"rejected", "replay", "--id", "0"}, `"0" is not a row id`},
		{"reading with two ids", []string{"rejected", "replay", "--id", "1,2", "--reading", "{}"}, "exactly one --id"},
		{"reading with all", []string{"rejected", "replay", "--all", "--reading", "{}"}, "exactly one --id"},
		{"since with ids", []string{"rejected", "replay", "--id", "1", "--since", "1h"}, "--since applies to --all"},
		{"bad since", []string{"rejected", "list", "--since", "yesterday"}, `--since "yesterday"`},
		{"negative limit", []string{"rejected", "list", "--limit", "-1"}, "--limit -1"},
		{"argument", []string{"rejected", "list", "17"}, "row ids go in --id"},
		{"bad shards", []string{"rejected", "list", "--shards", "0"}, "--shards 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(context.Background(), tc.args, &out, &errOut); code != 2 {
				t.Errorf("exit code %d, want 2; stderr: %s", code, errOut.String())
			}
			if !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("stderr %q does not contain %q", errOut.String(), tc.want)
			}
		})
	}
}

func TestRejectedHelpNamesFlagsAndEnvironment(t *testing.T) {
	for _, sub := range []string{"list", "replay"} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), []string{"rejected", sub, "--help"}, &out, &errOut); code != 0 {
			t.Fatalf("rejected %s --help: exit %d", sub, code)
		}
		for _, want := range []string{"--postgres", "FIREHOSE_POSTGRES_URL", "--redis-prefix", "FIREHOSE_REDIS_PREFIX", "--shards", "--since"} {
			if !strings.Contains(errOut.String(), want) {
				t.Errorf("rejected %s --help does not mention %s", sub, want)
			}
		}
	}
}
