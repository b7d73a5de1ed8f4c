// Package clientlimit keeps leproxy's per-client state: connection and
// request rate limits (golang.org/x/time/rate token buckets), concurrency
// caps, failure counting and the block list, each keyed by the client's
// address as a Key (an IPv4 address, or an IPv6 address grouped by a
// prefix, /64 by default, since one host usually holds a whole /64).
//
// Per-client state lives in a Table: a map bounded in size, least recently
// used entries evicted first, and idle entries expired, so that a flood of
// distinct source addresses costs at most the table's bound in memory. A
// client evicted under such a flood starts afresh: its token bucket full,
// its failures forgotten; a client with connections or requests in flight
// is not expired for idleness, only evicted when the table is full.
//
// Every type takes its time from a Clock, time.Now unless a test sets
// another, and is safe for concurrent use.
package clientlimit

import "time"

// A Clock returns the current time; nil means time.Now.
type Clock func() time.Time

func (c Clock) now() time.Time {
	if c == nil {
		return time.Now()
	}
	return c()
}
