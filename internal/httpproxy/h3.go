package httpproxy

// HTTP/3 (RFC 9114) over QUIC (RFC 9000), with quic-go: the UDP side of
// the HTTPS listener. It serves the same handler chain as the TCP side,
// with certificates from the same GetCertificate; what differs is the
// transport: connections are admitted after their handshake (a QUIC
// Initial's source address may be spoofed, a completed handshake's may
// not), 0-RTT is refused (replayable), and connection-specific header
// fields, which HTTP/3 forbids, never leave in a response.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// NextProtoH3 is the ALPN protocol of HTTP/3, the only one the QUIC
// listener offers.
const NextProtoH3 = http3.NextProtoH3

// H3AltSvcMaxAge is how long clients may remember the Alt-Svc that AltSvc
// sends: a day, so that a leproxy restarted with -h3=false is not tried
// over QUIC for long (browsers fall back to TCP anyway when UDP fails).
const H3AltSvcMaxAge = 24 * time.Hour

// ErrQUICHandshake is what H3Options.OnHandshake is called with for a QUIC
// connection whose handshake did not complete (quic-go does not tell why:
// an unmapped name, no common ALPN, a timeout).
var ErrQUICHandshake = errors.New("httpproxy: quic handshake did not complete")

// h3ShutdownPoll is how often Shutdown looks whether requests are still
// in flight.
const h3ShutdownPoll = 10 * time.Millisecond

// H3Options configures NewH3Server.
type H3Options struct {
	// Handler serves the requests: the TCP listener's chain.
	Handler http.Handler
	// TLSConfig provides the certificates (GetCertificate); a copy is
	// used, offering h3 only, TLS 1.3 only. It should answer no ACME
	// tls-alpn-01 challenge (certs.Manager.TLSConfigWithDefault does not).
	TLSConfig *tls.Config
	// HandshakeTimeout bounds each QUIC handshake. Zero means 10 seconds.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection without requests for that long
	// (HTTP/3 idle) and one that sends no packet for that long (QUIC
	// idle). Zero means 2 minutes.
	IdleTimeout time.Duration
	// ReadTimeout and WriteTimeout bound the reading of each request's
	// body and the writing of its response, as http.Server's do (from the
	// start of the request); zero means no limit.
	ReadTimeout, WriteTimeout time.Duration
	// MaxHeaderBytes bounds a request's header section (QPACK-decoded
	// size, as RFC 9114 counts it; more gets 431). Zero means
	// net/http's default, 1 MiB.
	MaxHeaderBytes int
	// MaxIncomingStreams is how many requests a connection may have in
	// flight at once. Zero means MaxConcurrentStreams, as on HTTP/2.
	MaxIncomingStreams int64
	// OnHandshake, if set, is called once per connection attempt: with nil
	// when its handshake completed, with ErrQUICHandshake when it did not.
	OnHandshake func(err error)
	// Guard, if set, returns the per-client connection limits in force
	// (nil for none). A connection it refuses is closed right after its
	// handshake with H3_EXCESSIVE_LOAD. Failed handshakes are not counted
	// against the client: the source address of a QUIC packet that did
	// not complete a handshake may be forged.
	Guard func() ConnGuard
	// Logger receives refused connections at debug level; nil discards.
	Logger *slog.Logger
}

// H3Server serves HTTP/3 on one UDP socket. Make it with NewH3Server;
// Serve, then Shutdown or Close.
type H3Server struct {
	opts   H3Options
	conn   net.PacketConn
	tr     *quic.Transport
	ln     *quic.Listener
	srv    *http3.Server
	active atomic.Int64 // requests in the handler

	closeOnce sync.Once
}

// NewH3Server returns a server for QUIC connections arriving on conn,
// which it owns from now on (Shutdown and Close close it).
func NewH3Server(conn net.PacketConn, opts H3Options) (*H3Server, error) {
	if opts.Handler == nil || opts.TLSConfig == nil {
		return nil, errors.New("httpproxy: NewH3Server needs a Handler and a TLSConfig")
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 2 * time.Minute
	}
	if opts.MaxIncomingStreams <= 0 {
		opts.MaxIncomingStreams = MaxConcurrentStreams
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	tlsConf := http3.ConfigureTLSConfig(opts.TLSConfig) // a copy offering h3 only
	tlsConf.MinVersion = tls.VersionTLS13
	s := &H3Server{opts: opts, conn: conn}
	s.tr = &quic.Transport{Conn: conn, ConnContext: s.connContext}
	ln, err := s.tr.Listen(tlsConf, &quic.Config{
		// quic-go gives up on a handshake idle for this long, and on
		// one not done in twice this long.
		HandshakeIdleTimeout: opts.HandshakeTimeout / 2,
		MaxIdleTimeout:       opts.IdleTimeout,
		MaxIncomingStreams:   opts.MaxIncomingStreams,
		// 0-RTT data can be replayed by anyone who saw it; a proxy
		// cannot know which backend requests are safe to replay.
		Allow0RTT: false,
	})
	if err != nil {
		_ = s.tr.Close()
		return nil, fmt.Errorf("quic listener: %w", err)
	}
	s.ln = ln
	warnSmallUDPBuffers(conn, opts.Logger) // after quic-go has tried to raise them
	s.srv = &http3.Server{
		Handler:        http.HandlerFunc(s.serveHTTP),
		MaxHeaderBytes: opts.MaxHeaderBytes,
		IdleTimeout:    opts.IdleTimeout,
		Logger:         opts.Logger,
		ConnContext:    h3ConnContext,
	}
	return s, nil
}

// Addr is the UDP address the server receives on.
func (s *H3Server) Addr() net.Addr { return s.conn.LocalAddr() }

// Serve serves until Shutdown or Close, and then returns
// http.ErrServerClosed.
func (s *H3Server) Serve() error {
	return s.srv.ServeListener(guardedListener{s.ln, s})
}

// Shutdown stops accepting connections, sends GOAWAY on the open ones,
// waits for the requests in flight to finish and then closes the
// connections, idle ones included (HTTP/3 clients need not close them on
// GOAWAY). When ctx ends first, every connection is closed at once and
// ctx's error returned.
func (s *H3Server) Shutdown(ctx context.Context) error {
	// New connection attempts are refused from here; accepted ones
	// stay.
	_ = s.ln.Close()
	done := make(chan error, 1)
	go func() { done <- s.srv.Shutdown(ctx) }()
	t := time.NewTicker(h3ShutdownPoll)
	defer t.Stop()
	var err error
	idlePolls := 0
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-t.C:
			// Twice in a row: a stream accepted just before GOAWAY may
			// still be reading its headers, outside the handler.
			if s.active.Load() != 0 {
				idlePolls = 0
			} else if idlePolls++; idlePolls == 2 {
				_ = s.srv.Close() // wakes Shutdown, which returns nil
			}
		}
	}
	s.closeTransport()
	return err
}

// Close closes every connection at once and the socket.
func (s *H3Server) Close() error {
	err := s.srv.Close()
	s.closeTransport()
	return err
}

func (s *H3Server) closeTransport() {
	s.closeOnce.Do(func() {
		_ = s.ln.Close()
		_ = s.tr.Close()
		_ = s.conn.Close()
	})
}

// serveHTTP applies the per-request limits of the TCP listener's
// http.Server and hands r to the handler chain, behind a writer that
// keeps HTTP/3's rules on response header fields.
func (s *H3Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.active.Add(1)
	defer s.active.Add(-1)
	rc := http.NewResponseController(w)
	now := time.Now()
	if s.opts.ReadTimeout > 0 {
		_ = rc.SetReadDeadline(now.Add(s.opts.ReadTimeout))
	}
	if s.opts.WriteTimeout > 0 {
		_ = rc.SetWriteDeadline(now.Add(s.opts.WriteTimeout))
	}
	s.opts.Handler.ServeHTTP(&h3Writer{ResponseWriter: w}, r)
}

// h3ConnContext gives each HTTP/3 connection the stream accounting of
// HTTP/2's (see ConnContext): streams the client resets by the hundred,
// or opens faster than MaxStreamsPerSecond, close the connection with
// H3_EXCESSIVE_LOAD.
func h3ConnContext(ctx context.Context, c *quic.Conn) context.Context {
	g := &connGuard{closeConn: func() {
		_ = c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad), "too many streams")
	}}
	return context.WithValue(ctx, connGuardKey{}, g)
}

// h3ConnState follows one QUIC connection attempt from its first packet.
type h3ConnState struct{ handshaken atomic.Bool }

type h3ConnStateKey struct{}

// connContext is quic.Transport.ConnContext: it notes each connection
// attempt, so that one whose handshake never completes is reported to
// OnHandshake when quic-go drops it.
func (s *H3Server) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	st := &h3ConnState{}
	ctx = context.WithValue(ctx, h3ConnStateKey{}, st)
	addr := info.RemoteAddr.String()
	context.AfterFunc(ctx, func() {
		if st.handshaken.Load() {
			return
		}
		s.opts.Logger.Debug("quic handshake failed", "client", addr)
		if s.opts.OnHandshake != nil {
			s.opts.OnHandshake(ErrQUICHandshake)
		}
	})
	return ctx, nil
}

// guardedListener hands http3.Server the connections whose handshake is
// done and that the per-client limits admit.
type guardedListener struct {
	*quic.Listener
	s *H3Server
}

func (l guardedListener) Accept(ctx context.Context) (*quic.Conn, error) {
	for {
		c, err := l.Listener.Accept(ctx)
		if err != nil {
			return nil, err
		}
		if st, ok := c.Context().Value(h3ConnStateKey{}).(*h3ConnState); ok {
			st.handshaken.Store(true)
		}
		if l.s.opts.OnHandshake != nil {
			l.s.opts.OnHandshake(nil)
		}
		var g ConnGuard
		if l.s.opts.Guard != nil {
			g = l.s.opts.Guard()
		}
		if g == nil {
			return c, nil
		}
		release, err := g.Admit(c.RemoteAddr())
		if err != nil {
			l.s.opts.Logger.Debug("connection refused", "client", c.RemoteAddr().String(), "proto", "h3", "error", err)
			_ = c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad), "connection refused")
			continue
		}
		context.AfterFunc(c.Context(), release)
		return c, nil
	}
}

// connectionFields are the header fields HTTP/3 forbids (RFC 9114,
// section 4.2): a response carrying one is malformed, and clients refuse
// it. The handler chain sets "Connection: close" after some errors, as
// HTTP/1.1 and HTTP/2 want; over HTTP/3 it is dropped.
var connectionFields = [...]string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"}

// h3Writer removes connectionFields from a response before its header
// goes out.
type h3Writer struct {
	http.ResponseWriter
	sent bool
}

func (w *h3Writer) strip() {
	h := w.ResponseWriter.Header()
	for _, k := range connectionFields {
		delete(h, k)
	}
}

func (w *h3Writer) WriteHeader(code int) {
	w.strip() // 1xx responses too
	if code >= 200 {
		w.sent = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *h3Writer) Write(p []byte) (int, error) {
	if !w.sent {
		w.strip()
		w.sent = true
	}
	return w.ResponseWriter.Write(p)
}

func (w *h3Writer) Flush() {
	if !w.sent {
		w.strip()
		w.sent = true
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap gives http.ResponseController the stream's deadlines.
func (w *h3Writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// refuseConnect answers a CONNECT request. Over HTTP/3 a websocket comes
// as an extended CONNECT (RFC 9220), which leproxy does not bridge to its
// backends' HTTP/1.1 upgrades: it gets 501, and clients open their
// websockets over HTTP/1.1 or HTTP/2, which Alt-Svc leaves available.
// Every other CONNECT gets 405, as over TCP.
func refuseConnect(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 3 && r.Proto != "HTTP/3.0" { // quic-go puts :protocol in Proto
		http.Error(w, "websockets over HTTP/3 are not supported: use HTTP/1.1 or HTTP/2", http.StatusNotImplemented)
		return
	}
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
}

// AltSvc returns next with an Alt-Svc header announcing HTTP/3 on UDP
// port (h3=":port"; ma=86400) on every final response, for the TCP
// listener. A response that already has Alt-Svc (its backend's policy, or
// "clear") keeps it untouched.
func AltSvc(next http.Handler, port int) http.Handler {
	v := fmt.Sprintf(`%s=":%d"; ma=%d`, NextProtoH3, port, int(H3AltSvcMaxAge/time.Second))
	return altSvc{next: next, value: v}
}

type altSvc struct {
	next  http.Handler
	value string
}

func (a altSvc) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.next.ServeHTTP(&altSvcWriter{ResponseWriter: w, value: a.value}, r)
}

// altSvcWriter adds Alt-Svc when the final response header goes out, after
// the backend's fields have been copied in.
type altSvcWriter struct {
	http.ResponseWriter
	value string
	sent  bool
}

func (w *altSvcWriter) announce() {
	if w.sent {
		return
	}
	w.sent = true
	h := w.ResponseWriter.Header()
	if _, ok := h["Alt-Svc"]; !ok {
		h["Alt-Svc"] = []string{w.value}
	}
}

func (w *altSvcWriter) WriteHeader(code int) {
	if code >= 200 {
		w.announce()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *altSvcWriter) Write(p []byte) (int, error) {
	w.announce()
	return w.ResponseWriter.Write(p)
}

func (w *altSvcWriter) Flush() {
	w.announce()
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap gives http.ResponseController (and so ReverseProxy's websocket
// Hijack) the writer underneath.
func (w *altSvcWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
