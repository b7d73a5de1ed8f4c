package dbproxy

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Stats are a Server's counters since New. Counters only grow, except
// RouteStats.Active.
type Stats struct {
	Accepted uint64 // client connections accepted, refused ones included
	Refused  uint64 // connections refused because MaxConns were open or the Guard said no
	// Handled counts connections the protocol completed itself with
	// nothing to pump, such as PostgreSQL cancel requests.
	Handled uint64
	// Unrouted counts connections that failed before reaching a route: a
	// bad or timed-out handshake, an unknown server name, plaintext with
	// no default route.
	Unrouted uint64
	// UnroutedEnds counts how the sessions that never reached a route
	// ended, by End.
	UnroutedEnds map[End]uint64
	// Routes are the current routes in Config order, then routes a
	// reload removed that sessions still use (Removed set).
	Routes []RouteStats
}

// RouteStats are one route's counters.
type RouteStats struct {
	Host    string
	Backend string
	// Sessions counts connections routed here, whatever became of them.
	Sessions uint64
	// Active is the number of sessions piping bytes now.
	Active int64
	// BytesIn and BytesOut count bytes piped client→backend and
	// backend→client after the handshake.
	BytesIn  uint64
	BytesOut uint64
	// Errors counts routed sessions that ended with an error, the
	// handshake's included (backend down, authentication refused…).
	Errors uint64
	// Ends counts the route's ended sessions by who ended them and how.
	Ends map[End]uint64
	// Removed is set for a route that a reload removed and that sessions
	// still use; it leaves Stats after the last one ended, once its final
	// counts have been in one Stats.
	Removed bool
}

// endCounts counts sessions by End. Safe for concurrent use.
type endCounts struct {
	mu sync.Mutex
	m  map[End]uint64
}

func (c *endCounts) add(e End) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[End]uint64)
	}
	c.m[e]++
}

func (c *endCounts) snapshot() map[End]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

type routeStats struct {
	ends     endCounts
	refs     atomic.Int64 // sessions routed here that have not ended
	sessions atomic.Uint64
	active   atomic.Int64
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64
	errors   atomic.Uint64
}

type serverStats struct {
	unroutedEnds endCounts
	accepted     atomic.Uint64
	refused      atomic.Uint64
	handled      atomic.Uint64
	unrouted     atomic.Uint64
}

// Stats returns a snapshot of the Server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	rt := s.router()
	// A removed route is reported while sessions use it, and once more
	// after the last one ended, so that its final counts are seen.
	retired := s.retired[:0:0]
	kept := s.retired[:0]
	for _, r := range s.retired {
		if r.stats.refs.Load() > 0 {
			kept = append(kept, r)
			retired = append(retired, r)
		} else if !r.finalReported {
			r.finalReported = true
			retired = append(retired, r)
		}
	}
	clear(s.retired[len(kept):])
	s.retired = kept
	s.mu.Unlock()
	st := Stats{
		Accepted:     s.stats.accepted.Load(),
		Refused:      s.stats.refused.Load(),
		Handled:      s.stats.handled.Load(),
		Unrouted:     s.stats.unrouted.Load(),
		UnroutedEnds: s.stats.unroutedEnds.snapshot(),
		Routes:       make([]RouteStats, 0, len(rt.ordered)+len(retired)),
	}
	add := func(r *route, removed bool) {
		st.Routes = append(st.Routes, RouteStats{
			Host:     r.Host,
			Backend:  r.Backend,
			Sessions: r.stats.sessions.Load(),
			Active:   r.stats.active.Load(),
			BytesIn:  r.stats.bytesIn.Load(),
			BytesOut: r.stats.bytesOut.Load(),
			Errors:   r.stats.errors.Load(),
			Ends:     r.stats.ends.snapshot(),
			Removed:  removed,
		})
	}
	for _, r := range rt.ordered {
		add(r, false)
	}
	for _, r := range retired {
		add(r, true)
	}
	return st
}
