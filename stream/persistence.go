package stream

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisPersistence is what a Redis server promises about the entries it
// confirmed: whether they survive a restart, and whether memory pressure can
// delete them. firehose acknowledges a reading once Redis confirmed its entry,
// so these settings decide what an acknowledgement is worth until the bridge
// has committed it.
type RedisPersistence struct {
	AOF    bool   // appendonly yes
	Fsync  string // appendfsync: always, everysec or no; "" when CONFIG GET is refused (managed Redis)
	RDB    bool   // snapshots are configured (save is not empty); false when unknown
	Policy string // maxmemory-policy, e.g. noeviction
	// Replicas is how many replicas are connected to the server (INFO
	// replication connected_slaves).
	Replicas int
}

// InspectRedis reads the persistence and eviction settings of the server rdb
// talks to, from INFO (always allowed) and CONFIG GET (often refused by
// managed Redis: then Fsync and RDB stay unknown).
func InspectRedis(ctx context.Context, rdb redis.UniversalClient) (RedisPersistence, error) {
	var p RedisPersistence
	info, err := rdb.Info(ctx, "persistence", "memory", "replication").Result()
	if err != nil {
		return p, fmt.Errorf("read redis INFO persistence, memory and replication: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch k {
		case "aof_enabled":
			p.AOF = v == "1"
		case "maxmemory_policy":
			p.Policy = v
		case "connected_slaves":
			p.Replicas, _ = strconv.Atoi(v)
		}
	}
	if p.Policy == "" {
		return p, fmt.Errorf("redis INFO memory has no maxmemory_policy: cannot tell whether Redis may evict streams")
	}
	if cfg, err := rdb.ConfigGet(ctx, "appendfsync").Result(); err == nil {
		p.Fsync = cfg["appendfsync"]
	}
	if cfg, err := rdb.ConfigGet(ctx, "save").Result(); err == nil {
		p.RDB = strings.TrimSpace(cfg["save"]) != ""
	}
	return p, nil
}

// Evicting reports whether Redis may delete keys under memory pressure. Any
// policy but noeviction is refused by firehose serve unless the operator says
// otherwise (--redis-allow-eviction): an allkeys-* policy deletes whole
// streams of acknowledged readings without a word, and a volatile-* policy
// would too the day a key gets a TTL.
func (p RedisPersistence) Evicting() bool { return p.Policy != "noeviction" }

// Risks says, in an operator's words, how this Redis can lose readings that
// were acknowledged but not yet committed to PostgreSQL; nil when it cannot
// short of losing the disk.
func (p RedisPersistence) Risks() []string {
	var risks []string
	switch {
	case !p.AOF && p.RDB:
		risks = append(risks, "Redis persists by RDB snapshots only (appendonly no): after a crash or kill, readings acknowledged since the last snapshot and not yet committed are lost (those already committed are never written twice); set appendonly yes")
	case !p.AOF:
		risks = append(risks, "Redis runs without appendonly (and without known snapshots): readings acknowledged but not yet committed to PostgreSQL are lost if Redis restarts; set appendonly yes")
	case p.Fsync == "everysec":
		risks = append(risks, "Redis appendfsync everysec: after a power loss or kernel crash up to about a second of acknowledged, uncommitted readings can be lost (a killed redis-server loses nothing); appendfsync always closes that window")
	case p.Fsync == "no":
		risks = append(risks, "Redis appendfsync no: after a power loss or kernel crash up to about 30 s of acknowledged, uncommitted readings can be lost; use everysec or always")
	}
	if p.Evicting() {
		risks = append(risks, fmt.Sprintf("Redis maxmemory-policy %s may evict keys: under memory pressure whole streams of acknowledged readings can be deleted; set maxmemory-policy noeviction (firehose refuses work before memory runs out, see --high-water)", p.Policy))
	}
	return risks
}

// ReplicaRisks says how replication affects what an acknowledgement is worth
// when minReplicas replicas must confirm each write (--redis-min-replicas).
func (p RedisPersistence) ReplicaRisks(minReplicas int) []string {
	switch {
	case minReplicas > p.Replicas:
		return []string{fmt.Sprintf("--redis-min-replicas %d but the Redis primary has %d replica(s) connected: every write is refused (503 / 0x97) until enough replicas connect", minReplicas, p.Replicas)}
	case minReplicas == 0 && p.Replicas > 0:
		return []string{fmt.Sprintf("Redis has %d replica(s) but --redis-min-replicas is 0: readings are acknowledged on the primary's word, and a failover loses those its replicas had not received yet; --redis-min-replicas 1 waits for one replica per round trip", p.Replicas)}
	}
	return nil
}

// CheckRedisPersistence says at start how Redis can lose acknowledged
// readings (a warning each), and refuses a Redis that may evict keys unless
// the operator accepted it with --redis-allow-eviction. A Redis that refuses
// INFO is refused too: firehose cannot tell what an acknowledgement is worth.
// On a cluster every primary is asked, and its warnings name it.
func CheckRedisPersistence(ctx context.Context, rdb redis.UniversalClient, allowEviction bool, minReplicas int, log *slog.Logger) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return checkNodePersistence(pctx, rdb, "", allowEviction, minReplicas, log)
	}
	return cc.ForEachMaster(pctx, func(ctx context.Context, node *redis.Client) error {
		return checkNodePersistence(ctx, node, node.Options().Addr, allowEviction, minReplicas, log)
	})
}

// CheckDedupSupport refuses a Redis that cannot run --dedup's script: it
// asks every primary for SMISMEMBER (Redis 6.2), which the script calls.
func CheckDedupSupport(ctx context.Context, rdb redis.UniversalClient) error {
	check := func(ctx context.Context, node redis.UniversalClient, where string) error {
		v, err := node.Do(ctx, "COMMAND", "INFO", "SMISMEMBER").Slice()
		if err != nil {
			return fmt.Errorf("%s: ask for SMISMEMBER (--dedup): %w", where, err)
		}
		if len(v) != 1 || v[0] == nil {
			return fmt.Errorf("%s has no SMISMEMBER: --dedup needs Redis 6.2 or newer; upgrade Redis or run --dedup off", where)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return check(ctx, node, "redis cluster node "+node.Options().Addr)
		})
	}
	return check(ctx, rdb, "redis")
}

// checkNodePersistence is CheckRedisPersistence for one primary; addr, when
// not "", names it in what it says.
func checkNodePersistence(ctx context.Context, rdb redis.UniversalClient, addr string, allowEviction bool, minReplicas int, log *slog.Logger) error {
	p, err := InspectRedis(ctx, rdb)
	if err != nil {
		if addr != "" {
			return fmt.Errorf("cluster node %s: %w", addr, err)
		}
		return err
	}
	if p.Evicting() && !allowEviction {
		where := "redis"
		if addr != "" {
			where = "redis cluster node " + addr
		}
		return fmt.Errorf("%s maxmemory-policy is %s: under memory pressure Redis would delete streams of acknowledged readings; "+
			"set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf), "+
			"or start with --redis-allow-eviction to accept that risk", where, p.Policy)
	}
	for _, r := range append(p.Risks(), p.ReplicaRisks(minReplicas)...) {
		if addr != "" {
			log.Warn(r, "node", addr)
		} else {
			log.Warn(r)
		}
	}
	return nil
}
