package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"firehose/ingest"
	"firehose/internal/testenv"
)

// getStatus answers a GET's status and body ("" and 0 when nothing answered).
func getStatus(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestIntegrationEdgesServeWhilePostgresDown: PostgreSQL is not needed by the
// edges. A gateway-and-broker process pointed at a database nobody listens on
// starts, is ready and stores readings in Redis; so does the whole stack,
// whose bridge waits for PostgreSQL, and both stop cleanly on SIGTERM.
func TestIntegrationEdgesServeWhilePostgresDown(t *testing.T) {
	t.Parallel()
	rdb, _ := testenv.Redis(t)
	deadPG := "postgres://" + freeAddr(t) + "/firehose?connect_timeout=1"
	for _, roles := range []string{"httpgw,broker", "httpgw,broker,bridge"} {
		t.Run(roles, func(t *testing.T) {
			prefix := "fhtest-nopg-" + testenv.ID()
			addr := freeAddr(t)
			base := "http://" + addr
			p := start(t, stackArgs(t, deadPG, prefix, addr, "--roles", roles)...)
			waitReady(t, p, base)
			for i := range 5 {
				if code, body := post(t, base+"/v1/readings", "application/json", "",
					fmt.Sprintf(`{"device_id":"nopg","reading":%d}`, i)); code != http.StatusOK {
					t.Fatalf("POST with PostgreSQL down: %d %s", code, body)
				}
			}
			n := int64(0)
			keys, err := rdb.Keys(t.Context(), prefix+"*").Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				msgs, err := rdb.XRange(t.Context(), k, "-", "+").Result()
				if err != nil { // not a stream (the shards' metadata)
					continue
				}
				for _, m := range msgs {
					rs, err := ingest.DecodeEntry(m.Values)
					if err != nil {
						t.Fatalf("entry %s of %s: %v", m.ID, k, err)
					}
					n += int64(len(rs))
				}
			}
			t.Cleanup(func() { rdb.Del(context.Background(), keys...) })
			if n != 5 {
				t.Errorf("%d entries in Redis, want the 5 acknowledged", n)
			}
			if code, _ := getStatus(base + "/health/db"); code != http.StatusServiceUnavailable {
				t.Errorf("/health/db with PostgreSQL down = %d, want 503", code)
			}
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			if code, ok := p.wait(20 * time.Second); !ok || code != 0 {
				t.Fatalf("SIGTERM: exited %v with %d; output: %s", ok, code, p.stderr.String())
			}
			if strings.Contains(roles, "bridge") && !strings.Contains(p.stderr.String(), "PostgreSQL is not reachable at start") {
				t.Errorf("no warning that PostgreSQL is down; output: %s", p.stderr.String())
			}
		})
	}
}

// TestIntegrationBrokerOnlyReadiness: the admin endpoint of a broker-only
// process tells the truth: 503 redis_unavailable while its Redis is down,
// 200 once it is back, and 503 shutting_down for the whole --shutdown-delay
// after SIGTERM, while the process keeps running; a second SIGTERM ends it.
func TestIntegrationBrokerOnlyReadiness(t *testing.T) {
	t.Parallel()
	rs := testenv.StartRedisServer(t)
	admin := "http://" + freeAddr(t)
	p := start(t, "serve", "--roles", "broker", "--redis", rs.URL(), "--redis-prefix", "fhtest-"+testenv.ID(),
		"--mqtt-addr", "127.0.0.1:0", "--admin-addr", strings.TrimPrefix(admin, "http://"),
		"--shutdown-delay", "1m", "--log-level", "warn")
	readyz := func() (int, string) { return getStatus(admin + "/readyz") }
	testenv.Eventually(t, 15*time.Second, func() bool { c, _ := readyz(); return c == 200 },
		"broker-only /readyz not 200; output: %s", p.stderr.String())

	rs.Pause()
	testenv.Eventually(t, 15*time.Second, func() bool {
		c, b := readyz()
		return c == 503 && strings.Contains(b, "redis_unavailable")
	}, "/readyz did not answer 503 redis_unavailable with Redis stalled")
	rs.Resume()
	testenv.Eventually(t, 15*time.Second, func() bool { c, _ := readyz(); return c == 200 },
		"/readyz not 200 again after Redis resumed")

	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	testenv.Eventually(t, 10*time.Second, func() bool {
		c, b := readyz()
		var a struct{ Reason string }
		_ = json.Unmarshal([]byte(b), &a)
		return c == 503 && a.Reason == "shutting_down"
	}, "/readyz did not answer 503 shutting_down during the shutdown delay")
	time.Sleep(300 * time.Millisecond) // a deliberate gap: a minute's delay must not end within it
	p.endShutdownDelay()
}

// TestIntegrationEvictingRedisRefused: a Redis that may evict keys could
// delete streams of acknowledged readings, so serve refuses it, saying what
// to do, unless --redis-allow-eviction; a Redis without AOF is warned about.
func TestIntegrationEvictingRedisRefused(t *testing.T) {
	t.Parallel()
	rs := testenv.StartRedisServer(t, "--maxmemory-policy", "allkeys-lru")
	args := []string{"serve", "--roles", "httpgw", "--redis", rs.URL(), "--redis-prefix", "fhtest-" + testenv.ID(),
		"--postgres", "postgres://" + freeAddr(t) + "/firehose", "--log-level", "warn"}
	p := start(t, append(args, "--http-addr", freeAddr(t))...)
	code, ok := p.wait(20 * time.Second)
	if out := p.stderr.String(); !ok || code != 1 || !strings.Contains(out, "allkeys-lru") || !strings.Contains(out, "--redis-allow-eviction") {
		t.Fatalf("with allkeys-lru: exited %v with %d, output %q; want exit 1 naming the policy and the flag", ok, code, out)
	}
	addr := freeAddr(t)
	p = start(t, append(args, "--http-addr", addr, "--redis-allow-eviction")...)
	waitReady(t, p, "http://"+addr)
	out := p.stderr.String()
	if !strings.Contains(out, "may evict keys") || !strings.Contains(out, "without appendonly") {
		t.Errorf("accepted eviction without the warnings; output: %s", out)
	}
}
