package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestSentinelFailoverUnderLoad runs firehose through Redis Sentinel (a
// primary with AOF everysec, two replicas, one sentinel) under a mixed HTTP
// and MQTT QoS 1 load, lets the replicas fall behind (their replication
// paths, through proxies of the test's, stop forwarding for sfLag, as a
// congested link does), and kills the primary with SIGKILL. It shows that:
//
//   - the sentinel promotes a replica, and the same firehose process follows
//     it (readings are acknowledged again, same pid) without a restart;
//   - with --redis-min-replicas 1, every reading acknowledged before, during
//     or after the failover landed exactly once: each was on a replica before
//     its acknowledgement, so the promoted replica has it (while the replicas
//     lag, callers are refused after --redis-replica-timeout instead);
//   - with 0, what the promoted replica had not received is lost: the test
//     reports how many acknowledged readings that was (docs/guarantees.md's figure),
//     and still none landed twice.
//
// Two replicas, so that the promoted one has a replica of its own and
// --redis-min-replicas 1 can be met after the failover.
func TestSentinelFailoverUnderLoad(t *testing.T) { foEachMinReplicas(t, sfFailover) }

func sfFailover(t *testing.T, minReplicas int) {
	primary := StartRedis(t, false)
	// Each replica replicates through a proxy of the test's, so that the
	// test can make it lag: frozen, the path holds what the primary sent.
	var proxies []*tcpProxy
	var replicas []*RedisServer
	for range 2 {
		px := startTCPProxy(t, fmt.Sprintf("127.0.0.1:%d", primary.Port))
		proxies = append(proxies, px)
		replicas = append(replicas, StartRedis(t, false, "--replicaof", "127.0.0.1", strconv.Itoa(px.Port())))
	}
	sentinel := sfSentinel(t, "fh", primary.Port)
	for _, r := range replicas {
		sfWaitLinked(t, r)
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", sentinel.Port), MaxRetries: -1})
	t.Cleanup(func() { sc.Close() })
	outWaitFor(t, 20*time.Second, "the sentinel did not see both replicas", func() (bool, string) {
		rs, err := sc.Replicas(context.Background(), "fh").Result()
		return err == nil && len(rs) == 2, fmt.Sprintf("replicas: %v %v", rs, err)
	})

	s, pid := foStartStack(t, fmt.Sprintf("redis://127.0.0.1:%d/0", sentinel.Port), minReplicas, "--redis-sentinel-master", "fh")
	l := foStartLoad(t, s, scale(18*time.Second, 45*time.Second))

	// The replicas fall behind: for sfLag nothing reaches them, as across a
	// congested link; then the primary dies and their links drop, losing
	// what was in flight to them.
	for _, px := range proxies {
		px.Freeze()
	}
	acceptedAtFreeze := outAccepted(t, s)
	time.Sleep(sfLag) // the fault: the replicas lag this long
	ackedWhileLagging := outAccepted(t, s) - acceptedAtFreeze
	primary.Kill()
	killed := time.Now()
	for _, px := range proxies {
		px.Cut()
	}
	acceptedAtKill := outAccepted(t, s)
	outWaitFor(t, 30*time.Second, "the sentinel did not promote a replica", func() (bool, string) {
		addr, err := sc.GetMasterAddrByName(context.Background(), "fh").Result()
		return err == nil && len(addr) == 2 && addr[1] != strconv.Itoa(primary.Port), fmt.Sprintf("master: %v %v", addr, err)
	})
	promoted := time.Since(killed)
	outWaitFor(t, 30*time.Second, "firehose did not acknowledge readings again after the failover", func() (bool, string) {
		a := outAccepted(t, s)
		return a > acceptedAtKill+500, fmt.Sprintf("accepted %.0f, at the kill %.0f", a, acceptedAtKill)
	})
	resumed := time.Since(killed)

	rep := foCheck(t, s, pid, l, minReplicas)
	t.Logf("--redis-min-replicas %d, replicas %s behind (%.0f readings acknowledged meanwhile), then the primary SIGKILLed under load: "+
		"replica promoted after %s, acknowledgements again after %s; "+
		"acked %d, landed %d rows, missing (acknowledged, lost by the failover) %d, duplicates of once-acked %d, resent duplicates %d",
		minReplicas, sfLag, ackedWhileLagging, promoted.Round(10*time.Millisecond), resumed.Round(10*time.Millisecond),
		rep.Send.Acked, rep.Landing.Rows, rep.Landing.Missing, rep.Landing.DupOnceAcked, rep.Landing.DupAfterResend)
}

// sfLag is how long the replicas receive nothing before the primary dies.
const sfLag = time.Second

// sfWaitLinked waits until replica r is in sync with its primary.
func sfWaitLinked(t *testing.T, r *RedisServer) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", r.Port), MaxRetries: -1})
	defer c.Close()
	outWaitFor(t, 20*time.Second, "a replica did not link to its primary", func() (bool, string) {
		info, err := c.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up"), fmt.Sprintf("%v", err)
	})
}

// sfSentinel starts a Redis Sentinel (quorum 1) monitoring the primary on
// primaryPort as master, declaring it down after a second of silence.
func sfSentinel(t *testing.T, master string, primaryPort int) *RedisServer {
	t.Helper()
	r := &RedisServer{t: t, Port: FreePort(t), Dir: t.TempDir()}
	conf := filepath.Join(r.Dir, "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\n"+
		"sentinel monitor %s 127.0.0.1 %d 1\nsentinel down-after-milliseconds %s 1000\n"+
		"sentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 2\n",
		r.Port, r.Dir, master, primaryPort, master, master, master)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	r.args = []string{conf, "--sentinel"}
	r.Start()
	return r
}
