package simulator

import (
	"math"
	"time"
)

// schedule is the open-loop plan: the fleet's k-th reading (k from 0) is due
// at At(k) after the start, whatever happened to the readings before it. The
// rate rises linearly from 0 to rate over ramp, then stays: by time t,
// rate*t²/(2*ramp) readings are due during the ramp, and rate*ramp/2 +
// rate*(t-ramp) after it. Device d of n sends the readings k = j*n + d, so the
// fleet's sends interleave evenly.
type schedule struct {
	rate float64 // readings per second once ramped; > 0
	ramp time.Duration
}

// At is when reading k is due, from the start.
func (s schedule) At(k int64) time.Duration {
	r := s.ramp.Seconds()
	kf := float64(k)
	if inRamp := s.rate * r / 2; kf < inRamp {
		return seconds(math.Sqrt(2 * r * kf / s.rate))
	}
	return seconds(r + (kf-s.rate*r/2)/s.rate)
}

// Due is how many readings are due by t (those with At(k) < t).
func (s schedule) Due(t time.Duration) int64 {
	if t <= 0 {
		return 0
	}
	r, ts := s.ramp.Seconds(), t.Seconds()
	var n float64
	if ts < r {
		n = s.rate * ts * ts / (2 * r)
	} else {
		n = s.rate*r/2 + s.rate*(ts-r)
	}
	// At(0) = 0 is due at once; k is due before t when k < n.
	return int64(math.Ceil(n))
}

func seconds(s float64) time.Duration { return time.Duration(math.Round(s * float64(time.Second))) }
