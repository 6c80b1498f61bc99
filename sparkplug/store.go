package sparkplug

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Store keeps the state of each edge node (its born metrics, aliases and
// sequence number) as a small map of string fields per node, so the rules of
// Tracker are written once and a store only stores. Every change is one
// atomic Write: a birth replaces the state, and any later change applies
// only while the state is still the one its caller read (Write.If), so a
// death or a message of an earlier session, handled on another goroutine
// or broker instance, never changes a later session's state. A store is
// safe for concurrent use. It does not retry: an error fails the message
// being handled.
//
// A store also keeps the account that bounds the state: each node's size
// (about the bytes of its fields and values), the total, which owner (MQTT
// credential) each node counts against, and when the state of a node whose
// session ended expires (see Expire and Sweep).
type Store interface {
	// Get returns the fields of node's state that exist among fields.
	Get(ctx context.Context, node string, fields []string) (map[string]string, error)
	// Write applies w to node's state at once, or not at all, and says which.
	Write(ctx context.Context, node string, w Write) (Outcome, error)
	// Throttle reports whether a Rebirth request for node may go out at now:
	// true, and recorded, unless one went out less than interval before.
	// A birth of the node forgets the record.
	Throttle(ctx context.Context, node string, now time.Time, interval time.Duration) (bool, error)
	// Expire ends node's state ttl after now, if session is still its live
	// session (a birth in between makes it live again, without expiry).
	Expire(ctx context.Context, node, session string, now time.Time, ttl time.Duration) (bool, error)
	// Sweep removes the states expired at now and returns the account.
	Sweep(ctx context.Context, now time.Time) (Stats, error)
}

// Write is one atomic change of an edge node's state.
type Write struct {
	// Birth replaces the whole state with Set (Del and If are ignored),
	// counted against Owner's nodes: a birth of a node new to Owner while
	// Owner has MaxNodes nodes with state is refused (OutcomeQuota). The
	// state no longer expires.
	Birth bool
	// Clear removes the whole state (Set and Del are ignored), if If holds.
	Clear bool
	// If lists fields and the values they must hold for the write to
	// apply; a Write other than a birth needs one (a state that does not
	// exist holds none, so such a write never creates one).
	If map[string]string
	// Del deletes fields, then Set sets fields.
	Del []string
	Set map[string]string
	// Owner is the credential a birth counts against.
	Owner string
	// MaxNodes is the most nodes Owner may have state for (0: no limit).
	MaxNodes int
	// MaxBytes is the largest size the node's state may reach (0: no
	// limit): a write past it is refused (OutcomeTooLarge).
	MaxBytes int64
}

// Outcome is what a Write did.
type Outcome int

// Outcomes of a Write.
const (
	// OutcomeApplied: the write took effect.
	OutcomeApplied Outcome = 1
	// OutcomeStale: If did not hold (or there is no state): nothing changed.
	OutcomeStale Outcome = 0
	// OutcomeQuota: a birth refused, its owner has MaxNodes other nodes.
	OutcomeQuota Outcome = -1
	// OutcomeTooLarge: the state would exceed MaxBytes: nothing changed.
	OutcomeTooLarge Outcome = -2
)

// Stats is the account of the state a Store keeps.
type Stats struct {
	Nodes int64 // edge nodes with state, live or expiring
	Bytes int64 // their size, as fieldSize counts it
}

// fieldSize is what one field of a node's state counts for: its name, its
// value and 16 bytes of overhead (Redis keeps a small hash as a listpack of
// about that much more; a large one as a dict of more).
func fieldSize(f, v string) int64 { return int64(len(f) + len(v) + 16) }

// stateSize is the size a state of these fields counts for.
func stateSize(fields map[string]string) int64 {
	var n int64
	for f, v := range fields {
		n += fieldSize(f, v)
	}
	return n
}

// MemoryStore is a Store in this process's memory: state is lost on restart
// and not shared with other broker instances. For tests and a single broker.
type MemoryStore struct {
	mu      sync.Mutex
	nodes   map[string]*memNode
	owners  map[string]map[string]bool // owner -> its nodes
	asked   map[string]time.Time       // node -> last Rebirth request
	expires map[string]time.Time       // node -> when its state expires
	bytes   int64
}

type memNode struct {
	fields map[string]string
	owner  string
	size   int64
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{nodes: map[string]*memNode{}, owners: map[string]map[string]bool{},
		asked: map[string]time.Time{}, expires: map[string]time.Time{}}
}

// Get implements Store.
func (s *MemoryStore) Get(_ context.Context, node string, fields []string) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(fields))
	if n := s.nodes[node]; n != nil {
		for _, f := range fields {
			if v, ok := n.fields[f]; ok {
				out[f] = v
			}
		}
	}
	return out, nil
}

// Write implements Store.
func (s *MemoryStore) Write(_ context.Context, node string, w Write) (Outcome, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[node]
	if w.Birth {
		size := stateSize(w.Set)
		if w.MaxBytes > 0 && size > w.MaxBytes {
			return OutcomeTooLarge, nil
		}
		if n == nil || n.owner != w.Owner {
			if mine := s.owners[w.Owner]; w.MaxNodes > 0 && !mine[node] && len(mine) >= w.MaxNodes {
				return OutcomeQuota, nil
			}
		}
		s.remove(node)
		s.nodes[node] = &memNode{fields: maps.Clone(w.Set), owner: w.Owner, size: size}
		if s.owners[w.Owner] == nil {
			s.owners[w.Owner] = map[string]bool{}
		}
		s.owners[w.Owner][node] = true
		s.bytes += size
		delete(s.asked, node)
		return OutcomeApplied, nil
	}
	if n == nil || len(w.If) == 0 {
		return OutcomeStale, nil
	}
	for f, v := range w.If {
		if got, ok := n.fields[f]; !ok || got != v {
			return OutcomeStale, nil
		}
	}
	if w.Clear {
		s.remove(node)
		return OutcomeApplied, nil
	}
	size := n.size
	for _, f := range w.Del {
		if v, ok := n.fields[f]; ok {
			size -= fieldSize(f, v)
		}
	}
	for f, v := range w.Set {
		if old, ok := n.fields[f]; ok && !contains(w.Del, f) {
			size -= fieldSize(f, old)
		}
		size += fieldSize(f, v)
	}
	if w.MaxBytes > 0 && size > w.MaxBytes && size > n.size {
		return OutcomeTooLarge, nil
	}
	for _, f := range w.Del {
		delete(n.fields, f)
	}
	maps.Copy(n.fields, w.Set)
	s.bytes += size - n.size
	n.size = size
	return OutcomeApplied, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// remove drops node's state and its account; s.mu held.
func (s *MemoryStore) remove(node string) {
	n := s.nodes[node]
	if n == nil {
		return
	}
	delete(s.nodes, node)
	delete(s.expires, node)
	s.bytes -= n.size
	delete(s.owners[n.owner], node)
	if len(s.owners[n.owner]) == 0 {
		delete(s.owners, n.owner)
	}
}

// Throttle implements Store.
func (s *MemoryStore) Throttle(_ context.Context, node string, now time.Time, interval time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if last, ok := s.asked[node]; ok {
		if since := now.Sub(last); since >= 0 && since < interval {
			return false, nil
		}
	}
	s.asked[node] = now
	return true, nil
}

// Expire implements Store.
func (s *MemoryStore) Expire(_ context.Context, node, session string, now time.Time, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[node]
	if n == nil || n.fields[fieldSession] != session {
		return false, nil
	}
	s.expires[node] = now.Add(ttl)
	return true, nil
}

// ExpiresAt says when node's state expires; false if it does not.
func (s *MemoryStore) ExpiresAt(node string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.expires[node]
	return t, ok
}

// Sweep implements Store.
func (s *MemoryStore) Sweep(_ context.Context, now time.Time) (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for node, at := range s.expires {
		if !at.After(now) {
			s.remove(node)
		}
	}
	for node, at := range s.asked {
		if now.Sub(at) > time.Hour {
			delete(s.asked, node)
		}
	}
	return Stats{Nodes: int64(len(s.nodes)), Bytes: s.bytes}, nil
}

// RedisStore is a Store in Redis, so every broker instance sees the same
// state and it survives a broker restart (as far as Redis persists it). All
// its keys start with its prefix, which on a Redis Cluster must hold a hash
// tag (as "{firehose:spb}:") so that they share a slot: every write is one
// Lua script over the node's hash and the account. Keys (a node is
// "group/edge_node", exactly one '/'):
//
//	PREFIX+node                 the node's hash (Key)
//	PREFIX+node+"/@rb"          when its last Rebirth request went out, ms (expires)
//	PREFIX+"@nodes"             hash: node -> "SIZE OWNER"
//	PREFIX+"@bytes"             the total of the sizes
//	PREFIX+"@expiry"            sorted set: node -> when its state expires, ms
//	PREFIX+"@owners//"+owner    set: the nodes with state an owner counts
//
// A node whose state expires also gets a TTL on its hash (a Sweep removes
// it from the account): its state never outlives the TTL even if no broker
// runs.
type RedisStore struct {
	rdb    redis.Cmdable
	prefix string
}

// NewRedisStore returns a RedisStore keeping its keys under prefix (for
// example "{firehose:spb}:").
func NewRedisStore(rdb redis.Cmdable, prefix string) *RedisStore {
	return &RedisStore{rdb: rdb, prefix: prefix}
}

// Key is the Redis key of node's hash.
func (s *RedisStore) Key(node string) string { return s.prefix + node }

// BytesKey is the Redis key of the total size of the state (a decimal
// counter): what the producer counts toward --high-water.
func (s *RedisStore) BytesKey() string { return s.prefix + "@bytes" }

func (s *RedisStore) keys(node, owner string) []string {
	return []string{s.Key(node), s.prefix + "@nodes", s.BytesKey(), s.prefix + "@expiry",
		s.prefix + "@owners//" + owner, s.Key(node) + "/@rb"}
}

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

// writeScript is Write. KEYS: see RedisStore.keys. ARGV: prefix, node,
// mode (birth|clear|update), owner, max nodes, max bytes, then a count and
// that many field/value pairs of If, a count and the fields of Del, a count
// and the field/value pairs of Set. Returns an Outcome.
var writeScript = redis.NewScript(`
local key, nodes, total, expiry, ownerset, rb = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, node, mode, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local maxnodes, maxbytes = tonumber(ARGV[5]), tonumber(ARGV[6])
local i = 7
local function list(pairs)
  local n = tonumber(ARGV[i]); local out = {}
  for j = 1, n * pairs do out[j] = ARGV[i + j] end
  i = i + 1 + n * pairs
  return out
end
local cond, del, set = list(2), list(1), list(2)
local function size(f, v) return #f + #v + 16 end
-- unpack takes a few thousand values at most: write in chunks.
local function chunked(cmd, k, t)
  for a = 1, #t, 1000 do
    redis.call(cmd, k, unpack(t, a, math.min(a + 999, #t)))
  end
end
local entry = redis.call('HGET', nodes, node)
local oldsize, oldowner = 0, nil
if entry then
  local sp = string.find(entry, ' ', 1, true)
  oldsize, oldowner = tonumber(string.sub(entry, 1, sp - 1)), string.sub(entry, sp + 1)
end
local function forget()
  if oldowner then redis.call('SREM', prefix .. '@owners//' .. oldowner, node) end
  redis.call('HDEL', nodes, node)
  redis.call('ZREM', expiry, node)
  redis.call('DECRBY', total, oldsize)
end
if mode == 'birth' then
  local new = 0
  for j = 1, #set, 2 do new = new + size(set[j], set[j + 1]) end
  if maxbytes > 0 and new > maxbytes then return -2 end
  if oldowner ~= owner and maxnodes > 0 and redis.call('SISMEMBER', ownerset, node) == 0
     and redis.call('SCARD', ownerset) >= maxnodes then
    return -1
  end
  forget()
  redis.call('DEL', key, rb)
  chunked('HSET', key, set)
  redis.call('SADD', ownerset, node)
  redis.call('HSET', nodes, node, new .. ' ' .. owner)
  redis.call('INCRBY', total, new)
  return 1
end
if #cond == 0 then return 0 end
for j = 1, #cond, 2 do
  if redis.call('HGET', key, cond[j]) ~= cond[j + 1] then return 0 end
end
if mode == 'clear' then
  forget()
  redis.call('DEL', key)
  return 1
end
local new = oldsize
local gone = {}
for j = 1, #del do
  local l = redis.call('HSTRLEN', key, del[j])
  if l > 0 or redis.call('HEXISTS', key, del[j]) == 1 then new = new - (#del[j] + l + 16) end
  gone[del[j]] = true
end
for j = 1, #set, 2 do
  if not gone[set[j]] and redis.call('HEXISTS', key, set[j]) == 1 then
    new = new - (#set[j] + redis.call('HSTRLEN', key, set[j]) + 16)
  end
  new = new + size(set[j], set[j + 1])
end
if maxbytes > 0 and new > maxbytes and new > oldsize then return -2 end
chunked('HDEL', key, del)
chunked('HSET', key, set)
if entry then
  redis.call('HSET', nodes, node, new .. ' ' .. oldowner)
  redis.call('INCRBY', total, new - oldsize)
end
return 1
`)

// Write implements Store.
func (s *RedisStore) Write(ctx context.Context, node string, w Write) (Outcome, error) {
	mode := "update"
	switch {
	case w.Birth:
		mode = "birth"
	case w.Clear:
		mode = "clear"
	}
	args := []any{s.prefix, node, mode, w.Owner, w.MaxNodes, w.MaxBytes, len(w.If)}
	for f, v := range w.If {
		args = append(args, f, v)
	}
	args = append(args, len(w.Del))
	for _, f := range w.Del {
		args = append(args, f)
	}
	args = append(args, len(w.Set))
	for f, v := range w.Set {
		args = append(args, f, v)
	}
	n, err := writeScript.Run(ctx, s.rdb, s.keys(node, w.Owner), args...).Int()
	if err != nil {
		return 0, fmt.Errorf("write sparkplug state of %s: %w", node, err)
	}
	return Outcome(n), nil
}

// throttleScript: KEYS[1] the node's rb key; ARGV now ms, interval ms.
// Returns 1 if a request may go out (and records it), else 0.
var throttleScript = redis.NewScript(`
local last = tonumber(redis.call('GET', KEYS[1]))
local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
if last and now >= last and now - last < interval then return 0 end
if interval > 0 then redis.call('SET', KEYS[1], now, 'PX', interval) end
return 1
`)

// Throttle implements Store.
func (s *RedisStore) Throttle(ctx context.Context, node string, now time.Time, interval time.Duration) (bool, error) {
	n, err := throttleScript.Run(ctx, s.rdb, []string{s.Key(node) + "/@rb"}, now.UnixMilli(), interval.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("throttle sparkplug rebirth of %s: %w", node, err)
	}
	return n == 1, nil
}

// expireScript: KEYS the node's hash and @expiry; ARGV node, session,
// when (ms), ttl (ms).
var expireScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'sid') ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
`)

// Expire implements Store.
func (s *RedisStore) Expire(ctx context.Context, node, session string, now time.Time, ttl time.Duration) (bool, error) {
	ttl = max(ttl, time.Millisecond)
	n, err := expireScript.Run(ctx, s.rdb, []string{s.Key(node), s.prefix + "@expiry"},
		node, session, now.Add(ttl).UnixMilli(), ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("expire sparkplug state of %s: %w", node, err)
	}
	return n == 1, nil
}

// sweepScript removes up to 1000 expired states from the account. KEYS:
// @nodes, @bytes, @expiry; ARGV: prefix, now (ms). Returns the number of
// nodes and the bytes left.
var sweepScript = redis.NewScript(`
local nodes, total, expiry = KEYS[1], KEYS[2], KEYS[3]
local prefix = ARGV[1]
for _, node in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', ARGV[2], 'LIMIT', 0, 1000)) do
  local entry = redis.call('HGET', nodes, node)
  if entry then
    local sp = string.find(entry, ' ', 1, true)
    redis.call('DECRBY', total, tonumber(string.sub(entry, 1, sp - 1)))
    redis.call('SREM', prefix .. '@owners//' .. string.sub(entry, sp + 1), node)
    redis.call('HDEL', nodes, node)
  end
  redis.call('DEL', prefix .. node)
  redis.call('ZREM', expiry, node)
end
return {redis.call('HLEN', nodes), tonumber(redis.call('GET', total) or '0')}
`)

// Sweep implements Store.
func (s *RedisStore) Sweep(ctx context.Context, now time.Time) (Stats, error) {
	v, err := sweepScript.Run(ctx, s.rdb, []string{s.prefix + "@nodes", s.BytesKey(), s.prefix + "@expiry"},
		s.prefix, now.UnixMilli()).Int64Slice()
	if err != nil {
		return Stats{}, fmt.Errorf("sweep sparkplug state: %w", err)
	}
	if len(v) != 2 {
		return Stats{}, errors.New("sweep sparkplug state: unexpected reply")
	}
	return Stats{Nodes: v[0], Bytes: v[1]}, nil
}
