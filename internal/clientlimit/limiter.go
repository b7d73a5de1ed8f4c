package clientlimit

import (
	"errors"
	"math"
	"time"

	"golang.org/x/time/rate"
)

var (
	// ErrRate is why Acquire refuses a client over its rate.
	ErrRate = errors.New("clientlimit: client over its rate limit")
	// ErrConcurrency is why Acquire refuses a client with too much in
	// flight.
	ErrConcurrency = errors.New("clientlimit: client has too many in flight")
)

// Limits are per-client limits; zero fields mean no limit.
type Limits struct {
	// Rate is the sustained rate of new connections or requests per
	// client, per second.
	Rate rate.Limit
	// Burst is how many may come at once above Rate; 0 means
	// max(1, ceil(Rate)).
	Burst int
	// Concurrent caps what a client has in flight at once.
	Concurrent int
}

// IsZero reports whether l limits nothing.
func (l Limits) IsZero() bool { return l.Rate <= 0 && l.Concurrent <= 0 }

func (l Limits) burst() int {
	if l.Burst > 0 {
		return l.Burst
	}
	return max(1, int(math.Ceil(float64(l.Rate))))
}

// LimiterOptions configures NewLimiter. The zero value is usable.
type LimiterOptions struct {
	// MaxClients bounds the clients held; 0 means DefaultMaxClients.
	MaxClients int
	// Idle is how long an unused client is kept; 0 means DefaultIdle.
	// Keep it above the time a bucket takes to fill (Burst/Rate): a client
	// forgotten earlier comes back with a full bucket.
	Idle time.Duration
	// Clock is the time source; nil means time.Now.
	Clock Clock
}

// A Limiter applies Limits to each client separately.
type Limiter struct {
	limits Limits
	clock  Clock
	t      *table
}

// NewLimiter returns a Limiter of l.
func NewLimiter(l Limits, opts LimiterOptions) *Limiter {
	return &Limiter{limits: l, clock: opts.Clock, t: newTable(opts.MaxClients, opts.Idle)}
}

// Limits returns what the Limiter applies.
func (l *Limiter) Limits() Limits { return l.limits }

// Len is the number of clients the Limiter holds, at most its MaxClients.
func (l *Limiter) Len() int { return l.t.Len() }

// Acquire takes one unit of k's rate and one of its concurrency. On
// success release gives the concurrency back (call it once, when the
// connection or request ends). On ErrRate, retry is how long until the
// client's next token; on ErrConcurrency it is zero.
func (l *Limiter) Acquire(k Key) (release func(), retry time.Duration, err error) {
	now := l.clock.now()
	l.t.mu.Lock()
	defer l.t.mu.Unlock()
	s := l.t.get(k, now, l.fresh)
	if l.limits.Concurrent > 0 && s.active >= l.limits.Concurrent {
		return nil, 0, ErrConcurrency
	}
	if s.bucket != nil {
		r := s.bucket.ReserveN(now, 1)
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			return nil, d, ErrRate
		}
	}
	s.active++
	return func() { l.release(s) }, 0, nil
}

func (l *Limiter) release(s *state) {
	l.t.mu.Lock()
	s.active--
	l.t.mu.Unlock()
}

func (l *Limiter) fresh() *state {
	s := &state{}
	if l.limits.Rate > 0 {
		s.bucket = rate.NewLimiter(l.limits.Rate, l.limits.burst())
	}
	return s
}

// Active is what k has in flight.
func (l *Limiter) Active(k Key) int {
	l.t.mu.Lock()
	defer l.t.mu.Unlock()
	if e, ok := l.t.m[k]; ok {
		return e.Value.(*state).active
	}
	return 0
}
