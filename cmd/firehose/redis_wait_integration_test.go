package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"firehose/internal/testcert"
	"firehose/internal/testenv"
)

// TestIntegrationServeWaitsForRedisCluster starts serve against the nodes
// of a Redis Cluster that is not created yet (cluster-enabled nodes that
// know only themselves and serve no slot: what serve meets right after the
// nodes start, or while `redis-cli --cluster create` converges). serve
// waits, saying so, with /readyz answering 503; once the cluster is
// created, it becomes ready by itself and stores readings. With a tiny
// --redis-wait it exits with an error naming the flag.
func TestIntegrationServeWaitsForRedisCluster(t *testing.T) {
	t.Parallel()
	t.Run("waits", func(t *testing.T) {
		t.Parallel()
		cluster := testenv.StartRedisClusterNodes(t, 3)
		pgURL := testenv.Postgres(t)
		addr := freeAddr(t)
		base := "http://" + addr
		p := start(t, "serve", "--postgres", pgURL, "--redis", cluster.Nodes[0].URL(), "--redis-prefix", "fhtest-"+testenv.ID(),
			"--http-addr", addr, "--mqtt-addr", freeAddr(t), "--log-level", "warn", "--batch-age", "50ms", "--redis-wait", "10m")

		// Not ready while the cluster is not formed, and says why.
		testenv.Await(t, func() bool {
			select {
			case <-p.done:
				t.Fatalf("serve exited while the cluster was not formed: %s", p.stderr.String())
			default:
			}
			code, body := getStatus(base + "/readyz")
			return code == http.StatusServiceUnavailable && strings.Contains(body, "redis_not_serving")
		}, "/readyz did not answer 503 redis_not_serving while the cluster was not formed; output: %s", p.stderr)
		if code, _ := getStatus(base + "/livez"); code != http.StatusOK {
			t.Errorf("/livez answered %d while waiting for Redis, want 200", code)
		}
		if code, _ := post(t, base+"/v1/readings", "application/json", "", `{"device_id":"wait-early","reading":1}`); code != http.StatusServiceUnavailable {
			t.Errorf("a reading posted while waiting for Redis was answered %d, want 503", code)
		}
		testenv.Await(t, func() bool { return strings.Contains(p.stderr.String(), "waiting for Redis") },
			"serve did not log what it waits for; output: %s", p.stderr)

		cluster.Create(t, 0)
		testenv.Await(t, func() bool {
			select {
			case <-p.done:
				t.Fatalf("serve exited: %s", p.stderr.String())
			default:
			}
			code, _ := getStatus(base + "/readyz")
			return code == http.StatusOK
		}, "serve did not become ready after the cluster was created; output: %s", p.stderr)
		for i := range 10 {
			if code, body := post(t, base+"/v1/readings", "application/json", "", fmt.Sprintf(`{"device_id":"wait-%d","reading":%d}`, i, i)); code != http.StatusOK {
				t.Fatalf("POST /v1/readings after the cluster formed: %d %s", code, body)
			}
		}
		testenv.Await(t, func() bool {
			return countRows(t, pgURL, "SELECT count(*) FROM readings WHERE starts_with(device_id, 'wait-')") == 10
		}, "the readings did not land")
		if n := countRows(t, pgURL, "SELECT count(*) FROM readings WHERE device_id = 'wait-early'"); n != 0 {
			t.Errorf("the reading refused while waiting landed (%d rows)", n)
		}
	})
	// The gateway serves HTTPS: so does its wait, so that a probe asking
	// over HTTPS (Kubernetes' scheme: HTTPS) gets the 503, not a handshake
	// error that counts as a failed start.
	t.Run("over HTTPS", func(t *testing.T) {
		t.Parallel()
		cluster := testenv.StartRedisClusterNodes(t, 3)
		certFile, keyFile, pool := testcert.SelfSigned(t)
		addr := freeAddr(t)
		p := start(t, "serve", "--postgres", testenv.Postgres(t), "--redis", cluster.Nodes[0].URL(), "--redis-prefix", "fhtest-"+testenv.ID(),
			"--http-addr", addr, "--http-tls-cert", certFile, "--http-tls-key", keyFile, "--mqtt-addr", freeAddr(t),
			"--log-level", "warn", "--redis-wait", "10m")
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		testenv.Await(t, func() bool {
			select {
			case <-p.done:
				t.Fatalf("serve exited while the cluster was not formed: %s", p.stderr.String())
			default:
			}
			resp, err := client.Get("https://" + addr + "/readyz")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), "redis_not_serving")
		}, "/readyz over HTTPS did not answer 503 redis_not_serving while the cluster was not formed; output: %s", p.stderr)
	})
	t.Run("gives up", func(t *testing.T) {
		t.Parallel()
		cluster := testenv.StartRedisClusterNodes(t, 3)
		p := start(t, "serve", "--postgres", testenv.Postgres(t), "--redis", cluster.Nodes[0].URL(), "--redis-prefix", "fhtest-"+testenv.ID(),
			"--http-addr", freeAddr(t), "--mqtt-addr", freeAddr(t), "--log-level", "warn", "--redis-wait", "1s")
		<-p.done // the test's timeout bounds this
		out := p.stderr.String()
		t.Logf("serve: %s", out)
		if p.cmd.ProcessState.ExitCode() != 1 || !strings.Contains(out, "--redis-wait 1s") || !strings.Contains(out, "not serving") {
			t.Errorf("exit %d, output %q; want exit 1 and an error saying Redis is not serving after --redis-wait 1s", p.cmd.ProcessState.ExitCode(), out)
		}
	})
}
