package testenv

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a throwaway Redis Cluster of one test: redis-server nodes
// with --cluster-enabled on free loopback ports, joined by
// `redis-cli --cluster create`. Its nodes are killed when the test ends.
type RedisCluster struct {
	Nodes []*RedisServer // primaries first, then their replicas
}

// StartRedisCluster starts primaries*(1+replicas) nodes (args follow each
// node's defaults, see StartRedisServer), creates a cluster of them with the
// slots split evenly over the primaries, and waits until every node says the
// cluster is ok. The nodes declare a silent peer failed after 1 s
// (cluster-node-timeout), so a killed primary's replica takes over within a
// few seconds, and the others keep serving their slots meanwhile
// (cluster-require-full-coverage no, as docs/operations.md advises). It skips the test under -short or without redis-server and
// redis-cli.
func StartRedisCluster(t testing.TB, primaries, replicas int, args ...string) *RedisCluster {
	t.Helper()
	c := StartRedisClusterNodes(t, primaries*(1+replicas), args...)
	c.Create(t, replicas)
	return c
}

// StartRedisClusterNodes starts n redis-server nodes with --cluster-enabled
// and the settings of StartRedisCluster, each knowing only itself and
// serving no slot: Create joins them. It skips the test under -short or
// without redis-server and redis-cli.
func StartRedisClusterNodes(t testing.TB, n int, args ...string) *RedisCluster {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil && !testing.Short() {
		t.Skip("redis-cli is not installed")
	}
	c := &RedisCluster{}
	for range n {
		c.Nodes = append(c.Nodes, startRedisServer(t, true, append([]string{"--cluster-enabled", "yes",
			"--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
			"--cluster-require-full-coverage", "no"}, args...)))
	}
	return c
}

// Create joins the nodes into a cluster (`redis-cli --cluster create`, with
// replicas per primary), and waits until every node says the cluster is ok.
func (c *RedisCluster) Create(t testing.TB, replicas int) {
	t.Helper()
	create := []string{"--cluster", "create"}
	for _, n := range c.Nodes {
		create = append(create, n.Addr())
	}
	create = append(create, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command("redis-cli", create...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(create, " "), err, out)
	}
	Eventually(t, 30*time.Second, func() bool { return c.ok(replicas) }, "the Redis Cluster on %s did not become ok", c.URL())
}

// ok reports whether every live node says cluster_state:ok and knows every
// other node, every replica is linked to its primary, and every primary has
// its replicas.
func (c *RedisCluster) ok(replicas int) bool {
	for _, n := range c.Nodes {
		select {
		case <-n.done:
			continue // killed by the test
		default:
		}
		rdb := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := rdb.ClusterInfo(ctx).Result()
		repl, rerr := rdb.Info(ctx, "replication").Result()
		cancel()
		rdb.Close()
		if err != nil || rerr != nil || !strings.Contains(info, "cluster_state:ok") ||
			!strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(len(c.Nodes))+"\r\n") {
			return false
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return false
		}
		if strings.Contains(repl, "role:master") && !strings.Contains(repl, "connected_slaves:"+strconv.Itoa(replicas)+"\r\n") {
			return false
		}
	}
	return true
}

// URL is a cluster URL naming every node (go-redis's form,
// redis://node1?addr=node2&addr=node3...).
func (c *RedisCluster) URL() string {
	u := "redis://" + c.Nodes[0].Addr()
	for i, n := range c.Nodes[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + n.Addr()
	}
	return u
}

// Client is a cluster client of the test (no retries, one dial per attempt,
// as firehose's), closed when the test ends.
func (c *RedisCluster) Client(t testing.TB) *redis.ClusterClient {
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.Addr())
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// PrimaryOf is the node serving key's slot now, as the first live node
// asked (CLUSTER KEYSLOT, CLUSTER SLOTS) says.
func (c *RedisCluster) PrimaryOf(t testing.TB, key string) *RedisServer {
	t.Helper()
	for _, n := range c.Nodes {
		select {
		case <-n.done:
			continue
		default:
		}
		rdb := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		slot, err := rdb.ClusterKeySlot(ctx, key).Result()
		slots, serr := rdb.ClusterSlots(ctx).Result()
		cancel()
		rdb.Close()
		if err != nil || serr != nil {
			continue
		}
		for _, r := range slots {
			if int64(r.Start) <= slot && slot <= int64(r.End) && len(r.Nodes) > 0 {
				for _, m := range c.Nodes {
					if m.Addr() == r.Nodes[0].Addr {
						return m
					}
				}
				t.Fatalf("primary of %s is %s, not a node of this cluster", key, r.Nodes[0].Addr)
			}
		}
	}
	t.Fatalf("no live node of the cluster names the primary of %s", key)
	return nil
}
