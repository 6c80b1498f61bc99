package backoff

import (
	"testing"
	"time"
)

// The waits double from first to the cap, each within ±Jitter of its step,
// and each step's mean wait is the step: jitter spreads the waits, it does
// not lengthen or shorten the schedule.
func TestScheduleDoublesToTheCapWithJitter(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name       string
		first, max time.Duration
		steps      []time.Duration
	}{
		{"cap between two steps", 10 * ms, 35 * ms, []time.Duration{10 * ms, 20 * ms, 35 * ms, 35 * ms}},
		{"simulator", 100 * ms, 2 * time.Second, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 2 * time.Second, 2 * time.Second}},
		{"bridge", 100 * ms, 5 * time.Second, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5 * time.Second, 5 * time.Second}},
	}
	const runs = 2000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sums := make([]float64, len(tt.steps))
			for range runs {
				s := New(tt.first, tt.max)
				for i, step := range tt.steps {
					d := s.Next()
					lo, hi := time.Duration(float64(step)*(1-Jitter)), time.Duration(float64(step)*(1+Jitter))+1
					if d < lo || d > hi {
						t.Fatalf("wait %d = %s, want within [%s, %s]", i+1, d, lo, hi)
					}
					sums[i] += float64(d)
				}
			}
			for i, step := range tt.steps {
				if mean := sums[i] / runs; mean < 0.97*float64(step) || mean > 1.03*float64(step) {
					t.Errorf("step %d: mean wait %s, want about %s", i+1, time.Duration(mean), step)
				}
			}
		})
	}
}

func TestScheduleReset(t *testing.T) {
	s := New(100*time.Millisecond, time.Second)
	for range 5 {
		s.Next()
	}
	s.Reset()
	if d := s.Next(); d < 80*time.Millisecond || d > 120*time.Millisecond {
		t.Errorf("first wait after Reset = %s, want 100ms ±20%%", d)
	}
}
