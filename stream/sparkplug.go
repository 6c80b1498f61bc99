package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/sparkplug"
)

// SparkplugStore is a sparkplug.Store in Redis, so every broker instance sees the same
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
type SparkplugStore struct {
	rdb    redis.Cmdable
	prefix string
}

// SparkplugPrefix is where a deployment's Sparkplug B state lives: beside
// its streams, under one hash tag ("{firehose:spb}:"). Every process that
// reads or writes the state (the edges, `firehose rejected replay`, the
// console's replay) must use this one.
func (s Streams) SparkplugPrefix() string { return "{" + s.prefix() + ":spb}:" }

// NewSparkplugStore returns a SparkplugStore keeping its keys under prefix
// (a deployment's is Streams.SparkplugPrefix).
func NewSparkplugStore(rdb redis.Cmdable, prefix string) *SparkplugStore {
	return &SparkplugStore{rdb: rdb, prefix: prefix}
}

// Key is the Redis key of node's hash.
func (s *SparkplugStore) Key(node string) string { return s.prefix + node }

// BytesKey is the Redis key of the total size of the state (a decimal
// counter): what the producer counts toward --high-water.
func (s *SparkplugStore) BytesKey() string { return s.prefix + spbBytes }

// Suffixes of a SparkplugStore's keys after its prefix (see SparkplugStore).
const (
	spbNodes   = "@nodes"
	spbBytes   = "@bytes"
	spbExpiry  = "@expiry"
	spbOwners  = "@owners//" // + owner
	spbRebirth = "/@rb"      // after the node's key
)

func (s *SparkplugStore) keys(node, owner string) []string {
	return []string{s.Key(node), s.prefix + spbNodes, s.BytesKey(), s.prefix + spbExpiry,
		s.prefix + spbOwners + owner, s.Key(node) + spbRebirth}
}

// Get implements sparkplug.Store.
func (s *SparkplugStore) Get(ctx context.Context, node string, fields []string) (map[string]string, error) {
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

// writeScript is Write. KEYS: see SparkplugStore.keys. ARGV: prefix, node,
// mode (birth|clear|update), owner, max nodes, max bytes, then a count and
// that many field/value pairs of If, a count and the fields of Del, a count
// and the field/value pairs of Set. Returns an Outcome.
var writeScript = redis.NewScript(fmt.Sprintf(`
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
  if oldowner then redis.call('SREM', prefix .. %[1]q .. oldowner, node) end
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
`, spbOwners))

// Write implements sparkplug.Store.
func (s *SparkplugStore) Write(ctx context.Context, node string, w sparkplug.Write) (sparkplug.Outcome, error) {
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
	return sparkplug.Outcome(n), nil
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

// Throttle implements sparkplug.Store.
func (s *SparkplugStore) Throttle(ctx context.Context, node string, now time.Time, interval time.Duration) (bool, error) {
	n, err := throttleScript.Run(ctx, s.rdb, []string{s.Key(node) + spbRebirth}, now.UnixMilli(), interval.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("throttle sparkplug rebirth of %s: %w", node, err)
	}
	return n == 1, nil
}

// expireScript: KEYS the node's hash and @expiry; ARGV node, session,
// when (ms), ttl (ms).
var expireScript = redis.NewScript(fmt.Sprintf(`
if redis.call('HGET', KEYS[1], %q) ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
`, sparkplug.SessionField))

// Expire implements sparkplug.Store.
func (s *SparkplugStore) Expire(ctx context.Context, node, session string, now time.Time, ttl time.Duration) (bool, error) {
	ttl = max(ttl, time.Millisecond)
	n, err := expireScript.Run(ctx, s.rdb, []string{s.Key(node), s.prefix + spbExpiry},
		node, session, now.Add(ttl).UnixMilli(), ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("expire sparkplug state of %s: %w", node, err)
	}
	return n == 1, nil
}

// sweepScript removes up to 1000 expired states from the account. KEYS:
// @nodes, @bytes, @expiry; ARGV: prefix, now (ms). Returns the number of
// nodes and the bytes left.
var sweepScript = redis.NewScript(fmt.Sprintf(`
local nodes, total, expiry = KEYS[1], KEYS[2], KEYS[3]
local prefix = ARGV[1]
for _, node in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', ARGV[2], 'LIMIT', 0, 1000)) do
  local entry = redis.call('HGET', nodes, node)
  if entry then
    local sp = string.find(entry, ' ', 1, true)
    redis.call('DECRBY', total, tonumber(string.sub(entry, 1, sp - 1)))
    redis.call('SREM', prefix .. %[1]q .. string.sub(entry, sp + 1), node)
    redis.call('HDEL', nodes, node)
  end
  redis.call('DEL', prefix .. node)
  redis.call('ZREM', expiry, node)
end
return {redis.call('HLEN', nodes), tonumber(redis.call('GET', total) or '0')}
`, spbOwners))

// Sweep implements sparkplug.Store.
func (s *SparkplugStore) Sweep(ctx context.Context, now time.Time) (sparkplug.Stats, error) {
	v, err := sweepScript.Run(ctx, s.rdb, []string{s.prefix + spbNodes, s.BytesKey(), s.prefix + spbExpiry},
		s.prefix, now.UnixMilli()).Int64Slice()
	if err != nil {
		return sparkplug.Stats{}, fmt.Errorf("sweep sparkplug state: %w", err)
	}
	if len(v) != 2 {
		return sparkplug.Stats{}, errors.New("sweep sparkplug state: unexpected reply")
	}
	return sparkplug.Stats{Nodes: v[0], Bytes: v[1]}, nil
}
