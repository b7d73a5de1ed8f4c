package httpproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// TLSListenerOptions configures NewTLSListener.
type TLSListenerOptions struct {
	// Config is the server's TLS configuration; its NextProtos decide
	// HTTP/2 or HTTP/1.1.
	Config *tls.Config
	// HandshakeTimeout bounds each TLS handshake. Zero means 10 seconds.
	HandshakeTimeout time.Duration
	// MaxHeaderBytes is the http.Server's MaxHeaderBytes (zero: net/http's
	// default), which the HTTP/1.x framing scanner follows.
	MaxHeaderBytes int
	// OnHandshake, if set, is called after each handshake with its
	// error, nil when it completed. A connection closed before it
	// finished (a port scan, a client that gave up or rejected the
	// certificate, plaintext on the TLS port) is a failure.
	OnHandshake func(err error)
	// Logger receives failed handshakes at debug level; nil discards.
	Logger *slog.Logger
	// Guard, if set, returns the per-client connection limits in force
	// (nil for none): a connection it refuses is closed before its
	// handshake, and a failed handshake is counted against its client
	// (not one closed before the client sent a byte).
	Guard func() ConnGuard
}

// A ConnGuard admits or refuses connections by client address and
// counts their clients' failures; clientlimit.NetGuard is one.
type ConnGuard interface {
	Admit(client net.Addr) (release func(), err error)
	Failed(client net.Addr, kind string)
}

// NewTLSListener returns a listener for an http.Server (Serve, not
// ServeTLS) that accepts from inner, does the TLS handshakes itself, and
// hands the server each connection once its handshake is done: an HTTP/2
// one as the *tls.Conn net/http expects, an HTTP/1.x one wrapped so that
// Handler.ServeHTTP can refuse requests whose framing could smuggle
// another (see framingScanner). Use it with ConnContext. Close stops it:
// handshakes in progress are abandoned and their connections closed.
//
// Its connections send each write in records of up to 16 KiB from the
// start, as nginx does (a copy of Config has DynamicRecordSizingDisabled):
// crypto/tls would otherwise cut the first 128 KiB of every connection into
// records of one TCP segment, growing, each its own system call, which
// makes a short response on a new connection cost three or four writes
// instead of one.
func NewTLSListener(inner net.Listener, opts TLSListenerOptions) net.Listener {
	opts.Config = opts.Config.Clone()
	opts.Config.DynamicRecordSizingDisabled = true
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = 1 << 20 // net/http's DefaultMaxHeaderBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &tlsListener{
		inner:  inner,
		opts:   opts,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(chan net.Conn),
		done:   make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

type tlsListener struct {
	inner  net.Listener
	opts   TLSListenerOptions
	ctx    context.Context // cancelled by Close; ends handshakes
	cancel context.CancelFunc
	conns  chan net.Conn // handshaken connections, for Accept
	done   chan struct{} // closed when acceptLoop is over
	err    error         // why acceptLoop ended; read after done

	closeOnce sync.Once
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }

// Close closes the inner listener, cancels the handshakes in progress and
// waits for the accept loop. It does not wait for the handshakes: one may
// be inside GetCertificate, waiting on an ACME order that cannot be
// cancelled, and http.Server.Shutdown calls Close before its drain
// deadline applies. Each ends, and closes its connection, when its
// handshake returns.
func (l *tlsListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.cancel()
		err = l.inner.Close()
		<-l.done
	})
	return err
}

// acceptLoop accepts until the inner listener fails for good, starting a
// handshake for each connection. Errors that may pass (out of file
// descriptors) are retried after a pause, as http.Server does.
func (l *tlsListener) acceptLoop() {
	var pause time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				l.err = err
				close(l.done)
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			l.opts.Logger.Warn("https accept failed; retrying", "error", err, "retry_in", pause)
			select {
			case <-time.After(pause):
				continue
			case <-l.ctx.Done():
				l.err = net.ErrClosed
				close(l.done)
				return
			}
		}
		pause = 0
		var g ConnGuard
		if l.opts.Guard != nil {
			g = l.opts.Guard()
		}
		if g != nil {
			release, err := g.Admit(c.RemoteAddr())
			if err != nil {
				// Nothing can be said before TLS; close at once.
				l.opts.Logger.Debug("connection refused", "client", c.RemoteAddr().String(), "error", err)
				_ = c.Close()
				continue
			}
			c = &releaseConn{Conn: c, release: release}
		}
		go l.handshake(c, g)
	}
}

// handshake does c's TLS handshake and hands the connection to Accept.
func (l *tlsListener) handshake(raw net.Conn, g ConnGuard) {
	tc := tls.Server(raw, l.opts.Config)
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if l.opts.OnHandshake != nil {
		l.opts.OnHandshake(err)
	}
	if err != nil {
		var rhe tls.RecordHeaderError
		if errors.As(err, &rhe) && rhe.Conn != nil && looksLikeHTTP(rhe.RecordHeader) {
			// What net/http answers plaintext on its TLS port.
			_ = raw.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(raw, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		}
		l.opts.Logger.Debug("tls handshake failed", "client", raw.RemoteAddr().String(), "error", err)
		if rc, ok := raw.(*releaseConn); ok && rc.spoke.Load() {
			// A connection closed before its first byte is no failure:
			// browsers open spare connections and close them unused.
			g.Failed(raw.RemoteAddr(), "tls")
		}
		_ = raw.Close()
		return
	}
	var c net.Conn = tc
	if tc.ConnectionState().NegotiatedProtocol != "h2" {
		c = &h1Conn{Conn: tc, scan: newFramingScanner(l.opts.MaxHeaderBytes)}
	}
	select {
	case l.conns <- c:
	case <-l.ctx.Done():
		_ = c.Close()
	}
}

// looksLikeHTTP reports whether a TLS record header is the start of a
// plaintext HTTP request, as net/http checks.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// releaseConn is a connection a ConnGuard admitted: closing it, through
// the *tls.Conn over it or directly, gives its place back once.
type releaseConn struct {
	net.Conn
	release func()
	once    sync.Once
	spoke   atomic.Bool // the client sent at least one byte
}

func (c *releaseConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.spoke.Store(true)
	}
	return n, err
}

func (c *releaseConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
