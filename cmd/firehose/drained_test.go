package main

import (
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"

	"firehose/internal/testenv"
)

// waitDrained waits until the bridge of p, a firehose serve of this
// package's tests on the test Redis, has committed every entry written to
// its deployment's streams so far (testenv.WaitDrained). A test that
// counts rows after it sees every row that will ever land of what was sent
// before: no sleep "for a late duplicate to show".
func waitDrained(t *testing.T, p *proc, pgURL string) {
	t.Helper()
	i := slices.Index(p.cmd.Args, "--redis-prefix")
	if i < 0 || i+1 >= len(p.cmd.Args) {
		t.Fatalf("waitDrained: %v has no --redis-prefix", p.cmd.Args)
	}
	opt, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	testenv.WaitDrained(t, rdb, pgURL, testenv.StreamKeys(t, rdb, p.cmd.Args[i+1]))
}
