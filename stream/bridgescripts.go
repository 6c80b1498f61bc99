package stream

import (
	"fmt"

	"github.com/redis/go-redis/v9"

	"firehose/ingest"
)

// fieldRaised is the only field of the entry RaiseScript adds to create a
// missing stream; the entry is trimmed away at once.
const fieldRaised = "raised"

// RaiseScript sets a stream's last id to the bridge's checkpoint when it is
// below it, creating the stream if it is missing (XADD of one entry at the
// checkpoint's id, trimmed away at once); only while the shard's metadata
// still holds the bridge session's generation and deployment.
//
// KEYS: the shard's metadata hash (Streams.ShardMetaKey), its stream.
// ARGV: generation, deployment, the checkpoint's milliseconds and sequence.
// It answers 1 when it raised, 0 when there was nothing to do, -1 when the
// metadata changed.
var RaiseScript = redis.NewScript(fmt.Sprintf(`
if redis.call('HGET', KEYS[1], %[1]q) ~= ARGV[1] or redis.call('HGET', KEYS[1], %[2]q) ~= ARGV[2] then
	return -1
end
local ms, seq = tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[2]) == 0 then
	redis.call('XADD', KEYS[2], 'MAXLEN', '0', ARGV[3] .. '-' .. ARGV[4], %[3]q, '1')
	return 1
end
local info = redis.call('XINFO', 'STREAM', KEYS[2])
for i = 1, #info, 2 do
	if info[i] == 'last-generated-id' then
		local lms, lseq = string.match(info[i + 1], '^(%%d+)-(%%d+)$')
		lms, lseq = tonumber(lms), tonumber(lseq)
		if lms < ms or (lms == ms and lseq < seq) then
			redis.call('XSETID', KEYS[2], ARGV[3] .. '-' .. ARGV[4])
			return 1
		end
		return 0
	end
end
return redis.error_reply('XINFO STREAM has no last-generated-id')
`, MetaGeneration, MetaDeployment, fieldRaised))

// TrimScript is XTRIM MINID of the bridge's checkpoint, only while the
// shard's metadata holds the bridge session's generation and deployment.
// It counts the shard's backlog (MetaBacklog) down by the readings of the
// entries it trims, given by the caller, or counted by the script itself
// from each entry's ingest.FieldCount when the caller passes -1 (once a
// session, for what a previous owner committed: it reads those entries
// whole). The counter is set to 0 when the stream is left empty, which mends
// any drift (a trim whose reply was lost, entries another build wrote).
//
// KEYS: the shard's metadata hash (Streams.ShardMetaKey), its stream.
// ARGV: generation, deployment, the minimum id kept, the readings trimmed
// (-1: unknown). It answers how many entries it trimmed, or -1 when the
// metadata changed.
var TrimScript = redis.NewScript(fmt.Sprintf(`
if redis.call('HGET', KEYS[1], %[1]q) ~= ARGV[1] or redis.call('HGET', KEYS[1], %[2]q) ~= ARGV[2] then
	return -1
end
local n = tonumber(ARGV[4])
if n < 0 then
	n = 0
	for _, e in ipairs(redis.call('XRANGE', KEYS[2], '-', '(' .. ARGV[3])) do
		local f = e[2]
		for i = 1, #f, 2 do
			if f[i] == %[3]q then
				n = n + (tonumber(f[i + 1]) or 0)
				break
			end
		end
	end
end
local trimmed = redis.call('XTRIM', KEYS[2], 'MINID', ARGV[3])
if redis.call('XLEN', KEYS[2]) == 0 then
	redis.call('HSET', KEYS[1], %[4]q, 0)
elseif trimmed > 0 and n > 0 and redis.call('HINCRBY', KEYS[1], %[4]q, -n) < 0 then
	redis.call('HSET', KEYS[1], %[4]q, 0)
end
return trimmed
`, MetaGeneration, MetaDeployment, ingest.FieldCount, MetaBacklog))
