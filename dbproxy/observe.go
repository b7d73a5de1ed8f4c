package dbproxy

import (
	"net"
	"time"
)

// A SessionObserver is told of every session a Server serves, for tracing:
// SessionStarted when the connection has been accepted (and admitted by
// MaxConns and the Guard), and the function it returns once the session
// has ended, with what the "session end" log line says. Connections
// refused before they became a session are not observed. It is called
// from the session's own goroutine and must be safe for concurrent use.
type SessionObserver interface {
	SessionStarted(SessionStart) func(SessionSummary)
}

// SessionStart is what a Server knows of a session when it begins.
type SessionStart struct {
	Protocol string   // the Protocol's Name
	Client   net.Addr // the client's address
	Listener net.Addr // the local address the client connected to
	Time     time.Time
}

// SessionSummary is how a session went. It carries no byte of the
// session's traffic.
type SessionSummary struct {
	// ServerName is the TLS server name (SNI) the client sent, "" for
	// none or before the handshake.
	ServerName string
	// Route and Backend are the route's host and backend address, "" when
	// the session never reached a route.
	Route, Backend string
	// BytesIn and BytesOut are the bytes piped client→backend and
	// backend→client.
	BytesIn, BytesOut int64
	// End is who ended the session and how.
	End End
	// Err is the session's error, nil for a clean end. Its text may
	// quote the client or the backend: keep it out of anything exported.
	Err  error
	Time time.Time // when the session ended
}

// observeStart tells the Server's observer, if any, that sess began at
// start, and returns what to tell it at the end (nil without observer).
func (s *Server) observeStart(sess *Session, start time.Time) func(SessionSummary) {
	if s.cfg.Observer == nil {
		return nil
	}
	return s.cfg.Observer.SessionStarted(SessionStart{
		Protocol: s.proto.Name(),
		Client:   sess.client.RemoteAddr(),
		Listener: sess.client.LocalAddr(),
		Time:     start,
	})
}
