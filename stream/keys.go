package stream

import "strconv"

// Key layouts: how a shard's Redis keys are named. Every key of one shard
// (its stream, its metadata hash) carries the same Redis Cluster hash tag, so
// they share a slot: on a cluster they live on one node, fail over together,
// and one node's pipeline writes them all.
const (
	// LayoutLegacy tags a shard by its number alone, "firehose:readings:{3}":
	// shard N of every deployment on a cluster shares one slot, and the
	// slots of 0..N-1 fall wherever CRC16 puts them. Deployments created
	// before LayoutSpread keep it (see Check), because the stream keys name
	// the checkpoints in PostgreSQL.
	LayoutLegacy = 1
	// LayoutSpread tags a shard with the deployment prefix and the shard
	// number, plus the first suffix that puts the tag's slot in the shard's
	// own 1/N of the 16,384 cluster slots: "firehose:readings:{firehose:3}"
	// or "{firehose:3.7}". Shards then spread evenly over a cluster whose
	// primaries hold equal slot ranges (redis-cli --cluster create makes
	// them so): with N a multiple of the primaries, each holds N/primaries
	// shards. Deployments with different prefixes land on different slots.
	LayoutSpread = 2

	// metaLayout is the deployment metadata (MetaKey) field holding the
	// layout.
	metaLayout = "layout"
	// metaShards is the deployment metadata (MetaKey) field holding the
	// shard count.
	metaShards = "shards"

	// clusterSlots is the number of Redis Cluster hash slots.
	clusterSlots = 16384
)

// tag is shard's hash tag, without the braces.
func (s Streams) tag(shard int) string {
	if s.Layout == LayoutLegacy {
		return strconv.Itoa(shard)
	}
	return spreadTag(s.prefix(), shard, s.count())
}

// spreadTag finds LayoutSpread's tag of shard: prefix:shard, or
// prefix:shard.k for the smallest k >= 1 whose slot is in the shard's range
// [shard*16384/n, (shard+1)*16384/n). CRC16 spreads well, so the search takes
// about n tries; for n <= 16,384 a tag is always found (each range holds at
// least one slot, and each k gives a fresh slot).
func spreadTag(prefix string, shard, n int) string {
	base := prefix + ":" + strconv.Itoa(shard)
	lo, hi := shard*clusterSlots/n, (shard+1)*clusterSlots/n
	if slot := int(crc16(base)) % clusterSlots; slot >= lo && slot < hi {
		return base
	}
	for k := 1; ; k++ {
		t := base + "." + strconv.Itoa(k)
		if slot := int(crc16(t)) % clusterSlots; slot >= lo && slot < hi {
			return t
		}
	}
}

// ClusterSlot is the Redis Cluster hash slot of key: CRC16 of its hash tag
// (the text between the first "{" and the next "}", if not empty) or of the
// whole key, mod 16,384, as the Redis Cluster specification defines it.
func ClusterSlot(key string) int {
	for i := 0; i < len(key); i++ {
		if key[i] != '{' {
			continue
		}
		for j := i + 1; j < len(key); j++ {
			if key[j] == '}' {
				if j > i+1 {
					key = key[i+1 : j]
				}
				return int(crc16(key)) % clusterSlots
			}
		}
		break
	}
	return int(crc16(key)) % clusterSlots
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the checksum
// Redis Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
