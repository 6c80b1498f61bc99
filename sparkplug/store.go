package sparkplug

import (
	"context"
	"maps"
	"sync"
	"time"
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

// SessionField is the field of a node's state that holds the id of its live
// session: Expire compares it with its session argument.
const SessionField = fieldSession

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
