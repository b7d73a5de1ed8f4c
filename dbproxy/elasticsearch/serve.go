package elasticsearch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/leproxy/leproxy/dbproxy"
)

// serve serves HTTP/1.1 on conn with h until the client closes, the
// connection idles out or, once ctx is done (the Server shuts down), the
// request in flight has been answered. wire is the client's connection
// under conn, on which a request shows as soon as it arrives. serve
// returns the number of requests and, when the connection was closed
// underneath the HTTP server (by the Server: a forced shutdown) with a
// request under way, that error.
func serve(ctx context.Context, conn net.Conn, wire *wireConn, s *dbproxy.Session, h http.Handler) (requests int64, err error) {
	cc := &clientConn{Conn: conn, wire: wire, drain: ctx, done: make(chan struct{})}
	var n atomic.Int64
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			if ctx.Err() != nil {
				w.Header().Set("Connection", "close")
			}
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: s.HandshakeTimeout(),
		IdleTimeout:       s.IdleTimeout(),
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         cc.setState,
		// No HTTP/2: ALPN never offers it.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     log.New(logWriter{s.Logger, "http server error"}, "", 0),
	}
	// http.Server.Shutdown would not do: it takes a connection whose next
	// request has arrived, or partly, for idle and closes it, and drops a
	// request whose header it finishes reading after Shutdown began.
	stop := context.AfterFunc(ctx, cc.closeIfIdle)
	hs.Serve(&connListener{conn: cc})
	stop()
	return n.Load(), cc.cutError()
}

// wireConn is the client's connection as TLS (or, in plaintext, the HTTP
// server) reads it. It counts the reads that bring bytes, so that a
// request shows from its first byte on the wire, before TLS has
// decrypted it.
type wireConn struct {
	net.Conn // as accepted
	reads    atomic.Int64
}

func (c *wireConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.reads.Add(1)
	}
	return n, err
}

// CloseWrite half-closes the connection, for the TLS connection over it.
func (c *wireConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// clientConn is a session's client connection as its HTTP server sees it.
// It follows whether a request is under way, to drain the session; it
// half-closes through TLS; and it remembers a read or write that failed
// because the connection was closed underneath (by the Server) rather
// than by the HTTP server or the client.
type clientConn struct {
	net.Conn
	wire  *wireConn
	drain context.Context // done when the session is to end once idle
	done  chan struct{}   // closed when the HTTP server is done with the connection

	// writeReads is what wire had read when the last write began: once
	// the response is out, a read after it is the next request on its way
	// (the HTTP server may have read its first bytes while it waited for
	// the client to go away, before it says it is idle).
	writeReads atomic.Int64

	mu sync.Mutex
	// idle is set between a response and the next request. A new
	// connection is not idle: its first request may sit in the TLS
	// connection's buffer already, and the HTTP server's header timeout
	// bounds the wait for it.
	idle    bool
	closing bool  // Close was called: errors from now on are expected
	cut     error // the first error of a connection closed underneath
}

func (c *clientConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.note(err)
	return n, err
}

func (c *clientConn) Write(p []byte) (int, error) {
	c.writeReads.Store(c.wire.reads.Load())
	n, err := c.Conn.Write(p)
	c.note(err)
	return n, err
}

// note records err if it is the first sign of the connection closed
// underneath.
func (c *clientConn) note(err error) {
	if err == nil || !errors.Is(err, net.ErrClosed) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing && c.cut == nil {
		c.cut = fmt.Errorf("client connection closed with a request under way: %w", err)
	}
}

func (c *clientConn) cutError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut
}

// setState is the HTTP server's ConnState hook: a connection back to idle
// after a response closes if the session is draining, and a closed one
// lets the listener's second Accept fail.
func (c *clientConn) setState(_ net.Conn, state http.ConnState) {
	switch state {
	case http.StateIdle:
		c.mu.Lock()
		c.idle = true
		c.mu.Unlock()
		c.closeIfIdle()
	case http.StateActive:
		c.mu.Lock()
		c.idle = false
		c.mu.Unlock()
	case http.StateClosed:
		close(c.done)
	}
}

// closeIfIdle closes the connection of a draining session between
// requests, unless the next request has begun to arrive: that one is
// served (with "Connection: close"). It runs when the drain begins and
// after each response, so that a session with a request in flight ends
// once its response is done.
func (c *clientConn) closeIfIdle() {
	if c.drain.Err() == nil || !c.isIdle() || inputPending(c.wire.Conn) {
		return
	}
	// Bytes that were not pending any more may have been read meanwhile.
	if c.isIdle() {
		c.Close()
	}
}

// isIdle reports whether the connection is between requests, with nothing
// of the next one read.
func (c *clientConn) isIdle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idle && c.wire.reads.Load() == c.writeReads.Load()
}

func (c *clientConn) Close() error {
	c.mu.Lock()
	if !c.closing && c.cut == nil && closedUnderneath(c.wire.Conn) {
		// A forced shutdown closed it while the HTTP server was busy
		// elsewhere (writing to a node that does not read): no read or
		// write of ours has failed yet.
		c.cut = fmt.Errorf("client connection closed with a request under way: %w", net.ErrClosed)
	}
	c.closing = true
	c.mu.Unlock()
	return c.Conn.Close()
}

// closedUnderneath reports whether c, a TCP connection, has been closed.
func closedUnderneath(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return errors.Is(err, net.ErrClosed)
	}
	return rc.Control(func(uintptr) {}) != nil
}

// CloseWrite sends TLS close_notify and a TCP FIN, for the HTTP server's
// graceful close.
func (c *clientConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// connListener hands one connection to an http.Server. Its second Accept
// waits until the server is done with that connection and then fails, so
// that Serve returns once the connection's goroutine has finished. Only
// the server's Serve goroutine calls it.
type connListener struct {
	conn   *clientConn
	handed bool
}

func (l *connListener) Accept() (net.Conn, error) {
	if !l.handed {
		l.handed = true
		return l.conn, nil
	}
	<-l.conn.done
	return nil, net.ErrClosed
}

func (l *connListener) Close() error   { return nil }
func (l *connListener) Addr() net.Addr { return l.conn.LocalAddr() }

// logWriter turns the lines net/http logs by itself into records at Warn
// level.
type logWriter struct {
	logger *slog.Logger
	msg    string
}

func (w logWriter) Write(p []byte) (int, error) {
	w.logger.Warn(w.msg, "error", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// inputPending reports whether bytes have arrived on c that nobody has
// read yet; false when it cannot tell.
func inputPending(c net.Conn) bool {
	pending, err := dbproxy.PendingInput(c)
	return err == nil && pending
}
