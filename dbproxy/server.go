package dbproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leproxy/leproxy/internal/tlspolicy"
)

// Defaults for the zero values of Config.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = time.Hour
	DefaultMaxConns         = 1024
	DefaultDialTimeout      = 10 * time.Second
)

const (
	// lingerTimeout bounds how long a refused client has to read its error
	// before the connection is closed; see lingerClose.
	lingerTimeout = time.Second
	// maxRefusing bounds the goroutines telling clients over MaxConns so;
	// beyond it they are closed without a word.
	maxRefusing = 16
)

var (
	// ErrServerClosed is returned by Serve and ListenAndServe after
	// Shutdown.
	ErrServerClosed = errors.New("dbproxy: server closed")
	// ErrTooManyConnections is the reason a Refuser is given for a client
	// beyond Config.MaxConns.
	ErrTooManyConnections = errors.New("dbproxy: too many connections")
)

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// Listen is the address ListenAndServe listens on, host:port.
	Listen string
	// Protocol speaks the clients' protocol; required. Give each Server
	// its own value from Lookup.
	Protocol Protocol
	// Routes maps TLS server names to backends; at least one.
	Routes []Route
	// Default names the route, and the certificate, for clients that send
	// no server name (libpq before 14, many drivers, plaintext clients);
	// "" refuses them. A client whose server name matches no route gets the
	// Default's certificate (the first route's when there is no Default),
	// so that its handshake completes and it then reads, in its protocol,
	// "no route for server name …"; it never reaches another route.
	Default string
	// GetCertificate returns the certificate for a TLS client hello, as in
	// tls.Config; required. The Server calls it with ServerName set to the
	// route's Host (lower case), or to the certificate's name as described
	// for Default, and refuses clients
	// that offer the ACME "acme-tls/1" protocol: a database port is no
	// place for a tls-alpn-01 challenge.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// HandshakeTimeout bounds everything before the byte pump: the
	// protocol's pre-TLS exchange, the TLS handshake, the backend's dial
	// and handshake and, for PostgreSQL, authentication. Default
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a session in which no byte moved either way for
	// this long. A long query that sends nothing back for longer is cut
	// too, so keep it generous. Default DefaultIdleTimeout; negative means
	// none. Once one side has closed its direction, the session ends after
	// 30 s without a byte whatever this says.
	IdleTimeout time.Duration
	// MaxConns caps concurrent client connections, handshakes included.
	// A client beyond it is told, in its protocol when the Protocol is a
	// Refuser (PostgreSQL: SQLSTATE 53300), and closed. Default
	// DefaultMaxConns.
	MaxConns int
	// Dialer connects to backends; nil means a net.Dialer with
	// DefaultDialTimeout.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives one "session end" line (Info) per connection with
	// the client address, server name, route, backend, bytes each way,
	// duration and error; refusals over MaxConns (Warn); accept errors
	// (Error); and what the Protocol logs itself (PostgreSQL: one line per
	// cancel request, which has no session-end line). nil discards it all.
	Logger *slog.Logger
	// OnTLSHandshake, if set, is called once for each TLS handshake with a
	// client, with its error (nil on success), for metrics.
	OnTLSHandshake func(err error)
	// Options are the Protocol's own listener options, key → value, for a
	// Protocol that is an Optioner (FTP's passive_ports); nil for none. New
	// refuses keys the Protocol does not list and values it does not accept.
	Options map[string]string
	// Guard, if set, applies per-client limits: see ClientGuard. A client
	// it refuses is told so like one over MaxConns (ErrClientLimited) and
	// closed; it is told of failed TLS handshakes, refused handshakes and
	// authentication failures. SetGuard replaces it.
	Guard ClientGuard
	// Observer, if set, is told of each session's start and end (leproxy's
	// tracing spans); nil observes nothing.
	Observer SessionObserver
}

// A Server serves one Protocol on one or more listeners. Create it with
// New.
type Server struct {
	cfg       Config
	proto     Protocol
	alpn      []string
	rt        atomic.Pointer[router] // swapped by SetRoutes
	tlsConfig *tls.Config
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
	logger    *slog.Logger
	limits    atomic.Pointer[serverLimits] // swapped by SetLimits
	guard     atomic.Pointer[guardHolder]  // swapped by SetGuard
	open      atomic.Int64                 // open client connections, refusals excluded
	refusing  chan struct{}                // one token per refusal in progress
	stats     serverStats

	ctx    context.Context // cancelled when Shutdown forces sessions closed
	cancel context.CancelFunc
	// drainCtx is cancelled when Shutdown begins: sessions that Serve
	// runs finish what they are doing and end.
	drainCtx    context.Context
	drainCancel context.CancelFunc

	shutdownOnce sync.Once
	done         chan struct{} // closed by Shutdown
	wg           sync.WaitGroup

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	sessions  map[*Session]struct{}
	addr      net.Addr
	// retired holds the routes SetRoutes removed while sessions still
	// used them: their counters stay in Stats until the last one ends.
	retired []*route
}

// serverLimits are the limits SetLimits may change.
type serverLimits struct {
	maxConns int
	pump     pumpLimits
}

// New checks cfg and returns a Server that has not started serving.
func New(cfg Config) (*Server, error) {
	if cfg.Protocol == nil {
		return nil, errors.New("dbproxy: no protocol")
	}
	if cfg.GetCertificate == nil {
		return nil, errors.New("dbproxy: no GetCertificate")
	}
	alpn := slices.Clone(cfg.Protocol.ALPN())
	if slices.Contains(alpn, "h2") {
		return nil, fmt.Errorf("dbproxy: protocol %s offers ALPN h2", cfg.Protocol.Name())
	}
	rt, err := newRouter(cfg.Routes, cfg.Default, alpn)
	if err != nil {
		return nil, fmt.Errorf("dbproxy: %s listener %s: %w", cfg.Protocol.Name(), cfg.Listen, err)
	}
	if err := setOptions(cfg.Protocol, cfg.Options); err != nil {
		return nil, fmt.Errorf("dbproxy: %s listener %s: %w", cfg.Protocol.Name(), cfg.Listen, err)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	s := &Server{
		cfg:       cfg,
		proto:     cfg.Protocol,
		alpn:      alpn,
		dial:      cfg.Dialer,
		logger:    cfg.Logger,
		refusing:  make(chan struct{}, maxRefusing),
		done:      make(chan struct{}),
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*Session]struct{}),
	}
	s.SetLimits(cfg.MaxConns, cfg.IdleTimeout)
	s.SetGuard(cfg.Guard)
	s.rt.Store(rt)
	if w, ok := s.proto.(RoutesWatcher); ok {
		w.RoutesChanged(rt.routes())
	}
	if s.dial == nil {
		d := &net.Dialer{Timeout: DefaultDialTimeout}
		s.dial = d.DialContext
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.logger = s.logger.With("protocol", s.proto.Name())
	s.tlsConfig = &tls.Config{
		GetCertificate: s.getCertificate,
		NextProtos:     alpn,
	}
	tlspolicy.Apply(s.tlsConfig) // TLS 1.2+, ECDHE AEAD suites, rotating ticket keys
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.drainCtx, s.drainCancel = context.WithCancel(s.ctx)
	return s, nil
}

// SetLimits changes the Server's MaxConns and IdleTimeout, for a reload;
// zero values mean the defaults, as in Config. Connections accepted from
// now on get the new idle timeout, sessions in flight keep theirs. A lower
// MaxConns refuses new clients until enough sessions have ended; none is
// closed for it.
func (s *Server) SetLimits(maxConns int, idleTimeout time.Duration) {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	if idleTimeout == 0 {
		idleTimeout = DefaultIdleTimeout
	}
	s.limits.Store(&serverLimits{
		maxConns: maxConns,
		pump:     pumpLimits{idle: max(idleTimeout, 0), halfClosed: halfClosedIdle},
	})
}

// Limits returns the Server's MaxConns and IdleTimeout (negative for
// none), defaults filled in.
func (s *Server) Limits() (maxConns int, idleTimeout time.Duration) {
	l := s.limits.Load()
	idle := l.pump.idle
	if idle == 0 {
		idle = -1
	}
	return l.maxConns, idle
}

// getCertificate serves the certificate for the route of hello's server
// name, or the default one; see Config.Default.
func (s *Server) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if slices.Contains(hello.SupportedProtos, "acme-tls/1") {
		return nil, errors.New("dbproxy: acme-tls/1 is not served on a database listener")
	}
	if r, err := s.router().lookup(hello.ServerName); err == nil && hello.ServerName != "" {
		hello.ServerName = r.Host
	} else {
		hello.ServerName = s.router().certName
	}
	return s.cfg.GetCertificate(hello)
}

// ListenAndServe listens on Config.Listen and serves; see Serve.
func (s *Server) ListenAndServe() error {
	if s.isClosing() {
		return ErrServerClosed
	}
	if s.cfg.Listen == "" {
		return errors.New("dbproxy: no listen address")
	}
	l, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("dbproxy: %w", err)
	}
	return s.Serve(l)
}

// Serve accepts connections on l, each served in its own goroutine, until
// Shutdown or a permanent accept error; it closes l before it returns. On
// temporary accept errors (out of file descriptors…) it backs off from 5 ms
// to 1 s, like net/http. After Shutdown it returns ErrServerClosed.
func (s *Server) Serve(l net.Listener) error {
	defer l.Close()
	if !s.trackListener(l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(l, false)
	logger := s.logger.With("listen", l.Addr().String())
	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			var te interface{ Temporary() bool }
			if !errors.As(err, &te) || !te.Temporary() {
				return fmt.Errorf("dbproxy: accepting: %w", err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			logger.Error("accept error", "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-s.done:
			}
			continue
		}
		delay = 0
		s.stats.accepted.Add(1)
		guard := s.Guard()
		release := func() {}
		if guard != nil {
			if release, err = guard.Admit(conn.RemoteAddr()); err != nil {
				s.refuse(conn, logger, ErrClientLimited, "reason", err.Error())
				continue
			}
		}
		lim := s.limits.Load()
		if s.open.Add(1) > int64(lim.maxConns) {
			s.open.Add(-1)
			release()
			s.refuse(conn, logger, ErrTooManyConnections, "max_conns", lim.maxConns)
			continue
		}
		sess := &Session{Logger: logger.With("client", conn.RemoteAddr().String()), srv: s, client: conn, limits: lim.pump, guard: guard}
		sess.OnEnd(release)
		if !s.trackSession(sess, true) {
			conn.Close()
			s.open.Add(-1)
			release()
			return ErrServerClosed
		}
		go s.serveSession(sess)
	}
}

// Addr is the address of the first listener Serve was given, or nil.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Shutdown stops the Server: it closes the listeners, so Serve returns
// ErrServerClosed, and waits for open sessions to end. When ctx is done
// first it closes the sessions left, waits for their goroutines and
// returns ctx's error. It may be called more than once, and concurrently.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.drainCancel()
		s.mu.Lock()
		s.closing = true
		close(s.done)
		for l := range s.listeners {
			l.Close()
		}
		s.mu.Unlock()
	})
	finished := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	s.mu.Lock()
	for sess := range s.sessions {
		sess.forced.Store(true)
		sess.closeAll()
	}
	s.mu.Unlock()
	<-finished
	return ctx.Err()
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// trackListener adds or removes l; adding fails once Shutdown has begun.
func (s *Server) trackListener(l net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, l)
		return true
	}
	if s.closing {
		return false
	}
	s.listeners[l] = struct{}{}
	if s.addr == nil {
		s.addr = l.Addr()
	}
	return true
}

// trackSession adds or removes sess and its goroutine in the WaitGroup;
// adding fails once Shutdown has begun.
func (s *Server) trackSession(sess *Session, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.sessions, sess)
		s.wg.Done()
		return true
	}
	if s.closing {
		return false
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	return true
}

// serveSession runs one connection: handshake, pump, log line.
func (s *Server) serveSession(sess *Session) {
	defer s.open.Add(-1)
	defer s.trackSession(sess, false)
	start := time.Now()
	observed := s.observeStart(sess, start)
	deadline := start.Add(s.cfg.HandshakeTimeout)
	sess.client.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	c, b, err := s.proto.Handshake(ctx, sess.client, sess)
	cancel()
	var in, out int64
	var end End
	switch {
	case sess.served:
		// The Protocol served the session itself (Session.Serve); its
		// error is the session's.
		in, out, end = sess.in.Load(), sess.out.Load(), sess.serveEnd
		for _, conn := range []net.Conn{c, b} {
			if conn != nil {
				conn.Close()
			}
		}
	case err == nil && c == nil && b == nil:
		s.stats.handled.Add(1)
		sess.closeAll()
		sess.end()
		if observed != nil {
			observed(SessionSummary{
				ServerName: sess.sni, Route: sess.routeName(), Backend: sess.backend(),
				End: End{ByLeproxy, ReasonHandled}, Time: time.Now(),
			})
		}
		return
	case err == nil && (c == nil || b == nil || sess.route == nil):
		err = fmt.Errorf("protocol %s: handshake returned no connection or no route", s.proto.Name())
		fallthrough
	case err != nil:
		end = handshakeEnd(err)
		if end == (End{ByLeproxy, ReasonRefused}) {
			sess.protocolFailed()
		}
		sess.mu.Lock()
		if sess.backendFailed {
			end = End{ByBackend, ReasonUnreachable}
		}
		sess.mu.Unlock()
		if b != nil {
			b.Close()
		}
		sess.closeBackends()
		lingerClose(sess.client)
		if c != nil {
			c.Close()
		}
	default:
		c.SetDeadline(time.Time{})
		b.SetDeadline(time.Time{})
		rs := sess.route.stats
		rs.active.Add(1)
		in, out, end, err = pump(c, b, sess.limits, &rs.bytesIn, &rs.bytesOut, nil, sess.closeAll)
		rs.active.Add(-1)
		if end.Reason != ReasonIdle {
			end = reportedEnd(end, c, b)
		}
		c.Close()
		b.Close()
	}
	sess.closeAll()
	sess.end()
	// What the Protocol said overrides the core's guess, except for what
	// the core saw itself.
	sess.mu.Lock()
	if sess.endSet != nil && !(sess.served && end.Reason == ReasonIdle) && (err != nil || sess.served) {
		end = *sess.endSet
	}
	attrs := append([]any{
		"sni", sess.sni,
		"route", sess.routeName(),
		"backend", sess.backend(),
	}, sess.endAttrs...)
	sess.mu.Unlock()
	if sess.forced.Load() {
		end = End{ByLeproxy, ReasonShutdown}
	}
	switch {
	case err == nil:
	case sess.route != nil:
		sess.route.stats.errors.Add(1)
	default:
		s.stats.unrouted.Add(1)
	}
	if sess.route != nil {
		sess.route.stats.ends.add(end)
	} else {
		s.stats.unroutedEnds.add(end)
	}
	if observed != nil {
		observed(SessionSummary{
			ServerName: sess.sni, Route: sess.routeName(), Backend: sess.backend(),
			BytesIn: in, BytesOut: out, End: end, Err: err, Time: time.Now(),
		})
	}
	sess.Logger.Info("session end", append(attrs,
		"closed_by", end.By,
		"reason", end.Reason,
		"bytes_in", in,
		"bytes_out", out,
		"duration", time.Since(start),
		"error", err)...)
}

// reportedEnd is what the first EndReporter among conns says, or end.
func reportedEnd(end End, conns ...net.Conn) End {
	for _, c := range conns {
		if r, ok := c.(EndReporter); ok {
			if e, ok := r.SessionEnd(); ok {
				return e
			}
		}
	}
	return end
}

// refuse turns away a client beyond MaxConns or refused by the Guard, for
// reason (ErrTooManyConnections, ErrClientLimited): in its protocol when
// the Protocol is a Refuser and fewer than maxRefusing refusals are under
// way, otherwise by closing the connection. attrs go to the log line.
func (s *Server) refuse(conn net.Conn, logger *slog.Logger, reason error, attrs ...any) {
	s.stats.refused.Add(1)
	level := slog.LevelWarn
	if errors.Is(reason, ErrClientLimited) {
		level = slog.LevelDebug // a flood must not flood the log; blocks are logged once each
	}
	logger.Log(context.Background(), level, "connection refused", append([]any{"client", conn.RemoteAddr().String(), "error", reason}, attrs...)...)
	r, ok := s.proto.(Refuser)
	if !ok {
		conn.Close()
		return
	}
	select {
	case s.refusing <- struct{}{}:
	default:
		conn.Close()
		return
	}
	sess := &Session{srv: s, client: conn, Logger: logger}
	if !s.trackSession(sess, true) {
		conn.Close()
		<-s.refusing
		return
	}
	go func() {
		defer func() { <-s.refusing }()
		defer s.trackSession(sess, false)
		conn.SetDeadline(time.Now().Add(lingerTimeout))
		r.Refuse(conn, reason)
		lingerClose(conn)
	}()
}

// lingerClose closes a connection to which an error was just written
// without losing it: closing a socket with unread input makes the kernel
// send a reset, which can destroy the error before the client reads it. So
// it half-closes the TCP connection, reads and discards what the client
// still sends for up to lingerTimeout, and then closes.
func lingerClose(c net.Conn) {
	defer c.Close()
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}
