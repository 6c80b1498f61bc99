package backoff

import (
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Jitter is how far a wait may stray from the doubling schedule, as a
// fraction of it: each wait is drawn uniformly from ±20% of its step, so the
// mean wait is the step itself (the same as without jitter) while clients
// that failed together spread their retries.
const Jitter = 0.2

// Schedule is one retry loop's waits. The zero value is not usable: see New.
// Not safe for concurrent use: a loop owns its Schedule.
type Schedule struct {
	exp backoff.ExponentialBackOff
}

// New returns a schedule whose steps double from first to max: the waits
// are first, 2·first, 4·first ... max, max, ..., each ±Jitter. A wait at the
// cap may thus reach max·(1+Jitter).
func New(first, max time.Duration) Schedule {
	return Schedule{exp: backoff.ExponentialBackOff{
		InitialInterval:     first,
		RandomizationFactor: Jitter,
		Multiplier:          2,
		MaxInterval:         max,
	}}
}

// Next returns the wait before the next retry and moves one step on.
func (s *Schedule) Next() time.Duration { return s.exp.NextBackOff() }

// Reset starts the schedule again at its first step (after a success).
func (s *Schedule) Reset() { s.exp.Reset() }
