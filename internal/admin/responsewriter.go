package admin

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync/atomic"
)

// responseRecorder is the http.ResponseWriter InstrumentHTTP gives its
// handler: it passes everything through to w and notes the status and the
// bytes written. It has Flush and Hijack of its own, so that a handler
// asserting http.Flusher or http.Hijacker still finds them, and Unwrap for
// http.ResponseController.
type responseRecorder struct {
	w        http.ResponseWriter
	status   int // final status sent; 0 until then
	hijacked bool
	// bytes is atomic: after a Hijack the handler's goroutines may write
	// to the connection while done reads it.
	bytes atomic.Int64
	// bytesIn counts the request body read, and after a Hijack the
	// bytes read from the connection.
	bytesIn atomic.Int64
}

var (
	_ http.Flusher  = (*responseRecorder)(nil)
	_ http.Hijacker = (*responseRecorder)(nil)
)

func (r *responseRecorder) Header() http.Header { return r.w.Header() }

// WriteHeader records code unless it is an informational 1xx status other
// than 101, which net/http sends ahead of the final one.
func (r *responseRecorder) WriteHeader(code int) {
	if r.status == 0 && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		r.status = code
	}
	r.w.WriteHeader(code)
}

func (r *responseRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.w.Write(p)
	r.bytes.Add(int64(n))
	return n, err
}

// Flush implements http.Flusher; errors are dropped as Flusher has no
// way to return them (FlushError does).
func (r *responseRecorder) Flush() {
	_ = r.FlushError()
}

// FlushError flushes w, as http.ResponseController.Flush does.
func (r *responseRecorder) FlushError() error {
	if r.status == 0 {
		r.status = http.StatusOK // a flush sends the header
	}
	return http.NewResponseController(r.w).Flush()
}

// Hijack implements http.Hijacker. Over HTTP/2 it returns an error
// wrapping http.ErrNotSupported. The connection it returns counts the
// bytes written to it.
func (r *responseRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(r.w).Hijack()
	if err != nil {
		return nil, nil, err
	}
	r.hijacked = true
	if r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	cc := newCountingConn(c, &r.bytesIn, &r.bytes)
	if brw != nil && brw.Writer.Buffered() == 0 {
		// Bytes written through the buffered writer count too.
		brw = bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(cc, brw.Writer.Size()))
	}
	return cc, brw, nil
}

// Unwrap returns the wrapped ResponseWriter, for
// http.ResponseController.
func (r *responseRecorder) Unwrap() http.ResponseWriter { return r.w }

// countingConn is a hijacked connection that adds the bytes read from it
// to in and those written to it to n.
type countingConn struct {
	net.Conn
	in, n *atomic.Int64
}

// countingCloseWriter is a countingConn over a connection that can
// half-close (*tls.Conn, *net.TCPConn): httputil.ReverseProxy half-closes
// a websocket's client side when the backend has finished.
type countingCloseWriter struct {
	countingConn
}

func (c countingCloseWriter) CloseWrite() error {
	return c.Conn.(interface{ CloseWrite() error }).CloseWrite()
}

func newCountingConn(c net.Conn, in, n *atomic.Int64) net.Conn {
	cc := countingConn{Conn: c, in: in, n: n}
	if _, ok := c.(interface{ CloseWrite() error }); ok {
		return countingCloseWriter{cc}
	}
	return cc
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// ReadFrom keeps the connection's own ReadFrom (splice between plain TCP
// connections) when it has one.
func (c countingConn) ReadFrom(src io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(src)
		c.n.Add(n)
		return n, err
	}
	return io.Copy(writerOnly{c}, src)
}

// writerOnly hides countingConn's ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }
