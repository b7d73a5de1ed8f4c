package certs

import "time"

// clock is the Manager's source of time, a seam for tests that move time.
type clock interface {
	Now() time.Time
	// At returns a channel that receives once the clock reaches t (at
	// once if it has), and a function that releases the timer.
	At(t time.Time) (<-chan time.Time, func())
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) At(t time.Time) (<-chan time.Time, func()) {
	tm := time.NewTimer(time.Until(t))
	return tm.C, func() { tm.Stop() }
}
