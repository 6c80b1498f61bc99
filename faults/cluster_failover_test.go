package faults

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"firehose/internal/testenv"
	"firehose/stream"
)

// TestClusterFailoverUnderLoad runs firehose on a Redis Cluster of the
// test's own (3 primaries with AOF everysec, a replica each), given one
// cluster URL and detecting the cluster by itself, with 6 shards (2 per
// primary), under a mixed HTTP and MQTT QoS 1 load, and kills the primary of
// shard 0 with SIGKILL. It shows that:
//
//   - while that primary is down, only the readings of its shards are
//     refused: the other primaries' shards are acknowledged throughout, and
//     /readyz answers 200 "degraded" naming the unavailable shards;
//   - the cluster promotes the replica and the same firehose process follows
//     it; the old primary, restarted, rejoins as the new one's replica;
//   - with --redis-min-replicas 1 every reading acknowledged before, during
//     or after the failover landed exactly once;
//   - with 0, what the replica had not received is lost: the test reports
//     how many acknowledged readings that was, and none landed twice.
func TestClusterFailoverUnderLoad(t *testing.T) { foEachMinReplicas(t, cfFailover) }

func cfFailover(t *testing.T, minReplicas int) {
	cluster := testenv.StartRedisCluster(t, 3, 1, "--appendonly", "yes", "--appendfsync", "everysec")
	s, pid := foStartStack(t, cluster.Nodes[0].URL(), minReplicas, "--shards", "6")
	streams := stream.Streams{Prefix: s.Services.Prefix, Count: 6, Layout: stream.LayoutSpread}
	victim := cluster.PrimaryOf(t, streams.Key(0))
	var lost []int
	for i, k := range streams.Keys() {
		if cluster.PrimaryOf(t, k) == victim {
			lost = append(lost, i)
		}
	}

	l := foStartLoad(t, s, scale(20*time.Second, 60*time.Second))

	victim.Kill()
	killed := time.Now()
	var degraded []int
	outWaitFor(t, 10*time.Second, "/readyz did not name the dead primary's shards", func() (bool, string) {
		code, body := cfReadyz(s)
		degraded = body.Unavailable
		return code == http.StatusOK && body.Status == "degraded" && fmt.Sprint(body.Unavailable) == fmt.Sprint(lost),
			fmt.Sprintf("%d %+v, want 200 degraded %v", code, body, lost)
	})
	acceptedThen := outAccepted(t, s)
	outWaitFor(t, 30*time.Second, "the cluster did not promote the replica", func() (bool, string) {
		return cluster.PrimaryOf(t, streams.Key(0)) != victim, "shard 0's primary is the killed node"
	})
	promoted := time.Since(killed)
	duringOutage := outAccepted(t, s) - acceptedThen
	if duringOutage < 200 {
		t.Errorf("%.0f readings acknowledged while one of three primaries was down: the other shards stopped too", duringOutage)
	}
	victim.Restart(t) // rejoins as the promoted replica's replica
	outWaitFor(t, 30*time.Second, "firehose did not take every shard again after the failover", func() (bool, string) {
		code, body := cfReadyz(s)
		return code == http.StatusOK && body.Status == "ok", fmt.Sprintf("%d %+v", code, body)
	})
	resumed := time.Since(killed)

	rep := foCheck(t, s, pid, l, minReplicas)
	t.Logf("Redis Cluster, --redis-min-replicas %d, the primary of shards %v SIGKILLed under load: /readyz named shards %v, "+
		"%.0f readings acknowledged by the other primaries meanwhile, replica promoted after %s, every shard served again after %s; "+
		"acked %d, landed %d rows, missing %d, duplicates of once-acked %d, resent duplicates %d",
		minReplicas, lost, degraded, duringOutage, promoted.Round(10*time.Millisecond), resumed.Round(10*time.Millisecond),
		rep.Send.Acked, rep.Landing.Rows, rep.Landing.Missing, rep.Landing.DupOnceAcked, rep.Landing.DupAfterResend)
}

type cfReady struct {
	Status      string `json:"status"`
	Unavailable []int  `json:"unavailable_shards"`
	Reason      string `json:"reason"`
}

// cfReadyz asks the gateway's /readyz.
func cfReadyz(s *Stack) (int, cfReady) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(s.HTTP() + "/readyz")
	if err != nil {
		return 0, cfReady{Reason: err.Error()}
	}
	defer resp.Body.Close()
	var body cfReady
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}
