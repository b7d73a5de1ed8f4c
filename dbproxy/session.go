package dbproxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
)

// A Session is one client connection as its Protocol sees it during
// Handshake: the Server's TLS config, router and dialer, and the record of
// what the handshake chose, for the session-end log line and the counters.
// Its methods are meant for the goroutine running Handshake, except where
// noted.
type Session struct {
	// Logger logs for this connection; it carries the listener address,
	// the protocol and the client address. A Protocol may replace it with
	// Logger.With(…) to add attributes, such as the database user, that the
	// session-end line then carries too.
	Logger *slog.Logger

	srv    *Server
	client net.Conn // as accepted
	sni    string
	route  *route

	mu     sync.Mutex
	conns  []net.Conn // backend connections from Dial
	closed bool       // closeAll ran: Dial fails
	onEnd  []func()
}

// ClientAddr is the client's network address.
func (s *Session) ClientAddr() net.Addr { return s.client.RemoteAddr() }

// TLSConfig is the Server's TLS config for client connections: the
// certificate for the client's server name (the default route's for a
// client that sends none or an unknown one), the Protocol's ALPN
// identifiers, TLS 1.2 at least. It must not be modified.
func (s *Session) TLSConfig() *tls.Config { return s.srv.tlsConfig }

// Route resolves the route for a TLS server name and records it as the
// session's route; "" (no SNI, or no TLS at all) means the default route.
// The error wraps ErrNoRoute when no route matches; the Protocol tells the
// client so and ends the session. Call it once per session. The returned
// Route belongs to the Server and must not be modified.
func (s *Session) Route(serverName string) (*Route, error) {
	s.sni = serverName
	r, err := s.srv.router().lookup(serverName)
	if err != nil {
		return nil, err
	}
	if s.route == nil {
		r.stats.sessions.Add(1)
	}
	s.route = r
	return &r.Route, nil
}

// Dial connects to r's backend with the Server's dialer, in plaintext: a
// Protocol negotiates the backend's TLS itself, with BackendTLSConfig. The
// connection carries ctx's deadline, and the Server closes it if the
// session is forced closed or the handshake fails.
func (s *Session) Dial(ctx context.Context, r *Route) (net.Conn, error) {
	c, err := s.srv.dial(ctx, "tcp", r.Backend)
	if err != nil {
		return nil, fmt.Errorf("dialing backend %s: %w", r.Backend, err)
	}
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, fmt.Errorf("dialing backend %s: %w", r.Backend, net.ErrClosed)
	}
	s.conns = append(s.conns, c)
	return c, nil
}

// BackendTLSConfig is the client TLS config for r's backend: the backend's
// host as server name, r.RootCAs, the Protocol's ALPN identifiers, no
// verification with TLSInsecure. It is nil when r.TLS is TLSNone. It must
// not be modified.
func (s *Session) BackendTLSConfig(r *Route) *tls.Config {
	if rs := s.srv.router().byHost[normalizeHost(r.Host)]; rs != nil && rs.Route == *r {
		return rs.backendTLS
	}
	bhost, _, _ := net.SplitHostPort(r.Backend)
	return backendTLSConfig(*r, bhost, s.srv.alpn)
}

// OnEnd registers f to run when the session ends, after its connections
// are closed, whether the handshake succeeded or not. Safe for concurrent
// use.
func (s *Session) OnEnd(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onEnd = append(s.onEnd, f)
}

// closeAll closes the client connection and every backend connection, to
// end the session; it is safe to call from any goroutine, more than once.
func (s *Session) closeAll() {
	s.closeBackends()
	s.client.Close()
}

// closeBackends closes every backend connection from Dial, and those Dial
// makes from now on.
func (s *Session) closeBackends() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// end runs the OnEnd functions once.
func (s *Session) end() {
	s.mu.Lock()
	fs := s.onEnd
	s.onEnd = nil
	s.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// routeName and backend are the session's route for logging, "" before one
// is chosen.
func (s *Session) routeName() string {
	if s.route == nil {
		return ""
	}
	return s.route.Host
}

func (s *Session) backend() string {
	if s.route == nil {
		return ""
	}
	return s.route.Backend
}

// ServerHandshake runs the TLS handshake with the client over conn (the
// client connection, or a wrapper replaying bytes already read) with the
// Server's TLS config, and reports the outcome to Config.OnTLSHandshake.
func (s *Session) ServerHandshake(ctx context.Context, conn net.Conn) (*tls.Conn, error) {
	tc := tls.Server(conn, s.TLSConfig())
	err := tc.HandshakeContext(ctx)
	if f := s.srv.cfg.OnTLSHandshake; f != nil {
		f(err)
	}
	return tc, err
}
