package dbproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// An End says who ended a session and how: the "closed_by" and "reason"
// of its session-end log line, and the labels of its count in Stats
// (RouteStats.Ends, Stats.UnroutedEnds).
type End struct {
	// By is ByClient, ByBackend or ByLeproxy.
	By string
	// Reason is one of the Reason constants.
	Reason string
}

// Who ended a session.
const (
	ByClient  = "client"
	ByBackend = "backend"
	ByLeproxy = "leproxy"
)

// How a session ended.
const (
	// ReasonClosed: a side closed its connection, cleanly.
	ReasonClosed = "closed"
	// ReasonReset: a side's connection failed (reset, broken pipe, a TLS
	// error): it went away without closing cleanly.
	ReasonReset = "reset"
	// ReasonRefused: the session never started its pump: leproxy refused
	// the client (no route, no TLS, a protocol violation) or the backend
	// refused the login.
	ReasonRefused = "refused"
	// ReasonUnreachable: the route's backend could not be dialled, or its
	// TLS handshake failed.
	ReasonUnreachable = "unreachable"
	// ReasonTimeout: the handshake deadline passed.
	ReasonTimeout = "handshake_timeout"
	// ReasonIdle: no byte moved either way for the idle timeout.
	ReasonIdle = "idle_timeout"
	// ReasonDrain: a shutdown or a reload ended a session that was between
	// requests (sessions that Session.Serve runs).
	ReasonDrain = "drain"
	// ReasonShutdown: the shutdown's deadline passed and leproxy closed the
	// session.
	ReasonShutdown = "shutdown"
	// ReasonHandled: the protocol completed the connection's business
	// itself (a PostgreSQL CancelRequest).
	ReasonHandled = "handled"
)

// SetEnd records who ended the session and how, for a Protocol that knows
// better than the core's guess: a backend that refused the login
// (ByBackend, ReasonRefused), a Serve session the drain ended (ByLeproxy,
// ReasonDrain). The last call wins, except that a forced shutdown and the
// idle timeout, which the core sees itself, always win.
func (s *Session) SetEnd(by, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endSet = &End{By: by, Reason: reason}
}

// handshakeEnd is the End of a session whose handshake failed with err.
func handshakeEnd(err error) End {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		return End{ByLeproxy, ReasonTimeout}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return End{ByClient, ReasonClosed}
	case isReset(err):
		return End{ByClient, ReasonReset}
	}
	return End{ByLeproxy, ReasonRefused}
}

// isReset reports whether err is a connection that went away uncleanly.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}

// peerGone reports whether the peer of c has closed or reset the
// connection, so that nothing more can be read from it: a peek that
// answers EOF or an error, not "nothing yet". ok is false when it cannot
// tell (not a socket).
func peerGone(c net.Conn) (gone, ok bool) {
	for {
		switch cc := c.(type) {
		case *trackedConn:
			c = cc.Conn
			continue
		case *prefixConn:
			if len(cc.prefix) > 0 {
				return false, true
			}
			c = cc.Conn
			continue
		case *meteredConn:
			c = cc.Conn
			continue
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = cc.NetConn()
			continue
		}
		break
	}
	switch st, _ := peek(c); st {
	case peekUnsupported:
		return false, false
	case peekNothing, peekData:
		return false, true
	}
	return true, true
}
