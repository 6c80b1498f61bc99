package ingest

import "errors"

// Refusals: the errors with which a producer (stream.Producer) refuses
// readings it cannot make durable now. Each means the readings were not
// acknowledged and the client should retry later; none of them means the
// readings are bad. Every edge maps them to its wire answer (HTTP 503, an
// MQTT reason code or no acknowledgement).
var (
	// ErrBacklogFull: the streams hold more uncommitted entries than the
	// high-water mark; the bridge is behind.
	ErrBacklogFull = errors.New("backlog over the high-water mark")
	// ErrUnavailable: Redis did not confirm the entries (unreachable, timed out
	// or refused the write). Some of a multi-reading call may have been stored.
	ErrUnavailable = errors.New("redis unavailable")
	// ErrOverloaded: more readings wait for Redis than the producer queues.
	ErrOverloaded = errors.New("producer queue full")
	// ErrClosed: the producer is shutting down.
	ErrClosed = errors.New("producer closed")
)

// RefusalReason names a refusal as a small enum for metrics and logs:
// backlog_full, redis_unavailable, overloaded, closed, or other.
func RefusalReason(err error) string {
	switch {
	case errors.Is(err, ErrBacklogFull):
		return "backlog_full"
	case errors.Is(err, ErrUnavailable):
		return "redis_unavailable"
	case errors.Is(err, ErrOverloaded):
		return "overloaded"
	case errors.Is(err, ErrClosed):
		return "closed"
	}
	return "other"
}
