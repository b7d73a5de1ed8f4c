package dbproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// A Session is one client connection as its Protocol sees it: the
// Server's TLS config, router and dialer, the record of what the handshake
// chose (for the session-end log line and the counters), and the
// connections and listeners the session owns, which the Server closes when
// the session ends or is forced closed. Its methods are meant for the
// goroutine running Handshake and the goroutines it starts, except where
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
	limits pumpLimits  // as the Server's were when the session began
	guard  ClientGuard // the guard that took the connection; nil for none

	// served is set by Serve: the Protocol served the session itself;
	// serveEnd is how Serve saw it end.
	served   bool
	serveEnd End
	endAttrs []any        // extra attributes of the session-end line
	in, out  atomic.Int64 // bytes of a session Serve runs
	last     atomic.Int64 // UnixNano of its last byte

	// forced is set when Shutdown closes the session.
	forced atomic.Bool

	mu            sync.Mutex
	endSet        *End                      // from SetEnd
	backendFailed bool                      // Dial or StartBackendTLS failed
	failed        bool                      // a TLS or auth failure was counted
	conns         map[net.Conn]struct{}     // backend connections from Dial, still open
	listeners     map[net.Listener]struct{} // from Listen, until closed
	closed        bool                      // closeAll ran: Dial and Listen fail
	onEnd         []func()
}

// ClientAddr is the client's network address.
func (s *Session) ClientAddr() net.Addr { return s.client.RemoteAddr() }

// ListenerAddr is the local address the client connected to: the
// listener's address as the client reached it (the inside one behind a
// port mapping).
func (s *Session) ListenerAddr() net.Addr { return s.client.LocalAddr() }

// ListenerPort is the port of ListenerAddr, 0 when it has none, for
// protocols that rewrite the addresses a backend hands out into the
// listener's (Redis Cluster).
func (s *Session) ListenerPort() int {
	switch a := s.client.LocalAddr().(type) {
	case *net.TCPAddr:
		return a.Port
	case nil:
		return 0
	default:
		_, p, err := net.SplitHostPort(a.String())
		if err != nil {
			return 0
		}
		n, _ := strconv.Atoi(p)
		return n
	}
}

// TLSConfig is the Server's TLS config for client connections: the
// certificate for the client's server name (the default route's for a
// client that sends none or an unknown one), the Protocol's ALPN
// identifiers, TLS 1.2 at least. It must not be modified.
func (s *Session) TLSConfig() *tls.Config { return s.srv.tlsConfig }

// ServerHandshake runs the TLS handshake with the client over conn (the
// client connection, or a wrapper replaying bytes already read) with the
// Server's TLS config, and reports the outcome to Config.OnTLSHandshake;
// a failure counts against the client (ClientGuard.Failed with FailTLS).
func (s *Session) ServerHandshake(ctx context.Context, conn net.Conn) (*tls.Conn, error) {
	return s.ServerHandshakeConfig(ctx, conn, s.TLSConfig())
}

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
		r.stats.refs.Add(1)
	}
	s.route = r
	return &r.Route, nil
}

// Routed returns the route that Route chose for the session, nil before
// (or when Route found none). It must not be modified.
func (s *Session) Routed() *Route {
	if s.route == nil {
		return nil
	}
	return &s.route.Route
}

// DefaultRoute returns the Server's current default route (Config.Default),
// nil when there is none, for a Protocol that must say something about its
// backend before the client's server name is known (the MySQL greeting's
// server version). It must not be modified.
func (s *Session) DefaultRoute() *Route {
	if d := s.srv.router().def; d != nil {
		return &d.Route
	}
	return nil
}

// IdleTimeout is the session's idle timeout (Config.IdleTimeout as it was
// when the session began), 0 for none: for a Protocol that serves the
// session itself and keeps its own timers.
func (s *Session) IdleTimeout() time.Duration { return s.limits.idle }

// HandshakeTimeout is the Server's Config.HandshakeTimeout, for a Protocol
// that serves the session itself and bounds each request's setup the same
// way.
func (s *Session) HandshakeTimeout() time.Duration { return s.srv.cfg.HandshakeTimeout }

// Routes returns the Server's current routes in Config order, with their
// hosts normalised, for protocols that tell clients about other routes
// (Redis Cluster rewrites backend addresses into route hosts). The slice
// is the caller's.
func (s *Session) Routes() []Route { return s.srv.router().routes() }

// Dial connects to r's backend with the Server's dialer, in plaintext: a
// Protocol negotiates the backend's TLS itself, in its own way, then calls
// StartBackendTLS (or uses DialBackend when TLS starts at the first byte).
// The connection carries ctx's deadline. When the route asks for the
// PROXY protocol, Dial has written its header (the client's address, the
// listener's) before it returns. The Server closes the connection when the
// session ends or is forced closed, or when the handshake fails.
func (s *Session) Dial(ctx context.Context, r *Route) (net.Conn, error) {
	c, err := s.srv.dial(ctx, "tcp", r.Backend)
	if err != nil {
		s.markBackendFailed()
		return nil, fmt.Errorf("dialing backend %s: %w", r.Backend, err)
	}
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	if err := writeProxyHeader(c, r.ProxyProtocol, s.ClientAddr(), s.ListenerAddr()); err != nil {
		c.Close()
		s.markBackendFailed()
		return nil, fmt.Errorf("sending PROXY protocol header to backend %s: %w", r.Backend, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, fmt.Errorf("dialing backend %s: %w", r.Backend, net.ErrClosed)
	}
	if s.conns == nil {
		s.conns = make(map[net.Conn]struct{})
	}
	tc := &trackedConn{Conn: c, s: s}
	s.conns[tc] = struct{}{}
	return tc, nil
}

// DialBackend connects to r's backend with Dial and, when the route asks
// for TLS, runs the TLS handshake from the first byte (StartBackendTLS):
// the backend side of a TLS-first protocol.
func (s *Session) DialBackend(ctx context.Context, r *Route) (net.Conn, error) {
	b, err := s.Dial(ctx, r)
	if err != nil {
		return nil, err
	}
	return s.StartBackendTLS(ctx, b, r)
}

// StartBackendTLS runs the client TLS handshake with r's backend over
// conn, a connection from Dial on which the protocol's own request to
// start TLS (a PostgreSQL SSLRequest, a MySQL SSLRequest…) has been
// answered, with BackendTLSConfig(r). It returns conn unchanged when the
// route asks for no TLS. The error names the backend.
func (s *Session) StartBackendTLS(ctx context.Context, conn net.Conn, r *Route) (net.Conn, error) {
	cfg := s.BackendTLSConfig(r)
	if cfg == nil {
		return conn, nil
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		s.markBackendFailed()
		return nil, fmt.Errorf("TLS handshake with backend %s: %w", r.Backend, err)
	}
	return tc, nil
}

func (s *Session) markBackendFailed() {
	s.mu.Lock()
	s.backendFailed = true
	s.mu.Unlock()
}

// BackendTLSConfig is the client TLS config for r's backend: the backend's
// host as server name, r.RootCAs, the Protocol's ALPN identifiers, no
// verification with TLSInsecure. It is nil when r.TLS asks for no TLS. It
// must not be modified.
func (s *Session) BackendTLSConfig(r *Route) *tls.Config {
	if s.route != nil && s.route.Route == *r {
		return s.route.backendTLS
	}
	bhost, _, _ := net.SplitHostPort(r.Backend)
	return backendTLSConfig(*r, bhost, s.srv.alpn)
}

// Listen opens a listener that the session owns, such as an FTP passive
// data port: the Server closes it when the session ends or is forced
// closed. The Protocol accepts on it itself, and closes it when done with
// it (the session then forgets it): a long session may open many. Its
// SetDeadline is the listener's, for TCP.
func (s *Session) Listen(network, address string) (net.Listener, error) {
	l, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		l.Close()
		return nil, fmt.Errorf("listening on %s: %w", address, net.ErrClosed)
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	tl := &trackedListener{Listener: l, s: s}
	s.listeners[tl] = struct{}{}
	return tl, nil
}

// trackedListener is a listener from Session.Listen: closing it removes it
// from the session's.
type trackedListener struct {
	net.Listener
	s *Session
}

func (l *trackedListener) Close() error {
	l.s.mu.Lock()
	delete(l.s.listeners, l)
	l.s.mu.Unlock()
	return l.Listener.Close()
}

// SetDeadline sets the deadline of Accept, for a listener that has one
// (*net.TCPListener).
func (l *trackedListener) SetDeadline(t time.Time) error {
	if d, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); ok {
		return d.SetDeadline(t)
	}
	return errors.ErrUnsupported
}

// OnEnd registers f to run when the session ends, after its connections
// are closed, whether the handshake succeeded or not. Safe for concurrent
// use.
func (s *Session) OnEnd(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onEnd = append(s.onEnd, f)
}

// AddLogAttrs adds key-value pairs to the session-end log line, after the
// route and backend (Elasticsearch: the number of requests served).
func (s *Session) AddLogAttrs(args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endAttrs = append(s.endAttrs, args...)
}

// closeAll closes the client connection and everything the session owns,
// to end the session; it is safe to call from any goroutine, more than
// once.
func (s *Session) closeAll() {
	s.closeBackends()
	s.client.Close()
}

// closeBackends closes every backend connection from Dial and every
// listener from Listen, and those opened from now on.
func (s *Session) closeBackends() {
	s.mu.Lock()
	s.closed = true
	conns, listeners := s.conns, s.listeners
	s.conns, s.listeners = nil, nil
	s.mu.Unlock()
	for c := range conns {
		c.(*trackedConn).Conn.Close()
	}
	for l := range listeners {
		l.(*trackedListener).Listener.Close()
	}
}

// end runs the OnEnd functions once and lets go of the route.
func (s *Session) end() {
	s.mu.Lock()
	fs := s.onEnd
	s.onEnd = nil
	s.mu.Unlock()
	for _, f := range fs {
		f()
	}
	if s.route != nil {
		s.route.stats.refs.Add(-1)
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

// trackedConn is a backend connection from Dial; closing it forgets it,
// so that a session that dials many (an HTTP transport's) holds only the
// open ones.
type trackedConn struct {
	net.Conn
	s *Session
}

func (c *trackedConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite half-closes the connection underneath, for the pump.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
