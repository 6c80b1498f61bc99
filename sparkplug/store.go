package sparkplug

import (
	"context"
	"fmt"
	"maps"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Store keeps the state of each edge node (its born metrics, aliases and
// sequence number) as a small map of string fields per node, so the rules of
// Tracker are written once and a store only stores. Calls for one node come
// from one goroutine at a time (one MQTT connection publishes an edge node's
// messages); a store must still be safe for concurrent use across nodes.
// A store does not retry: an error fails the message being handled.
type Store interface {
	// Get returns the fields of node's state that exist among fields.
	Get(ctx context.Context, node string, fields []string) (map[string]string, error)
	// Update deletes del, then sets set, at once. With replace, every other
	// field of node goes too.
	Update(ctx context.Context, node string, replace bool, set map[string]string, del []string) error
	// Clear removes all of node's state.
	Clear(ctx context.Context, node string) error
}

// MemoryStore is a Store in this process's memory: state is lost on restart
// and not shared with other broker instances. For tests and a single broker.
type MemoryStore struct {
	mu    sync.Mutex
	nodes map[string]map[string]string
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{nodes: map[string]map[string]string{}} }

// Get implements Store.
func (s *MemoryStore) Get(_ context.Context, node string, fields []string) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(fields))
	for _, f := range fields {
		if v, ok := s.nodes[node][f]; ok {
			out[f] = v
		}
	}
	return out, nil
}

// Update implements Store.
func (s *MemoryStore) Update(_ context.Context, node string, replace bool, set map[string]string, del []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.nodes[node]
	if h == nil || replace {
		h = map[string]string{}
		s.nodes[node] = h
	}
	for _, f := range del {
		delete(h, f)
	}
	maps.Copy(h, set)
	if len(h) == 0 {
		delete(s.nodes, node)
	}
	return nil
}

// Clear implements Store.
func (s *MemoryStore) Clear(_ context.Context, node string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.nodes, node)
	return nil
}

// RedisStore is a Store in Redis: one hash per edge node at Prefix+node
// ("group/edge_node"), so every broker instance sees the same state and it
// survives a broker restart (as far as Redis persists it). Updates are
// MULTI/EXEC transactions, so a node's state is never half written.
type RedisStore struct {
	rdb    redis.Cmdable
	prefix string
}

// NewRedisStore returns a RedisStore keeping its hashes under prefix (for
// example "firehose:sparkplug:").
func NewRedisStore(rdb redis.Cmdable, prefix string) *RedisStore {
	return &RedisStore{rdb: rdb, prefix: prefix}
}

// Key is the Redis key of node's hash.
func (s *RedisStore) Key(node string) string { return s.prefix + node }

// Get implements Store.
func (s *RedisStore) Get(ctx context.Context, node string, fields []string) (map[string]string, error) {
	out := make(map[string]string, len(fields))
	if len(fields) == 0 {
		return out, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.Key(node), fields...).Result()
	if err != nil {
		return nil, fmt.Errorf("read sparkplug state of %s: %w", node, err)
	}
	for i, v := range vals {
		if str, ok := v.(string); ok {
			out[fields[i]] = str
		}
	}
	return out, nil
}

// Update implements Store.
func (s *RedisStore) Update(ctx context.Context, node string, replace bool, set map[string]string, del []string) error {
	key := s.Key(node)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if replace {
			p.Del(ctx, key)
		} else if len(del) > 0 {
			p.HDel(ctx, key, del...)
		}
		if len(set) > 0 {
			p.HSet(ctx, key, set)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write sparkplug state of %s: %w", node, err)
	}
	return nil
}

// Clear implements Store.
func (s *RedisStore) Clear(ctx context.Context, node string) error {
	if err := s.rdb.Del(ctx, s.Key(node)).Err(); err != nil {
		return fmt.Errorf("clear sparkplug state of %s: %w", node, err)
	}
	return nil
}
