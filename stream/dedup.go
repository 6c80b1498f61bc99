package stream

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
)

// Deduplication modes (--dedup): which readings the producer stores only
// once however often a device resends them.
const (
	// DedupOff stores every reading an edge accepts: a resend after a lost
	// acknowledgement lands twice.
	DedupOff = "off"
	// DedupID deduplicates readings that carry an id (Reading.ID): the
	// message id a device gives (HTTP Idempotency-Key, MQTT 5 user property
	// msg_id, a JSON field msg_id, a rule's id path), told apart within a
	// message by position, within their series (device, metric and
	// Reading.Series). Readings without one are stored as they come.
	DedupID = "id"
	// DedupNatural deduplicates by the natural key: the series (device,
	// metric and Reading.Series) and the time the device gave. Readings
	// timed by their receipt have no natural key and are stored as they
	// come.
	DedupNatural = "natural"
)

// DefaultDedupWindow is --dedup-window's default: how long a reading's key is
// remembered at least.
const DefaultDedupWindow = 5 * time.Minute

// dedupKeyLen is the length of a remembered key: 128 bits of SHA-256, so
// that neither chance (2^-64 at 2^32 keys in a window) nor a device that
// chooses its ids can make another device's reading pass for a duplicate.
const dedupKeyLen = 16

// dedupKey is r's deduplication key under mode, and whether r has one:
// SHA-256 of the series' identity (device, metric, Series and a typed
// row's table) and id
// (DedupID) or the device's time (DedupNatural), truncated to dedupKeyLen
// bytes. A reading without Series keeps the key it had before Series
// existed, so an upgrade forgets no key of the window.
func dedupKey(mode string, r *ingest.Reading) (key [dedupKeyLen]byte, ok bool) {
	var buf [512]byte
	b := append(buf[:0], r.DeviceID...)
	b = append(b, 0)
	b = append(b, r.Metric...)
	b = append(b, 0)
	if len(r.Series) > 0 {
		// 's' is neither 'i' nor 't': no key with a Series equals one
		// without, and the length keeps Series apart from what follows.
		b = append(b, 's')
		b = binary.AppendUvarint(b, uint64(len(r.Series)))
		b = append(b, r.Series...)
	}
	if r.Row != nil && r.Row.Shape != nil {
		// A typed row's series is its table's: two rules' tables may share
		// a device and a message id. 'r' is none of 's', 'i', 't': no key
		// of a row equals one of a readings row.
		b = append(b, 'r')
		b = binary.AppendUvarint(b, uint64(len(r.Row.Shape.Table)))
		b = append(b, r.Row.Shape.Table...)
	}
	switch mode {
	case DedupID:
		if r.ID == "" {
			return key, false
		}
		b = append(b, 'i')
		b = append(b, r.ID...)
	case DedupNatural:
		// Normalize sets a missing time to the time of receipt: such a
		// reading has no natural key (two samples of one message received
		// together would pass for one).
		if r.Time.IsZero() || r.Time.Equal(r.ReceivedAt) {
			return key, false
		}
		b = append(b, 't')
		b = binary.AppendVarint(b, r.Time.UnixNano())
	default:
		return key, false
	}
	sum := sha256.Sum256(b)
	copy(key[:], sum[:dedupKeyLen])
	return key, true
}

// ShardDedupKeys are the two sets that remember shard's deduplication keys,
// in the stream's hash slot: one holds the keys of the current window, the
// other those of the window before (see dedupScript).
func (s Streams) ShardDedupKeys(shard int) [2]string {
	base := s.prefix() + ":dedup:{" + s.tag(shard) + "}:"
	return [2]string{base + "0", base + "1"}
}

// Fields of a shard's metadata hash (ShardMetaKey) that name the window each
// dedup set holds.
const (
	metaDedup0 = "dedup0"
	metaDedup1 = "dedup1"
)

// dedupScript writes one shard's batch entry of a round trip with
// deduplication, in one atomic step: the readings whose key the shard
// remembers from the last window or two are left out of the entry, the
// others are added and their keys remembered.
//
// KEYS: stream, metadata hash, dedup set 0, dedup set 1.
// ARGV: generation token, entry version, window in ms, the readings' items
// (each uvarint length and encoding, as in a batch body, without the count),
// for each keyed reading its item's start and end in the items (two
// little-endian uint32), the number of items, the number m of keyed
// readings, then their m keys (16 bytes each) in item order, none twice:
// the producer leaves out a reading whose key an earlier reading of the
// same round trip has (the script stores both or neither).
//
// Windows are numbered by Redis's clock (TIME, so every producer counts the
// same), and the set of window w is set w%2: a set found holding a window
// older than the previous one is dropped (UNLINK, freed in the background)
// before it takes the current window's keys. A key is thus remembered for at
// least one window and at most two. The entry is written before any key is
// remembered: if the XADD fails the script stops, and no reading that was
// not stored is ever taken for a duplicate. Membership is asked for many
// keys per call (SMISMEMBER, Redis 6.2), in chunks within Lua's stack. It
// returns how many readings it left out.
var dedupScript = redis.NewScript(fmt.Sprintf(`
redis.call('HSETNX', KEYS[2], %[1]q, ARGV[1])
local t = redis.call('TIME')
local w = tonumber(ARGV[3])
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local win = math.floor(now / w)
local cur, prev = win %% 2, (win + 1) %% 2
local fields = {%[2]q, %[3]q}
local held = redis.call('HMGET', KEYS[2], fields[1], fields[2])
local winStr = string.format('%%d', win)
local curOK = held[cur + 1] == winStr
local prevOK = held[prev + 1] == string.format('%%d', win - 1)
local curKey, prevKey = KEYS[3 + cur], KEYS[3 + prev]
local m, first, chunk = tonumber(ARGV[7]), 8, 1000
local dup = {}
local function ask(key)
  for i = 0, m - 1, chunk do
    local last = math.min(i + chunk, m) - 1
    local r = redis.call('SMISMEMBER', key, unpack(ARGV, first + i, first + last))
    for j = 1, #r do
      if r[j] == 1 then dup[i + j] = true end
    end
  end
end
if curOK then ask(curKey) end
if prevOK then ask(prevKey) end
local ndup = 0
for j = 1, m do
  if dup[j] then ndup = ndup + 1 end
end
local items, bounds = ARGV[4], ARGV[5]
local body = items
if ndup > 0 then
  local parts, pos = {}, 1
  for j = 1, m do
    if dup[j] then
      local s, e = struct.unpack('<I4I4', bounds, (j - 1) * 8 + 1)
      parts[#parts + 1] = string.sub(items, pos, s)
      pos = e + 1
    end
  end
  parts[#parts + 1] = string.sub(items, pos)
  body = table.concat(parts)
end
local n = tonumber(ARGV[6]) - ndup
if n > 0 then
  local v, h = n, {}
  while v >= 128 do
    h[#h + 1] = string.char(v %% 128 + 128)
    v = math.floor(v / 128)
  end
  h[#h + 1] = string.char(v)
  redis.call('XADD', KEYS[1], '*', %[4]q, ARGV[2], %[5]q, n, %[6]q, table.concat(h) .. body)
  redis.call('HINCRBY', KEYS[2], %[7]q, n)
end
if ndup < m then
  if not curOK then
    redis.call('UNLINK', curKey)
    redis.call('HSET', KEYS[2], fields[cur + 1], winStr)
  end
  if ndup == 0 then
    for i = 0, m - 1, chunk do
      redis.call('SADD', curKey, unpack(ARGV, first + i, first + math.min(i + chunk, m) - 1))
    end
  else
    local kept = {}
    for j = 1, m do
      if not dup[j] then kept[#kept + 1] = ARGV[first + j - 1] end
    end
    for i = 1, #kept, chunk do
      redis.call('SADD', curKey, unpack(kept, i, math.min(i + chunk - 1, #kept)))
    end
  end
  redis.call('PEXPIRE', curKey, 2 * w)
end
return ndup
`, MetaGeneration, metaDedup0, metaDedup1, ingest.FieldVersion, ingest.FieldCount, ingest.FieldBody, MetaBacklog))

// Deduplicated says whether Add remembers r under --dedup (its mode is on
// and r has a key): a second Add of r within the window is recognised and
// not stored again, however the first ended.
func (p *Producer) Deduplicated(r *ingest.Reading) bool {
	mode := p.dedupMode()
	if mode == DedupOff {
		return false
	}
	_, ok := dedupKey(mode, r)
	return ok
}
