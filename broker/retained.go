package broker

import "sync"

// retained bounds the retained messages mochi keeps: at most maxCount
// topics and maxBytes of topic names and payloads together. A publish (or
// will) that would pass a bound keeps its other effects — a reading is still
// stored and acknowledged, subscribers still get it — but loses its retain
// flag, and is counted. Replacing a topic's retained message counts only
// the difference; an empty retained payload clears the topic and is always
// allowed.
//
// The account follows what mochi retained (OnRetainMessage) and expired
// (OnRetainedExpired); admission is checked before, in OnPublish and
// OnWill, so publishes admitted at the same instant may pass a bound by the
// few of them.
type retained struct {
	maxCount int
	maxBytes int64

	mu    sync.Mutex
	sizes map[string]int64 // topic -> len(topic)+len(payload)
	bytes int64
}

func newRetained(maxCount int, maxBytes int64) *retained {
	return &retained{maxCount: maxCount, maxBytes: maxBytes, sizes: map[string]int64{}}
}

// admit reports whether a retained message of payload size n may be kept
// on topic.
func (r *retained) admit(topic string, n int) bool {
	if n == 0 {
		return true
	}
	size := int64(len(topic) + n)
	r.mu.Lock()
	defer r.mu.Unlock()
	old, had := r.sizes[topic]
	count := len(r.sizes)
	if !had {
		count++
	}
	return count <= r.maxCount && r.bytes-old+size <= r.maxBytes
}

// kept accounts for mochi retaining a payload of n bytes on topic (n = 0:
// it cleared the topic).
func (r *retained) kept(topic string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bytes -= r.sizes[topic]
	delete(r.sizes, topic)
	if n > 0 {
		size := int64(len(topic) + n)
		r.sizes[topic] = size
		r.bytes += size
	}
}

// stats returns the retained topics and their bytes.
func (r *retained) stats() (int, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sizes), r.bytes
}
