package dbproxy

import (
	"fmt"
	"net"
)

// ErrClientLimited is the reason a Refuser is given for a client its
// ClientGuard refused (over its connection rate, at its connection cap,
// blocked). It wraps ErrTooManyConnections, so that a Refuser answers it
// in the same words (PostgreSQL: SQLSTATE 53300; MySQL: ERR 1040).
var ErrClientLimited = fmt.Errorf("dbproxy: client refused by its limits: %w", ErrTooManyConnections)

// Failure kinds a ClientGuard is told of.
const (
	FailTLS      = "tls"      // the client's TLS handshake failed
	FailProtocol = "protocol" // the handshake was refused: malformed or unexpected bytes, no route
	FailAuth     = "auth"     // the backend refused the client's credentials (Session.AuthFailed)
)

// A ClientGuard applies per-client limits to a Server's connections:
// Admit is asked before the Server takes a connection, and Failed is told
// of what the client did wrong, so that a client failing too often can be
// blocked. Both are called from many goroutines at once.
type ClientGuard interface {
	// Admit decides whether a connection from client is taken; when it
	// is, release is called once when the connection ends. An error
	// refuses the connection (with ErrClientLimited to a Refuser).
	Admit(client net.Addr) (release func(), err error)
	// Failed is told of one failure of kind (FailTLS, FailProtocol,
	// FailAuth) by client.
	Failed(client net.Addr, kind string)
}

// guardHolder lets an atomic.Pointer hold an interface value.
type guardHolder struct{ g ClientGuard }

// SetGuard replaces the Server's ClientGuard, for a reload; nil removes
// it. Connections already taken keep the guard that took them.
func (s *Server) SetGuard(g ClientGuard) { s.guard.Store(&guardHolder{g}) }

// Guard returns the Server's ClientGuard, nil when it has none.
func (s *Server) Guard() ClientGuard {
	if h := s.guard.Load(); h != nil {
		return h.g
	}
	return nil
}

// AuthFailed tells the Server that the backend refused the client's
// credentials (a PostgreSQL ErrorResponse 28P01, a MySQL ERR 1045), for
// a Protocol that reads the backend's reply to a login. The client's
// ClientGuard counts it; a guard whose policy does not count
// authentication failures ignores it. Call it at most once per session.
func (s *Session) AuthFailed() {
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
	if s.guard != nil {
		s.guard.Failed(s.client.RemoteAddr(), FailAuth)
	}
}

// tlsFailed counts a failed TLS handshake of the client.
func (s *Session) tlsFailed() {
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
	if s.guard != nil {
		s.guard.Failed(s.client.RemoteAddr(), FailTLS)
	}
}

// protocolFailed counts a handshake leproxy refused, unless a TLS or an
// authentication failure was counted for the session already, or the
// backend was what refused (unreachable, or SetEnd with ByBackend).
func (s *Session) protocolFailed() {
	s.mu.Lock()
	counted := s.failed || s.backendFailed || s.endSet != nil && s.endSet.By == ByBackend
	s.mu.Unlock()
	if s.guard != nil && !counted {
		s.guard.Failed(s.client.RemoteAddr(), FailProtocol)
	}
}
