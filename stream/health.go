package stream

import "sync/atomic"

// shardHealth is which shards the producer last found unreachable: the
// shards whose Redis node failed a round trip or a backlog measurement. On a
// single node or through Sentinel every shard is on the one primary, so they
// go down and up together; on a cluster a node that is down takes only its
// own shards with it, and readings routed to the others keep flowing.
type shardHealth struct {
	down  []atomic.Bool
	count atomic.Int32 // how many are down
}

func newShardHealth(shards int) *shardHealth {
	return &shardHealth{down: make([]atomic.Bool, shards)}
}

// set records whether shard is down and reports whether that changed.
func (h *shardHealth) set(shard int, down bool) bool {
	if h.down[shard].Swap(down) == down {
		return false
	}
	if down {
		h.count.Add(1)
	} else {
		h.count.Add(-1)
	}
	return true
}

func (h *shardHealth) isDown(shard int) bool { return h.down[shard].Load() }

// any reports whether some shard is down.
func (h *shardHealth) any() bool { return h.count.Load() > 0 }

// all reports whether every shard is down.
func (h *shardHealth) all() bool { return int(h.count.Load()) == len(h.down) }

// list is the shards that are down, in order.
func (h *shardHealth) list() []int {
	var out []int
	for i := range h.down {
		if h.down[i].Load() {
			out = append(out, i)
		}
	}
	return out
}
