package dbproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Elasticsearch and OpenSearch: HTTPS in front of a node's HTTP port.
// leproxy terminates TLS (ALPN "http/1.1" only: the clients speak
// HTTP/1.1, and h2 is never offered), picks the route by SNI and serves
// HTTP/1.1 on the connection itself, each request going through a reverse
// proxy to the route's node: X-Forwarded-For, -Host and -Proto set by
// leproxy (the client's own dropped), responses streamed as they come,
// request bodies passed through. Each client connection has its own
// connection to the node, opened at its first request and kept alive with
// it, so a session costs what a piped session costs.
//
// The byte pump cannot do this: X-Forwarded-For is per request, and a node
// that is down must be reported per request too. So Handshake serves the
// HTTP session to its end and returns nothing to pump; it logs the
// session-end line itself and counts into its route's counters.
//
// Errors leproxy itself sends carry an Elasticsearch-style JSON body,
// {"error":{"root_cause":[…],"type":…,"reason":…},"status":…}, which the
// clients parse into their error types:
//
//	400 leproxy_tls_required         plaintext HTTP on the TLS port, unless
//	                                 the default route allows plaintext;
//	                                 then the connection closes
//	421 leproxy_misdirected_request  no route for the server name (or no
//	                                 SNI and no default route); then the
//	                                 connection closes
//	502 leproxy_backend_unavailable  the node could not be reached; the
//	                                 session goes on
//	400/405 leproxy_bad_request      protocol upgrades and CONNECT, which
//	                                 Elasticsearch does not use
//
// None carries X-Elastic-Product: a client must not take leproxy for the
// node. Sniffing (node discovery) returns the nodes' publish addresses,
// which are backend addresses; see the README.

func init() {
	Register("elasticsearch", func() Protocol { return new(esProtocol) })
}

const (
	// esALPN is the only ALPN protocol offered: HTTP/1.1.
	esALPN = "http/1.1"
	// esMaxHeaderBytes bounds a request's header; Elasticsearch's own
	// http.max_header_size is 16 KiB.
	esMaxHeaderBytes = 64 << 10
	// esMaxPlaintextRequest bounds what is read of a plaintext request
	// before it is refused.
	esMaxPlaintextRequest = 16 << 10
	// esIdleConnTimeout closes a session's idle connection to the node.
	esIdleConnTimeout = 90 * time.Second
	// esBufSize is the size of the buffers responses are copied through.
	esBufSize = 32 << 10
)

// esProtocol is the Elasticsearch (and OpenSearch) Protocol. It keeps
// no state: every session has its own HTTP server and transport.
type esProtocol struct{}

var _ Protocol = (*esProtocol)(nil)

func (*esProtocol) Name() string   { return "elasticsearch" }
func (*esProtocol) ALPN() []string { return []string{esALPN} }

// Handshake implements Protocol. It returns when the HTTP session is over:
// nil, nil, nil after a routed session, an error otherwise.
func (p *esProtocol) Handshake(ctx context.Context, client net.Conn, s *Session) (net.Conn, net.Conn, error) {
	start := time.Now()
	var first [3]byte
	if _, err := io.ReadFull(client, first[:]); err != nil {
		return nil, nil, fmt.Errorf("reading first bytes: %w", err)
	}
	var (
		conn   net.Conn = &prefixConn{Conn: client, prefix: first[:]}
		secure          = firstBytesTLS(first)
		sni    string
		r      *Route
		err    error
	)
	if secure {
		tc, herr := s.ServerHandshake(ctx, conn)
		if herr != nil {
			return nil, nil, fmt.Errorf("TLS handshake: %w", herr)
		}
		conn, sni = tc, tc.ConnectionState().ServerName
		r, err = s.Route(sni)
	} else {
		r, err = s.Route("")
		if err != nil || !r.AllowPlaintext {
			return nil, nil, esRefusePlaintext(conn)
		}
	}
	if err != nil {
		reason := "no route for clients that send no server name (SNI)"
		if sni != "" {
			reason = fmt.Sprintf("no route for server name %q", sni)
		}
		h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Connection", "close")
			esWriteError(w, http.StatusMisdirectedRequest, "leproxy_misdirected_request", reason)
		})
		n, _, _ := esServe(conn, s, nil, h)
		return nil, nil, fmt.Errorf("%w (answered %d requests with 421)", err, n)
	}

	proxy, tr := esNewProxy(s, r, secure)
	defer tr.CloseIdleConnections()
	rs := s.route.stats
	rs.active.Add(1)
	n, in, out := esServe(conn, s, rs, proxy)
	rs.active.Add(-1)
	// The Server logs no line for a session it did not pump: this is it.
	s.Logger.Info("session end",
		"sni", sni,
		"route", r.Host,
		"backend", r.Backend,
		"requests", n,
		"bytes_in", in,
		"bytes_out", out,
		"duration", time.Since(start),
		"error", nil)
	return nil, nil, nil
}

// esServe serves HTTP/1.1 on conn with h until the client closes, the
// session idles out or the Server shuts down, and returns the number of
// requests and the bytes read from and written to the client. rs, when
// not nil, counts the bytes as they move.
func esServe(conn net.Conn, s *Session, rs *routeStats, h http.Handler) (requests, in, out int64) {
	idle := s.srv.limits.idle
	cc := &esConn{Conn: conn, idle: idle, closed: make(chan struct{})}
	if rs != nil {
		cc.inCounter, cc.outCounter = &rs.bytesIn, &rs.bytesOut
	}
	// Clear the handshake deadline; the HTTP server sets its own for
	// request headers and idle keep-alive, and esConn bounds stalls.
	conn.SetDeadline(time.Time{})
	var n atomic.Int64
	logger := s.Logger
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			if r.Body != nil && r.Body != http.NoBody && idle > 0 {
				b := &esBody{ReadCloser: r.Body, ctl: http.NewResponseController(w), idle: idle}
				defer b.finish()
				r.Body = b
			}
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: s.srv.cfg.HandshakeTimeout,
		IdleTimeout:       idle,
		MaxHeaderBytes:    esMaxHeaderBytes,
		// No HTTP/2: ALPN never offers it.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     log.New(esLogWriter{logger, "http server error"}, "", 0),
	}
	l := &esListener{conn: cc, addr: conn.LocalAddr(), done: make(chan struct{})}

	// Shutdown of the Server ends the session gracefully: the request in
	// flight completes, then the connection closes.
	stopCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-s.srv.done:
			hs.Shutdown(stopCtx)
		case <-stopCtx.Done():
		}
	}()
	hs.Serve(l)
	l.closeUnserved()
	<-cc.closed // the server's connection goroutine is done with it
	stop()
	wg.Wait()
	return n.Load(), cc.in.Load(), cc.out.Load()
}

// esNewProxy returns the reverse proxy of one session to r's node, and its
// transport, which the caller closes at the session's end. secure says
// whether the client came over TLS.
func esNewProxy(s *Session, r *Route, secure bool) (http.Handler, *http.Transport) {
	target := &url.URL{Scheme: "http", Host: r.Backend}
	backendTLS := s.BackendTLSConfig(r)
	if backendTLS != nil {
		target.Scheme = "https"
	}
	proto := "http"
	if secure {
		proto = "https"
	}
	dial, backend := s.srv.dial, r.Backend
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dial(ctx, network, backend)
		},
		TLSClientConfig:     backendTLS,
		TLSHandshakeTimeout: s.srv.cfg.HandshakeTimeout,
		// One request at a time per client connection: HTTP/1.1.
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       esIdleConnTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	logger := s.Logger.With("route", r.Host, "backend", r.Backend)
	rp := &httputil.ReverseProxy{
		// ReverseProxy has removed hop-by-hop headers and the client's
		// Forwarded and X-Forwarded-* from pr.Out.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			// pr.In.TLS is nil: the server sees the connection through
			// esConn. The session knows.
			pr.Out.Header.Set("X-Forwarded-Proto", proto)
			pr.Out.Host = pr.In.Host
		},
		Transport:     tr,
		FlushInterval: -1,
		BufferPool:    esBufPool,
		ErrorLog:      log.New(esLogWriter{logger, "backend error"}, "", 0),
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			if errors.Is(err, context.Canceled) && req.Context().Err() != nil {
				logger.Debug("client went away", "error", err)
				return
			}
			logger.Warn("backend error", "method", req.Method, "path", req.URL.Path, "error", err)
			esWriteError(w, http.StatusBadGateway, "leproxy_backend_unavailable", "could not reach the backend of "+r.Host)
		},
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.Method == http.MethodConnect:
			esWriteError(w, http.StatusMethodNotAllowed, "leproxy_bad_request", "CONNECT is not served")
		case esWantsUpgrade(req.Header):
			esWriteError(w, http.StatusBadRequest, "leproxy_bad_request", "protocol upgrades are not served")
		default:
			rp.ServeHTTP(w, req)
		}
	})
	return h, tr
}

// esRefusePlaintext answers a plaintext HTTP request on the TLS port with
// 400 and a JSON body saying TLS is required, as Go's and Elasticsearch's
// own servers answer one. A client that does not send HTTP gets nothing.
// It returns the error for the log.
func esRefusePlaintext(conn net.Conn) error {
	req, err := http.ReadRequest(bufio.NewReaderSize(io.LimitReader(conn, esMaxPlaintextRequest), 4096))
	if err != nil {
		return fmt.Errorf("client did not start TLS, and sent no HTTP request either: %w", err)
	}
	reason := "TLS is required: this port serves HTTPS"
	if req.Host != "" {
		reason += ", use https://" + req.Host
	}
	body := esErrorBody(http.StatusBadRequest, "leproxy_tls_required", reason)
	resp := fmt.Appendf(nil, "HTTP/1.1 400 Bad Request\r\n"+
		"Content-Type: application/json\r\n"+
		"Content-Length: %d\r\n"+
		"Connection: close\r\n\r\n", len(body))
	if _, err := conn.Write(append(resp, body...)); err != nil {
		return fmt.Errorf("client did not start TLS (%s request), and answering it: %w", req.Method, err)
	}
	return fmt.Errorf("client did not start TLS (plaintext HTTP %s request)", req.Method)
}

// esWriteError answers with an Elasticsearch-style error.
func esWriteError(w http.ResponseWriter, status int, typ, reason string) {
	body := esErrorBody(status, typ, reason)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(body)
}

// esErrorBody is the JSON body of an error, shaped as Elasticsearch's.
func esErrorBody(status int, typ, reason string) []byte {
	type cause struct {
		Type   string `json:"type"`
		Reason string `json:"reason"`
	}
	var v struct {
		Error struct {
			RootCause []cause `json:"root_cause"`
			cause
		} `json:"error"`
		Status int `json:"status"`
	}
	v.Error.cause = cause{Type: typ, Reason: reason}
	v.Error.RootCause = []cause{v.Error.cause}
	v.Status = status
	b, _ := json.Marshal(v)
	return append(b, '\n')
}

// esWantsUpgrade reports whether a request asks for a protocol upgrade.
func esWantsUpgrade(h http.Header) bool {
	for _, v := range h.Values("Connection") {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// esConn is a session's client connection as its HTTP server sees it: it
// counts bytes, bounds each write by the idle timeout (a client that stops
// reading a response is cut), half-closes through TLS, and reports its
// closing.
type esConn struct {
	net.Conn
	idle                  time.Duration
	in, out               atomic.Int64
	inCounter, outCounter *atomic.Uint64 // the route's, or nil
	closeOnce             sync.Once
	closed                chan struct{}
}

func (c *esConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.in.Add(int64(n))
		if c.inCounter != nil {
			c.inCounter.Add(uint64(n))
		}
	}
	return n, err
}

func (c *esConn) Write(p []byte) (int, error) {
	if c.idle > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	}
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.out.Add(int64(n))
		if c.outCounter != nil {
			c.outCounter.Add(uint64(n))
		}
	}
	return n, err
}

// CloseWrite sends TLS close_notify and a TCP FIN, for the HTTP server's
// graceful close.
func (c *esConn) CloseWrite() error { return closeWrite(c.Conn) }

func (c *esConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { close(c.closed) })
	return err
}

// esBody is a request body whose every read is bounded by the idle
// timeout, through the HTTP server, so that a client that stops sending
// its body is cut. At the end of the body the deadline is cleared: the
// server then watches the connection for the client going away while the
// node prepares the response, which may take long. Once the handler has
// returned, the server owns the deadlines again, and a transport still
// reading the body leaves them alone.
type esBody struct {
	io.ReadCloser
	ctl  *http.ResponseController
	idle time.Duration

	mu       sync.Mutex
	finished bool
}

func (b *esBody) Read(p []byte) (int, error) {
	b.setDeadline(time.Now().Add(b.idle))
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.setDeadline(time.Time{})
	}
	return n, err
}

func (b *esBody) setDeadline(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.finished {
		b.ctl.SetReadDeadline(t)
	}
}

// finish ends the body's hold on the connection's read deadline.
func (b *esBody) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finished = true
}

// esListener hands one connection to an http.Server. Its second Accept
// waits until the connection or the listener closes, and then fails, so
// that Serve returns.
type esListener struct {
	addr net.Addr
	done chan struct{} // closed by Close

	mu        sync.Mutex
	conn      *esConn // until handed out
	served    *esConn // once handed out
	closeOnce sync.Once
}

func (l *esListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c, served := l.conn, l.served
	if c != nil {
		l.conn, l.served = nil, c
	}
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	if served != nil {
		select {
		case <-served.closed:
		case <-l.done:
		}
	} else {
		<-l.done
	}
	return nil, net.ErrClosed
}

func (l *esListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *esListener) Addr() net.Addr { return l.addr }

// closeUnserved closes the listener and, if Serve returned before taking
// the connection (a Shutdown that came first), the connection.
func (l *esListener) closeUnserved() {
	l.Close()
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	l.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// esLogWriter turns the lines net/http logs by itself into records at
// Warn level.
type esLogWriter struct {
	logger *slog.Logger
	msg    string
}

func (w esLogWriter) Write(p []byte) (int, error) {
	w.logger.Warn(w.msg, "error", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// esBufPool is the httputil.BufferPool of every session's reverse proxy.
var esBufPool = &esBuffers{}

// esBuffers is a pool of esBufSize byte slices.
type esBuffers struct{ p sync.Pool }

func (bp *esBuffers) Get() []byte {
	if b, ok := bp.p.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, esBufSize)
}

func (bp *esBuffers) Put(b []byte) {
	if cap(b) != esBufSize {
		return
	}
	b = b[:esBufSize]
	bp.p.Put(&b)
}
