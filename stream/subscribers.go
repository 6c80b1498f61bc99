package stream

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// SubscribersKey is the hash where the deployment's subscribers report
// their state: a field per client id, its value the state as JSON
// (subscriber.State), rewritten every few seconds while it runs.
func (s Streams) SubscribersKey() string { return s.prefix() + ":subscribers" }

// SubscriberStates reports and reads the subscribers' states of one
// deployment, for firehose status.
type SubscriberStates struct {
	rdb     redis.UniversalClient
	streams Streams
}

// NewSubscriberStates is the subscribers' states of the deployment of
// streams.
func NewSubscriberStates(rdb redis.UniversalClient, streams Streams) *SubscriberStates {
	return &SubscriberStates{rdb: rdb, streams: streams}
}

// Put records clientID's state.
func (s *SubscriberStates) Put(ctx context.Context, clientID string, state []byte) error {
	if err := s.rdb.HSet(ctx, s.streams.SubscribersKey(), clientID, state).Err(); err != nil {
		return fmt.Errorf("report subscriber %q's state: %w", clientID, err)
	}
	return nil
}

// All returns every subscriber's last reported state, by client id.
func (s *SubscriberStates) All(ctx context.Context) (map[string]string, error) {
	m, err := s.rdb.HGetAll(ctx, s.streams.SubscribersKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("read the subscribers' states: %w", err)
	}
	return m, nil
}
