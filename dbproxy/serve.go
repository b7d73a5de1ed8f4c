package dbproxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Serve serves the session with fn, for a Protocol that speaks to its
// backend itself instead of handing the Server two connections to pipe:
// Elasticsearch, which proxies HTTP requests one by one; FTP, with its
// data connections. Handshake calls it once it has the client connection
// it serves on (usually the TLS one) and returns nil, nil and Serve's
// error; call it at most once.
//
// Serve clears conn's deadlines and runs fn with conn wrapped so that what
// fn reads and writes counts as the session's bytes in and out (on the
// route's counters and the session-end line) and as activity: when no
// byte moves either way for the idle timeout, the Server closes the
// session, as it does a piped one. The session counts as active on its
// route while fn runs. fn's ctx is cancelled when the Server begins to
// shut down: fn should finish what it is doing and return, a graceful end.
// If it has not when the shutdown's own deadline passes, the Server closes
// the client connection and everything Dial and Listen opened, which makes
// fn's reads and writes fail. Backend connections must come from Dial (or
// DialBackend) for that to reach them.
//
// A session may be served without a route, to answer every request with
// an error; its bytes then count only on its log line. fn's error is the
// session's: it is logged and, on a routed session, counted on the route.
func (s *Session) Serve(conn net.Conn, fn func(ctx context.Context, conn net.Conn) error) error {
	if s.served {
		return errors.New("dbproxy: Session.Serve called twice")
	}
	s.served = true
	conn.SetDeadline(time.Time{})
	mc := &meteredConn{Conn: conn, s: s}
	if s.route != nil {
		rs := s.route.stats
		rs.active.Add(1)
		defer rs.active.Add(-1)
		mc.in, mc.out = &rs.bytesIn, &rs.bytesOut
	}
	s.last.Store(time.Now().UnixNano())

	var idled atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if tick := s.limits.tick(); tick > 0 && s.limits.idle > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(tick)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if time.Since(time.Unix(0, s.last.Load())) >= s.limits.idle {
						idled.Store(true)
						s.closeAll()
						return
					}
				}
			}
		}()
	}
	err := fn(s.srv.drainCtx, mc)
	close(stop)
	wg.Wait()
	if idled.Load() {
		s.serveEnd = End{ByLeproxy, ReasonIdle}
		return errIdle
	}
	switch {
	case err == nil && s.srv.drainCtx.Err() != nil:
		s.serveEnd = End{ByLeproxy, ReasonDrain}
	case err == nil:
		s.serveEnd = End{ByClient, ReasonClosed}
	case isReset(err):
		s.serveEnd = End{ByClient, ReasonReset}
	default:
		s.serveEnd = End{ByLeproxy, ReasonRefused}
	}
	return err
}

// Pump pipes c and b, another pair of connections of a session that Serve
// runs (an FTP data connection and its backend's), until both directions
// end, with the byte pump of piped sessions: half-close each way, splice
// when both are plain TCP. Their bytes count as the session's, and as its
// activity; an error in either direction, or 30 s without a byte once one
// side has closed, closes both. Pump closes c and b before it returns.
// Safe to call from several goroutines at once.
func (s *Session) Pump(c, b net.Conn) error {
	defer c.Close()
	defer b.Close()
	// The pump counts; the session's own connection must not count twice.
	if mc, ok := c.(*meteredConn); ok {
		c = mc.Conn
	}
	c.SetDeadline(time.Time{})
	b.SetDeadline(time.Time{})
	var in, out *atomic.Uint64
	if s.route != nil {
		in, out = &s.route.stats.bytesIn, &s.route.stats.bytesOut
	}
	lim := pumpLimits{halfClosed: s.limits.halfClosed}
	nIn, nOut, _, err := pump(c, b, lim, in, out, &s.last, func() { c.Close(); b.Close() })
	s.in.Add(nIn)
	s.out.Add(nOut)
	return err
}

// meteredConn is the client connection of a session that Serve runs: it
// counts bytes on the route and the session and records activity.
type meteredConn struct {
	net.Conn
	s       *Session
	in, out *atomic.Uint64 // the route's counters; nil without a route
}

func (c *meteredConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.count(n, &c.s.in, c.in)
	return n, err
}

func (c *meteredConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.count(n, &c.s.out, c.out)
	return n, err
}

func (c *meteredConn) count(n int, session *atomic.Int64, route *atomic.Uint64) {
	if n <= 0 {
		return
	}
	session.Add(int64(n))
	if route != nil {
		route.Add(uint64(n))
	}
	c.s.last.Store(time.Now().UnixNano())
}

// CloseWrite half-closes the connection underneath when it can.
func (c *meteredConn) CloseWrite() error { return CloseWrite(c.Conn) }
